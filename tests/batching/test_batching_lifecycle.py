"""Batching across a version swap: every request is answered, by the version it was sent to,
and the old version's queue goes away with it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from servo.batching.batching_servable import BatchingServable, BatchingWrapper
from servo.batching.parameters import BatchingConfig, QueueOptions
from servo.core.aspired_versions_manager import AspiredVersionsManagerOptions
from servo.core.servable_id import ServableId
from servo.core.servable_state import ManagerState
from servo.core.status import ServoError
from servo.server import config as configs
from servo.server.server_core import ServerCore, ServerCoreOptions
from tests.support.lifecycle import WAIT

MODEL = """
import os
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"x": {"dtype": "float32", "shape": [-1]},
                    "version": {"dtype": "int64", "shape": [-1]}},
    }}

    def load(self, path):
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        x = inputs["x"]
        return {"x": x, "version": np.full(x.shape, self.version)}
"""


def write_version(base: Path, version: int) -> None:
    staging = base.parent / f".v{version}"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(MODEL)
    os.rename(staging, base / str(version))


def test_swap_under_batched_load_loses_nothing(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    write_version(base, 1)
    wrapper = BatchingWrapper(BatchingConfig(QueueOptions(max_batch_size=32), 1))
    core = ServerCore(
        ServerCoreOptions(
            file_system_poll_wait_seconds=-1,
            manager=AspiredVersionsManagerOptions(max_num_load_retries=0),
            servable_wrappers=(wrapper,),
            model_wait_timeout=WAIT,
        )
    )
    errors: list[BaseException] = []
    answered = {1: 0, 2: 0}
    stop = threading.Event()
    lock = threading.Condition()

    def client(seed: int) -> None:
        rows = 1 + seed % 3
        value = 0.0
        while not stop.is_set():
            value += 1
            x = np.full(rows, value + seed * 1e6, np.float32)
            try:
                with core.servable_handle("m") as handle:
                    assert isinstance(handle.servable, BatchingServable)
                    out = handle.servable.run(
                        handle.servable.signatures["serving_default"], {"x": x}
                    )
                np.testing.assert_array_equal(out["x"], x)  # its own rows, nobody else's
                assert set(out["version"].tolist()) == {handle.id.version}
                with lock:
                    answered[handle.id.version] += 1
                    lock.notify_all()
            except (ServoError, AssertionError) as exc:
                errors.append(exc)

    try:
        core.reload_config(configs.single_model_config("m", str(base), "python"))
        clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for c in clients:
            c.start()
        write_version(base, 2)
        core._source.poll_once()  # the test polls by hand (negative poll wait)
        assert core.monitor.wait_for_state(ServableId("m", 2), ManagerState.AVAILABLE, WAIT) == (
            ManagerState.AVAILABLE
        )
        assert core.monitor.wait_for_state(ServableId("m", 1), ManagerState.END, WAIT) == (
            ManagerState.END
        )
        with lock:
            assert lock.wait_for(lambda: answered[2] > 10, WAIT)
        stop.set()
        for c in clients:
            c.join()
        assert errors == []
        assert answered[1] > 0 and answered[2] > 0
        # Only version 2's queue is left on the shared scheduler.
        assert [q.name for q in wrapper.scheduler._queues] == ["m/serving_default"]
    finally:
        stop.set()
        core.stop()
        wrapper.stop()
