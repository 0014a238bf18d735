"""A Python model in a worker process of its own (servo.platforms.python_worker): start, calls
across shared memory, crashes, restarts, deadlines, unload, shutdown. The integration test
with a real server is tests/integration/test_python_worker_server.py."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servo.cli.flags import build_parser
from servo.core.status import Code, ServoError
from servo.platforms import python as python_platform
from servo.platforms import python_worker
from servo.platforms.options import PlatformOptions
from servo.platforms.python_worker import WorkerServable
from servo.platforms.servable import within_deadline
from tests.support.models import write_python_model
from tests.support.server import alive
from tests.support.waiting import wait_until

# "crash" does what its input says: exit, segfault, raise MemoryError, hang (until killed),
# or answer its PID.
WORKER_MODEL = """
import ctypes, os, threading
import numpy as np
import worker_helper  # a module next to model.py: imported by the worker only

class Model:
    signatures = {
        "serving_default": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"y": {"dtype": "float32", "shape": [-1]},
                        "pid": {"dtype": "int64", "shape": []}},
        },
        "words": {
            "inputs": {"w": {"dtype": "string", "shape": [-1]}},
            "outputs": {"w": {"dtype": "string", "shape": [-1]}},
        },
        "crash": {
            "inputs": {"how": {"dtype": "string", "shape": []}},
            "outputs": {"pid": {"dtype": "int64", "shape": []}},
        },
    }

    def load(self, path):
        self.path = path
        if os.path.exists(os.path.join(path, "die_in_load")):
            os._exit(4)

    def predict(self, inputs, signature_name):
        if signature_name == "words":
            if inputs["w"][0] == b"unpicklable":
                return {"w": np.array([threading.Lock()], dtype=object)}
            return {"w": inputs["w"][::-1]}
        if signature_name == "crash":
            how = inputs["how"].item()
            if how == b"exit":
                os._exit(3)
            if how == b"segfault":
                ctypes.string_at(0)
            if how == b"memory":
                raise MemoryError("no room for it")
            if how == b"hang":
                threading.Event().wait()
            return {"pid": np.int64(os.getpid())}
        return {"y": inputs["x"] * worker_helper.FACTOR, "pid": np.int64(os.getpid())}

    def unload(self):
        with open(os.path.join(self.path, "unloaded"), "w") as f:
            f.write(str(os.getpid()))
"""

PROCESS = PlatformOptions(extra={python_platform.ISOLATION_KEY: "process"}, model_name="m")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    base = write_python_model(tmp_path / "m", WORKER_MODEL)
    (base / "1" / "worker_helper.py").write_text("FACTOR = 2\n")
    return base / "1"


@pytest.fixture
def servable(model_dir: Path) -> Iterator[WorkerServable]:
    loaded = python_platform.load(str(model_dir), PROCESS)
    assert isinstance(loaded, WorkerServable)
    yield loaded
    loaded.close()


def predict(servable: WorkerServable, x: np.ndarray) -> dict[str, np.ndarray]:
    return servable.run(servable.signatures["serving_default"], {"x": x})


def crash(servable: WorkerServable, how: bytes) -> int:
    how_array = np.array(how, dtype=object)
    return int(servable.run(servable.signatures["crash"], {"how": how_array})["pid"])


def test_the_model_loads_and_runs_in_a_process_of_its_own(servable: WorkerServable) -> None:
    assert set(servable.signatures) == {"serving_default", "words", "crash"}
    answer = predict(servable, np.array([1.0, 2.5], np.float32))
    assert answer["y"].tolist() == [2.0, 5.0]
    assert int(answer["pid"]) == servable.worker.pid != os.getpid()
    # The server never imported the model's code, nor its helper.
    assert "worker_helper" not in sys.modules
    files = [getattr(module, "__file__", None) or "" for module in list(sys.modules.values())]
    assert not [file for file in files if file.startswith(str(servable.path))]


def test_arrays_cross_both_ways_small_and_large(servable: WorkerServable) -> None:
    for size in (3, 1 << 20, 5, 3 << 20, 0):  # the segments grow, and stay grown
        x = np.arange(size, dtype=np.float32)
        assert np.array_equal(predict(servable, x)["y"], x * 2)
    words = np.array([b"a", b"bc", b""], dtype=object)
    answer = servable.run(servable.signatures["words"], {"w": words})
    assert answer["w"].tolist() == [b"", b"bc", b"a"]
    strided = np.arange(10, dtype=np.float32)[::2]  # not contiguous
    assert predict(servable, strided)["y"].tolist() == (strided * 2).tolist()


def test_bad_inputs_and_model_errors_fail_the_call_only(servable: WorkerServable) -> None:
    with pytest.raises(ServoError) as err:
        predict(servable, np.array([1], np.int64))
    assert err.value.code == Code.INVALID_ARGUMENT
    pid = servable.worker.pid
    with pytest.raises(ServoError) as err:
        crash(servable, b"memory")
    assert err.value.code == Code.INTERNAL
    assert "MemoryError" in err.value.message and "no room for it" in err.value.message
    assert crash(servable, b"") == pid  # the same worker answers


def test_an_output_that_cannot_cross_fails_its_call_and_the_worker_goes_on(
    servable: WorkerServable,
) -> None:
    pid = int(predict(servable, np.ones(2, np.float32))["pid"])
    with pytest.raises(ServoError) as error:
        servable.run(servable.signatures["words"], {"w": np.array([b"unpicklable"], object)})
    assert error.value.code != Code.OK and "lock" in error.value.message.lower()
    answer = predict(servable, np.ones(2, np.float32))
    assert int(answer["pid"]) == pid and answer["y"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize(("how", "ended"), [(b"exit", "exit code 3"), (b"segfault", "SIGSEGV")])
def test_a_crash_fails_the_call_and_a_new_worker_answers(
    servable: WorkerServable, how: bytes, ended: str
) -> None:
    old = crash(servable, b"")
    with pytest.raises(ServoError) as err:
        crash(servable, how)
    assert err.value.code == Code.INTERNAL
    message = err.value.message
    assert "Python model m" in message and f"worker process (pid {old}) died" in message
    assert ended in message and "a new worker is started" in message
    assert not alive(old)
    new = crash(servable, b"")
    assert new != old and alive(new)
    assert servable.worker.starts == 2


def test_a_call_past_its_deadline_ends_with_its_worker(
    servable: WorkerServable, model_dir: Path
) -> None:
    old = crash(servable, b"")
    with pytest.raises(ServoError) as err:
        within_deadline(time.monotonic() + 0.2, lambda: crash(servable, b"hang"))
    assert err.value.code == Code.DEADLINE_EXCEEDED
    assert not alive(old)
    new = within_deadline(time.monotonic() + 60, lambda: crash(servable, b""))
    assert new != old
    servable.close()  # the version unloads: its worker's unload() ran, and it ended
    assert (model_dir / "unloaded").read_text() == str(new)
    wait_until(lambda: not alive(new), what="the worker ends after unload")


def test_unload_runs_the_models_unload_and_ends_the_worker(
    servable: WorkerServable, model_dir: Path
) -> None:
    pid = crash(servable, b"")
    servable.close()
    servable.close()  # a second close does nothing
    assert (model_dir / "unloaded").read_text() == str(pid)
    wait_until(lambda: not alive(pid), what="the worker ends after unload")
    with pytest.raises(ServoError) as err:
        crash(servable, b"")
    assert err.value.code == Code.FAILED_PRECONDITION


def test_a_load_whose_worker_dies_fails_with_a_clear_error(model_dir: Path) -> None:
    (model_dir / "die_in_load").touch()
    with pytest.raises(ServoError) as err:
        python_platform.load(str(model_dir), PROCESS)
    assert err.value.code == Code.INTERNAL
    assert "Python model m" in err.value.message and "died during load" in err.value.message
    assert "exit code 4" in err.value.message


def test_a_load_error_in_the_worker_is_the_platforms_error(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "bad", "raise ImportError('no such thing')\n")
    with pytest.raises(ServoError) as err:
        python_platform.load(str(base / "1"), PROCESS)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "failed to import" in err.value.message and "no such thing" in err.value.message
    with pytest.raises(ServoError) as err:
        python_platform.load(str(tmp_path / "nothing"), PROCESS)
    assert err.value.code == Code.NOT_FOUND


def test_shutdown_ends_a_hung_call_and_every_worker(model_dir: Path) -> None:
    loaded = python_platform.load(str(model_dir), PROCESS)
    assert isinstance(loaded, WorkerServable)
    idle = python_platform.load(str(model_dir), PROCESS)
    assert isinstance(idle, WorkerServable)
    hung_pid, idle_pid = loaded.worker.pid, idle.worker.pid
    assert hung_pid is not None and idle_pid is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hung = pool.submit(crash, loaded, b"hang")  # no deadline: it never ends by itself
        wait_until(lambda: loaded.worker.busy, what="the call runs")
        assert python_worker.stop_busy_workers() == 1
        with pytest.raises(ServoError) as err:
            hung.result(timeout=60)
    assert err.value.code == Code.INTERNAL
    assert alive(idle_pid)  # an idle worker is left to unload its model
    python_worker.stop_all_workers()
    wait_until(lambda: not alive(hung_pid) and not alive(idle_pid), what="every worker ends")
    loaded.close()
    idle.close()


def test_a_kill_while_a_worker_starts_ends_the_start(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill() that comes after a restart began but before it knew its process (the window
    that left a start waiting for a load forever, and shutdown's stop behind it): the start
    kills its new process and fails, and stop() returns."""
    worker = python_worker.ModelWorker(str(model_dir), "m")
    spawn = worker._spawn
    started: list[int] = []

    def killed_as_it_starts() -> tuple[Any, Any, Any]:
        spawned = spawn()
        started.append(spawned[0].pid)
        worker.kill()  # the process is not the worker's yet: kill() cannot see it
        return spawned

    monkeypatch.setattr(worker, "_spawn", killed_as_it_starts)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        start = pool.submit(worker.start)
        with pytest.raises(ServoError) as err:
            start.result(timeout=60)
    assert err.value.code == Code.FAILED_PRECONDITION  # "... is unloaded"
    [pid] = started
    wait_until(lambda: not alive(pid), what="the new worker ends")
    worker.stop(wait=5.0)
    assert worker.pid is None


def test_stop_waits_a_bounded_time_for_a_busy_worker(model_dir: Path) -> None:
    loaded = python_platform.load(str(model_dir), PROCESS)
    assert isinstance(loaded, WorkerServable)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hung = pool.submit(crash, loaded, b"hang")
        wait_until(lambda: loaded.worker.busy, what="the call runs")
        loaded.worker.stop(wait=0.1)  # the call holds the worker: stop leaves it at once
        assert loaded.worker.busy
        loaded.worker.kill()
        with pytest.raises(ServoError):
            hung.result(timeout=60)
    loaded.close()


def test_isolation_is_set_per_model(model_dir: Path) -> None:
    args = build_parser().parse_args(["--python_model_isolation=process,fast=thread"])
    setting = args.python_model_isolation
    fast = PlatformOptions(extra={python_platform.ISOLATION_KEY: setting}, model_name="fast")
    assert python_platform.isolation(fast) == "thread"
    in_server = python_platform.load(str(model_dir), fast)
    try:
        assert not isinstance(in_server, WorkerServable)
        answer = in_server.run(in_server.signatures["crash"], {"how": np.array(b"", object)})
        assert int(answer["pid"]) == os.getpid()
    finally:
        in_server.close()
    other = PlatformOptions(extra={python_platform.ISOLATION_KEY: setting}, model_name="other")
    assert python_platform.isolation(other) == "process"
    assert build_parser().parse_args([]).python_model_isolation.get("any") == "thread"
    assert python_platform.isolation(PlatformOptions()) == "thread"  # a library caller's load
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--python_model_isolation=fork"])
