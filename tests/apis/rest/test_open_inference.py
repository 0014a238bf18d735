"""The Open Inference Protocol on the REST app (in process, over the fake core): live, server
readiness that follows every configured model's versions, a model's readiness, server and
model metadata, and infer (JSON and binary tensors, versions and labels, errors, limits,
metrics and request logs as TFS's predict's)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import servo
from servo.apis.rest.app import RestOptions
from servo.core.servable_state import ManagerState
from servo.core.status import Code, Status
from servo.decoded_size import DecodeLimits
from servo.metrics import ServerMetrics
from tests.support.inprocess import FakeCore, RecordingLogger, RestClient, data_plane


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


@pytest.fixture
def rest(served: FakeCore) -> Iterator[RestClient]:
    client = RestClient(data_plane(served))
    yield client
    client.close()


def test_server_metadata_and_liveness(rest: RestClient) -> None:
    assert rest.get("/v2").json() == {
        "name": "servo",
        "version": servo.__version__,
        "extensions": ["binary_tensor_data"],  # no repository in this app
    }
    live = rest.get("/v2/health/live")
    assert (live.status, live.json()) == (200, {"live": True})


def test_the_server_is_ready_only_while_every_model_has_an_available_version(
    served: FakeCore, rest: RestClient
) -> None:
    ready = rest.get("/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})
    # A new model still loading, and one whose only version failed.
    served.set_state("loading", 1, ManagerState.LOADING)
    served.set_state("failed", 3, ManagerState.END, Status(Code.NOT_FOUND, "no model.onnx"))
    ready = rest.get("/v2/health/ready")
    assert ready.status == 400
    assert ready.json() == {
        "error": "Not ready: no AVAILABLE version of 2 model(s): loading (version 1 LOADING); "
        "failed (version 3 END: NOT_FOUND: no model.onnx)"
    }
    served.states["loading"][1] = (ManagerState.AVAILABLE, Status())
    served.set_state("failed", 4, ManagerState.AVAILABLE)
    assert rest.get("/v2/health/ready").status == 200


def test_a_models_readiness(served: FakeCore, rest: RestClient) -> None:
    answer = rest.get("/v2/models/half_plus_two/ready")
    assert (answer.status, answer.json()) == (200, {"name": "half_plus_two", "ready": True})
    assert rest.get("/v2/models/two_versions/versions/124/ready").status == 200
    served.set_state("half_plus_two", 125, ManagerState.LOADING)
    answer = rest.get("/v2/models/half_plus_two/versions/125/ready")
    assert (answer.status, answer.json()) == (
        400,
        {"error": "Not ready: version 125 of half_plus_two (version 125 LOADING)"},
    )
    answer = rest.get("/v2/models/half_plus_two/versions/7/ready")
    assert answer.json() == {"error": "Not ready: version 7 of half_plus_two (nothing loaded yet)"}
    answer = rest.get("/v2/models/nope/ready")
    assert (answer.status, answer.json()) == (
        404,
        {"error": "Model nope is not in the server's config"},
    )


def test_other_v2_paths_are_not_found(rest: RestClient) -> None:
    for method, path in [("GET", "/v2/health"), ("POST", "/v2/health/live"), ("GET", "/V2")]:
        answer = rest.request(method, path)
        assert answer.status == 404, (method, path)
    assert rest.get("/v2x").status == 404


# -- model metadata ----------------------------------------------------------------------------


def test_model_metadata_in_the_protocols_words(rest: RestClient) -> None:
    answer = rest.get("/v2/models/mlp")
    assert (answer.status, answer.json()) == (
        200,
        {
            "name": "mlp",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
        },
    )
    two_io = rest.get("/v2/models/two_io").json()
    assert two_io["platform"] == "python"
    assert two_io["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "tag", "datatype": "BYTES", "shape": [-1]},
    ]
    # Every AVAILABLE version, newest first; a version or a label picks whose signature.
    assert rest.get("/v2/models/two_versions").json()["versions"] == ["124", "123"]
    assert rest.get("/v2/models/two_versions/versions/stable").status == 200
    assert rest.get("/v2/models/two_versions/versions/123").json()["name"] == "two_versions"


def test_metadata_of_a_model_with_no_available_version_says_why(
    served: FakeCore, rest: RestClient
) -> None:
    served.set_state("failed", 3, ManagerState.END, Status(Code.NOT_FOUND, "no model.onnx"))
    answer = rest.get("/v2/models/failed")
    assert answer.status == 404
    assert answer.error.endswith("; failed: version 3 END: NOT_FOUND: no model.onnx")
    assert rest.get("/v2/models/never_configured").status == 404


# -- infer ---------------------------------------------------------------------------------------

X = {"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}


def _binary(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(doc).encode()
    return header + b"".join(chunks), {"inference-header-content-length": str(len(header))}


def _split(answer: Any) -> tuple[dict[str, Any], bytes]:
    cut = int(answer.headers["inference-header-content-length"])
    return json.loads(answer.body[:cut]), answer.body[cut:]


def test_infer_with_json_tensors_is_a_predict(rest: RestClient) -> None:
    answer = rest.post("/v2/models/half_plus_two/infer", {"id": "r-1", "inputs": [X]})
    assert (answer.status, answer.json()) == (
        200,
        {
            "model_name": "half_plus_two",
            "model_version": "123",
            "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [3, 1], "data": [2.5, 3.0, 4.5]}
            ],
            "id": "r-1",
        },
    )
    v1 = rest.post("/v1/models/half_plus_two:predict", {"instances": [[1.0], [2.0], [5.0]]})
    assert v1.json() == {"predictions": [[2.5], [3.0], [4.5]]}
    # Nested data is read in row-major order, as flat data is.
    nested = {**X, "data": [[1.0], [2.0], [5.0]]}
    assert (
        rest.post("/v2/models/half_plus_two/infer", {"inputs": [nested]}).json()["outputs"]
        == (answer.json()["outputs"])
    )


def test_infer_by_version_and_by_label(rest: RestClient) -> None:
    x = {**X, "shape": [3]}
    for version, answered in [("123", "123"), ("124", "124"), ("stable", "123"), ("canary", "124")]:
        path = f"/v2/models/two_versions/versions/{version}/infer"
        assert rest.post(path, {"inputs": [x]}).json()["model_version"] == answered
    missing = rest.post("/v2/models/two_versions/versions/nolabel/infer", {"inputs": [x]})
    assert missing.status in (400, 404) and "nolabel" in missing.error


def test_a_name_or_label_with_a_slash_is_read_from_the_decoded_path(
    served: FakeCore, rest: RestClient
) -> None:
    """`/v2/models/a%2Fb/...` reaches the app decoded (`a/b`); the served name is routed."""
    h2 = served.models["half_plus_two"][123]
    served.add("a/b", h2, version=1).add("a/b/ready", h2, version=5)
    served.labels["a/b"] = {"x/y": 1}
    for version in ("", "/versions/1", "/versions/x/y"):
        path = f"/v2/models/a/b{version}"
        answer = rest.post(f"{path}/infer", {"inputs": [X]})
        assert (answer.status, answer.json()["model_name"]) == (200, "a/b"), path
        assert answer.json()["model_version"] == "1"
        answer = rest.get(f"{path}/ready")
        assert (answer.status, answer.json()) == (200, {"name": "a/b", "ready": True}), path
        answer = rest.get(path)
        assert (answer.status, answer.json()["name"]) == (200, "a/b"), path
    # Readiness of a/b is read first; the model named a/b/ready has its metadata route.
    assert rest.get("/v2/models/a/b/ready").json() == {"name": "a/b", "ready": True}
    assert rest.get("/v2/models/a/b/ready/ready").json() == {"name": "a/b/ready", "ready": True}
    answer = rest.get("/v2/models/x/y")
    assert (answer.status, answer.error) == (404, "Not found: GET /v2/models/x/y")
    answer = rest.post("/v2/models/x/y/infer", {"inputs": [X]})
    assert (answer.status, answer.error) == (404, "Not found: POST /v2/models/x/y/infer")


def test_several_inputs_bytes_and_the_outputs_asked_for(rest: RestClient) -> None:
    doc = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "tag", "shape": [2], "datatype": "BYTES", "data": ["ab", "cd"]},
        ],
        "outputs": [{"name": "tag_bytes"}, {"name": "sum"}],
    }
    outputs = rest.post("/v2/models/two_io/infer", doc).json()["outputs"]
    assert outputs == [
        {"name": "tag_bytes", "datatype": "BYTES", "shape": [2], "data": ["ba", "dc"]},
        {"name": "sum", "datatype": "FP32", "shape": [2], "data": [3.0, 7.0]},
    ]


def test_binary_tensors_in_and_out(rest: RestClient) -> None:
    a = np.array([[1, 2], [3, 4]], dtype="<f4")
    tags = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 3) + b"\xff\x00c"
    body, headers = _binary(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [2, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "tag",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tags)},
                },
            ],
            "outputs": [
                {"name": "sum", "parameters": {"binary_data": True}},
                {"name": "tag_bytes", "parameters": {"binary_data": True}},
            ],
        },
        a.tobytes(),
        tags,
    )
    answer = rest.post("/v2/models/two_io/infer", body, headers=headers)
    assert answer.status == 200, answer.body
    doc, data = _split(answer)
    reversed_tags = struct.pack("<I", 2) + b"ba" + struct.pack("<I", 3) + b"c\x00\xff"
    assert doc["outputs"] == [
        {"name": "sum", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
        {
            "name": "tag_bytes",
            "datatype": "BYTES",
            "shape": [2],
            "parameters": {"binary_data_size": len(reversed_tags)},
        },
    ]
    assert data == np.array([3, 7], dtype="<f4").tobytes() + reversed_tags
    # binary_data_output: every output in binary unless one asks otherwise.
    answer = rest.post(
        "/v2/models/half_plus_two/infer",
        {"inputs": [X], "parameters": {"binary_data_output": True}},
    )
    doc, data = _split(answer)
    assert np.frombuffer(data, "<f4").tolist() == [2.5, 3.0, 4.5]
    # Bytes that are not UTF-8 cannot be JSON: the answer says to ask for binary data.
    body, headers = _binary(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [2, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "tag",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tags)},
                },
            ],
        },
        a.tobytes(),
        tags,
    )
    bad = rest.post("/v2/models/two_io/infer", body, headers=headers)
    assert bad.status == 400
    assert bad.error.startswith("Output 'tag_bytes' holds bytes that are not UTF-8 text")
    assert '"parameters": {"binary_data": true}' in bad.error


def _infer_error(rest: RestClient, doc: Any, model: str = "half_plus_two", **kwargs: Any) -> str:
    answer = rest.post(f"/v2/models/{model}/infer", doc, **kwargs)
    assert answer.status == 400, (doc, answer.body)
    return answer.error


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({}, 'The request has no "inputs": give a list of its input tensors'),
        (
            {"inputs": [{"name": "x", "shape": [3, 1], "data": [1, 2, 3]}]},
            "Input 'x': \"datatype\" is missing or not a string",
        ),
        (
            {"inputs": [{**X, "datatype": "FP64"}]},
            "Input 'x' has datatype FP64; the model takes FP32",
        ),
        (
            {"inputs": [{**X, "datatype": "FLOAT"}]},
            "Input 'x' has datatype 'FLOAT', which is not one of the protocol's",
        ),
        (
            {"inputs": [{**X, "shape": [4, 1]}]},
            "Input 'x' has shape [4, 1], 4 element(s), but its data holds 3",
        ),
        (
            {"inputs": [{**X, "shape": [3, -1]}]},
            "Input 'x' has shape [3, -1]: a dimension is negative",
        ),
        ({"inputs": [{**X, "data": ["1", "2", "3"]}]}, "Input 'x' of datatype FP32 holds a string"),
        (
            {"inputs": [{**X, "data": [[1, 2], [3]]}]},
            "Input 'x': its data is not a list of numbers nested to one depth",
        ),
        ({"inputs": [X, X]}, "Input 'x' is given twice"),
        (
            {"inputs": [X], "outputs": [{"name": "y"}, {"name": "y"}]},
            "Output 'y' is requested twice",
        ),
        (
            {"inputs": [X], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
            "Output 'y': servo has no classification extension",
        ),
        (
            {"inputs": [{**X, "parameters": {"shared_memory_region": "r"}}]},
            "Input 'x': servo has no shared-memory extension",
        ),
        ({"inputs": [X], "id": 7}, '"id" must be a string'),
        (
            {"inputs": [X], "parameters": {"signature_name": "nope"}},
            "The model has no signature 'nope'",
        ),
        ([1], "The request's JSON must be an object"),
    ],
)
def test_bad_infer_requests_say_what_is_wrong(rest: RestClient, doc: Any, error: str) -> None:
    assert _infer_error(rest, doc).startswith(error)


def test_binary_framing_errors(rest: RestClient) -> None:
    spec = {
        "name": "x",
        "shape": [3, 1],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 12},
    }
    raw = np.array([1, 2, 5], dtype="<f4").tobytes()
    body, headers = _binary({"inputs": [spec]}, raw)
    assert rest.post("/v2/models/half_plus_two/infer", body, headers=headers).status == 200
    assert "runs past the request's binary data" in _infer_error(rest, body[:-1], headers=headers)
    assert "bytes of binary data that no input's binary_data_size claims" in _infer_error(
        rest, body + b"\x00", headers=headers
    )
    for length in ("x", "\u0663", "9" * 5000, str(len(body) + 1)):
        assert f"Inference-Header-Content-Length is {length!r}" in _infer_error(
            rest, body, headers={"inference-header-content-length": length}
        )
    small, small_headers = _binary(
        {"inputs": [{**spec, "parameters": {"binary_data_size": 8}}]}, raw[:8]
    )
    assert "12 bytes expected, 8 given" in _infer_error(rest, small, headers=small_headers)
    assert _infer_error(rest, b"{not json").startswith("The request is not JSON")


def test_unknown_models_and_unknown_inputs(rest: RestClient) -> None:
    answer = rest.post("/v2/models/never_served/infer", {"inputs": [X]})
    assert answer.status == 404
    error = _infer_error(rest, {"inputs": [{**X, "name": "z"}]})
    assert "z" in error


def test_infer_within_the_decode_limits(served: FakeCore) -> None:
    limits = DecodeLimits(max_tensor_bytes=8, max_request_bytes=1000)
    client = RestClient(data_plane(served), RestOptions(decode_limits=limits))
    try:
        error = _infer_error(client, {"inputs": [X]})
        assert "over the limit of 8 bytes per tensor (--max_decoded_bytes_per_tensor)" in error
    finally:
        client.close()


def test_a_v2_infer_is_counted_timed_and_logged_as_a_predict(
    served: FakeCore, metrics: ServerMetrics
) -> None:
    logger = RecordingLogger()
    client = RestClient(data_plane(served, metrics=metrics, request_logger=logger))
    try:
        client.post("/v2/models/half_plus_two/infer", {"inputs": [X]})
        client.post("/v1/models/half_plus_two:predict", {"instances": [[1.0]]})
        client.post("/v2/models/half_plus_two/infer", {"inputs": [{**X, "datatype": "FP64"}]})
    finally:
        client.close()
    count = metrics.request_count.value
    assert count("half_plus_two", "OK") == 2
    assert count("half_plus_two", "INVALID_ARGUMENT") == 1
    assert metrics.request_latency.count("half_plus_two", "predict", "REST") == 2
    kinds = [(kind, model) for kind, model, _, _ in logger.records]
    assert kinds == [("predict", "half_plus_two")] * 2
    request = logger.records[0][2]
    assert list(request.inputs) == ["x"] and request.model_spec.name == "half_plus_two"


def test_a_cors_preflight_to_v2_is_answered_as_v1s(rest: RestClient) -> None:
    answer = rest.options("/v2/models/mlp/infer", headers={"Origin": "http://example.test"})
    assert answer.status == 200
    assert rest.options("/v2/models/mlp/infer").status == 404  # no Origin: no preflight


def test_a_v2_infer_refused_for_its_body_is_counted_by_the_refusals_code(
    served: FakeCore, metrics: ServerMetrics
) -> None:
    client = RestClient(data_plane(served, metrics=metrics), RestOptions(max_body_bytes=20))
    try:
        answer = client.post("/v2/models/half_plus_two/infer", {"inputs": [X]})
    finally:
        client.close()
    assert answer.status == 413
    assert metrics.request_count.value("half_plus_two", "RESOURCE_EXHAUSTED") == 1
