"""Platforms through the router and the lifecycle core: loaders, the manager, missing runtimes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from servo.core.aspired_versions_manager import (
    AspiredVersionsManager,
    AspiredVersionsManagerOptions,
)
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState
from servo.core.servable_state_monitor import ServableStateMonitor
from servo.core.source import ServableData
from servo.core.status import Code, ServoError
from servo.platforms import router
from servo.platforms.options import PlatformOptions
from servo.platforms.router import ModelLoader, PlatformRouter
from tests.support.testdata import REPO, TfsModels

WAIT = 60.0  # seconds: a bound on waits for states, never reached when things work


@contextmanager
def manager_and_monitor() -> Iterator[tuple[AspiredVersionsManager, ServableStateMonitor]]:
    manager = AspiredVersionsManager(
        AspiredVersionsManagerOptions(max_num_load_retries=0, load_retry_interval=0.0)
    )
    monitor = ServableStateMonitor(manager.event_bus)
    try:
        yield manager, monitor
    finally:
        manager.stop(drain_timeout=10.0)
        monitor.close()


def aspire(manager: AspiredVersionsManager, loader: ModelLoader) -> None:
    manager.set_aspired_versions(loader.id.name, [ServableData(loader.id, loader)])


def final_state(monitor: ServableStateMonitor, id: ServableId, goal: ManagerState) -> object:
    """Waits until `id` is in `goal` or END; returns its published state."""
    reached = monitor.wait_for_state(id, goal, timeout=WAIT)
    assert reached is not None, f"{id} was never published"
    return monitor.get_state(id)


def test_onnx_version_loads_serves_and_unloads(mlp_version_dir: str) -> None:
    import onnxruntime  # noqa: F401 - needed by this test

    id = ServableId("mlp", 1)
    loader = ModelLoader(id, mlp_version_dir, "onnx")
    size = os.path.getsize(os.path.join(mlp_version_dir, "model.onnx"))
    assert loader.estimate_resources().ram_bytes == int(size * 1.2)
    with manager_and_monitor() as (manager, monitor):
        aspire(manager, loader)
        state = final_state(monitor, id, ManagerState.AVAILABLE)
        assert state.manager_state == ManagerState.AVAILABLE, state
        with manager.get_servable_handle(ServableRequest.latest("mlp")) as handle:
            servable = handle.servable
            assert servable.platform == "onnx"
            sig = servable.signatures["serving_default"]
            out = servable.run(sig, {"x": np.ones((2, 16), np.float32)})
            assert out["y"].shape == (2, 4)
        manager.set_aspired_versions("mlp", [])
        state = final_state(monitor, id, ManagerState.END)
        assert state.manager_state == ManagerState.END and state.health.ok
    assert loader.servable is None


def test_tensorflow_version_loads_through_the_manager(tfs_models: TfsModels) -> None:
    import tensorflow  # noqa: F401 - needed by this test

    id = ServableId("half_plus_two", 123)
    path = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    loader = ModelLoader(id, path, "tensorflow")
    with manager_and_monitor() as (manager, monitor):
        aspire(manager, loader)
        state = final_state(monitor, id, ManagerState.AVAILABLE)
        assert state.manager_state == ManagerState.AVAILABLE, state
        with manager.get_servable_handle(ServableRequest.specific("half_plus_two", 123)) as h:
            sig = h.servable.signatures["serving_default"]
            x = np.array([1.0, 2.0, 5.0], np.float32)
            np.testing.assert_array_equal(h.servable.run(sig, {"x": x})["y"], [2.5, 3.0, 4.5])


@pytest.mark.parametrize(
    ("platform", "content", "code"),
    [
        pytest.param("nope", None, Code.INVALID_ARGUMENT, id="unknown-platform"),
        pytest.param("onnx", b"\x00\xffnot onnx" * 20, Code.DATA_LOSS, id="corrupt-onnx"),
        pytest.param(
            "tflite", b"not a flatbuffer" * 20, Code.INVALID_ARGUMENT, id="corrupt-tflite"
        ),
        pytest.param(
            "tensorflow", b"\xff\xfegarbage" * 20, Code.DATA_LOSS, id="corrupt-savedmodel"
        ),
    ],
)
def test_failed_load_ends_with_its_error_in_the_health(
    platform: str, content: bytes | None, code: Code, tmp_path: Path
) -> None:
    info = router.PLATFORMS.get(platform)
    version = tmp_path / "3"
    version.mkdir()
    if content is not None:
        assert info is not None
        (version / info.files[0]).write_bytes(content)
    id = ServableId("broken", 3)
    with manager_and_monitor() as (manager, monitor):
        aspire(manager, ModelLoader(id, str(version), platform))
        state = final_state(monitor, id, ManagerState.AVAILABLE)
        assert state.manager_state == ManagerState.END
        assert state.health.code == code, state.health
        assert state.health.message
        with pytest.raises(ServoError) as err:
            manager.get_servable_handle(ServableRequest.latest("broken"))
        assert err.value.code == Code.NOT_FOUND


def test_bad_half_plus_two_ends_with_tfs_error(tfs_models: TfsModels) -> None:
    import tensorflow  # noqa: F401 - needed by this test

    path = tfs_models.path("bad_half_plus_two", "00000123")
    id = ServableId("bad", 123)
    with manager_and_monitor() as (manager, monitor):
        aspire(manager, ModelLoader(id, path, "tensorflow"))
        state = final_state(monitor, id, ManagerState.AVAILABLE)
        assert state.manager_state == ManagerState.END
        assert state.health.code == Code.NOT_FOUND
        assert "Could not find SavedModel .pb or .pbtxt" in state.health.message


def test_platform_router_makes_loaders_and_error_items(mlp_version_dir: str) -> None:
    adapter = PlatformRouter({"mlp": "onnx", "odd": "nope"}, PlatformOptions())
    received: list[tuple[str, list[ServableData]]] = []
    adapter.set_aspired_versions_callback(lambda name, items: received.append((name, list(items))))
    callback = adapter.get_aspired_versions_callback()
    callback("mlp", [ServableData(ServableId("mlp", 1), mlp_version_dir)])
    callback("odd", [ServableData(ServableId("odd", 1), mlp_version_dir)])
    callback("none", [ServableData(ServableId("none", 1), mlp_version_dir)])
    (mlp_item,), (odd_item,), (none_item,) = (items for _, items in received)
    assert isinstance(mlp_item.data, ModelLoader) and mlp_item.data.platform == "onnx"
    assert odd_item.status.code == Code.INVALID_ARGUMENT
    assert none_item.status.code == Code.NOT_FOUND


def test_detect_platform_on_test_models(mlp_version_dir: str, tfs_models: TfsModels) -> None:
    def detect(name: str) -> str | None:
        return router.detect_platform(tfs_models.path(name, "00000123"))

    assert router.detect_platform(mlp_version_dir) == "onnx"
    assert detect("saved_model_half_plus_two_cpu") == "tensorflow"
    assert detect("saved_model_half_plus_two_tflite") == "tflite"
    assert detect("bad_half_plus_two") is None


@pytest.mark.parametrize(
    ("platform", "runtimes", "extra"),
    [
        ("onnx", ("onnxruntime",), "onnx"),
        ("tensorflow", ("tensorflow",), "tensorflow"),
        # TF Lite runs on ai-edge-litert, else TensorFlow: missing only when both are.
        ("tflite", ("ai_edge_litert", "ai_edge_litert.interpreter", "tensorflow"), "tflite"),
    ],
)
def test_missing_runtime_names_the_extra_to_install(
    platform: str, runtimes: tuple[str, ...], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide the runtimes, and forget the platform module so that it is imported again.
    for runtime in runtimes:
        monkeypatch.setitem(sys.modules, runtime, None)
    monkeypatch.delitem(sys.modules, f"servo.platforms.{platform}", raising=False)
    with pytest.raises(ServoError) as err:
        router.import_platform(platform)
    assert err.value.code == Code.FAILED_PRECONDITION
    assert f"pip install 'servo-model-server[{extra}]'" in err.value.message
    # A loader reports the same error as its load failure.
    loader = ModelLoader(ServableId("m", 1), "/nonexistent", platform)
    with pytest.raises(ServoError) as err:
        loader.load()
    assert f"pip install 'servo-model-server[{extra}]'" in err.value.message


def test_core_imports_without_tensorflow_or_onnxruntime() -> None:
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import servo.core
        for info in pkgutil.iter_modules(servo.core.__path__):
            importlib.import_module("servo.core." + info.name)
        import servo.platforms.router, servo.platforms.servable, servo.dtypes
        heavy = sorted(m for m in ("tensorflow", "onnxruntime", "onnx") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
