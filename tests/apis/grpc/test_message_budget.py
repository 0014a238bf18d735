"""The gRPC port's bound on the request messages held at once (servo.apis.grpc.message_budget):
the count and its refusal in process, then TFS's services and the health service registered
through the registrar (servo.apis.grpc.registrar) on a grpc.aio server on a loopback port,
called with the official clients' classes: a call held by a gated model counts until it ends,
the call that would pass the bound is UNAVAILABLE (counted so in the request metrics, and in
its access log line when the log is on) while smaller ones go on, health's registered methods
and its Watch stream are bounded too, and everything held is released."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tensorflow_serving.apis import prediction_service_pb2_grpc

from servo.apis.access_log import AccessEntry
from servo.apis.grpc.message_budget import MessageBudget
from servo.apis.grpc.registrar import Registrar
from servo.apis.grpc.service import Services, count_refused
from servo.metrics import ServerMetrics
from servo.util.log_format import ACCESS_LOGGER
from tests.support.inprocess import FakeCore, data_plane
from tests.support.requests import predict_request, tfs
from tests.support.servables import Gate

WAIT = 30.0
FLAG = "--grpc_max_buffered_message_bytes"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bytes_are_held_up_to_the_bound_and_released() -> None:
    budget = MessageBudget(100)
    assert budget.take(60) is None
    assert budget.take(40) is None  # exactly at the bound: held
    assert budget.held == 100
    refused = budget.take(1)
    assert refused == (
        "This request's message of 1 bytes would take the request messages the server holds "
        f"to 101 bytes, past its bound of 100 ({FLAG}); retry later"
    )
    assert budget.held == 100  # a refused message is not held
    budget.release(60)
    assert budget.take(50) is None and budget.held == 90


def test_refusals_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    budget = MessageBudget(10, clock=clock)
    budget.take(10)
    with caplog.at_level(logging.WARNING, "servo.apis.grpc.message_budget"):
        budget.take(1)
        clock.now += 59
        budget.take(1)
        clock.now += 1
        budget.take(1)
    warning = (
        f"gRPC request messages held reached 10 bytes ({FLAG} 10): calls past it get UNAVAILABLE"
    )
    assert [r.getMessage() for r in caplog.records] == [warning, warning]


# -- on a server -------------------------------------------------------------------------------


@dataclass
class Wire:
    budget: MessageBudget
    metrics: ServerMetrics
    predictions: Any  # the official PredictionServiceStub
    health: Any  # grpc.health.v1's stub
    health_servicer: Any


@asynccontextmanager
async def serving(core: FakeCore, limit: int, access_log: bool) -> AsyncIterator[Wire]:
    """TFS's services and the health service, registered with a bound of `limit` bytes (and
    the access log when `access_log`), on a loopback port; stubs of the official clients on
    a channel to it."""
    metrics = ServerMetrics()
    plane = data_plane(core, metrics=metrics)
    budget = MessageBudget(limit, on_refused=count_refused(plane))
    server = grpc.aio.server()
    registrar = Registrar(server, budget, log=access_log)
    registrar.add_generic_rpc_handlers(Services(plane).generic_handlers())
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, registrar)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Wire(
                budget,
                metrics,
                prediction_service_pb2_grpc.PredictionServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
                health,
            )
    finally:
        await server.stop(grace=None)
        plane.runner.close()


async def until(check: Callable[[], bool], what: str) -> None:
    """Waits for a state of the server's loop (this one), re-checked between its steps."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never reached: {what}"
        await asyncio.sleep(0.01)


async def status(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def size(message: Any) -> int:
    return len(message.SerializeToString())


@pytest.mark.parametrize("access_log", [False, True], ids=["plain", "access-logged"])
def test_a_call_past_the_bound_is_unavailable_while_held_calls_go_on(
    served: FakeCore, access_log: bool, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    served.add("gated", gate.servable)
    held = tfs(predict_request("gated", [1.5] * 200))
    large = tfs(predict_request("half_plus_two", [1.0] * 100))
    small = tfs(predict_request("half_plus_two", [1.0]))
    limit = size(held) + size(small)  # the held call and a small one fit; a larger one not
    assert size(large) > size(small)

    async def body() -> None:
        async with serving(served, limit, access_log) as wire:
            try:
                first = asyncio.ensure_future(wire.predictions.Predict(held, timeout=WAIT))
                await until(lambda: wire.budget.held == size(held), "the gated call held")
                await until(gate.started.is_set, "the gated call running")

                code, details = await status(wire.predictions.Predict(large, timeout=WAIT))
                assert code == grpc.StatusCode.UNAVAILABLE
                assert details == (
                    f"This request's message of {size(large)} bytes would take the request "
                    f"messages the server holds to {size(held) + size(large)} bytes, past its "
                    f"bound of {limit} ({FLAG}); retry later"
                )
                assert wire.metrics.request_count.value("half_plus_two", "UNAVAILABLE") == 1

                answer = await wire.predictions.Predict(small, timeout=WAIT)  # it fits: served
                assert list(answer.outputs["y"].float_val) == [2.5]
                assert wire.budget.held == size(held)

                gate.open()
                assert list((await first).outputs["x"].float_val) == [1.5] * 200
                await until(lambda: wire.budget.held == 0, "the gated call released")
                answer = await wire.predictions.Predict(large, timeout=WAIT)  # retried: served
                assert list(answer.outputs["y"].float_val) == [2.5] * 100
                assert wire.budget.held == 0
            finally:
                gate.open()  # a failed check does not leave the call to its gate's bound

    with caplog.at_level(logging.INFO, ACCESS_LOGGER):
        asyncio.run(body())
    served.assert_released()
    lines = [(e.status, e.bytes_in) for e in access_entries(caplog)]
    if not access_log:
        assert lines == []
        return
    # Each call's line, the refused one's included, in the order the calls ended.
    assert lines == [
        ("UNAVAILABLE", size(large)),
        ("OK", size(small)),
        ("OK", size(held)),
        ("OK", size(large)),
    ]


def access_entries(caplog: pytest.LogCaptureFixture) -> list[AccessEntry]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER and hasattr(r, "access")]


@pytest.mark.parametrize("access_log", [False, True], ids=["plain", "access-logged"])
def test_health_is_bounded_and_its_watch_holds_its_message_until_it_ends(
    served: FakeCore, access_log: bool
) -> None:
    watch = health_pb2.HealthCheckRequest(service="w" * 20)
    check = health_pb2.HealthCheckRequest(service="s" * 64)
    limit = size(check) + 10  # a Check fits alone, not beside a Watch
    assert size(watch) + size(check) > limit

    async def body() -> None:
        async with serving(served, limit, access_log) as wire:
            await wire.health_servicer.set(watch.service, health_pb2.HealthCheckResponse.SERVING)
            stream = wire.health.Watch(watch, timeout=WAIT)
            first = await stream.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            assert wire.budget.held == size(watch)  # held while the stream runs

            code, details = await status(wire.health.Check(check, timeout=WAIT))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert f"past its bound of {limit} ({FLAG})" in details
            # Refused health calls are not model requests: no request count.
            assert wire.metrics.request_count.value("", "UNAVAILABLE") == 0

            stream.cancel()
            await until(lambda: wire.budget.held == 0, "the ended stream released")
            code, _ = await status(wire.health.Check(check, timeout=WAIT))
            assert code == grpc.StatusCode.NOT_FOUND  # served: grpc_health's answer for it

    asyncio.run(body())
    served.assert_released()
