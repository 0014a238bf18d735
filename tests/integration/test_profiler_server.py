"""tensorflow.ProfilerService on a servo process's gRPC port, driven by TensorFlow's own
profiler client (`tf.profiler.experimental.client.trace`, what TensorBoard's capture button
runs): the trace it writes holds servo's SavedModel runs of the predicts made meanwhile;
--enable_profiler=false serves no profiler; a server with no TensorFlow model imports
TensorFlow only once a profile is asked for.

The service's answers one by one (duration, Terminate, cancellation, names of the files) are
tested in process in tests/apis/grpc/test_profiler.py.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from servo.protos import profiler_service_pb2 as pb
from tests.support.requests import predict_request, tfs
from tests.support.server import ServerProcess, grpc_stubs, running_server
from tests.support.testdata import TfsModels
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SERVICE = "/tensorflow.ProfilerService"
TRACE_MS = 2000
RPC_TIMEOUT = 30.0
TF_LIBRARY = "libtensorflow_framework"  # mapped into a process once it imports TensorFlow


@pytest.fixture(scope="module")
def half_plus_two_server(tfs_models: TfsModels) -> Iterator[ServerProcess]:
    """A servo process serving the TF1 SavedModel half_plus_two (y = 0.5 x + 2), with TFS's
    default --enable_profiler."""
    with running_server(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={tfs_models.path('saved_model_half_plus_two_cpu')}",
        ]
    ) as server:
        yield server


def _events(trace: xplane_pb2.XSpace) -> list[str]:
    """The name of every event of every line of every plane."""
    return [
        plane.event_metadata[event.metadata_id].name
        for plane in trace.planes
        for line in plane.lines
        for event in line.events
    ]


def _call(server: ServerProcess, method: str, request: bytes) -> grpc.RpcError | bytes:
    """A raw call of the profiler service's `method`: the answer's bytes, or the error."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            answer: bytes = channel.unary_unary(f"{SERVICE}/{method}")(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            return exc
        return answer


def _maps_tensorflow(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return TF_LIBRARY in f.read()


def test_tensorflows_client_traces_servos_saved_model_runs(
    half_plus_two_server: ServerProcess, tmp_path: Path
) -> None:
    server = half_plus_two_server
    request = tfs(predict_request("half_plus_two", [[1.0], [2.0], [5.0]]))
    answered = []  # one entry per predict answered
    stop = threading.Event()
    failures: list[BaseException] = []

    def predicts() -> None:
        with grpc_stubs(server) as stubs:
            try:
                while not stop.is_set():
                    response = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
                    assert list(tf.make_ndarray(response.outputs["y"]).ravel()) == [2.5, 3, 4.5]
                    answered.append(1)
            except BaseException as exc:
                failures.append(exc)

    load = threading.Thread(target=predicts)
    load.start()
    try:
        wait_until(lambda: answered or failures, what="a first predict")
        before = len(answered)
        # What TensorBoard's profile plugin runs; it raises when no trace event is collected.
        tf.profiler.experimental.client.trace(
            f"grpc://{server.grpc_target}", str(tmp_path), TRACE_MS
        )
        during = len(answered) - before
    finally:
        stop.set()
        load.join(RPC_TIMEOUT)
    assert not failures, failures
    assert during > 0

    # <logdir>/plugins/profile/<run>/<host>_<port>.xplane.pb, the host as the client called it.
    files = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert [f.name for f in files] == [f"127.0.0.1_{server.grpc_port}.xplane.pb"]
    trace = xplane_pb2.XSpace.FromString(files[0].read_bytes())
    events = _events(trace)
    # Each predict is one run of the session servo holds for the SavedModel (the client ran
    # no session of its own), and each run executes the serving signature's kernels: y = a * x
    # + b of tests/support/tfs_models.py's graph, ops named by TensorFlow `mul` and `add`, and
    # the variables a and b it reads.
    runs = events.count("SessionRun")
    assert 0 < runs <= len(answered), (runs, len(answered))
    assert {"mul:Mul", "add:AddV2", "a:VariableV2", "b:VariableV2"} <= set(events), sorted(
        set(events)
    )
    assert "/host:CPU" in [plane.name for plane in trace.planes]
    server.wait_for_line("Profiled session")


def test_monitor_answers_as_tensorflows_server(half_plus_two_server: ServerProcess) -> None:
    error = _call(
        half_plus_two_server, "Monitor", pb.MonitorRequest(duration_ms=1).SerializeToString()
    )
    assert isinstance(error, grpc.RpcError)
    assert (error.code(), error.details()) == (grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def test_enable_profiler_false_serves_no_profiler(tfs_models: TfsModels, tmp_path: Path) -> None:
    with running_server(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={tfs_models.path('saved_model_half_plus_two_cpu')}",
            "--enable_profiler=false",
        ]
    ) as server:
        profile = pb.ProfileRequest(repository_root=str(tmp_path), session_id="s", duration_ms=1)
        profile.opts.duration_ms = 1
        for method, message in (("Profile", profile), ("Monitor", pb.MonitorRequest())):
            error = _call(server, method, message.SerializeToString())
            assert isinstance(error, grpc.RpcError), method
            # grpc's own answer for a method no service registered (TensorFlow's Monitor
            # would say "unimplemented.").
            assert (error.code(), error.details()) == (
                grpc.StatusCode.UNIMPLEMENTED,
                "Method not found!",
            ), method
        assert "--enable_profiler has no effect" not in server.output
    assert list(tmp_path.iterdir()) == []


def test_tensorflow_is_imported_at_the_first_profile_not_at_start(
    model_dirs: dict[str, Path],
) -> None:
    with running_server(
        ["--model_name=vocab", f"--model_base_path={model_dirs['vocab']}"]
    ) as server:
        server.wait_for_line("Serving tensorflow.ProfilerService")
        assert not _maps_tensorflow(server.process.pid)
        profile = pb.ProfileRequest(session_id="no-models", emit_xspace=True)
        profile.opts.duration_ms = 100
        answer = _call(server, "Profile", profile.SerializeToString())
        assert isinstance(answer, bytes), answer
        xspace = pb.ProfileResponse.FromString(answer).xspace
        assert xplane_pb2.XSpace.FromString(xspace).planes  # TensorFlow's XSpace, if eventless
        assert _maps_tensorflow(server.process.pid)


def test_stopping_the_server_ends_a_capture_with_its_trace(
    tfs_models: TfsModels, tmp_path: Path
) -> None:
    server = ServerProcess(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={tfs_models.path('saved_model_half_plus_two_cpu')}",
            "--shutdown_grace_period_seconds=20",
        ]
    )
    try:
        server.wait_ready()
        profile = pb.ProfileRequest(
            repository_root=str(tmp_path), session_id="long", host_name="servo"
        )
        profile.opts.duration_ms = 600_000  # far longer than the grace period
        answers: list[grpc.RpcError | bytes] = []
        call = threading.Thread(
            target=lambda: answers.append(_call(server, "Profile", profile.SerializeToString()))
        )
        call.start()
        server.wait_for_line("Profiling for 600000 ms")
        server.process.send_signal(signal.SIGTERM)
        call.join(RPC_TIMEOUT)
        # The capture answered what it had, and the drain completed (exit 0, not 3).
        assert [type(a) for a in answers] == [bytes], answers
        assert server.wait_exit(RPC_TIMEOUT) == 0, server.output
    finally:
        server.stop()
    written = tmp_path / "long" / "servo.xplane.pb"
    assert xplane_pb2.XSpace.FromString(written.read_bytes()).planes
