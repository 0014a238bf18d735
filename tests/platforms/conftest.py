"""Shared fixtures of the platform tests: TFS's test data and the example-model script."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]

# TFS's own test models (see the README in that folder). They are not part of this repository;
# SERVO_TFS_TESTDATA points elsewhere when they live somewhere else.
TFS_TESTDATA = Path(os.environ.get("SERVO_TFS_TESTDATA", "/work/shared/testdata/tfs"))


def tfs_path(*parts: str) -> str:
    """The path of an item of TFS's test data; skips the test when the data is absent."""
    path = TFS_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"TFS test data not found at {path} (set SERVO_TFS_TESTDATA)")
    return str(path)


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
    pytest.importorskip("onnx")
    base = tmp_path_factory.mktemp("models")
    example_script.write_mlp(base / "mlp")
    return str(base / "mlp" / "1")
