"""Shared fixtures of the platform tests: the example-model script and its models (the stand-ins
for TFS's test models are the suite-wide `tfs_models` fixture)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.support import examples

# The example repository's models the platform tests load, by the script's names.
EXAMPLE_MODELS = ("mlp", "vocab", "word_count")


@pytest.fixture(scope="session")
def example_script() -> ModuleType:
    return examples.example_script()


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory, example_script: ModuleType) -> Path:
    """The example repository's ONNX MLP, vocabulary and Python word counter, written by
    scripts/make_example_models.py (`<dir>/<name>/1`)."""
    import onnx  # noqa: F401 - needed by this test

    out = tmp_path_factory.mktemp("example-models")
    only = [arg for name in EXAMPLE_MODELS for arg in ("--only", name)]
    assert example_script.main([str(out), *only]) == 0
    return out


@pytest.fixture(scope="session")
def mlp_version_dir(example_models: Path) -> str:
    """A version directory holding the example repository's ONNX MLP (16 -> 64 -> 4)."""
    return str(example_models / "mlp" / "1")
