"""Every error answer of TFS's REST API through a real server: its HTTP status and TFS's words,
as `{"error": message}` in application/json (conftest's `rest` client checks the type of every
answer). The server (conftest's `rest_server`) is shared with test_rest.py."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests.integration.conftest import REST_MAX_BODY_BYTES

pytestmark = pytest.mark.integration

H2 = "/v1/models/half_plus_two"


def error_of(answer: httpx.Response) -> str:
    body = answer.json()
    assert list(body) == ["error"], body
    return body["error"]


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        # TFS's handler test's malformed paths, and a few more.
        ("GET", "/v1/foo", "Malformed request: GET /v1/foo"),
        ("POST", "/v1/foo", "Malformed request: POST /v1/foo"),
        ("POST", H2, f"Malformed request: POST {H2}"),
        ("GET", f"{H2}:predict", f"Malformed request: GET {H2}:predict"),
        ("PUT", H2, f"Malformed request: PUT {H2}"),
        ("DELETE", H2, f"Malformed request: DELETE {H2}"),
        ("POST", "/v1/models", "Malformed request: POST /v1/models"),
        (
            "GET",
            "/v1/models/debug/model_name",
            "Malformed request: GET /v1/models/debug/model_name",
        ),
        ("POST", f"{H2}/metadata", f"Malformed request: POST {H2}/metadata"),
        ("POST", f"{H2}:explain", f"Malformed request: POST {H2}:explain"),
        ("POST", f"{H2}/version/50:regress", f"Malformed request: POST {H2}/version/50:regress"),
        (
            "POST",
            f"{H2}/versions/HELLO:regress",
            f"Malformed request: POST {H2}/versions/HELLO:regress",
        ),
        ("POST", f"{H2}/label/x:regress", f"Malformed request: POST {H2}/label/x:regress"),
        (
            "POST",
            f"{H2}/versions/123/labels/x:predict",
            f"Malformed request: POST {H2}/versions/123/labels/x:predict",
        ),
        ("GET", "/v1/models", "Missing model name in request."),
        ("GET", "/v1/models/", "Malformed request: GET /v1/models/"),
        (
            "GET",
            f"{H2}/versions/99999999999999999999",
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        (
            "POST",
            f"{H2}/versions/99999999999999999999:predict",
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
    ],
)
def test_malformed_requests_are_400(
    rest: httpx.Client, method: str, path: str, message: str
) -> None:
    answer = rest.request(method, path, content=None if method == "GET" else b"{}")
    assert answer.status_code == 400
    assert error_of(answer) == message


def test_paths_outside_v1_are_404(rest: httpx.Client) -> None:
    answer = rest.get("/v2/models/half_plus_two")
    assert answer.status_code == 404
    assert error_of(answer) == "Not found: GET /v2/models/half_plus_two"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", f"{H2}/versions/9", 404, "Could not find version 9 of model half_plus_two"),
        ("GET", "/v1/models/nope/versions/1", 404, "Could not find version 1 of model nope"),
        ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        (
            "GET",
            f"{H2}/versions/9/metadata",
            404,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        (
            "POST",
            f"{H2}/versions/7:predict",
            404,
            "Servable not found for request: Specific(half_plus_two, 7)",
        ),
        (
            "POST",
            "/v1/models/nope:classify",
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/two_versions/labels/beta:predict",
            400,
            "Unrecognized servable version label: beta",
        ),
        ("GET", "/v1/models/two_versions/labels/x", 400, "Unrecognized servable version label: x"),
        (
            "GET",
            "/v1/models/two_versions/labels/x/metadata",
            400,
            "Unrecognized servable version label: x",
        ),
        ("GET", f"{H2}/labels/stable", 400, "Unrecognized servable version label: stable"),
    ],
)
def test_unknown_models_versions_and_labels(
    rest: httpx.Client, method: str, path: str, status: int, message: str
) -> None:
    body = json.dumps({"instances": [1.0], "examples": [{"x": 1.0}]})
    answer = rest.request(method, path, content=None if method == "GET" else body)
    assert answer.status_code == status
    assert error_of(answer) == message


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        # The signature, and the request's form.
        (
            f"{H2}:predict",
            {"signature_name": "x", "instances": [1]},
            400,
            'Serving signature name: "x" not found in signature def',
        ),
        (
            f"{H2}:predict",
            {"signature_name": "x"},  # the signature is looked up before the form is checked
            400,
            'Serving signature name: "x" not found in signature def',
        ),
        (
            f"{H2}:predict",
            {"signature_name": 100},
            400,
            'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
            "'signature_name' key must be a string value.",
        ),
        (
            f"{H2}:predict",
            {},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            f"{H2}:predict",
            {"instances": [1.0], "inputs": [1.0]},
            400,
            'JSON Value: {\n    "instances": [1.0],\n    "inputs": [1.0]\n} Not formatted '
            "correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (
            "/v1/models/two_io:predict",
            {"inputs": {"a": [[1.0, 2.0]]}},
            400,
            "Missing named input: tag in 'inputs' object.",
        ),
        (
            "/v1/models/two_io:predict",
            {"instances": [{"a": [1.0, 2.0]}]},
            400,
            "Failed to process element: 0 of 'instances' list. JSON object: {\n"
            '    "a": [1.0, 2.0]\n} keys must be equal to: a,tag',
        ),
        # Values of the wrong type.
        (
            f"{H2}:predict",
            {"instances": ["a"]},
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            f"{H2}:predict",
            {"inputs": [[True]]},
            400,
            "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            "/v1/models/two_io:predict",
            {"instances": [{"a": [1.0, 2.0], "tag": 5}]},
            400,
            "Failed to process element: 0 key: tag of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON Value: 5 Type: Number is not of expected type: string",
        ),
        (
            f"{H2}:predict",
            {"instances": [[1.0], [2.0, 3.0]]},
            400,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 1 but got: 2",
        ),
        # Types JSON cannot carry: 501 in the columnar form; the row form wraps it in a 400.
        (
            "/v1/models/two_io:predict",
            {"signature_name": "halves", "inputs": [1.0]},
            501,
            "Conversion of JSON Value: 1.0 to type: half",
        ),
        (
            "/v1/models/two_io:predict",
            {"signature_name": "complexes", "inputs": [1.0, 2.0]},
            501,
            "Conversion of JSON Value: 1.0 to type: complex64",
        ),
        (
            "/v1/models/two_io:predict",
            {"signature_name": "halves", "instances": [1.0]},
            400,
            "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
            "Conversion of JSON Value: 1.0 to type: half",
        ),
        # Classify and regress.
        (
            f"{H2}:regress",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            400,
            "No signature was found with the name: nope",
        ),
        (
            f"{H2}:regress",
            {"signature_name": "regress_x_to_y"},
            400,
            'JSON Value: {\n    "signature_name": "regress_x_to_y"\n} When method is classify, '
            "key 'examples' is expected and was not found",
        ),
        (
            f"{H2}:classify",
            {"signature_name": "classify_x_to_y", "examples": []},
            400,
            'JSON Value: {\n    "signature_name": "classify_x_to_y",\n    "examples": []\n} '
            "'examples' value is an empty array",
        ),
    ],
)
def test_bad_requests(
    rest: httpx.Client, path: str, body: object, status: int, message: str
) -> None:
    answer = rest.post(path, content=json.dumps(body))
    assert answer.status_code == status, answer.text
    assert error_of(answer) == message


def test_signature_shape_errors_of_classify_and_regress(rest: httpx.Client) -> None:
    # Without --enable_signature_method_name_check TFS checks a signature's tensors, not its
    # method: serving_default has no 'inputs' tensor, so it cannot regress or classify.
    answer = rest.post(f"{H2}:regress", json={"examples": [{"x": 1.0}]})
    assert answer.status_code == 400
    assert error_of(answer).startswith("No regression inputs found in SignatureDef: inputs {")
    answer = rest.post(f"{H2}:classify", json={"examples": [{"x": 1.0}]})
    assert answer.status_code == 400
    assert error_of(answer).startswith("No classification inputs found in SignatureDef: ")


def test_tensorflow_errors_of_example_parsing(rest: httpx.Client) -> None:
    # An integer list for a float feature; a missing feature.
    answer = rest.post(
        f"{H2}:regress", json={"signature_name": "regress_x_to_y", "examples": [{"x": [4]}]}
    )
    assert answer.status_code == 400
    assert "Data type: int64 but expected type: float" in error_of(answer)
    answer = rest.post(
        f"{H2}:regress", json={"signature_name": "regress_x_to_y", "examples": [{"y": 4.0}]}
    )
    assert answer.status_code == 400
    assert "Feature: x (data type: float) is required but could not be found." in error_of(answer)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("CANCELLED", 499),
        ("UNKNOWN", 500),
        ("INVALID_ARGUMENT", 400),
        ("DEADLINE_EXCEEDED", 504),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("PERMISSION_DENIED", 403),
        ("RESOURCE_EXHAUSTED", 429),
        ("FAILED_PRECONDITION", 400),
        ("ABORTED", 409),
        ("OUT_OF_RANGE", 400),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAVAILABLE", 503),
        ("DATA_LOSS", 500),
        ("UNAUTHENTICATED", 401),
    ],
)
def test_every_error_code_has_tfs_http_status(rest: httpx.Client, code: str, status: int) -> None:
    number = ERROR_CODES.index(code) + 1
    answer = rest.post(
        "/v1/models/two_io:predict", json={"signature_name": "fail", "instances": [number]}
    )
    assert answer.status_code == status
    assert error_of(answer) == f"failed with {code}"


ERROR_CODES = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]  # error::Code's numbering, from 1


def test_an_exception_in_a_model_is_500_and_the_server_keeps_serving(rest: httpx.Client) -> None:
    answer = rest.post(
        "/v1/models/two_io:predict", json={"signature_name": "fail", "instances": [-1]}
    )
    assert answer.status_code == 500
    assert error_of(answer) == "Model.predict raised ValueError: a bug in the model"
    answer = rest.post("/v1/models/two_io:predict", json={"signature_name": "echo", "inputs": [1]})
    assert answer.json() == {"outputs": [1.0]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # TFS's handler test's bodies.
        (b"", "JSON Parse error: The document is empty"),
        (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        (b'{"instances": [1,', "JSON Parse error: Invalid value. at offset: 17"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (
            b'{"instances": [1e400]}',
            "JSON Parse error: Number too big to be stored in double. at offset: 15",
        ),
    ],
)
def test_bad_json_is_400_with_rapidjsons_words(
    rest: httpx.Client, body: bytes, message: str
) -> None:
    answer = rest.post(f"{H2}:predict", content=body)
    assert answer.status_code == 400
    assert error_of(answer) == message


def test_a_corrupt_gzip_body_is_400(rest: httpx.Client) -> None:
    for body in [b"not gzip", gzip.compress(b'{"instances": [1.0]}')[:-12]]:
        answer = rest.post(f"{H2}:predict", content=body, headers={"Content-Encoding": "gzip"})
        assert answer.status_code == 400
        assert error_of(answer).startswith("Invalid gzip body: ")


def test_bodies_over_the_limit_are_413_and_the_server_keeps_serving(
    rest: httpx.Client,
) -> None:
    big = json.dumps({"instances": [1.0] * REST_MAX_BODY_BYTES}).encode()
    answer = rest.post(f"{H2}:predict", content=big)
    assert answer.status_code == 413
    assert error_of(answer) == (
        f"Request body of {len(big)} bytes is over the {REST_MAX_BODY_BYTES} limit"
    )
    # Small on the wire, over the limit once inflated.
    bomb = gzip.compress(b" " * (10 * REST_MAX_BODY_BYTES))
    answer = rest.post(f"{H2}:predict", content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert error_of(answer) == (
        f"Request body inflates to more than the {REST_MAX_BODY_BYTES} bytes limit"
    )
    # Without a Content-Length: refused once the chunks pass the limit.
    chunks = (b" " * 10_000 for _ in range(1000))
    answer = rest.post(f"{H2}:predict", content=chunks)
    assert answer.status_code == 413
    assert error_of(answer) == f"Request body is over the {REST_MAX_BODY_BYTES} limit"
    answer = rest.post(f"{H2}:predict", json={"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
