"""The Open Inference Protocol against a real server with the official client, tritonclient
(HTTP and gRPC): server and model metadata, infer on every platform's model (one input and
several; FP32, INT64, BYTES; binary data both ways over HTTP, raw over gRPC), live and ready,
the repository extension; and every model answering the same through v2 (REST, gRPC) as
through TFS's predict (REST, and gRPC with TFS's own client)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.catalog import ServedModel, api_models, config_text, pick
from tests.support.models import write_python_model
from tests.support.server import ServerProcess, grpc_stubs, model_config, running_server
from tests.support.testdata import TfsModels
from tests.support.triton import results, triton
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# One model of each platform, the one with several inputs (FP32 and BYTES), and one with INT64
# inputs; the model with labelled versions.
MODELS = ("half_plus_two", "tflite", "mlp", "vocab", "word_count", "two_io", "two_versions")
PLATFORMS = {
    "half_plus_two": "tensorflow_savedmodel",
    "tflite": "tensorflow_lite",
    "mlp": "onnxruntime_onnx",
    "vocab": "servo_lookup",
    "word_count": "python",
    "two_io": "python",
    "integers": "python",
}
INTEGERS_MODEL = """
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"n": {"dtype": "int64", "shape": [-1, 3]}},
        "outputs": {"doubled": {"dtype": "int64", "shape": [-1, 3]},
                    "total": {"dtype": "float64", "shape": [-1]}},
    }}

    def predict(self, inputs, signature_name):
        n = inputs["n"]
        return {"doubled": n * 2, "total": n.sum(axis=1).astype(np.float64)}
"""
BROKEN_MODEL = """
class Model:
    def load(self, path):
        raise RuntimeError("this version cannot load")

    def predict(self, inputs, signature_name):
        return inputs
"""
PROTOCOLS = ("http", "grpc")


@pytest.fixture(scope="module")
def served(
    tfs_models: TfsModels, model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[ServedModel]:
    integers = write_python_model(tmp_path_factory.mktemp("v2") / "integers", INTEGERS_MODEL)
    return [
        *pick(api_models(tfs_models, model_dirs), *MODELS),
        ServedModel("integers", integers, "python"),
    ]


@pytest.fixture(scope="module")
def server(
    served: list[ServedModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("v2_server") / "models.config"
    config.write_text(config_text(served))
    with running_server(
        [
            f"--model_config_file={config}",
            "--allow_python_models_over_network",
            "--max_num_load_retries=0",  # a failed load answers at once
        ]
    ) as process:
        yield process


def _example_input(spec: dict[str, Any]) -> dict[str, Any]:
    """A tensor for an input of the model's v2 metadata: 2 for every dimension of any size."""
    shape = [2 if d == -1 else d for d in spec["shape"]]
    count = int(np.prod(shape))
    if spec["datatype"] == "BYTES":
        words = [b"servo", b"a model server", b"unknown", b"\xff\x00raw"]
        data = [words[i % len(words)].hex() for i in range(count)]
    elif spec["datatype"].startswith("FP"):
        data = [0.5 * i - 1.0 for i in range(count)]
    else:
        data = list(range(count))
    return {"datatype": spec["datatype"], "shape": shape, "data": data}


def _metadata(server: ServerProcess, name: str) -> dict[str, Any]:
    [metadata] = results(server, "http", [{"op": "model_metadata", "model": name}])
    return metadata  # type: ignore[no-any-return]


def _same(got: dict[str, Any], want: np.ndarray, what: str) -> None:
    if want.dtype == object:
        assert got["datatype"] == "BYTES", what
        assert [bytes.fromhex(v) for v in got["data"]] == list(want.reshape(-1)), what
        assert got["shape"] == list(want.shape), what
        return
    np.testing.assert_allclose(
        np.array(got["data"]).reshape(got["shape"]), want, rtol=1e-6, err_msg=what
    )


def test_server_metadata_liveness_and_readiness(server: ServerProcess) -> None:
    for protocol in PROTOCOLS:
        live, ready, metadata = results(
            server, protocol, [{"op": "live"}, {"op": "ready"}, {"op": "server_metadata"}]
        )
        assert (live, ready) == (True, True)
        assert metadata["name"] == "servo"
        assert "model_repository" in metadata["extensions"]
    assert (
        "binary_tensor_data"
        in results(server, "http", [{"op": "server_metadata"}])[0]["extensions"]
    )


def test_model_metadata_names_platform_versions_and_tensors(
    server: ServerProcess, served: list[ServedModel]
) -> None:
    for protocol in PROTOCOLS:
        for model in served:
            if model.name == "two_versions":
                continue
            [metadata] = results(server, protocol, [{"op": "model_metadata", "model": model.name}])
            assert metadata["name"] == model.name
            assert metadata["platform"] == PLATFORMS[model.name], model.name
            assert metadata["versions"] == [str(v) for v in model.versions()]
            assert metadata["inputs"] and metadata["outputs"], metadata
    [mlp] = results(server, "grpc", [{"op": "model_metadata", "model": "mlp"}])
    # protobuf's JSON writes int64 as strings.
    assert mlp["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert _metadata(server, "mlp")["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 4]}
    ]
    two_io = _metadata(server, "two_io")
    assert {(t["name"], t["datatype"]) for t in two_io["inputs"]} == {
        ("a", "FP32"),
        ("tag", "BYTES"),
    }


def _tfs_predict(server: ServerProcess, name: str, inputs: dict[str, np.ndarray]) -> Any:
    """The model's outputs through TFS's gRPC Predict with TFS's own client."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
    with grpc_stubs(server) as stubs:
        response = stubs.predictions.Predict(request, timeout=60)
    return {alias: tf.make_ndarray(t) for alias, t in response.outputs.items()}


def _v1_predict(server: ServerProcess, name: str, inputs: dict[str, np.ndarray]) -> Any:
    """The model's outputs through TFS's REST predict (the columnar "inputs" form)."""

    def as_json(array: np.ndarray) -> Any:
        if array.dtype == object:
            return [{"b64": base64.b64encode(v).decode()} for v in array.reshape(-1)]
        return array.tolist()

    body = {"inputs": {alias: as_json(a) for alias, a in inputs.items()}}
    answer = httpx.post(f"{server.rest}/v1/models/{name}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    return outputs if isinstance(outputs, dict) else {"": outputs}


def test_every_platform_answers_the_same_through_v2_and_tfs_predict(
    server: ServerProcess, served: list[ServedModel]
) -> None:
    for model in served:
        if model.name == "two_versions":
            continue
        metadata = _metadata(server, model.name)
        inputs = {spec["name"]: _example_input(spec) for spec in metadata["inputs"]}
        if model.name in ("vocab", "word_count"):  # text keys (v1's JSON carries them as b64)
            for tensor in inputs.values():
                tensor["data"] = [b"servo".hex(), b"a model server".hex()][: len(tensor["data"])]
        arrays = {
            name: np.array([bytes.fromhex(v) for v in t["data"]], dtype=object).reshape(t["shape"])
            if t["datatype"] == "BYTES"
            else np.array(t["data"], dtype=_NUMPY[t["datatype"]]).reshape(t["shape"])
            for name, t in inputs.items()
        }
        want = _tfs_predict(server, model.name, arrays)
        v1 = _v1_predict(server, model.name, arrays)
        for alias, array in want.items():
            got = v1.get(alias, v1.get(""))
            if array.dtype == object:
                texts = np.array(got, dtype=object).reshape(-1)
                decoded = [
                    base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode() for v in texts
                ]
                assert decoded == list(array.reshape(-1)), (model.name, alias)
            else:
                np.testing.assert_allclose(np.array(got), array, rtol=1e-6)
        calls = [
            {"op": "infer", "model": model.name, "inputs": inputs, "binary": binary, "id": "req-7"}
            for binary in (True, False)
        ]
        for protocol in PROTOCOLS:
            for answer in results(server, protocol, calls if protocol == "http" else calls[:1]):
                what = f"{model.name} over {protocol}"
                assert answer["model_name"] == model.name, what
                assert answer["model_version"] == str(model.versions()[-1]), what
                assert answer["id"] == "req-7", what
                assert set(answer["outputs"]) == set(want), what
                for alias, array in want.items():
                    _same(answer["outputs"][alias], array, f"{what}: {alias}")


_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def test_requested_outputs_versions_and_labels(server: ServerProcess) -> None:
    x = {"x": {"datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 5.0]}}
    for protocol in PROTOCOLS:
        by_version = results(
            server,
            protocol,
            [
                {"op": "infer", "model": "two_versions", "version": v, "inputs": x}
                for v in ("123", "124", "stable", "canary", "")
            ],
        )
        assert [a["model_version"] for a in by_version] == ["123", "124", "123", "124", "124"]
        [only_sum] = results(
            server,
            protocol,
            [
                {
                    "op": "infer",
                    "model": "two_io",
                    "inputs": {
                        "a": {"datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                        "tag": {"datatype": "BYTES", "shape": [2], "data": ["6162", "6364"]},
                    },
                    "outputs": ["sum"],
                }
            ],
        )
        assert only_sum["outputs"] == {"sum": {"datatype": "FP32", "shape": [2], "data": [3, 7]}}
        [ready_label, ready_missing] = results(
            server,
            protocol,
            [
                {"op": "model_ready", "model": "two_versions", "version": "stable"},
                {"op": "model_ready", "model": "two_versions", "version": "125"},
            ],
        )
        assert (ready_label, ready_missing) == (True, False)


def test_bad_requests_get_the_protocols_errors(server: ServerProcess) -> None:
    wrong_type = {"x": {"datatype": "FP64", "shape": [2, 16], "data": [0.0] * 32}}
    unknown_input = {"z": {"datatype": "FP32", "shape": [2, 16], "data": [0.0] * 32}}
    calls = [
        {"op": "infer", "model": "mlp", "inputs": wrong_type},
        {"op": "infer", "model": "mlp", "inputs": unknown_input},
        {"op": "infer", "model": "nothing_here", "inputs": wrong_type},
        {"op": "model_metadata", "model": "nothing_here"},
    ]
    http = triton(server, "http", calls)
    grpc = triton(server, "grpc", calls)
    assert http[0] == {
        "error": "Input 'x' has datatype FP64; the model takes FP32",
        "status": "400",
    }
    assert grpc[0]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "Input 'x' has datatype FP64" in grpc[0]["error"]
    assert http[1]["status"] == "400" and "z" in http[1]["error"]
    assert http[2]["status"] == "404" and grpc[2]["status"] == "StatusCode.NOT_FOUND"
    assert http[3]["status"] == "404" and grpc[3]["status"] == "StatusCode.NOT_FOUND"
    # The server is as it was.
    assert results(server, "grpc", [{"op": "ready"}]) == [True]


def test_repository_index_load_and_unload(
    server: ServerProcess, served: list[ServedModel], tmp_path: Path
) -> None:
    mlp = next(m for m in served if m.name == "mlp")
    config = json.dumps({"base_path": str(mlp.base_path), "model_platform": "onnx"})
    broken = write_python_model(tmp_path / "broken", BROKEN_MODEL)
    broken_config = json.dumps({"base_path": str(broken), "model_platform": "python"})
    for protocol in PROTOCOLS:
        [index] = results(server, protocol, [{"op": "index"}])
        ready = {e["name"] for e in index if e["state"] == "READY"}
        assert ready == {m.name for m in served}
        # Besides them, only the models an earlier round unloaded.
        others = [(e["name"], e["state"], e.get("reason")) for e in index if e["state"] != "READY"]
        assert all(state == "UNAVAILABLE" and why == "unloaded" for _, state, why in others)
        load, ready, infer, unload, after, index_after = results(
            server,
            protocol,
            [
                {"op": "load", "model": "mlp_copy", "config": config},
                {"op": "model_ready", "model": "mlp_copy"},
                {
                    "op": "infer",
                    "model": "mlp_copy",
                    "inputs": {"x": {"datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}},
                },
                {"op": "unload", "model": "mlp_copy"},
                {"op": "model_ready", "model": "mlp_copy"},
                {"op": "index"},
            ],
        )
        assert (load, ready, unload, after) == (True, True, True, False)
        assert infer["outputs"]["y"]["shape"] == [1, 4]
        unloaded = [e for e in index_after if e["name"] == "mlp_copy"]
        assert [(e["state"], e.get("reason")) for e in unloaded] == [("UNAVAILABLE", "unloaded")]
        # Loaded again as it was, without its config.
        assert results(server, protocol, [{"op": "load", "model": "mlp_copy"}]) == [True]
        assert results(server, protocol, [{"op": "unload", "model": "mlp_copy"}]) == [True]
        # A model that fails to load: the load says why, and the server is not ready while
        # it is in the config.
        [failed] = triton(
            server, protocol, [{"op": "load", "model": "broken", "config": broken_config}]
        )
        assert "this version cannot load" in failed["error"], failed
        wait_until(
            lambda p=protocol: results(server, p, [{"op": "ready"}]) == [False],  # type: ignore[misc]
            what="not ready",
        )
        readiness = httpx.get(f"{server.rest}/v2/models/broken/ready", timeout=10)
        assert readiness.status_code == 400 and "this version cannot load" in readiness.text
        assert results(server, protocol, [{"op": "unload", "model": "broken"}]) == [True]
        assert results(server, protocol, [{"op": "ready"}]) == [True]
    unknown = triton(server, "http", [{"op": "load", "model": "never_seen"}])
    assert unknown[0]["status"] == "404" and "not in the repository" in unknown[0]["error"]


def test_the_repository_obeys_the_model_management_grants(
    tmp_path: Path, model_dirs: dict[str, Path]
) -> None:
    config = tmp_path / "models.config"
    config.write_text(model_config([("mlp", model_dirs["mlp"], "onnx")]))
    word_count = json.dumps(
        {"base_path": str(model_dirs["word_count"]), "model_platform": "python"}
    )
    with running_server([f"--model_config_file={config}"]) as server:
        # A python model runs its directory's code: not over the network unless granted.
        [refused] = triton(server, "grpc", [{"op": "load", "model": "wc", "config": word_count}])
        assert refused["status"] == "StatusCode.PERMISSION_DENIED"
        assert "--allow_python_models_over_network" in refused["error"]
    with running_server(
        [f"--model_config_file={config}", "--allow_model_config_over_network=false"]
    ) as server:
        for protocol in PROTOCOLS:
            answers = triton(server, protocol, [{"op": "unload", "model": "mlp"}])
            assert "--allow_model_config_over_network=false" in answers[0]["error"]
        assert results(server, "http", [{"op": "model_ready", "model": "mlp"}]) == [True]
