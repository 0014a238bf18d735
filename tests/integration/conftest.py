"""Shared pieces of the integration tests: example models, model directories, and the REST
server the REST tests share."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, running_server
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
        "complexes": {
            "inputs": {"c": {"dtype": "complex64", "shape": [-1]}},
            "outputs": {"c": {"dtype": "complex64", "shape": [-1]}},
        },
        # Fails with the error code it is given (-1: a plain exception).
        "fail": {
            "inputs": {"code": {"dtype": "int32", "shape": [-1]}},
            "outputs": {"code": {"dtype": "int32", "shape": [-1]}},
        },
    }

    def predict(self, inputs, signature_name):
        if signature_name == "echo":
            return {"x": inputs["x"]}
        if signature_name in ("halves", "complexes"):
            return dict(inputs)
        if signature_name == "fail":
            from servo.core.status import Code, ServoError

            code = int(inputs["code"][0])
            if code < 0:
                raise ValueError("a bug in the model")
            raise ServoError(Code(code), "failed with %s" % Code(code).name)
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


METRICS_PATH = "/monitoring/prometheus/metrics"  # as TFS's monitoring_config.txt sets it
REST_MAX_BODY_BYTES = 100_000


@pytest.fixture(scope="session")
def rest_server(
    tmp_path_factory: pytest.TempPathFactory, example_models: Path, python_models: dict
) -> Iterator[ServerProcess]:
    """One server for the REST tests that leave it as they found it: TFS's test models (the
    two-version one with labels given at start), the example models and the Python ones;
    CORS on, Prometheus metrics from TFS's own monitoring config file, a small body limit."""
    work = tmp_path_factory.mktemp("rest")
    config = work / "models.config"
    config.write_text(
        f"""
        model_config_list {{
          config {{ name: "half_plus_two" base_path: "{tfs_path("saved_model_half_plus_two_cpu")}"
                   model_platform: "tensorflow" }}
          config {{ name: "half_plus_three"
                   base_path: "{tfs_path("saved_model_half_plus_three")}"
                   model_platform: "tensorflow" }}
          config {{ name: "two_versions"
                   base_path: "{tfs_path("saved_model_half_plus_two_2_versions")}"
                   model_platform: "tensorflow"
                   model_version_policy {{ all {{}} }}
                   version_labels {{ key: "stable" value: 123 }}
                   version_labels {{ key: "canary" value: 124 }} }}
          config {{ name: "mlp" base_path: "{example_models / "mlp"}" model_platform: "onnx" }}
          config {{ name: "vocab" base_path: "{example_models / "vocab"}"
                   model_platform: "lookup" }}
          config {{ name: "word_count" base_path: "{example_models / "word_count"}"
                   model_platform: "python" }}
          config {{ name: "two_io" base_path: "{python_models["two_io"]}"
                   model_platform: "python" }}
        }}
        """
    )
    with running_server(
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={tfs_path('monitoring_config.txt')}",
            "--rest_api_enable_cors_support",
            f"--rest_api_max_body_bytes={REST_MAX_BODY_BYTES}",
        ]
    ) as process:
        yield process


def _every_rest_answer_is_json(response: httpx.Response) -> None:
    if response.request.url.path != METRICS_PATH:
        assert response.headers["content-type"] == "application/json", (
            f"{response.request.method} {response.request.url}: {response.headers}"
        )


@pytest.fixture(scope="session")
def rest(rest_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of `rest_server` that fails any answer (but the metrics page) that is not
    application/json."""
    with httpx.Client(
        base_url=rest_server.rest,
        timeout=30,
        event_hooks={"response": [_every_rest_answer_is_json]},
    ) as client:
        yield client
