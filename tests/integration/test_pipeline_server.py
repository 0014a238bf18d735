"""Composite models on a real server: a pipeline answers exactly what calling its steps one
after the other answers, through TFS REST, TFS gRPC (TFS's own client) and v2 REST, and while
its step's model swaps versions under load no answer mixes versions within a request; a
pipeline whose last step classifies (regresses) answers TFS's classify (regress) over REST and
gRPC as that step does, and one that does not fit is refused as any predict signature; a
composite servable loads and swaps as one (its parts together), and a version whose part
fails never serves while the one before goes on."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.models import EXAMPLES_MODEL, write_composite, write_python_model
from tests.support.requests import classify_request, example, regress_request, tfs
from tests.support.server import grpc_stubs, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# y = x + its version; `version` says which version answered.
STEP_MODEL = """
import os
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]},
                    "version": {"dtype": "int64", "shape": [-1]}},
    }}

    def load(self, path):
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        x = inputs["x"]
        return {"y": x + self.version, "version": np.full(x.shape, self.version, np.int64)}
"""
# The same model twice: both steps must run one version in one request.
PIPELINE = {
    "steps": [
        {"name": "first", "model": "step", "inputs": {"x": "request.x"}},
        {"name": "second", "model": "step", "inputs": {"x": "first.y"}},
    ],
    "outputs": {
        "z": "second.y",
        "first_version": "first.version",
        "second_version": "second.version",
    },
}


def _pipeline_dir(base: Path, doc: Any = PIPELINE) -> Path:
    (base / "1").mkdir(parents=True)
    (base / "1" / "pipeline.json").write_text(json.dumps(doc))
    return base


def _serve(tmp_path: Path) -> tuple[list[str], Path]:
    step = write_python_model(tmp_path / "step", STEP_MODEL, version=1)
    pipe = _pipeline_dir(tmp_path / "pipe")
    config = tmp_path / "models.config"
    # The steps first: a pipeline's load checks it against its steps' served versions.
    config.write_text(model_config([("step", step, "python"), ("pipe", pipe, "pipeline")]))
    return [f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"], step


def test_the_pipeline_answers_as_its_steps_do_through_every_protocol(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    flags, _ = _serve(tmp_path)
    with running_server(flags) as server:
        x = [1.0, 2.5, -4.0]
        step = f"{server.rest}/v1/models/step:predict"
        first = httpx.post(step, json={"inputs": {"x": x}}, timeout=30).json()["outputs"]
        second = httpx.post(step, json={"inputs": {"x": first["y"]}}, timeout=30).json()["outputs"]
        want = {"z": second["y"], "first_version": [1, 1, 1], "second_version": [1, 1, 1]}
        # TFS REST
        v1 = httpx.post(
            f"{server.rest}/v1/models/pipe:predict", json={"inputs": {"x": x}}, timeout=30
        )
        assert v1.json()["outputs"] == want
        # TFS gRPC, TFS's own client
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pipe"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
        with grpc_stubs(server) as stubs:
            response = stubs.predictions.Predict(request, timeout=30)
        got = {k: tf.make_ndarray(v).tolist() for k, v in response.outputs.items()}
        assert got == want
        # v2 REST, and its metadata: the pipeline's signature, derived from its steps
        infer = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": x}]}
        v2 = httpx.post(f"{server.rest}/v2/models/pipe/infer", json=infer, timeout=30).json()
        assert {o["name"]: o["data"] for o in v2["outputs"]} == want
        metadata = httpx.get(f"{server.rest}/v2/models/pipe", timeout=30).json()
        assert metadata["platform"] == "ensemble"
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
        status = httpx.get(f"{server.rest}/v1/models/pipe/metadata", timeout=30).json()
        assert set(
            status["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
        ) == set(want)
        assert server.stop() == 0


# Over EXAMPLES_MODEL: its examples' x doubled, then classified; regressed as they come; and
# the doubled classification under other output aliases (no classifier's: a predict signature).
DOUBLE = {
    "name": "double",
    "model": "examples",
    "signature": "double",
    "inputs": {"examples": "request.inputs"},
}
CLASSIFY_AFTER_DOUBLE = {
    "name": "classify",
    "model": "examples",
    "signature": "classify",
    "inputs": {"inputs": "double.examples"},
}
EXAMPLE_PIPELINES = {
    "doubled_classify": {"steps": [DOUBLE, CLASSIFY_AFTER_DOUBLE]},
    "regress": {
        "steps": [
            {
                "name": "regress",
                "model": "examples",
                "signature": "regress",
                "inputs": {"inputs": "request.inputs"},
            }
        ]
    },
    "renamed": {
        "steps": [DOUBLE, CLASSIFY_AFTER_DOUBLE],
        "outputs": {"labels": "classify.classes", "scores": "classify.scores"},
    },
}


def test_a_pipeline_whose_last_step_classifies_or_regresses_answers_as_it_does(
    tmp_path: Path,
) -> None:
    """With --enable_signature_method_name_check: classify and regress take the pipelines
    only because their signatures have the step's method."""
    import grpc

    models = [("examples", write_python_model(tmp_path / "examples", EXAMPLES_MODEL), "python")]
    for name, doc in EXAMPLE_PIPELINES.items():
        models.append((name, _pipeline_dir(tmp_path / name, doc), "pipeline"))
    config = tmp_path / "models.config"
    config.write_text(model_config(models))
    flags = [f"--model_config_file={config}", "--enable_signature_method_name_check"]
    xs, doubled = [1.0, 2.5, -4.0], [2.0, 5.0, -8.0]

    def rest(model: str, api: str, signature: str, values: list[float]) -> httpx.Response:
        body = {"signature_name": signature, "examples": [{"x": x} for x in values]}
        return httpx.post(f"{server.rest}/v1/models/{model}:{api}", json=body, timeout=30)

    with running_server(flags) as server, grpc_stubs(server) as stubs:
        # TFS REST: the pipeline's serving_default as the step's own signature
        want = rest("examples", "classify", "classify", doubled).json()
        assert len(want["results"]) == 3
        assert rest("doubled_classify", "classify", "serving_default", xs).json() == want
        want = rest("examples", "regress", "regress", xs).json()
        assert rest("regress", "regress", "", xs).json() == want
        # TFS gRPC, TFS's own client
        classify = stubs.predictions.Classify
        direct = classify(tfs(classify_request("examples", "classify", *doubled)), timeout=30)
        answer = classify(tfs(classify_request("doubled_classify", "", *xs)), timeout=30)
        assert answer.result == direct.result
        assert (answer.model_spec.name, answer.model_spec.signature_name) == (
            "doubled_classify",
            "serving_default",
        )
        regress = stubs.predictions.Regress
        direct = regress(tfs(regress_request("examples", "regress", *xs)), timeout=30)
        answer = regress(tfs(regress_request("regress", "", *xs)), timeout=30)
        assert answer.result == direct.result and len(answer.result.regressions) == 3
        # The metadata says so.
        metadata = httpx.get(f"{server.rest}/v1/models/doubled_classify/metadata", timeout=30)
        signature = metadata.json()["metadata"]["signature_def"]["signature_def"]
        assert signature["serving_default"]["method_name"] == "tensorflow/serving/classify"
        # A pipeline that does not fit: a predict signature, refused as TFS refuses one.
        message = (
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict"
        )
        refused = rest("renamed", "classify", "", xs)
        assert (refused.status_code, refused.json()) == (400, {"error": message})
        with pytest.raises(grpc.RpcError) as err:
            classify(tfs(classify_request("renamed", "", *xs)), timeout=30)
        assert (err.value.code(), err.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
        )
        # ... which predicts as before: x = 1, doubled, p = 0.2
        serialized = base64.b64encode(example(x=1.0).SerializeToString()).decode()
        predicted = httpx.post(
            f"{server.rest}/v1/models/renamed:predict",
            json={"inputs": {"inputs": [{"b64": serialized}]}},
            timeout=30,
        )
        assert predicted.json()["outputs"] == {"labels": [["neg", "pos"]], "scores": [[0.8, 0.2]]}
        assert server.stop() == 0


def test_a_step_swapping_versions_under_load_never_mixes_them_in_a_request(
    tmp_path: Path,
) -> None:
    flags, step = _serve(tmp_path)
    with running_server(flags) as server:
        url = f"{server.rest}/v1/models/pipe:predict"
        answers: list[Any] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    answer = http.post(url, json={"inputs": {"x": [0.0, 1.0]}})
                    assert answer.status_code == 200, answer.text
                    answers.append(answer.json()["outputs"])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(client) for _ in range(4)]
            try:
                wait_until(lambda: len(answers) >= 20, what="answers from version 1")
                write_python_model(step, STEP_MODEL, version=2)  # the step's next version
                wait_until(
                    lambda: any(a["first_version"][0] == 2 for a in answers[-10:]),
                    timeout=60,
                    what="answers from version 2",
                )
                seen = len(answers)
                wait_until(lambda: len(answers) >= seen + 20, what="more answers from version 2")
            finally:
                stop.set()
            for done in clients:
                done.result()
        versions = {(a["first_version"][0], a["second_version"][0]) for a in answers}
        assert versions <= {(1, 1), (2, 2)}, versions  # never (1, 2) or (2, 1)
        assert versions == {(1, 1), (2, 2)}
        for a in answers:
            v = a["first_version"][0]
            assert a["z"] == [0.0 + 2 * v, 1.0 + 2 * v]
        assert server.stop() == 0


def test_a_composite_loads_and_swaps_as_one(tmp_path: Path) -> None:
    base = write_composite(tmp_path / "c", 1, ["a", "b", "c"], scale=1.0)
    config = tmp_path / "models.config"
    config.write_text(model_config([("c", base, "composite")]))
    scales = {1: 1.0, 2: 10.0}
    ids = {1: [0, 1, 2], 2: [2, 1, 0]}  # of keys a, b, c
    flags = [
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",  # version 3's failure is final at once
    ]
    with running_server(flags) as server:
        url = f"{server.rest}/v1/models/c:predict"
        answers: list[Any] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    answer = http.post(url, json={"inputs": {"text": ["a", "b", "c"]}})
                    assert answer.status_code == 200, answer.text
                    answers.append(answer.json()["outputs"])

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            clients = [pool.submit(client) for _ in range(3)]
            try:
                wait_until(lambda: len(answers) >= 10, what="answers from version 1")
                write_composite(base, 2, ["c", "b", "a"], scale=10.0)
                wait_until(
                    lambda: any(a["version"][0] == 2 for a in answers[-5:]),
                    timeout=60,
                    what="answers from version 2",
                )
                # A version whose part fails: it never serves, and version 2 goes on.
                write_composite(base, 3, ["x"], scale=5.0, broken=True)
                status = f"{server.rest}/v1/models/c/versions/3"
                wait_until(
                    lambda: "this part cannot load" in httpx.get(status, timeout=10).text,
                    timeout=60,
                    what="version 3's failure",
                )
                seen = len(answers)
                wait_until(lambda: len(answers) >= seen + 10, what="answers after the failure")
            finally:
                stop.set()
            for done in clients:
                done.result()
        for a in answers:  # every answer all of one version: its vocabulary and its scale
            v = a["version"][0]
            assert a["version"] == [v, v, v] and v in (1, 2), a
            assert a["ids"] == ids[v] and a["score"] == [i * scales[v] for i in ids[v]], a
        assert [a["version"][0] for a in answers[-10:]] == [2] * 10
        assert server.stop() == 0
