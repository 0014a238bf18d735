"""Shared pieces of the integration tests: example models and model directories."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.testdata import REPO, tfs_path

TWO_IO_MODEL = """
import numpy as np

class Model:
    signatures = {
        "serving_default": {
            "inputs": {"a": {"dtype": "float32", "shape": [-1, 2]},
                       "tag": {"dtype": "string", "shape": [-1]}},
            "outputs": {"sum": {"dtype": "float32", "shape": [-1]},
                        "tag_bytes": {"dtype": "string", "shape": [-1]}},
        },
        "echo": {
            "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
            "outputs": {"x": {"dtype": "float32", "shape": [-1]}},
        },
        "halves": {
            "inputs": {"h": {"dtype": "float16", "shape": [-1]}},
            "outputs": {"h": {"dtype": "float16", "shape": [-1]}},
        },
    }

    def predict(self, inputs, signature_name):
        if signature_name == "echo":
            return {"x": inputs["x"]}
        if signature_name == "halves":
            return {"h": inputs["h"]}
        return {"sum": inputs["a"].sum(axis=1),
                "tag_bytes": np.array([t[::-1] for t in inputs["tag"]], dtype=object)}
"""

SLOW_MODEL = """
import os
import time
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"seconds": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"slept": {"dtype": "float32", "shape": [-1]}},
    }}

    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        seconds = float(inputs["seconds"].max())
        # A mark that the call has started, for tests that act while it runs.
        open(os.path.join(self.path, "started-%g" % seconds), "w").close()
        time.sleep(seconds)
        return {"slept": inputs["seconds"]}
"""


def write_python_model(base: Path, source: str, version: int = 1) -> Path:
    version_dir = base / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(textwrap.dedent(source))
    return base


def _example_script():
    name = "servo_make_example_models"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "scripts" / "make_example_models.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example repository's ONNX MLP, lookup table and Python servable."""
    out = tmp_path_factory.mktemp("examples")
    assert (
        _example_script().main(
            [str(out), "--only", "mlp", "--only", "vocab", "--only", "word_count"]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def python_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("python_models")
    return {
        "two_io": write_python_model(out / "two_io", TWO_IO_MODEL),
        "slow": write_python_model(out / "slow", SLOW_MODEL),
    }


def copy_tfs_model(name: str, dest: Path) -> Path:
    """A writable copy of one of TFS's test models."""
    target = dest / name
    shutil.copytree(tfs_path(name), target)
    return target
