"""Python models in worker processes, in a real server (--python_model_isolation=process): a
crash of a model's code, a hung model past its deadlines, a CPU-heavy load, and the workers
ending with the server. The worker's own tests: tests/platforms/test_python_worker.py.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.models import write_python_model
from tests.support.server import ServerProcess, alive, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Answers its worker's PID; 1 exits the worker, 2 segfaults it, 3 hangs it (until killed).
CRASHY_MODEL = """
import ctypes, os, threading
import numpy as np

class Model:
    def predict(self, inputs, signature_name):
        what = float(inputs["inputs"].ravel()[0])
        if what == 1:
            os._exit(3)
        if what == 2:
            ctypes.string_at(0)
        if what == 3:
            threading.Event().wait()
        return np.array([os.getpid()], np.float32)
"""

# Its load spins in pure Python, holding its interpreter's lock, until the file "go" appears
# beside the version directories (when its version directory holds "spin"); it writes its PID
# to "loading" first.
BUSY_LOAD_MODEL = """
import os
import numpy as np

class Model:
    def load(self, path):
        base = os.path.dirname(path)
        with open(os.path.join(base, "loading.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.path.join(base, "loading.tmp"), os.path.join(base, "loading"))
        while os.path.exists(os.path.join(path, "spin")) and not os.path.exists(
            os.path.join(base, "go")
        ):
            sum(range(1000))
        self.pid = os.getpid()

    def predict(self, inputs, signature_name):
        return np.array([self.pid], np.float32)
"""


def predict(server: ServerProcess, name: str, value: float = 0.0) -> httpx.Response:
    return httpx.post(
        f"{server.rest}/v1/models/{name}:predict", json={"instances": [value]}, timeout=60
    )


def pid_of(server: ServerProcess, name: str) -> int:
    answer = predict(server, name)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["predictions"][0])


def versions(server: ServerProcess, name: str) -> dict[str, str]:
    answer = httpx.get(f"{server.rest}/v1/models/{name}", timeout=10)
    assert answer.status_code == 200, answer.text
    return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}


def serve(tmp_path: Path, models: dict[str, str], *flags: str) -> tuple[list[str], dict]:
    bases = {name: write_python_model(tmp_path / name, source) for name, source in models.items()}
    config = tmp_path / "models.config"
    config.write_text(model_config([(name, base, "python") for name, base in bases.items()]))
    return [f"--model_config_file={config}", "--python_model_isolation=process", *flags], bases


def test_a_crashing_model_fails_its_calls_and_the_server_keeps_serving(tmp_path: Path) -> None:
    args, _ = serve(tmp_path, {"crashy": CRASHY_MODEL, "steady": CRASHY_MODEL})
    with running_server(args) as server:
        steady = pid_of(server, "steady")
        workers = {steady}
        for how, ended in ((1.0, "exit code 3"), (2.0, "SIGSEGV")):
            old = pid_of(server, "crashy")
            assert old not in (server.process.pid, steady)
            answer = predict(server, "crashy", how)
            assert answer.status_code == 500
            error = answer.json()["error"]
            assert "Python model crashy" in error and f"worker process (pid {old}) died" in error
            assert ended in error
            assert server.process.poll() is None
            assert pid_of(server, "steady") == steady  # the other model, its worker untouched
            new = pid_of(server, "crashy")  # a new worker, the version loaded again
            assert new != old and not alive(old)
            workers.add(new)
        assert server.stop() == 0
    for pid in workers:
        wait_until(lambda pid=pid: not alive(pid), what=f"worker {pid} ends with the server")


def test_a_hung_models_calls_are_cancelled_and_its_old_version_unloads(tmp_path: Path) -> None:
    args, bases = serve(
        tmp_path,
        {"hung": CRASHY_MODEL, "steady": CRASHY_MODEL},
        "--rest_api_timeout_in_ms=1000",
        "--file_system_poll_wait_seconds=1",
    )
    with running_server(args) as server, concurrent.futures.ThreadPoolExecutor(12) as pool:
        first = pid_of(server, "hung")
        # More hung calls at once than the server's pool has threads (4 x CPUs by default).
        answers = list(pool.map(lambda _: predict(server, "hung", 3.0), range(12)))
        assert [a.status_code for a in answers] == [504] * 12
        assert not alive(first)
        assert pid_of(server, "steady") != server.process.pid
        # A new version: the old one's unload completes, and the new one answers.
        shutil.copytree(bases["hung"] / "1", bases["hung"] / "2")
        wait_until(
            lambda: versions(server, "hung") == {"2": "AVAILABLE", "1": "END"},
            what="version 2 AVAILABLE and version 1 unloaded",
        )
        assert predict(server, "hung").status_code == 200
        assert "Traceback" not in server.output  # a cancelled call is no error of the server's
        assert server.stop() == 0


# CRASHY_MODEL's hang, with a batch dimension, so that its calls are batched.
BATCHED_MODEL = """
import os, threading
import numpy as np

class Model:
    signatures = {
        "serving_default": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"pid": {"dtype": "float32", "shape": [-1]}},
        },
    }

    def predict(self, inputs, signature_name):
        if float(inputs["x"][0]) == 3:
            threading.Event().wait()
        return {"pid": np.full(len(inputs["x"]), os.getpid(), np.float32)}
"""


def test_a_hung_batch_ends_with_its_worker_at_its_deadline(tmp_path: Path) -> None:
    """A batched call carries its deadline into its batch: the hung batch's worker is killed
    then, and the next batch runs on a new one (without it, the batch thread waited forever
    and every later call of the model queued behind it)."""
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n")
    args, _ = serve(
        tmp_path,
        {"batched": BATCHED_MODEL},
        "--rest_api_timeout_in_ms=1000",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
    )
    with running_server(args) as server:
        first = pid_of(server, "batched")
        answer = predict(server, "batched", 3.0)
        assert answer.status_code == 504, answer.text
        wait_until(lambda: not alive(first), what="the hung batch's worker is killed")
        second = pid_of(server, "batched")
        assert second != first
        assert server.stop() == 0


def test_a_cpu_heavy_load_runs_in_its_worker_while_the_server_answers(tmp_path: Path) -> None:
    args, bases = serve(
        tmp_path,
        {"busy": BUSY_LOAD_MODEL, "steady": CRASHY_MODEL},
        "--file_system_poll_wait_seconds=1",
    )
    with running_server(args) as server:
        (bases["busy"] / "loading").unlink()
        version = bases["busy"] / "2"
        shutil.copytree(bases["busy"] / "1", version)
        (version / "spin").touch()
        loading = bases["busy"] / "loading"
        wait_until(loading.exists, what="version 2's load started")
        loader = int(loading.read_text())
        assert loader != server.process.pid  # the load holds another interpreter's lock
        assert alive(loader)
        for _ in range(20):  # the server answers while the load spins
            assert predict(server, "steady").status_code == 200
        assert versions(server, "busy")["2"] == "LOADING"
        (bases["busy"] / "go").touch()
        wait_until(
            lambda: versions(server, "busy") == {"2": "AVAILABLE", "1": "END"},
            what="version 2 loads",
        )
        assert pid_of(server, "busy") == loader


def test_workers_end_when_the_server_is_killed(tmp_path: Path) -> None:
    args, _ = serve(tmp_path, {"crashy": CRASHY_MODEL, "steady": CRASHY_MODEL})
    with running_server(args) as server:
        workers = [pid_of(server, "crashy"), pid_of(server, "steady")]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            hung = pool.submit(predict, server, "crashy", 3.0)  # a call that never ends
            server.process.send_signal(signal.SIGKILL)
            server.wait_exit()
            with pytest.raises(httpx.HTTPError):
                hung.result()
        for pid in workers:
            wait_until(lambda pid=pid: not alive(pid), what=f"worker {pid} ends with the server")
    assert os.getpid() not in workers
