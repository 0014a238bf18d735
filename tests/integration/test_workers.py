"""`--workers 2` (issue 18, item 4): two server processes on the same ports under a supervisor.

Which worker answered a request is read from the access log, whose lines end with the
worker's pid (`worker=`) under --workers. Requests go on fresh connections (Linux spreads
connections, not requests, over the listeners), and are sent until each worker has answered
one: what is awaited is a state, never a time."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servo.protos import model_management_pb2
from tests.support.models import write_python_model
from tests.support.requests import predict_request, tfs
from tests.support.server import ServerProcess, alive, grpc_stubs, model_config, run_servo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

METRICS_PATH = "/monitoring/prometheus/metrics"
TIMES = """
class Model:
    def predict(self, inputs, signature_name):
        return {"outputs": inputs["inputs"] * %d}
"""
ACCESS = re.compile(
    r"protocol=(?P<protocol>\w+) .* api=(?P<api>\w+) model=(?P<model>\S+) "
    r"version=(?P<version>\S+) .* worker=(?P<worker>\d+)$"
)
STOP_BOUND = 60.0  # seconds: a bound on a process's exit, not a timing


def worker_pids(server: ServerProcess) -> list[int]:
    pids = [
        int(m.group(1))
        for line in server.lines
        if (m := re.search(r"Worker \d of \d+ started: pid (\d+)", line))
    ]
    assert len(pids) == 2, server.output
    return pids


def answered(server: ServerProcess, **fields: str) -> set[int]:
    """The pids of the workers with an access line whose fields are `fields`."""
    pids = set()
    for line in list(server.lines):
        m = ACCESS.search(line)
        if m and all(m.group(k) == v for k, v in fields.items()):
            pids.add(int(m.group("worker")))
    return pids


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_python_model(tmp_path / "m", TIMES % 2)


@pytest.fixture
def server(tmp_path: Path, model: Path) -> Iterator[ServerProcess]:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    config = tmp_path / "models.config"
    config.write_text(model_config([("m", model, "python")]))
    process = ServerProcess(
        [
            "--workers=2",
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--file_system_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring}",
            "--python_model_isolation=thread",
            "--access_log",
        ]
    )
    try:
        process.wait_ready()
        yield process
    finally:
        pids = worker_pids(process) if process.lines else []
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
            try:
                process.process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.process.wait()
        # The kernel's SIGTERM (PR_SET_PDEATHSIG) reaches any worker the supervisor left.
        wait_until(lambda: not any(alive(pid) for pid in pids), what="no worker left")


def rest_predict(server: ServerProcess, x: float = 1.0) -> list[float]:
    answer = httpx.post(  # a connection of its own
        f"{server.rest}/v1/models/m:predict", json={"instances": [x]}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    predictions: list[float] = answer.json()["predictions"]
    return predictions


def grpc_predict(server: ServerProcess) -> None:
    # A subchannel pool of the channel's own: a new connection, not the process's shared one.
    with grpc_stubs(server, [("grpc.use_local_subchannel_pool", 1)]) as stubs:
        answer = stubs.predictions.Predict(tfs(predict_request("m", [1.0], "inputs")), timeout=30)
        assert list(answer.outputs["outputs"].float_val) == [2.0]


def request_count(server: ServerProcess) -> float:
    page = httpx.get(f"{server.rest}{METRICS_PATH}", timeout=30)
    assert page.status_code == 200, page.text
    return sum(
        s.value
        for f in text_string_to_metric_families(page.text)
        for s in f.samples
        if s.name == ":tensorflow:serving:request_count_total" and s.labels["model_name"] == "m"
    )


def test_both_workers_serve_rest_and_grpc_and_the_page_is_their_sum(
    server: ServerProcess,
) -> None:
    pids = set(worker_pids(server))
    assert all(alive(pid) for pid in pids)
    sent = 0

    def rest_until_both() -> bool:
        nonlocal sent
        assert rest_predict(server) == [2.0]
        sent += 1
        return answered(server, protocol="rest", api="predict") == pids

    wait_until(rest_until_both, what="both workers answering REST predicts")

    def grpc_until_both() -> bool:
        nonlocal sent
        grpc_predict(server)
        sent += 1
        return answered(server, protocol="grpc", api="predict") == pids

    wait_until(grpc_until_both, what="both workers answering gRPC predicts")
    # Every scrape, whichever worker answers it, counts every request of both workers.
    counts = []

    def scrape_until_both() -> bool:
        counts.append(request_count(server))
        return answered(server, api="metrics") == pids

    wait_until(scrape_until_both, what="both workers answering the metrics page")
    assert counts and set(counts) == {sent}, (counts, sent)


def test_a_reload_over_the_network_is_refused(server: ServerProcess, model: Path) -> None:
    config = model_management_pb2.ReloadConfigRequest()
    entry = config.config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = "m", str(model), "python"
    with grpc_stubs(server) as stubs, pytest.raises(grpc.RpcError) as err:
        stubs.models.HandleReloadConfigRequest(tfs(config), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not supported with --workers=2" in (err.value.details() or "")
    # The v2 repository's changes are config changes too.
    answer = httpx.post(f"{server.rest}/v2/repository/models/m/unload", timeout=30)
    assert answer.status_code == 400 and "--workers=2" in answer.text, answer.text
    assert rest_predict(server) == [2.0]


def test_a_new_version_reaches_every_worker(server: ServerProcess, model: Path) -> None:
    pids = set(worker_pids(server))
    write_python_model(model, TIMES % 3, version=2)

    def both_serve_version_2() -> bool:
        rest_predict(server)
        return answered(server, protocol="rest", api="predict", version="2") == pids

    wait_until(both_serve_version_2, what="both workers serving version 2")
    assert rest_predict(server) == [3.0]


def test_sigterm_drains_every_worker_and_leaves_none(server: ServerProcess) -> None:
    pids = worker_pids(server)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit(STOP_BOUND) == 0, server.output
    assert not any(alive(pid) for pid in pids)
    for index, pid in enumerate(pids):
        assert f"Worker {index} (pid {pid}) stopped" in server.output
    assert server.output.count("Server stopped") == 2  # each worker's own stop, drained
    assert "Every worker has stopped; exiting with code 0" in server.output


def test_a_killed_worker_stops_every_worker_with_code_1(server: ServerProcess) -> None:
    killed, other = worker_pids(server)
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    assert server.wait_exit(STOP_BOUND) == 1, server.output
    assert not alive(other)
    assert (
        f"Worker 0 (pid {killed}) killed by SIGKILL while serving; stopping every worker "
        "(nothing is restarted)"
    ) in server.output
    assert f"Worker 1 (pid {other}) stopped" in server.output


def test_workers_end_when_the_supervisor_is_killed(server: ServerProcess) -> None:
    pids = worker_pids(server)
    server.process.kill()
    server.wait_exit(STOP_BOUND)
    wait_until(lambda: not any(alive(pid) for pid in pids), what="the workers gone")


def test_a_busy_port_fails_the_start_before_any_worker(model: Path) -> None:
    first = ServerProcess(
        [f"--model_base_path={model}", "--model_name=m", "--python_model_isolation=thread"]
    )
    try:
        first.wait_ready()
        ports = (first.grpc_port, first.rest_port)
        second = ServerProcess(
            [
                f"--port={ports[0]}",
                f"--rest_api_port={ports[1]}",
                "--bind_address=127.0.0.1",
                "--workers=2",
                f"--model_base_path={model}",
                "--model_name=m",
            ],
            command=[sys.executable, "-m", "servo", "serve"],
            ports=ports,
        )
        assert second.wait_exit(STOP_BOUND) == 1, second.output
        assert f"Failed to start gRPC Server at 127.0.0.1:{ports[0]}" in second.output
        assert "started: pid" not in second.output
    finally:
        first.stop()


def test_a_grpc_unix_socket_is_refused_with_workers(model: Path, tmp_path: Path) -> None:
    done = run_servo(
        "--workers=2",
        f"--grpc_socket_path={tmp_path / 'grpc.sock'}",
        f"--model_base_path={model}",
        "--model_name=m",
    )
    assert done.returncode == 1, done.stderr
    assert "--grpc_socket_path cannot be used with --workers=2" in done.stderr
    assert "started: pid" not in done.stderr


def test_each_worker_has_a_model_cache_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from servo.apis import access_log
    from servo.cli import workers
    from servo.cli.flags import build_parser
    from servo.cli.model_server import ModelServer

    # A worker's server sets the access log's pid: undone after the test.
    monkeypatch.setattr(access_log, "WORKER_PID", None)
    args = build_parser().parse_flags([f"--model_cache_dir={tmp_path / 'cache'}"])
    assert ModelServer(args).cache_dir() == str(tmp_path / "cache")
    for name, value in {
        workers.INDEX_ENV: "1",
        workers.COUNT_ENV: "2",
        workers.DIR_ENV: str(tmp_path),
        workers.READY_FD_ENV: "-1",
    }.items():
        monkeypatch.setenv(name, value)
    assert ModelServer(args).cache_dir() == str(tmp_path / "cache-worker-1")
