"""The server process: start-up failures and exit codes, config reloads, version polling,
failed versions while serving, timeouts, and a graceful stop under load."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import copy_tfs_model
from tests.support.models import write_python_model
from tests.support.server import ServerProcess, model_config, run_servo, running_server
from tests.support.testdata import TfsModels
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

VERSION_MODEL = """
import os
import numpy as np

class Model:
    def load(self, path):
        self.version = int(os.path.basename(path))
        if os.path.exists(os.path.join(path, "broken")):
            raise RuntimeError("version %d is broken" % self.version)

    def predict(self, inputs, signature_name):
        return inputs["inputs"] * 0 + self.version
"""


def versions(server: ServerProcess, name: str) -> dict[str, str]:
    answer = httpx.get(f"{server.rest}/v1/models/{name}", timeout=10)
    if answer.status_code != 200:
        return {}
    return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}


def predict(server: ServerProcess, name: str, value: float = 1.0) -> httpx.Response:
    return httpx.post(
        f"{server.rest}/v1/models/{name}:predict", json={"instances": [value]}, timeout=30
    )


# -- the command line ------------------------------------------------------------------------


def test_unknown_flag_and_bad_value_exit_2() -> None:
    result = run_servo("--no_such_flag=1")
    assert result.returncode == 2
    assert result.stderr == "servo serve: unknown flag --no_such_flag; see --help for the flags\n"
    result = run_servo("--port=eighty")
    assert result.returncode == 2
    assert result.stderr == "servo serve: argument --port: expected an integer, got 'eighty'\n"
    result = run_servo("--rest_api_port=70000")
    assert result.returncode == 2
    assert "argument --rest_api_port: a port is 0..65535, got 70000" in result.stderr
    result = run_servo("--enable_batching=maybe")
    assert result.returncode == 2
    assert "argument --enable_batching: expected true or false, got 'maybe'" in result.stderr


def test_version_and_help() -> None:
    result = run_servo("--version")
    assert result.returncode == 0 and result.stdout.startswith("servo ")
    result = run_servo("--help")
    assert result.returncode == 0 and "--model_config_file" in result.stdout


def test_bad_config_file_at_start_exits_1(tmp_path: Path, tfs_models: TfsModels) -> None:
    path = tfs_models.path("bad_model_config.txt")
    result = run_servo(f"--model_config_file={path}")
    assert result.returncode == 1
    # TFS's lines (every text-proto file's are in test_text_proto_errors.py)
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{path}'" in (
        result.stderr
    )
    assert '1:12: Message type "tensorflow.serving.ModelServerConfig" has no field named' in (
        result.stderr
    )  # the problem, and where
    missing = tmp_path / "nope.config"
    result = run_servo(f"--model_config_file={missing}")
    assert result.returncode == 1 and str(missing) in result.stderr
    unknown_platform = tmp_path / "platform.config"
    unknown_platform.write_text(model_config([("m", tmp_path, "caffe")]))
    result = run_servo(f"--model_config_file={unknown_platform}")
    assert result.returncode == 1 and "caffe" in result.stderr
    result = run_servo()
    assert result.returncode == 1 and "Nothing to serve" in result.stderr


def test_a_model_that_fails_at_start_exits_1_with_its_error(
    tmp_path: Path, tfs_models: TfsModels
) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        model_config(
            [
                ("half_plus_two", tfs_models.path("saved_model_half_plus_two_cpu"), "tensorflow"),
                ("bad", tfs_models.path("bad_half_plus_two"), "tensorflow"),
            ]
        )
    )
    result = run_servo(
        f"--model_config_file={config}",
        "--max_num_load_retries=0",
        "--rest_api_port=0",
        "--port=0",
    )
    assert result.returncode == 1
    assert "Failed to start server" in result.stderr
    assert "{name: bad version: 123}" in result.stderr
    assert "Could not find SavedModel .pb or .pbtxt" in result.stderr


def test_a_rest_port_in_use_exits_1(model_dirs: dict) -> None:
    flags = ["--model_name=two_io", f"--model_base_path={model_dirs['two_io']}"]
    with running_server(flags) as first:
        result = run_servo(
            *flags, f"--rest_api_port={first.rest_port}", "--port=0", "--bind_address=127.0.0.1"
        )
        assert result.returncode == 1
        assert (
            f"Failed to start HTTP Server at 127.0.0.1:{first.rest_port}: [Errno 98] Address "
            "already in use" in result.stderr
        )
        assert httpx.get(f"{first.rest}/v1/models/two_io").status_code == 200


def test_a_grpc_port_in_use_exits_1(model_dirs: dict) -> None:
    flags = ["--model_name=two_io", f"--model_base_path={model_dirs['two_io']}"]
    with running_server(flags) as first:
        result = run_servo(
            *flags, f"--port={first.grpc_port}", "--rest_api_port=0", "--bind_address=127.0.0.1"
        )
        assert result.returncode == 1
        assert f"Failed to start gRPC server at 127.0.0.1:{first.grpc_port}" in result.stderr
        assert httpx.get(f"{first.rest}/v1/models/two_io").status_code == 200


# -- reloads and polling ---------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(text)
    os.replace(staging, path)


def test_config_reload_adds_and_removes_models_and_rejects_a_bad_file(tmp_path: Path) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    b = write_python_model(tmp_path / "b", VERSION_MODEL, version=7)
    config = tmp_path / "models.config"
    write_atomically(config, model_config([("a", a, "python")]))
    with running_server(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    ) as server:
        assert predict(server, "a").json() == {"predictions": [1.0]}
        write_atomically(config, model_config([("b", b, "python")]))
        wait_until(lambda: versions(server, "b").get("7") == "AVAILABLE")
        wait_until(lambda: versions(server, "a").get("1") == "END")
        assert predict(server, "b").json() == {"predictions": [7.0]}
        assert predict(server, "a").status_code == 404
        # A bad file is rejected and the running config stays.
        write_atomically(config, "model_config_list { config { name: ")
        line = server.wait_for_line("Failed to read ModelServerConfig file")
        assert line.endswith(
            f"Failed to read ModelServerConfig file: Invalid protobuf file: '{config}'"
        )
        server.wait_for_line(f"Ignoring the new {config}; the running config stays")
        write_atomically(config, model_config([("b", b, "python"), ("b", a, "python")]))
        server.wait_for_line("Illegal to list model b multiple times")
        assert predict(server, "b").json() == {"predictions": [7.0]}
        assert server.stop() == 0


def test_new_and_failed_versions_found_by_polling(tmp_path: Path, tfs_models: TfsModels) -> None:
    base = tmp_path / "h2"
    shutil.copytree(tfs_models.path("saved_model_half_plus_two_cpu"), base)
    with running_server(
        [
            "--model_name=h2",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ]
    ) as server:
        assert served_version(server, "h2") == "123"
        # A new version, written aside and moved in whole.
        shutil.copytree(
            Path(tfs_models.path("saved_model_half_plus_two_2_versions")) / "00000124",
            tmp_path / "staging" / "00000124",
        )
        os.rename(tmp_path / "staging" / "00000124", base / "00000124")
        wait_until(lambda: versions(server, "h2") == {"124": "AVAILABLE", "123": "END"})
        assert served_version(server, "h2") == "124"
        # A broken version 125: it ends with its error; version 124 keeps serving.
        shutil.copytree(
            Path(tfs_models.path("bad_half_plus_two")) / "00000123",
            tmp_path / "staging" / "00000125",
        )
        os.rename(tmp_path / "staging" / "00000125", base / "00000125")
        wait_until(lambda: versions(server, "h2").get("125") == "END")
        status = httpx.get(f"{server.rest}/v1/models/h2/versions/125").json()
        [entry] = status["model_version_status"]
        assert entry["version"] == "125" and entry["state"] == "END"
        assert entry["status"]["error_code"] == "NOT_FOUND"
        assert "Could not find SavedModel .pb or .pbtxt" in entry["status"]["error_message"]
        assert versions(server, "h2")["124"] == "AVAILABLE"
        assert served_version(server, "h2") == "124"
        assert predict(server, "h2", 3.0).json() == {"predictions": [3.5]}


def served_version(server: ServerProcess, name: str) -> str:
    answer = httpx.get(f"{server.rest}/v1/models/{name}/metadata", timeout=10)
    return answer.json()["model_spec"]["version"]


def test_a_python_version_that_fails_to_load_ends_with_its_error(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ]
    ) as server:
        assert predict(server, "m").json() == {"predictions": [1.0]}
        staging = tmp_path / "staging"
        write_python_model(staging, VERSION_MODEL, version=2)
        (staging / "2" / "broken").write_text("")
        os.rename(staging / "2", base / "2")
        wait_until(lambda: versions(server, "m").get("2") == "END")
        status = httpx.get(f"{server.rest}/v1/models/m/versions/2").json()
        entry = status["model_version_status"][0]
        assert entry["status"]["error_code"] == "INTERNAL"
        assert "version 2 is broken" in entry["status"]["error_message"]
        assert predict(server, "m").json() == {"predictions": [1.0]}


def test_a_version_being_retried_shows_its_error_and_retry_count_until_it_loads(
    tmp_path: Path,
) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    from tests.support.server import grpc_stubs

    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=100",
            "--load_retry_interval_micros=200000",
        ]
    ) as server:
        assert predict(server, "m").json() == {"predictions": [1.0]}
        staging = tmp_path / "staging"
        write_python_model(staging, VERSION_MODEL, version=2)
        (staging / "2" / "broken").write_text("")
        os.rename(staging / "2", base / "2")

        def retrying() -> dict | None:
            answer = httpx.get(f"{server.rest}/v1/models/m/versions/2", timeout=10)
            if answer.status_code != 200:
                return None
            [entry] = answer.json()["model_version_status"]
            return entry if entry["status"]["error_code"] != "OK" else None

        entry = wait_until(retrying, what="version 2 LOADING with its error")
        assert entry["state"] == "LOADING"
        assert entry["status"]["error_code"] == "INTERNAL"
        message = entry["status"]["error_message"]
        assert "RuntimeError: version 2 is broken (retry " in message
        assert message.endswith(" of 100 in 0.2 s)")
        with grpc_stubs(server) as stubs:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "m"
            request.model_spec.version.value = 2
            [status] = stubs.models.GetModelStatus(request, timeout=10).model_version_status
        assert status.state == 20  # LOADING
        assert status.status.error_code == 13  # INTERNAL
        assert "version 2 is broken (retry " in status.status.error_message
        line = server.wait_for_line("Loading {name: m version: 2} failed (INTERNAL: ")
        assert line.endswith("RuntimeError: version 2 is broken); retry 1 of 100 in 0.2 s")
        assert predict(server, "m").json() == {"predictions": [1.0]}  # 1 serves meanwhile

        (base / "2" / "broken").unlink()  # the next retry loads it
        wait_until(lambda: versions(server, "m").get("2") == "AVAILABLE")
        [entry] = httpx.get(f"{server.rest}/v1/models/m/versions/2").json()["model_version_status"]
        assert entry["status"] == {"error_code": "OK", "error_message": ""}
        assert predict(server, "m").json() == {"predictions": [2.0]}


def test_single_model_flags_serve_a_tfs_model_and_no_cors_headers_without_the_flag(
    tmp_path: Path, tfs_models: TfsModels
) -> None:
    base = copy_tfs_model(tfs_models, "saved_model_half_plus_three", tmp_path)
    with running_server(["--model_name=h3", f"--model_base_path={base}"]) as server:
        answer = predict(server, "h3")
        assert answer.json() == {"predictions": [3.5]}
        assert "access-control-allow-origin" not in answer.headers
        # A preflight is answered all the same, as TFS does.
        preflight = httpx.options(
            f"{server.rest}/v1/models/h3:predict", headers={"Origin": "http://example.com"}
        )
        assert preflight.status_code == 200
        assert "access-control-allow-origin" not in preflight.headers
        # Without --monitoring_config_file there is no metrics page.
        answer = httpx.get(f"{server.rest}/monitoring/prometheus/metrics")
        assert answer.status_code == 404


# -- timeouts and stopping -------------------------------------------------------------------


def test_timeout_answers_504_and_the_server_keeps_serving(tmp_path: Path, model_dirs: dict) -> None:
    with running_server(
        [
            "--model_name=slow",
            f"--model_base_path={model_dirs['slow']}",
            "--rest_api_timeout_in_ms=300",
            "--python_model_isolation=process",
        ]
    ) as server:
        answer = predict(server, "slow", 2.0)
        assert answer.status_code == 504
        assert answer.json() == {"error": "Deadline Exceeded"}
        # The call was ended by stopping the model's worker process; the model answers again
        # once its new worker has loaded it.
        wait_until(lambda: predict(server, "slow", 0.0).status_code == 200)
        assert predict(server, "slow", 0.0).json() == {"predictions": [0.0]}


def test_sigterm_finishes_requests_in_flight_and_exits_0(model_dirs: dict) -> None:
    marker = model_dirs["slow"] / "1" / "started-1.5"
    marker.unlink(missing_ok=True)
    with (
        running_server(["--model_name=slow", f"--model_base_path={model_dirs['slow']}"]) as server,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(predict, server, "slow", 1.5)
        wait_until(marker.exists)  # the model is running the request
        server.process.send_signal(signal.SIGTERM)
        assert slow.result(30).json() == {"predictions": [1.5]}
        assert server.wait_exit(60) == 0
    assert "Server stopped" in server.output


def test_preloaded_platforms_are_imported_before_the_ports_open(tmp_path: Path) -> None:
    """A runtime imported into a running server holds the interpreter lock for its whole
    import (TensorFlow's: a 508 ms stall measured), stalling every request;
    --preload_platforms moves that to the start."""
    base = write_python_model(tmp_path / "m", VERSION_MODEL)
    with running_server(
        [f"--model_base_path={base}", "--model_name=m", "--preload_platforms=onnx"]
    ) as server:
        lines = server.output.splitlines()
        preloaded = next(i for i, line in enumerate(lines) if "Preloaded the onnx platform" in line)
        exported = next(i for i, line in enumerate(lines) if "Exporting HTTP/REST API" in line)
        assert preloaded < exported
    result = run_servo(f"--model_base_path={base}", "--preload_platforms=onnx,nothing")
    assert result.returncode == 2 and "expected one of" in result.stderr
