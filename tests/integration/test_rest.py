"""The TFS REST API through a real server process: predict in both forms, classify, regress,
status, labels, metadata, every error of TFS's REST spec, gzip, body limits, CORS, metrics."""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import TWO_IO_MODEL  # noqa: F401 - documents the model used
from tests.support.server import ServerProcess, running_server
from tests.support.testdata import tfs_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, example_models: Path, python_models: dict
) -> Iterator[ServerProcess]:
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
    monitoring = work / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    with running_server(
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={monitoring}",
            "--rest_api_enable_cors_support",
            "--rest_api_max_body_bytes=100000",
        ]
    ) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.rest, timeout=30) as client:
        yield client


def post(http: httpx.Client, path: str, doc: object) -> httpx.Response:
    return http.post(path, content=json.dumps(doc, allow_nan=True))


# -- predict ---------------------------------------------------------------------------------


def test_tfs_readme_example(http: httpx.Client) -> None:
    answer = post(http, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    answer = post(http, "/v1/models/half_plus_three:predict", {"instances": [[1.0], [2.0]]})
    assert answer.json() == {"predictions": [[3.5], [4.0]]}


def test_float32_answers_are_written_shortest(http: httpx.Client) -> None:
    answer = post(http, "/v1/models/half_plus_two:predict", {"instances": [0.1]})
    assert answer.content == b'{"predictions":[2.05]}'


def test_columnar_form(http: httpx.Client) -> None:
    answer = post(http, "/v1/models/half_plus_two:predict", {"inputs": {"x": [[1.0], [3.0]]}})
    assert answer.json() == {"outputs": [[2.5], [3.5]]}
    answer = post(http, "/v1/models/half_plus_two:predict", {"inputs": [[1.0]]})
    assert answer.json() == {"outputs": [[2.5]]}


def test_several_inputs_and_outputs_with_b64(http: httpx.Client) -> None:
    rows = [{"a": [1.0, 2.0], "tag": "ab"}, {"a": [3.0, 4.5], "tag": {"b64": "AP8="}}]
    answer = post(http, "/v1/models/two_io:predict", {"instances": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "predictions": [
            {"sum": 3.0, "tag_bytes": {"b64": base64.b64encode(b"ba").decode()}},
            {"sum": 7.5, "tag_bytes": {"b64": base64.b64encode(b"\xff\x00").decode()}},
        ]
    }
    columns = {"a": [[1.0, 1.0]], "tag": ["xy"]}
    answer = post(http, "/v1/models/two_io:predict", {"inputs": columns})
    assert answer.json() == {"outputs": {"sum": [2.0], "tag_bytes": [{"b64": "eXg="}]}}


def test_nan_and_infinity_in_and_out(http: httpx.Client) -> None:
    answer = http.post(
        "/v1/models/two_io:predict",
        content=b'{"signature_name": "echo", "instances": [NaN, Infinity, -Infinity, 1.5]}',
    )
    assert answer.content == b'{"predictions":[NaN,Infinity,-Infinity,1.5]}'
    values = json.loads(answer.content)["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf


def test_onnx_lookup_and_python_example_models(http: httpx.Client, example_models: Path) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 10
    answer = post(http, "/v1/models/mlp:predict", {"instances": x.tolist()})
    session = ort.InferenceSession(str(example_models / "mlp" / "1" / "model.onnx"))
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, rtol=1e-6)
    answer = post(http, "/v1/models/vocab:predict", {"instances": ["servo", "unknown", "the"]})
    assert answer.json() == {"predictions": [8, -1, 1]}
    answer = post(http, "/v1/models/word_count:predict", {"instances": ["a model server"]})
    assert answer.json() == {"predictions": [{"words": 3, "chars": 14}]}


def test_classify_and_regress_on_half_plus_two(http: httpx.Client) -> None:
    answer = post(
        http,
        "/v1/models/half_plus_two:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]},
    )
    assert answer.json() == {"results": [[["", 2.5]], [["", 4.0]]]}
    answer = post(
        http,
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    assert answer.json() == {"results": [2.5, 3.0]}
    answer = post(
        http,
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y2", "context": {"x": 4.0}, "examples": [{}]},
    )
    assert answer.json() == {"results": [5.0]}  # x from the context: 4 / 2 + 3


# -- status, labels, metadata ------------------------------------------------------------------


def test_status_of_a_loaded_model(http: httpx.Client) -> None:
    answer = http.get("/v1/models/half_plus_two")
    assert answer.json() == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert http.get("/v1/models/half_plus_two/versions/123").status_code == 200


def test_versions_and_labels(http: httpx.Client) -> None:
    status = http.get("/v1/models/two_versions").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [
        ("124", "AVAILABLE"),
        ("123", "AVAILABLE"),
    ]
    for path, version in [
        ("/v1/models/two_versions/versions/123", "123"),
        ("/v1/models/two_versions/labels/stable", "123"),
        ("/v1/models/two_versions/labels/canary", "124"),
        ("/v1/models/two_versions", "124"),
    ]:
        assert http.get(f"{path}/metadata").json()["model_spec"]["version"] == version
        answer = post(http, f"{path}:predict", {"instances": [[2.0]]})
        assert answer.json() == {"predictions": [[3.0]]}
    labelled = http.get("/v1/models/two_versions/labels/canary").json()
    assert [s["version"] for s in labelled["model_version_status"]] == ["124"]


def without_name(metadata: dict) -> dict:
    metadata = json.loads(json.dumps(metadata))
    metadata["model_spec"].pop("name")
    return metadata


def test_metadata_equals_tfs_samples(http: httpx.Client) -> None:
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)
    answer = http.get("/v1/models/half_plus_two/metadata").json()
    assert without_name(answer) == without_name(expected)
    with open(tfs_path("saved_model_half_plus_two_2_versions_metadata.json")) as f:
        expected = json.load(f)
    version = expected["model_spec"]["version"]
    answer = http.get(f"/v1/models/two_versions/versions/{version}/metadata").json()
    assert without_name(answer) == without_name(expected)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
        (
            "POST",
            "/v1/models/half_plus_two",
            {"instances": [1]},
            400,
            "Malformed request: POST /v1/models/half_plus_two",
        ),
        (
            "GET",
            "/v1/models/half_plus_two:predict",
            None,
            400,
            "Malformed request: GET /v1/models/half_plus_two:predict",
        ),
        (
            "PUT",
            "/v1/models/half_plus_two",
            None,
            400,
            "Malformed request: PUT /v1/models/half_plus_two",
        ),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (
            "GET",
            "/v1/models/half_plus_two/versions/9",
            None,
            404,
            "Could not find version 9 of model half_plus_two",
        ),
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [1]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/7:predict",
            {"instances": [1]},
            404,
            "Servable not found for request: Specific(half_plus_two, 7)",
        ),
        (
            "POST",
            "/v1/models/two_versions/labels/beta:predict",
            {"instances": [1]},
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            "GET",
            "/v1/models/two_versions/versions/99999999999999999999",
            None,
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"signature_name": "x", "instances": [1]},
            400,
            'Serving signature name: "x" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"signature_name": "x"},
            400,
            'Serving signature name: "x" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": [1], "inputs": [1]},
            400,
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            "POST",
            "/v1/models/two_io:predict",
            {"inputs": {"a": [[1, 2]]}},
            400,
            "Missing named input: tag in 'inputs' object.",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": ["a"]},
            400,
            "is not of expected type: float",
        ),
        # TFS answers 501 in the columnar form (the row form wraps it in a 400).
        (
            "POST",
            "/v1/models/two_io:predict",
            {"signature_name": "halves", "inputs": [1.0]},
            501,
            "Conversion of JSON Value: 1.0 to type: half",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:regress",
            {"examples": [{"x": 1.0}]},
            400,
            # TFS checks the signature's shape, not its method (without the method check).
            "No regression inputs found in SignatureDef: inputs {",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:classify",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            400,
            "No signature was found with the name: nope",
        ),
    ],
)
def test_errors(
    http: httpx.Client, method: str, path: str, body: object, status: int, message: str
) -> None:
    content = None if body is None else json.dumps(body)
    answer = http.request(method, path, content=content)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]


def test_bad_json_body(http: httpx.Client) -> None:
    answer = http.post("/v1/models/half_plus_two:predict", content=b'{"instances": [1,')
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("JSON Parse error: ")


def test_paths_are_case_insensitive_and_names_url_decoded(http: httpx.Client) -> None:
    answer = post(http, "/V1/MODELS/half%5Fplus%5Ftwo:PREDICT", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}


def test_gzip_bodies(http: httpx.Client) -> None:
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    answer = http.post(
        "/v1/models/half_plus_two:predict", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert answer.json() == {"predictions": [2.5, 3.0]}
    answer = http.post(
        "/v1/models/half_plus_two:predict",
        content=b"not gzip",
        headers={"Content-Encoding": "gzip"},
    )
    assert answer.status_code == 400 and "gzip" in answer.json()["error"]


def test_bodies_over_the_limit_get_413_and_the_server_keeps_serving(http: httpx.Client) -> None:
    big = json.dumps({"instances": [1.0] * 50_000})
    answer = http.post("/v1/models/half_plus_two:predict", content=big)
    assert answer.status_code == 413
    bomb = gzip.compress(b" " * 1_000_000)  # small on the wire, over the limit inflated
    answer = http.post(
        "/v1/models/half_plus_two:predict", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 413
    assert post(http, "/v1/models/half_plus_two:predict", {"instances": [1.0]}).status_code == 200


def test_cors_headers_and_preflight(http: httpx.Client) -> None:
    answer = post(http, "/v1/models/half_plus_two:predict", {"instances": [1.0]})
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-allow-methods"] == "POST, GET"
    assert answer.headers["access-control-allow-headers"] == "Content-Type"
    assert http.get("/v1/models/nope").headers["access-control-allow-origin"] == "*"
    # TFS answers a preflight with an Origin 200, without one 400.
    preflight = http.options(
        "/v1/models/half_plus_two:predict", headers={"Origin": "https://example.com"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "POST, GET"
    assert preflight.headers["access-control-allow-headers"] == "Content-Type"
    answer = http.options("/v1/models/half_plus_two:predict")
    assert answer.status_code == 400
    assert answer.json() == {"error": "Origin header is missing in CORS preflight"}


def test_metrics_page_counts_requests(http: httpx.Client) -> None:
    for _ in range(3):
        post(http, "/v1/models/half_plus_three:predict", {"instances": [1.0]})
    post(http, "/v1/models/half_plus_three:predict", {"instances": ["bad"]})
    page = http.get("/metrics")
    assert page.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(page.text)}
    counts = {
        (s.labels["model_name"], s.labels["status"]): s.value
        for s in families[":tensorflow:serving:request_count"].samples
    }
    assert counts[("half_plus_three", "OK")] >= 3
    assert counts[("half_plus_three", "INVALID_ARGUMENT")] >= 1
    latency = families[":tensorflow:serving:request_latency"]
    assert any(
        s.labels.get("entrypoint") == "REST" and s.labels.get("model_name") == "half_plus_three"
        for s in latency.samples
    )
    assert ":tensorflow:serving:request_count counter" in page.text  # no _total suffix
    states = {
        s.labels["model_name"]: s.value for s in families["servo_model_version_state"].samples
    }
    assert states["half_plus_two"] == 30
