"""The TFS REST API through a real server process: predict in both forms, classify, regress,
status, versions and labels, metadata, CORS and the metrics page. The error answers are in
test_rest_errors.py; both share one server (conftest's `rest_server`)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import METRICS_PATH
from tests.support.testdata import tfs_path

pytestmark = pytest.mark.integration


def post(rest: httpx.Client, path: str, doc: object) -> httpx.Response:
    return rest.post(path, content=json.dumps(doc, allow_nan=True))


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# -- predict ---------------------------------------------------------------------------------


def test_tfs_readme_example(rest: httpx.Client) -> None:
    answer = post(rest, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    answer = post(rest, "/v1/models/half_plus_three:predict", {"instances": [[1.0], [2.0]]})
    assert answer.json() == {"predictions": [[3.5], [4.0]]}


def test_float32_answers_are_written_in_their_shortest_form(rest: httpx.Client) -> None:
    # 0.1f / 2 + 2 is 2.04999995..., which float32's shortest form writes as 2.05.
    answer = post(rest, "/v1/models/half_plus_two:predict", {"instances": [0.1, 1 / 3]})
    assert answer.content == b'{"predictions":[2.05,2.1666667]}'
    answer = post(rest, "/v1/models/half_plus_two:predict", {"inputs": {"x": [[0.1]]}})
    assert answer.content == b'{"outputs":[[2.05]]}'


def test_columnar_form_with_one_input(rest: httpx.Client) -> None:
    answer = post(rest, "/v1/models/half_plus_two:predict", {"inputs": {"x": [[1.0], [3.0]]}})
    assert answer.json() == {"outputs": [[2.5], [3.5]]}
    answer = post(rest, "/v1/models/half_plus_two:predict", {"inputs": [[1.0]]})
    assert answer.json() == {"outputs": [[2.5]]}
    answer = post(
        rest,
        "/v1/models/half_plus_two:predict",
        {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
    )
    assert answer.json() == {"outputs": [3.5, 4.0]}


def test_two_inputs_and_two_outputs_in_both_forms_with_b64_in_and_out(
    rest: httpx.Client,
) -> None:
    # two_io: sum = a[0] + a[1]; tag_bytes = tag reversed, written as b64 for its _bytes name.
    rows = [{"a": [1.0, 2.0], "tag": "ab"}, {"a": [3.0, 4.5], "tag": b64(b"\x00\xff")}]
    answer = post(rest, "/v1/models/two_io:predict", {"instances": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "predictions": [
            {"sum": 3.0, "tag_bytes": b64(b"ba")},
            {"sum": 7.5, "tag_bytes": b64(b"\xff\x00")},
        ]
    }
    columns = {"a": [[1.0, 1.0], [2.0, 0.5]], "tag": ["xy", b64(b"\x01\x02")]}
    answer = post(rest, "/v1/models/two_io:predict", {"inputs": columns})
    assert answer.json() == {
        "outputs": {"sum": [2.0, 2.5], "tag_bytes": [b64(b"yx"), b64(b"\x02\x01")]}
    }


def test_b64_string_inputs_of_a_single_input_model(rest: httpx.Client) -> None:
    instances = [b64(b"servo"), "the", b64(b"unknown")]
    answer = post(rest, "/v1/models/vocab:predict", {"instances": instances})
    assert answer.json() == {"predictions": [8, 1, -1]}
    answer = post(rest, "/v1/models/vocab:predict", {"inputs": [b64(b"the")]})
    assert answer.json() == {"outputs": [1]}


def test_nan_and_infinity_in_and_out(rest: httpx.Client) -> None:
    answer = rest.post(
        "/v1/models/two_io:predict",
        content=b'{"signature_name": "echo", "instances": [NaN, Infinity, -Infinity, 1.5]}',
    )
    assert answer.content == b'{"predictions":[NaN,Infinity,-Infinity,1.5]}'
    values = json.loads(answer.content)["predictions"]
    assert math.isnan(values[0]) and values[1:3] == [math.inf, -math.inf]
    answer = rest.post(
        "/v1/models/half_plus_two:predict", content=b'{"inputs": [[NaN], [-Infinity]]}'
    )
    assert answer.content == b'{"outputs":[[NaN],[-Infinity]]}'


def test_onnx_lookup_and_python_example_models(rest: httpx.Client, example_models: Path) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 10
    answer = post(rest, "/v1/models/mlp:predict", {"instances": x.tolist()})
    session = ort.InferenceSession(str(example_models / "mlp" / "1" / "model.onnx"))
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, rtol=1e-6)
    answer = post(rest, "/v1/models/vocab:predict", {"instances": ["servo", "unknown", "the"]})
    assert answer.json() == {"predictions": [8, -1, 1]}
    answer = post(rest, "/v1/models/word_count:predict", {"instances": ["a model server"]})
    assert answer.json() == {"predictions": [{"words": 3, "chars": 14}]}


def test_gzip_request_bodies_are_accepted(rest: httpx.Client) -> None:
    import gzip

    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    answer = rest.post(
        "/v1/models/half_plus_two:predict", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert answer.json() == {"predictions": [2.5, 3.0]}


def test_chunked_request_bodies_are_accepted(rest: httpx.Client) -> None:
    pieces = [b'{"instances": ', b"[1.0, ", b"2.0]}"]
    answer = rest.post("/v1/models/half_plus_two:predict", content=iter(pieces))
    assert answer.json() == {"predictions": [2.5, 3.0]}


def test_paths_are_case_insensitive_and_names_url_decoded(rest: httpx.Client) -> None:
    answer = post(rest, "/V1/MODELS/half%5Fplus%5Ftwo:predict", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    answer = post(rest, "/v1/Models/two_versions/Labels/st%61ble:predict", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    # Decoded once: %255F is "%5F", not "_"
    answer = rest.get("/v1/models/half%255Fplus%255Ftwo")
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "Could not find any versions of model half%5Fplus%5Ftwo"},
    )


# -- classify and regress --------------------------------------------------------------------


def test_classify_and_regress_without_context(rest: httpx.Client) -> None:
    answer = post(
        rest,
        "/v1/models/half_plus_two:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]},
    )
    assert answer.json() == {"results": [[["", 2.5]], [["", 4.0]]]}
    answer = post(
        rest,
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    assert answer.json() == {"results": [2.5, 3.0]}
    answer = post(
        rest,
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y2", "examples": [{"x": 1.0}, {"x": [4.0]}]},
    )
    assert answer.json() == {"results": [3.5, 5.0]}  # x / 2 + 3


def test_classify_and_regress_with_context(rest: httpx.Client) -> None:
    # The context's features join every example's.
    answer = post(
        rest,
        "/v1/models/half_plus_two:classify",
        {"signature_name": "classify_x_to_y", "context": {"x": 3.0}, "examples": [{}, {}]},
    )
    assert answer.json() == {"results": [[["", 3.5]], [["", 3.5]]]}
    answer = post(
        rest,
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y2", "context": {"x": 4.0}, "examples": [{}]},
    )
    assert answer.json() == {"results": [5.0]}
    answer = post(
        rest,
        "/v1/models/half_plus_two/versions/123:regress",
        {"signature_name": "regress_x_to_y", "context": {"y": 1.0}, "examples": [{"x": 6.0}]},
    )
    assert answer.json() == {"results": [5.0]}


# -- status, versions, labels, metadata ------------------------------------------------------

AVAILABLE = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_status_of_a_loaded_model(rest: httpx.Client) -> None:
    expected = {"model_version_status": [{"version": "123", **AVAILABLE}]}
    assert rest.get("/v1/models/half_plus_two").json() == expected
    assert rest.get("/v1/models/half_plus_two/versions/123").json() == expected


def test_status_of_two_versions_and_their_labels(rest: httpx.Client) -> None:
    answer = rest.get("/v1/models/two_versions").json()
    assert answer == {
        "model_version_status": [{"version": "124", **AVAILABLE}, {"version": "123", **AVAILABLE}]
    }
    for label, version in [("stable", "123"), ("canary", "124")]:
        answer = rest.get(f"/v1/models/two_versions/labels/{label}").json()
        assert answer == {"model_version_status": [{"version": version, **AVAILABLE}]}


def test_versions_and_labels_choose_the_version_that_answers(rest: httpx.Client) -> None:
    for path, version in [
        ("/v1/models/two_versions/versions/123", "123"),
        ("/v1/models/two_versions/versions/124", "124"),
        ("/v1/models/two_versions/labels/stable", "123"),
        ("/v1/models/two_versions/labels/canary", "124"),
        ("/v1/models/two_versions", "124"),  # the latest
    ]:
        assert rest.get(f"{path}/metadata").json()["model_spec"]["version"] == version
        answer = post(rest, f"{path}:predict", {"instances": [[2.0]]})
        assert answer.json() == {"predictions": [[3.0]]}
        answer = post(
            rest,
            f"{path}:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
        )
        assert answer.json() == {"results": [3.0]}


def without_name(metadata: dict) -> dict:
    metadata = json.loads(json.dumps(metadata))
    metadata["model_spec"].pop("name")
    return metadata


def test_metadata_equals_tfs_samples(rest: httpx.Client) -> None:
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)
    answer = rest.get("/v1/models/half_plus_two/metadata").json()
    assert answer["model_spec"]["name"] == "half_plus_two"
    assert without_name(answer) == without_name(expected)
    assert rest.get("/v1/models/half_plus_two/versions/123/metadata").json() == answer
    with open(tfs_path("saved_model_half_plus_two_2_versions_metadata.json")) as f:
        expected = json.load(f)
    version = expected["model_spec"]["version"]
    answer = rest.get(f"/v1/models/two_versions/versions/{version}/metadata").json()
    assert without_name(answer) == without_name(expected)


# -- CORS and metrics ------------------------------------------------------------------------


def test_cors_headers_on_every_v1_answer_and_the_preflight(rest: httpx.Client) -> None:
    for answer in [
        post(rest, "/v1/models/half_plus_two:predict", {"instances": [1.0]}),
        rest.get("/v1/models/half_plus_two"),
        rest.get("/v1/models/nope"),
    ]:
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-allow-methods"] == "POST, GET"
        assert answer.headers["access-control-allow-headers"] == "Content-Type"
    # TFS answers a preflight that has an Origin with 200, one without with 400.
    preflight = rest.options(
        "/v1/models/half_plus_two:predict",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-methods"] == "POST, GET"
    answer = rest.options("/v1/models/half_plus_two:predict")
    assert answer.status_code == 400
    assert answer.json() == {"error": "Origin header is missing in CORS preflight"}


def metrics(rest: httpx.Client) -> dict:
    page = rest.get(METRICS_PATH)
    assert page.status_code == 200
    assert ":tensorflow:serving:request_count counter" in page.text  # TFS's name: no _total
    return {f.name: f for f in text_string_to_metric_families(page.text)}  # valid Prometheus


def request_counts(families: dict) -> dict[tuple[str, str], float]:
    return {
        (s.labels["model_name"], s.labels["status"]): s.value
        for s in families[":tensorflow:serving:request_count"].samples
    }


def latency_counts(families: dict) -> dict[tuple[str, str], float]:
    return {
        (s.labels["model_name"], s.labels["API"]): s.value
        for s in families[":tensorflow:serving:request_latency"].samples
        if s.name.endswith("_count") and s.labels["entrypoint"] == "REST"
    }


def test_metrics_count_requests_by_model_and_status_and_time_the_good_ones(
    rest: httpx.Client,
) -> None:
    before = metrics(rest)
    for _ in range(3):
        post(rest, "/v1/models/half_plus_three:predict", {"instances": [1.0]})
    post(rest, "/v1/models/half_plus_three:predict", {"instances": ["bad"]})
    post(
        rest,
        "/v1/models/half_plus_three:regress",
        {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]},
    )
    rest.get("/v1/models/half_plus_three")  # TFS's HTTP server counts status requests too
    post(rest, "/v1/models/never_served:predict", {"instances": [1.0]})
    after = metrics(rest)

    counts = request_counts(after)
    old_counts = request_counts(before)

    def added(name: str, status: str) -> float:
        return counts.get((name, status), 0) - old_counts.get((name, status), 0)

    assert added("half_plus_three", "OK") == 5
    assert added("half_plus_three", "INVALID_ARGUMENT") == 1
    assert added("never_served", "NOT_FOUND") == 1

    latencies, old_latencies = latency_counts(after), latency_counts(before)
    assert (
        latencies[("half_plus_three", "predict")]
        - old_latencies.get(("half_plus_three", "predict"), 0)
        == 3
    )
    assert (
        latencies[("half_plus_three", "regress")]
        - old_latencies.get(("half_plus_three", "regress"), 0)
        == 1
    )
    assert not any(name == "never_served" for name, _ in latencies)  # only successes are timed

    def runtime_counts(families: dict) -> dict[tuple[str, str, str], float]:
        return {
            (s.labels["model_name"], s.labels["API"], s.labels["runtime"]): s.value
            for s in families[":tensorflow:serving:runtime_latency"].samples
            if s.name.endswith("_count")
        }

    runtimes, old_runtimes = runtime_counts(after), runtime_counts(before)
    # The model runs themselves (the bad request never ran), with TFS's name for TF's runtime
    for api, runs in (("Predict", 3), ("Regress", 1)):
        key = ("half_plus_three", api, "TF1")
        assert runtimes[key] - old_runtimes.get(key, 0) == runs
    buckets = [
        s
        for s in after[":tensorflow:serving:request_latency"].samples
        if s.name.endswith("_bucket") and s.labels["model_name"] == "half_plus_three"
    ]
    assert len({s.labels["le"] for s in buckets}) == 34  # TFS's 33 bounds and +Inf
    states = {s.labels["model_name"]: s.value for s in after["servo_model_version_state"].samples}
    assert states["half_plus_two"] == 30  # AVAILABLE
