"""Shutdown always ends (issue 11, finding 4): SIGTERM or SIGINT stops accepting, drains the
requests in flight within --shutdown_grace_period_seconds, and then exits whatever still runs:
a load, a reload or a model call that never returns. The exit code says whether the drain was
complete (0) or not (3). The waits below are bounds on the process's exit, never timings."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
from pathlib import Path

import httpx
import pytest

from servo.cli.model_server import EXIT_DRAIN_INCOMPLETE
from tests.support.models import write_python_model
from tests.support.server import ServerProcess, grpc_stubs, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GRACE = "--shutdown_grace_period_seconds=2"
# The python models here run in the server's threads: work that cannot be killed (a worker
# process's call or load ends with its worker at shutdown: test_python_worker_server.py).
THREADS = "--python_model_isolation=thread"
EXIT_BOUND = 60.0  # seconds: far more than the grace period; a bound, not a timing

QUICK_MODEL = """
class Model:
    def predict(self, inputs, signature_name):
        return {"outputs": inputs["inputs"] * 2}
"""

# A load that never returns, after a mark in its version directory that it has begun.
HANGING_LOAD_MODEL = """
import os
import threading

class Model:
    def load(self, path):
        open(os.path.join(path, "loading"), "w").close()
        threading.Event().wait()

    def predict(self, inputs, signature_name):
        return {"outputs": inputs["inputs"]}
"""

# A model call that never returns, after a mark in its version directory that it has begun.
HANGING_CALL_MODEL = """
import os
import threading

class Model:
    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        open(os.path.join(self.path, "called"), "w").close()
        threading.Event().wait()
"""


def predict(server: ServerProcess, name: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{server.rest}/v1/models/{name}:predict", json={"instances": [1.0]}, timeout=timeout
    )


def sigterm_and_wait(server: ServerProcess, sig: signal.Signals = signal.SIGTERM) -> int:
    server.process.send_signal(sig)
    return server.wait_exit(EXIT_BOUND)


def test_sigterm_while_a_polled_load_never_returns_exits_with_the_incomplete_code(
    tmp_path: Path,
) -> None:
    base = write_python_model(tmp_path / "m", QUICK_MODEL, version=1)
    with running_server(
        ["--model_name=m", f"--model_base_path={base}", "--model_platform=python", GRACE, THREADS]
    ) as server:
        assert predict(server, "m").json() == {"predictions": [2.0]}
        write_python_model(base, HANGING_LOAD_MODEL, version=2)
        wait_until(lambda: (base / "2" / "loading").exists(), what="version 2's load began")
        assert sigterm_and_wait(server) == EXIT_DRAIN_INCOMPLETE
    assert "work still running after the grace period" in server.output


def test_sigterm_while_a_model_call_never_returns_exits_with_the_incomplete_code(
    tmp_path: Path,
) -> None:
    base = write_python_model(tmp_path / "hang", HANGING_CALL_MODEL)
    with (
        running_server(
            [
                "--model_name=hang",
                f"--model_base_path={base}",
                "--model_platform=python",
                GRACE,
                THREADS,
            ]
        ) as server,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        call = pool.submit(predict, server, "hang", EXIT_BOUND)
        wait_until(lambda: (base / "1" / "called").exists(), what="the model call began")
        assert sigterm_and_wait(server) == EXIT_DRAIN_INCOMPLETE
        with pytest.raises(httpx.HTTPError):  # the connection ends with the process
            call.result(EXIT_BOUND)
    assert "the REST requests in flight did not end within the grace period" in server.output


def test_a_second_signal_exits_at_once_with_the_incomplete_code(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "hang", HANGING_CALL_MODEL)
    with (
        running_server(
            [
                "--model_name=hang",
                f"--model_base_path={base}",
                "--model_platform=python",
                "--shutdown_grace_period_seconds=600",  # never reached: the second signal ends it
            ]
        ) as server,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        call = pool.submit(predict, server, "hang", EXIT_BOUND)
        wait_until(lambda: (base / "1" / "called").exists(), what="the model call began")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line("Received SIGTERM: stopping")
        assert sigterm_and_wait(server, signal.SIGINT) == EXIT_DRAIN_INCOMPLETE
        with pytest.raises(httpx.HTTPError):
            call.result(EXIT_BOUND)
    assert "Received SIGINT while stopping: exiting now" in server.output


def test_sigterm_while_a_reload_waits_exits_with_the_incomplete_code(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    quick = write_python_model(tmp_path / "quick", QUICK_MODEL)
    stuck = write_python_model(tmp_path / "stuck", HANGING_LOAD_MODEL)
    config_file = tmp_path / "models.config"
    config_file.write_text(model_config([("quick", quick, "python")]))
    reload_config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(
        model_config([("quick", quick, "python"), ("stuck", stuck, "python")]), reload_config
    )
    with (
        running_server(
            [
                f"--model_config_file={config_file}",
                GRACE,
                THREADS,
                "--allow_python_models_over_network",
            ]
        ) as server,
        grpc_stubs(server) as stubs,
    ):
        reload = stubs.models.HandleReloadConfigRequest.future(
            model_management_pb2.ReloadConfigRequest(config=reload_config), timeout=EXIT_BOUND
        )
        wait_until(lambda: (stuck / "1" / "loading").exists(), what="the reload's load")
        assert sigterm_and_wait(server) == EXIT_DRAIN_INCOMPLETE
        reload.exception(EXIT_BOUND)  # the call has ended (with the server, at the latest)
        assert reload.done()


def test_a_signal_while_a_load_at_start_never_returns_exits_with_the_incomplete_code(
    tmp_path: Path,
) -> None:
    base = write_python_model(tmp_path / "stuck", HANGING_LOAD_MODEL)
    with running_server(
        [
            "--model_name=stuck",
            f"--model_base_path={base}",
            "--model_platform=python",
            GRACE,
            THREADS,
        ],
        ready=False,
    ) as server:
        wait_until(lambda: (base / "1" / "loading").exists(), what="the load at start")
        # SIGINT: Python's own handler would raise KeyboardInterrupt and the interpreter's
        # exit would then wait for the load thread forever.
        assert sigterm_and_wait(server, signal.SIGINT) == EXIT_DRAIN_INCOMPLETE


def test_sigterm_under_ordinary_load_drains_and_exits_0(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", QUICK_MODEL)
    answered: list[int] = []
    refused: list[Exception] = []
    stop = threading.Event()

    def client(server: ServerProcess) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        f"{server.rest}/v1/models/m:predict", json={"instances": [1.0]}
                    )
                except httpx.TransportError as exc:  # the port has closed: no more requests
                    refused.append(exc)
                    return
                answered.append(response.status_code)

    with (
        running_server(
            [
                "--model_name=m",
                f"--model_base_path={base}",
                "--model_platform=python",
                GRACE,
                THREADS,
            ]
        ) as server,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        clients = [pool.submit(client, server) for _ in range(4)]
        wait_until(lambda: len(answered) >= 40, what="requests answered under load")
        code = sigterm_and_wait(server)
        stop.set()
        for future in clients:
            future.result(EXIT_BOUND)
    assert code == 0, server.output
    assert set(answered) == {200}
    assert "Server stopped" in server.output


def test_during_the_drain_readiness_says_not_ready_and_requests_are_still_served(
    tmp_path: Path,
) -> None:
    """--shutdown_drain_seconds: after SIGTERM, every readiness a balancer checks (REST v2,
    v2 gRPC's ServerReady, grpc.health) says not ready while REST and gRPC Predicts are still
    answered; a second signal ends the drain (600 s here, never waited out)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import predict_pb2

    from servo.apis.grpc.open_inference import SERVICE
    from servo.protos import open_inference_pb2

    base = write_python_model(tmp_path / "m", QUICK_MODEL)
    with (
        running_server(
            [
                "--model_name=m",
                f"--model_base_path={base}",
                "--model_platform=python",
                "--shutdown_drain_seconds=600",
                "--enable_grpc_healthcheck_service",
                THREADS,
            ]
        ) as server,
        grpc_stubs(server) as stubs,
    ):
        health = health_pb2_grpc.HealthStub(stubs.channel)
        server_ready = stubs.channel.unary_unary(
            f"/{SERVICE}/ServerReady",
            request_serializer=open_inference_pb2.ServerReadyRequest.SerializeToString,
            response_deserializer=open_inference_pb2.ServerReadyResponse.FromString,
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        tensor = request.inputs["inputs"]
        tensor.dtype = 1  # DT_FLOAT
        tensor.tensor_shape.dim.add(size=1)
        tensor.float_val.append(1.0)

        def ready() -> bool:
            return httpx.get(f"{server.rest}/v2/health/ready", timeout=30).status_code == 200

        assert ready()
        assert server_ready(open_inference_pb2.ServerReadyRequest(), timeout=30).ready
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line("Draining for 600s")
        answer = httpx.get(f"{server.rest}/v2/health/ready", timeout=30)
        assert answer.status_code == 400 and "stopping" in answer.json()["error"]
        assert not server_ready(open_inference_pb2.ServerReadyRequest(), timeout=30).ready
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert httpx.get(f"{server.rest}/v2/health/live", timeout=30).status_code == 200
        for _ in range(5):  # still served, on new connections too
            assert predict(server, "m").json() == {"predictions": [2.0]}
            reply = stubs.predictions.Predict(request, timeout=30)
            assert list(reply.outputs["outputs"].float_val) == [2.0]
        assert sigterm_and_wait(server, signal.SIGINT) == EXIT_DRAIN_INCOMPLETE
    assert "Received SIGINT while stopping: exiting now" in server.output


def test_a_drain_that_runs_out_goes_on_to_stop_and_exits_0(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", QUICK_MODEL)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--model_platform=python",
            "--shutdown_drain_seconds=0.5",
            THREADS,
        ]
    ) as server:
        assert predict(server, "m").json() == {"predictions": [2.0]}
        assert sigterm_and_wait(server) == 0, server.output
    lines = server.output
    assert lines.index("Draining for 0.5s") < lines.index("Server stopped")
