"""The gRPC access log (servo.apis.grpc.access), as the registrar's wrapper writes it
(servo.apis.grpc.registrar), in process, on a grpc.aio server on a loopback port: a stream
written with context.write by a coroutine (grpc.health.v1's Watch, as servo's health service
inherits it) is served through it, and gets its line when it ends, its answers' bytes summed.
Unary calls' lines are tested beside the bound (tests/apis/grpc/test_message_budget.py)
and through a server in tests/integration/test_logs.py."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from servo.apis.access_log import AccessEntry
from servo.apis.grpc.registrar import Registrar
from servo.util.log_format import ACCESS_LOGGER

WAIT = 30.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_watch_written_by_a_coroutine_is_served_and_logged_with_its_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = health_pb2.HealthCheckRequest(service="model")
    answers = [health_pb2.HealthCheckResponse(status=s) for s in (SERVING, NOT_SERVING)]

    async def body() -> list[int]:
        server = grpc.aio.server()
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, Registrar(server, None, log=True))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await health.set("model", SERVING)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=WAIT)
                seen = [(await stream.read()).status]
                await health.set("model", NOT_SERVING)
                seen.append((await stream.read()).status)
                stream.cancel()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while not access_entries(caplog):  # the line comes once the server sees the end
                    assert loop.time() < deadline, "the Watch was never logged"
                    await asyncio.sleep(0.01)
            return seen
        finally:
            await server.stop(grace=None)

    with caplog.at_level(logging.INFO, ACCESS_LOGGER):
        assert asyncio.run(body()) == [SERVING, NOT_SERVING]
    (entry,) = access_entries(caplog)
    assert (entry.protocol, entry.path) == ("grpc", "/grpc.health.v1.Health/Watch")
    assert (entry.api, entry.status) == ("health_watch", "CANCELLED")
    assert entry.bytes_in == request.ByteSize()
    assert entry.bytes_out == sum(answer.ByteSize() for answer in answers)


def access_entries(caplog: pytest.LogCaptureFixture) -> list[AccessEntry]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER and hasattr(r, "access")]
