"""Shared fixtures of the platform tests: TFS's test data and the example-model script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.testdata import TFS_TESTDATA, tfs_path  # noqa: F401 - used by tests

REPO = Path(__file__).resolve().parents[2]


def load_example_script() -> ModuleType:
    """scripts/make_example_models.py as a module (scripts/ is not a package)."""
    name = "servo_make_example_models"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "scripts" / "make_example_models.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_script() -> ModuleType:
    return load_example_script()


@pytest.fixture(scope="session")
def mlp_version_dir(tmp_path_factory: pytest.TempPathFactory, example_script: ModuleType) -> str:
    """A version directory holding the example repository's ONNX MLP (16 -> 64 -> 4)."""
    import onnx  # noqa: F401 - needed by this test

    base = tmp_path_factory.mktemp("models")
    example_script.write_mlp(base / "mlp")
    return str(base / "mlp" / "1")
