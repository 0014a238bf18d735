"""tensorflow.ProfilerService (servo.apis.grpc.profiler) on a grpc.aio server on loopback in
this process, over a fake tracer: where the trace is written and under which name, emit_xspace,
empty traces, the session's duration and requested start, Terminate, a cancelled call, the
tracer's failure, Monitor, and the registration by --enable_profiler and TensorFlow's presence.
TensorFlow's real profiler and client, against a servo process, are in
tests/integration/test_profiler_server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from servo.apis.grpc import profiler
from servo.apis.grpc.profiler import SERVICE, ProfilerServices, xspace_is_empty
from servo.cli.flags import build_parser
from servo.core.status import Code, ServoError
from servo.protos import profiler_service_pb2 as pb
from tests.support.inprocess import FakeCore, data_plane

WAIT = 30.0  # seconds; a bound on waits for states, never reached when things work


def xspace(*, events: int) -> bytes:
    """A serialized XSpace of TensorFlow's own classes: a host plane with one line holding
    `events` events, and an empty device plane."""
    space = xplane_pb2.XSpace(hostnames=["servo-test"])
    host = space.planes.add(id=1, name="/host:CPU")
    host.event_metadata[1].CopyFrom(xplane_pb2.XEventMetadata(id=1, name="SessionRun"))
    line = host.lines.add(id=1, name="tf_Compute", timestamp_ns=5)
    for i in range(events):
        line.events.add(metadata_id=1, offset_ps=i * 1000, duration_ps=500)
    space.planes.add(id=2, name="/device:CPU:0").lines.add(id=1, name="empty")
    return space.SerializeToString()


@dataclass
class FakeTracer:
    """A tracer that answers `trace` (or raises `error` at start) and records what it did."""

    trace: bytes = field(default_factory=lambda: xspace(events=3))
    error: ServoError | None = None
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    log: list[str] = field(default_factory=list)
    start_times: list[float] = field(default_factory=list)
    end_times: list[float] = field(default_factory=list)

    def start(self) -> object:
        if self.error is not None:
            raise self.error
        self.start_times.append(time.monotonic())
        self.log.append("start")
        self.started.set()
        return "session"

    def collect(self, session: object) -> bytes:
        assert session == "session"
        self._end("collect")
        return self.trace

    def discard(self, session: object) -> None:
        assert session == "session"
        self._end("discard")

    def _end(self, how: str) -> None:
        self.end_times.append(time.monotonic())
        self.log.append(how)
        self.ended.set()


@dataclass
class Client:
    channel: grpc.aio.Channel
    services: ProfilerServices

    def method(self, name: str, response: Any) -> Any:
        return self.channel.unary_unary(
            f"/{SERVICE}/{name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )

    async def profile(self, request: pb.ProfileRequest, timeout: float = WAIT) -> Any:
        return await self.method("Profile", pb.ProfileResponse)(request, timeout=timeout)

    async def terminate(self, session_id: str) -> Any:
        call = self.method("Terminate", pb.TerminateResponse)
        return await call(pb.TerminateRequest(session_id=session_id), timeout=WAIT)


@asynccontextmanager
async def serving(tracer: FakeTracer, **options: Any) -> AsyncIterator[Client]:
    """A loopback gRPC server with the profiler service over `tracer`, and a client of it."""
    server = grpc.aio.server()
    services = ProfilerServices(data_plane(FakeCore()), tracer=tracer, **options)
    server.add_generic_rpc_handlers(services.generic_handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Client(channel, services)
    finally:
        await server.stop(grace=None)


def run(body: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), WAIT))


def request(root: Path | str, **fields: Any) -> pb.ProfileRequest:
    """What TensorFlow's client sends: <logdir>/plugins/profile, a run named by the time,
    the address it called as the host; the duration in opts (and at the top, for old
    servers)."""
    duration = fields.pop("duration_ms", 50)
    message = pb.ProfileRequest(
        repository_root=str(root),
        session_id="2026_01_02_03_04_05",
        host_name="127.0.0.1:8500",
        duration_ms=duration,
        max_events=1000000,
        tools=["trace_viewer", "xplane.pb"],
        **fields,
    )
    message.opts.duration_ms = duration
    return message


async def wait_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT), "never happened"


def test_profile_writes_the_xspace_as_tensorflows_server_does(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> pb.ProfileResponse:
        async with serving(tracer) as client:
            return await client.profile(request(tmp_path / "plugins" / "profile"))

    response = run(body)
    assert not response.empty_trace and not response.xspace
    # <repository_root>/<session_id>/<host>.xplane.pb, the host's ':' written '_'.
    written = tmp_path / "plugins" / "profile" / "2026_01_02_03_04_05" / "127.0.0.1_8500.xplane.pb"
    assert written.read_bytes() == tracer.trace
    assert os.listdir(written.parent) == [written.name]  # no staging file left beside it
    assert tracer.log == ["start", "collect"]
    assert tracer.end_times[0] - tracer.start_times[0] >= 0.05  # the session ran duration_ms


def test_duration_from_the_top_level_field_when_opts_have_none(tmp_path: Path) -> None:
    tracer = FakeTracer()
    message = request(tmp_path, duration_ms=80)
    message.opts.ClearField("duration_ms")

    async def body() -> None:
        async with serving(tracer) as client:
            await client.profile(message)

    run(body)
    assert tracer.end_times[0] - tracer.start_times[0] >= 0.08


def test_override_hostname_names_the_file(tmp_path: Path) -> None:
    message = request(tmp_path)
    message.opts.advanced_configuration["override_hostname"].string_value = "worker/0:1"

    async def body() -> None:
        async with serving(FakeTracer()) as client:
            await client.profile(message)

    run(body)
    assert os.listdir(tmp_path / message.session_id) == ["worker_0_1.xplane.pb"]


def test_emit_xspace_answers_the_trace_and_writes_nothing(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> pb.ProfileResponse:
        async with serving(tracer) as client:
            return await client.profile(request(tmp_path, emit_xspace=True))

    response = run(body)
    assert response.xspace == tracer.trace and not response.empty_trace
    assert list(tmp_path.iterdir()) == []
    # TensorFlow's ProfileResponse declares xspace an XSpace message: the same bytes parse so.
    parsed = xplane_pb2.XSpace.FromString(response.xspace)
    assert parsed.planes[0].lines[0].events[2].offset_ps == 2000


def test_a_trace_without_events_is_an_empty_trace(tmp_path: Path) -> None:
    async def body() -> pb.ProfileResponse:
        async with serving(FakeTracer(trace=xspace(events=0))) as client:
            return await client.profile(request(tmp_path))

    assert run(body).empty_trace


def test_xspace_is_empty_reads_tensorflows_xspace() -> None:
    assert xspace_is_empty(b"")
    assert xspace_is_empty(xspace(events=0))
    assert not xspace_is_empty(xspace(events=1))
    space = xplane_pb2.XSpace()
    space.planes.add(name="a")  # a plane with no lines
    later = space.planes.add(name="b").lines.add()
    later.events.add(metadata_id=7)
    assert not xspace_is_empty(space.SerializeToString())
    with pytest.raises(ValueError):
        xspace_is_empty(xspace(events=1)[:-3])


def test_a_later_start_timestamp_delays_the_session(tmp_path: Path) -> None:
    tracer = FakeTracer()
    message = request(tmp_path, duration_ms=10)
    asked = time.monotonic()
    message.opts.start_timestamp_ns = time.time_ns() + 200_000_000

    async def body() -> None:
        async with serving(tracer) as client:
            await client.profile(message)

    run(body)
    assert tracer.start_times[0] - asked >= 0.19


def test_terminate_ends_that_session_early_with_its_trace(tmp_path: Path) -> None:
    tracer = FakeTracer()
    message = request(tmp_path, duration_ms=600_000)

    async def body() -> pb.ProfileResponse:
        async with serving(tracer) as client:
            call = asyncio.ensure_future(client.profile(message))
            await wait_event(tracer.started)
            await client.terminate("another session")
            assert not tracer.ended.is_set()
            await client.terminate(message.session_id)
            return await call

    response = run(body)
    assert not response.empty_trace
    assert tracer.log == ["start", "collect"]
    assert (tmp_path / message.session_id / "127.0.0.1_8500.xplane.pb").exists()


def test_terminate_during_a_later_start_answers_at_once(tmp_path: Path) -> None:
    tracer = FakeTracer()
    message = request(tmp_path, duration_ms=600_000)
    message.opts.start_timestamp_ns = time.time_ns() + 600 * 10**9

    async def body() -> pb.ProfileResponse:
        async with serving(tracer) as client:
            call = asyncio.ensure_future(client.profile(message))
            await wait_until_running(client, call)
            await client.terminate(message.session_id)
            return await call

    assert not run(body).empty_trace
    assert tracer.log == ["start", "collect"]


async def wait_until_running(client: Client, call: asyncio.Future[Any]) -> None:
    """Until the server holds `call` as a running Profile (it registers before its delay)."""
    services = client.services
    deadline = time.monotonic() + WAIT
    while not services._running:
        assert not call.done() and time.monotonic() < deadline, "the Profile never ran"
        await asyncio.sleep(0.01)


def test_end_all_answers_the_captures_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> tuple[pb.ProfileResponse, grpc.aio.AioRpcError]:
        async with serving(tracer) as client:
            call = asyncio.ensure_future(client.profile(request(tmp_path, duration_ms=600_000)))
            await wait_event(tracer.started)
            client.services.end_all()  # as the server's stop does
            answered = await call
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.profile(request(tmp_path))
            return answered, err.value

    answered, refused = run(body)
    assert not answered.empty_trace and tracer.log == ["start", "collect"]
    assert (refused.code(), refused.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "The server is stopping",
    )


def test_a_cancelled_profile_discards_its_session(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> None:
        async with serving(tracer) as client:
            call = asyncio.ensure_future(client.profile(request(tmp_path, duration_ms=600_000)))
            await wait_event(tracer.started)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_event(tracer.ended)

    run(body)
    assert tracer.log == ["start", "discard"]
    assert list(tmp_path.iterdir()) == []


def test_a_deadline_shorter_than_the_session_ends_the_call(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> grpc.StatusCode:
        async with serving(tracer) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.profile(request(tmp_path, duration_ms=600_000), timeout=0.5)
            await wait_event(tracer.ended)
            return err.value.code()

    assert run(body) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert tracer.log == ["start", "discard"]


def test_a_session_that_cannot_start_is_internal_with_tensorflows_words(tmp_path: Path) -> None:
    tracer = FakeTracer(error=ServoError(Code.INTERNAL, "Another profiling session active."))

    async def body() -> grpc.aio.AioRpcError:
        async with serving(tracer) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.profile(request(tmp_path))
            return err.value

    error = run(body)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "Another profiling session active."


def test_a_request_with_nowhere_to_write_is_refused(tmp_path: Path) -> None:
    tracer = FakeTracer()

    async def body() -> grpc.aio.AioRpcError:
        async with serving(tracer) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.profile(request(""))
            return err.value

    error = run(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repository_root is empty" in error.details()
    assert tracer.log == []


def test_a_trace_that_cannot_be_written_is_internal_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    async def body() -> grpc.aio.AioRpcError:
        async with serving(FakeTracer()) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.profile(request(tmp_path / "file"))
            return err.value

    error = run(body)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert f"Cannot write the trace to {tmp_path / 'file'}" in error.details()


def test_allowed_profile_roots_refuse_a_trace_outside_them(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    (tmp_path / "elsewhere").mkdir()
    (root / "tb").mkdir(parents=True)
    (root / "tb" / "out").symlink_to(tmp_path / "elsewhere")
    tracer = FakeTracer()
    check = profiler.roots_check((str(root),))

    async def body() -> list[grpc.aio.AioRpcError]:
        errors = []
        async with serving(tracer, check_path=check) as client:
            await client.profile(request(root / "tb" / "plugins" / "profile"))
            for outside in (tmp_path / "elsewhere", root / ".." / "x", root / "tb" / "out"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await client.profile(request(outside))
                errors.append(err.value)
        return errors

    errors = run(body)
    assert [e.code() for e in errors] == [grpc.StatusCode.PERMISSION_DENIED] * 3
    assert "add a root to --allowed_profile_roots" in errors[0].details()
    assert tracer.log == ["start", "collect"]  # refused before any session started
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert (root / "tb" / "plugins" / "profile").is_dir()
    profiler.roots_check(())(str(tmp_path / "anywhere" / "x.xplane.pb"))  # no roots: anywhere


def test_monitor_is_unimplemented_as_in_tensorflows_server() -> None:
    async def body() -> grpc.aio.AioRpcError:
        async with serving(FakeTracer()) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                call = client.method("Monitor", pb.MonitorResponse)
                await call(pb.MonitorRequest(duration_ms=10), timeout=WAIT)
            return err.value

    error = run(body)
    assert (error.code(), error.details()) == (grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def test_bytes_that_are_no_profile_request_are_invalid_argument() -> None:
    async def body() -> grpc.aio.AioRpcError:
        async with serving(FakeTracer()) as client:
            raw = client.channel.unary_unary(f"/{SERVICE}/Profile")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(b"\xff\xff", timeout=WAIT)
            return err.value

    error = run(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a tensorflow.ProfileRequest" in error.details()


# -- registration ----------------------------------------------------------------------------


class RecordingServer:
    def __init__(self) -> None:
        self.handlers: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.handlers.extend(handlers)

    def serves_profiler(self) -> bool:
        details = argparse.Namespace(method=f"/{SERVICE}/Profile", invocation_metadata=())
        return any(h.service(details) is not None for h in self.handlers)


def _server_with(args: list[str]) -> RecordingServer:
    from servo.cli.model_server import ModelServer

    server = ModelServer(build_parser().parse_args(["--model_name=m", *args]))
    server.plane = data_plane(FakeCore())
    recording = RecordingServer()
    if server.args.enable_profiler:
        server._add_profiler(recording)
    return recording


def test_enable_profiler_is_on_by_default_as_in_tfs() -> None:
    assert build_parser().parse_args([]).enable_profiler is True
    assert _server_with([]).serves_profiler()
    assert not _server_with(["--enable_profiler=false"]).serves_profiler()


def test_allowed_profile_roots_reach_the_service(tmp_path: Path) -> None:
    server = _server_with([f"--allowed_profile_roots={tmp_path}"])
    handler = next(
        h.service(argparse.Namespace(method=f"/{SERVICE}/Profile", invocation_metadata=()))
        for h in server.handlers
    )
    assert handler is not None

    class Context:
        def time_remaining(self) -> float:
            return WAIT

        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise AssertionError((code, details))

    outside = request("/elsewhere/plugins/profile")
    with pytest.raises(AssertionError) as err:
        asyncio.run(handler.unary_unary(outside, Context()))
    assert err.value.args[0][0] == grpc.StatusCode.PERMISSION_DENIED


def test_without_tensorflow_the_service_is_absent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if it were not installed
    assert not profiler.tensorflow_installed()
    with caplog.at_level("INFO"):
        assert not _server_with([]).serves_profiler()
    assert "TensorFlow is not installed" in caplog.text


def test_the_tracer_names_the_extra_when_tensorflow_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow.python.profiler.internal", None)
    with pytest.raises(ServoError) as err:
        profiler.TensorFlowTracer().start()
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "pip install 'servo-model-server[tensorflow]'" in err.value.message


# -- TensorFlow's profiler, in this process ---------------------------------------------------


def _names(trace: bytes) -> set[str]:
    space = xplane_pb2.XSpace.FromString(trace)
    return {
        plane.event_metadata[event.metadata_id].name
        for plane in space.planes
        for line in plane.lines
        for event in line.events
    }


def test_tensorflows_tracer_collects_an_xspace_of_what_ran() -> None:
    import tensorflow as tf

    tracer = profiler.TensorFlowTracer()
    session = tracer.start()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(tf.multiply(x, 0.5), 2.0, name="y")
    with tf.compat.v1.Session(graph=graph) as run:
        run.run(y, {x: [1.0, 2.0]})
    logdir = session.logdir  # type: ignore[attr-defined]
    trace = tracer.collect(session)
    assert not xspace_is_empty(trace)
    assert {"SessionRun", "y:AddV2"} <= _names(trace)
    assert not os.path.exists(logdir)  # its temporary directory is gone


def test_one_tensorflow_session_at_a_time_and_discard_ends_it() -> None:
    tracer = profiler.TensorFlowTracer()
    first = tracer.start()
    with pytest.raises(ServoError) as err:
        tracer.start()
    assert err.value.code == Code.INTERNAL
    assert err.value.message == "Another profiling session active."  # TensorFlow's words
    tracer.discard(first)
    tracer.discard(tracer.start())  # the lock went with the discarded session
