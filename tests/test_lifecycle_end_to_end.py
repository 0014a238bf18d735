"""The seed's worked example, end to end: a file-system source polling a temporary directory,
the router making python-platform loaders, and the manager swapping versions under load."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from servo.core.aspired_version_policy import ResourcePreservingPolicy
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState
from servo.core.source import connect_source_to_target
from servo.core.status import ServoError
from servo.platforms.router import PlatformRouter
from servo.sources.file_system import (
    FileSystemStoragePathSource,
    FileSystemStoragePathSourceConfig,
    ServableToMonitor,
)
from tests.support.lifecycle import running_manager, states_of, wait_state

MODEL = textwrap.dedent(
    """
    import os
    import numpy as np

    class Model:
        signatures = {"serving_default": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"version": {"dtype": "int64", "shape": [-1]}},
        }}

        def load(self, path):
            self.version = int(os.path.basename(path))

        def predict(self, inputs, signature_name):
            return {"version": np.full(inputs["x"].shape, self.version)}
    """
)


def write_version(base: Path, version: int) -> None:
    staging = base.parent / f".staging-{version}"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(MODEL)
    os.rename(staging, base / str(version))  # appears whole, as model exporters should do


def ask(manager, request: ServableRequest) -> int:
    with manager.get_servable_handle(request) as handle:
        servable = handle.servable
        signature = servable.signatures["serving_default"]
        out = servable.run(signature, {"x": np.zeros(2, np.float32)})
        return int(out["version"][0])


@contextmanager
def serving(base: Path, poll_wait: float, **manager_options) -> Iterator[tuple]:
    """A file-system source on `base` (model "m", python platform) feeding a running manager;
    yields (manager, monitor, source) and stops them all."""
    source = FileSystemStoragePathSource(
        FileSystemStoragePathSourceConfig(
            (ServableToMonitor("m", str(base)),), file_system_poll_wait_seconds=poll_wait
        )
    )
    router = PlatformRouter({"m": "python"})
    with running_manager(**manager_options) as (manager, monitor):
        connect_source_to_target(router, manager)
        connect_source_to_target(source, router)
        try:
            yield manager, monitor, source
        finally:
            source.stop()


def test_worked_example_versions_swap_without_a_gap(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    with serving(base, 0.05) as (manager, monitor, _):
        write_version(base, 1)
        wait_state(monitor, ServableId("m", 1), ManagerState.AVAILABLE)
        assert ask(manager, ServableRequest.latest("m")) == 1

        misses: list[ServoError] = []
        answers: list[int] = []
        stop = threading.Event()
        saw_two = threading.Event()

        def tight_loop() -> None:
            while not stop.is_set():
                try:
                    answers.append(ask(manager, ServableRequest.latest("m")))
                except ServoError as exc:
                    misses.append(exc)
                if answers and answers[-1] == 2:
                    saw_two.set()

        client = threading.Thread(target=tight_loop)
        client.start()
        try:
            write_version(base, 2)
            wait_state(monitor, ServableId("m", 2), ManagerState.AVAILABLE)
            wait_state(monitor, ServableId("m", 1), ManagerState.END)
            assert saw_two.wait(30), "the client never got version 2"
        finally:
            stop.set()
            client.join()
        assert misses == []
        assert set(answers) <= {1, 2} and answers[-1] == 2
        assert answers == sorted(answers)  # once version 2 answers, version 1 never does
        assert ask(manager, ServableRequest.latest("m")) == 2
        assert states_of(monitor, ServableId("m", 1))[-3:] == [
            ManagerState.AVAILABLE,
            ManagerState.UNLOADING,
            ManagerState.END,
        ]


def test_worked_example_with_the_resource_preserving_policy(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    with serving(base, 0.05, aspired_version_policy=ResourcePreservingPolicy()) as (
        manager,
        monitor,
        _,
    ):
        write_version(base, 1)
        wait_state(monitor, ServableId("m", 1), ManagerState.AVAILABLE)
        assert ask(manager, ServableRequest.latest("m")) == 1
        write_version(base, 2)
        wait_state(monitor, ServableId("m", 2), ManagerState.AVAILABLE)
        assert ask(manager, ServableRequest.latest("m")) == 2
        log = [(e.state.id.version, e.state.manager_state) for e in monitor.get_log()]
        # version 1 is gone before version 2 starts loading
        assert log.index((1, ManagerState.END)) < log.index((2, ManagerState.LOADING))


def test_missing_base_path_unloads_nothing(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    write_version(base, 1)
    with serving(base, -1) as (manager, monitor, source):
        source.poll_once()
        wait_state(monitor, ServableId("m", 1), ManagerState.AVAILABLE)
        os.rename(base, tmp_path / "moved")
        source.poll_once()
        assert not source.status("m").ok
        assert manager.available_servable_ids() == [ServableId("m", 1)]
        assert ask(manager, ServableRequest.latest("m")) == 1
        # An empty base path, on the other hand, unloads everything.
        base.mkdir()
        source.poll_once()
        wait_state(monitor, ServableId("m", 1), ManagerState.END)
        assert manager.available_servable_ids() == []
