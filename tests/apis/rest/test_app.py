"""The REST app (servo.apis.rest.app) in process, called as the HTTP server calls it, over a
fake core serving the API tests' models (tests/apis/conftest.py): its routes, every error
answer in TFS's words and HTTP status, the answers' forms, status and metadata, CORS, body
limits and encodings, deadlines, and the request metrics and their page.

Paths are given as the HTTP server hands them to the app, URL-decoded; the decoding itself, real
sockets and chunked bodies on the wire are tested through a server in
tests/integration/test_rest.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servo.apis.rest.app import DRAIN_BYTES, OPENAPI_FILE, OPENAPI_PATH, RestOptions
from servo.apis.rest.http_server import BodyBudgetExceeded
from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError, Status
from servo.decoded_size import DecodeLimits
from servo.metrics import ServerMetrics
from tests.support.inprocess import FakeCore, RestAnswer, RestClient, data_plane
from tests.support.servables import Gate, raising
from tests.support.testdata import TfsModels, saved_signature_map_json, tfs_path

H2 = "/v1/models/half_plus_two"
METRICS_PATH = "/monitoring/prometheus/metrics"  # as TFS's monitoring_config.txt sets it
MAX_BODY_BYTES = 100_000
SERVER_OPTIONS = RestOptions(
    enable_cors=True, max_body_bytes=MAX_BODY_BYTES, metrics_path=METRICS_PATH
)


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics()


@pytest.fixture
def rest(served: FakeCore, metrics: ServerMetrics) -> Iterator[RestClient]:
    """The app as the e2e test server runs it: CORS on, metrics on, a small body limit."""
    client = RestClient(data_plane(served, metrics=metrics), SERVER_OPTIONS)
    yield client
    client.close()
    served.assert_released()


@pytest.fixture
def plain(served: FakeCore) -> Iterator[RestClient]:
    """The app with servo's defaults: no CORS, no metrics."""
    client = RestClient(data_plane(served))
    yield client
    client.close()
    served.assert_released()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# -- routes ----------------------------------------------------------------------------------


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
        ("HEAD", H2, f"Malformed request: HEAD {H2}"),
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
        ("POST", f"{H2}:predict/more", f"Malformed request: POST {H2}:predict/more"),
        ("GET", f"{H2}/metadata/more", f"Malformed request: GET {H2}/metadata/more"),
        ("GET", "/v1/models/versions/1", "Missing model name in request."),
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
def test_malformed_requests_are_400(rest: RestClient, method: str, path: str, message: str) -> None:
    answer = rest.request(method, path, b"" if method == "GET" else b"{}")
    assert answer.status == 400
    assert answer.error == message


def test_the_openapi_document_is_served_at_a_path_tfs_does_not_use(rest: RestClient) -> None:
    answer = rest.get(OPENAPI_PATH)
    assert answer.status == 200
    assert answer.body == OPENAPI_FILE.read_bytes()
    assert answer.json()["openapi"].startswith("3.")
    assert not OPENAPI_PATH.startswith("/v1/models")  # every TFS route is under /v1/models
    # Only a GET: other methods are malformed, as on any other /v1 path.
    assert rest.post(OPENAPI_PATH, b"{}").error == f"Malformed request: POST {OPENAPI_PATH}"


def test_paths_outside_v1_are_404(rest: RestClient) -> None:
    answer = rest.get("/v2/models/half_plus_two/labels/x")
    assert answer.status == 404
    assert answer.error == "Not found: GET /v2/models/half_plus_two/labels/x"
    for method, path in [("POST", "/index.html"), ("GET", "/v1"), ("OPTIONS", "/v2/models/x")]:
        answer = rest.request(method, path)
        assert (answer.status, answer.error) == (404, f"Not found: {method} {path}")


def test_paths_are_case_insensitive_but_names_and_labels_keep_their_case(
    rest: RestClient,
) -> None:
    answer = rest.post("/V1/MODELS/half_plus_two:PREDICT", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    answer = rest.post("/v1/Models/two_versions/Labels/stable:Regress", REGRESS_X_2)
    assert answer.json() == {"results": [3.0]}
    answer = rest.get("/V1/models/two_versions/VERSIONS/123/MetaData")
    assert answer.json()["model_spec"]["version"] == "123"
    answer = rest.post("/v1/models/Half_Plus_Two:predict", {"instances": [1.0]})
    assert (answer.status, answer.error) == (
        404,
        "Servable not found for request: Latest(Half_Plus_Two)",
    )
    answer = rest.get("/v1/models/two_versions/labels/STABLE")
    assert (answer.status, answer.error) == (400, "Unrecognized servable version label: STABLE")


def test_a_name_is_taken_as_the_http_server_decoded_it_once(rest: RestClient) -> None:
    """The HTTP server URL-decodes a path once; the app decodes nothing more ("%5F" stays)."""
    answer = rest.get("/v1/models/half%5Fplus%5Ftwo")
    assert (answer.status, answer.json()) == (
        404,
        {"error": "Could not find any versions of model half%5Fplus%5Ftwo"},
    )


def slashed(served: FakeCore) -> FakeCore:
    """The core serving half_plus_two's servable also as `a/b` (version 1, labelled `x/y`),
    `c:d` and `half_plus_two/versions/7` (a name that reads as another model's version)."""
    h2 = served.models["half_plus_two"][123]
    served.add("a/b", h2, version=1).add("c:d", h2, version=2).add("half_plus_two/versions/7", h2)
    served.labels["a/b"] = {"x/y": 1}
    return served


def test_a_name_or_label_with_a_slash_or_colon_is_read_from_the_decoded_path(
    served: FakeCore, rest: RestClient
) -> None:
    """TFS matches the raw path (`a%2Fb`), then decodes; the HTTP server decoded it already (`a/b`):
    the app reads the decoded path every way the raw one could have been written and routes
    the reading whose name is served."""
    slashed(served)
    for path, version in [
        ("/v1/models/a/b", "1"),  # a%2Fb
        ("/v1/models/a/b/versions/1", "1"),
        ("/v1/models/a/b/labels/x/y", "1"),  # a%2Fb/labels/x%2Fy
        ("/V1/Models/a/b/LABELS/x/y", "1"),
        ("/v1/models/c:d", "2"),  # c%3Ad
    ]:
        answer = rest.get(f"{path}/metadata")
        assert answer.status == 200, (path, answer.json())
        assert answer.json()["model_spec"]["version"] == version, path
        (status,) = rest.get(path).json()["model_version_status"]
        assert (status["version"], status["state"]) == (version, "AVAILABLE"), path
        answer = rest.post(f"{path}:predict", {"instances": [1.0]})
        assert answer.json() == {"predictions": [2.5]}, path
    answer = rest.get("/v1/models/a/b/metadata")
    assert answer.json()["model_spec"]["name"] == "a/b"
    answer = rest.post("/v1/models/a/b/labels/nope/no:predict", {"instances": [1.0]})
    assert (answer.status, answer.error) == (400, "Unrecognized servable version label: nope/no")
    answer = rest.post("/v1/models/a/b/versions/9:predict", {"instances": [1.0]})
    assert (answer.status, answer.error) == (
        404,
        "Servable not found for request: Specific(a/b, 9)",
    )


def test_the_reading_tfs_gives_an_unencoded_path_comes_first(
    served: FakeCore, rest: RestClient
) -> None:
    """`half_plus_two/versions/7` is served, and so is half_plus_two: the path reads as
    half_plus_two's version 7 first, as TFS reads it unencoded."""
    slashed(served)
    answer = rest.post("/v1/models/half_plus_two/versions/7:predict", {"instances": [1.0]})
    assert (answer.status, answer.error) == (
        404,
        "Servable not found for request: Specific(half_plus_two, 7)",
    )
    del served.models["half_plus_two"], served.states["half_plus_two"]
    answer = rest.post("/v1/models/half_plus_two/versions/7:predict", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}  # the other model's only reading now


def test_a_slashed_path_that_names_no_served_model_is_malformed_as_in_tfs(
    served: FakeCore, rest: RestClient
) -> None:
    for method, path in [
        ("POST", "/v1/models/x/y:predict"),
        ("GET", "/v1/models/x/y"),
        ("GET", "/v1/models/x/y/metadata"),
        ("GET", "/v1/models/x:y"),
    ]:
        answer = rest.request(method, path, b"{}" if method == "POST" else b"")
        assert (answer.status, answer.error) == (400, f"Malformed request: {method} {path}")


def test_routes_that_depend_on_the_served_models_are_not_remembered(
    served: FakeCore, rest: RestClient
) -> None:
    assert rest.post("/v1/models/a/b:predict", {"instances": [1.0]}).status == 400
    slashed(served)
    assert rest.post("/v1/models/a/b:predict", {"instances": [1.0]}).status == 200
    assert "/v1/models/a/b:predict" not in rest.app._routes
    assert rest.post(f"{H2}:predict", {"instances": [1.0]}).status == 200
    assert f"{H2}:predict" in rest.app._routes


REGRESS_X_2 = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}


def test_versions_and_labels_choose_the_version_that_answers(rest: RestClient) -> None:
    for path, version in [
        ("/v1/models/two_versions/versions/123", "123"),
        ("/v1/models/two_versions/versions/124", "124"),
        ("/v1/models/two_versions/labels/stable", "123"),
        ("/v1/models/two_versions/labels/canary", "124"),
        ("/v1/models/two_versions", "124"),  # the latest
    ]:
        assert rest.get(f"{path}/metadata").json()["model_spec"]["version"] == version
        answer = rest.post(f"{path}:predict", {"instances": [[2.0]]})
        assert answer.json() == {"predictions": [[3.0]]}
        assert rest.post(f"{path}:regress", REGRESS_X_2).json() == {"results": [3.0]}
        answer = rest.post(f"{path}:classify", {**REGRESS_X_2, "signature_name": "classify_x_to_y"})
        assert answer.json() == {"results": [[["", 3.0]]]}


def test_the_route_cache_stays_bounded(rest: RestClient) -> None:
    for i in range(5000):
        assert rest.post(f"/v1/models/m{i}:predict", {"instances": [1.0]}).status == 404
    assert 0 < len(rest.app._routes) <= 4096
    assert rest.post(f"{H2}:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}


def test_a_scope_other_than_http_is_left_unanswered(rest: RestClient) -> None:
    class Websocket:
        proto, method, path, headers = "ws", "GET", f"{H2}", {}

    class Protocol:
        def response_bytes(self, *args: object) -> None:
            raise AssertionError("answered a websocket")

    rest.run(rest.app.__rsgi__(Websocket(), Protocol()))


# -- errors: models, versions, labels ----------------------------------------------------------


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
            "/v1/models/nope:regress",
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
    rest: RestClient, method: str, path: str, status: int, message: str
) -> None:
    body = json.dumps({"instances": [1.0], "examples": [{"x": 1.0}]})
    answer = rest.request(method, path, b"" if method == "GET" else body)
    assert answer.status == status
    assert answer.error == message


# -- errors: the request's body ------------------------------------------------------------


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
            f"{H2}:classify",
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
def test_bad_requests(rest: RestClient, path: str, body: object, status: int, message: str) -> None:
    answer = rest.post(path, json.dumps(body))
    assert answer.status == status, answer.body
    assert answer.error == message


def test_signature_shape_errors_of_classify_and_regress(rest: RestClient) -> None:
    # Without --enable_signature_method_name_check TFS checks a signature's tensors, not its
    # method: serving_default has no 'inputs' tensor, so it cannot regress or classify.
    answer = rest.post(f"{H2}:regress", {"examples": [{"x": 1.0}]})
    assert answer.status == 400
    assert answer.error.startswith("No regression inputs found in SignatureDef: inputs {")
    answer = rest.post(f"{H2}:classify", {"examples": [{"x": 1.0}]})
    assert answer.status == 400
    assert answer.error.startswith("No classification inputs found in SignatureDef: ")


def test_tensorflow_errors_of_example_parsing(rest: RestClient) -> None:
    # An integer list for a float feature; a missing feature.
    answer = rest.post(
        f"{H2}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [4]}]}
    )
    assert answer.status == 400
    assert "Data type: int64 but expected type: float" in answer.error
    answer = rest.post(
        f"{H2}:regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 4.0}]}
    )
    assert answer.status == 400
    assert "Feature: x (data type: float) is required but could not be found." in answer.error


ERROR_CODES = [
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
]  # error::Code's numbering, from 1


def test_the_error_codes_are_numbered_as_tensorflows() -> None:
    assert [(Code[name].value, name) for name, _ in ERROR_CODES] == [
        (number, name) for number, (name, _) in enumerate(ERROR_CODES, start=1)
    ]


@pytest.mark.parametrize(("code", "status"), ERROR_CODES)
def test_every_error_code_has_tfs_http_status(rest: RestClient, code: str, status: int) -> None:
    """A model's error, whatever its code, answered with TFS's HTTP status and its text."""
    answer = rest.post(
        "/v1/models/two_io:predict", {"signature_name": "fail", "instances": [Code[code].value]}
    )
    assert answer.status == status
    assert answer.error == f"failed with {code}"


def test_an_exception_in_a_model_is_500_and_the_app_keeps_serving(rest: RestClient) -> None:
    answer = rest.post("/v1/models/two_io:predict", {"signature_name": "fail", "instances": [-1]})
    assert answer.status == 500
    assert answer.error == "Model.predict raised ValueError: a bug in the model"
    answer = rest.post("/v1/models/two_io:predict", {"signature_name": "echo", "inputs": [1]})
    assert answer.json() == {"outputs": [1.0]}


def test_a_bug_is_500_with_its_type_and_is_logged(
    served: FakeCore, rest: RestClient, caplog: pytest.LogCaptureFixture
) -> None:
    served.add("buggy", raising(RuntimeError("boom")))
    answer = rest.post("/v1/models/buggy:predict", {"instances": [1.0]})
    assert (answer.status, answer.error) == (500, "Internal error: RuntimeError: boom")
    assert "REST POST /v1/models/buggy:predict failed" in caplog.text
    assert rest.post(f"{H2}:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}


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
def test_bad_json_is_400_with_rapidjsons_words(rest: RestClient, body: bytes, message: str) -> None:
    answer = rest.post(f"{H2}:predict", body)
    assert answer.status == 400
    assert answer.error == message


# -- the answers' forms --------------------------------------------------------------------


def test_tfs_readme_example(rest: RestClient) -> None:
    answer = rest.post(f"{H2}:predict", {"instances": [1.0, 2.0, 5.0]})
    assert answer.status == 200
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    answer = rest.post("/v1/models/half_plus_three:predict", {"instances": [[1.0], [2.0]]})
    assert answer.json() == {"predictions": [[3.5], [4.0]]}


def test_float32_answers_are_written_in_their_shortest_form(rest: RestClient) -> None:
    # 0.1f / 2 + 2 is 2.04999995..., which float32's shortest form writes as 2.05.
    answer = rest.post(f"{H2}:predict", {"instances": [0.1, 1 / 3]})
    assert answer.body == b'{"predictions":[2.05,2.1666667]}'
    answer = rest.post(f"{H2}:predict", {"inputs": {"x": [[0.1]]}})
    assert answer.body == b'{"outputs":[[2.05]]}'


def test_columnar_form_with_one_input(rest: RestClient) -> None:
    answer = rest.post(f"{H2}:predict", {"inputs": {"x": [[1.0], [3.0]]}})
    assert answer.json() == {"outputs": [[2.5], [3.5]]}
    answer = rest.post(f"{H2}:predict", {"inputs": [[1.0]]})
    assert answer.json() == {"outputs": [[2.5]]}
    answer = rest.post(f"{H2}:predict", {"signature_name": "serving_default", "inputs": [3.0, 4.0]})
    assert answer.json() == {"outputs": [3.5, 4.0]}


def test_two_inputs_and_two_outputs_in_both_forms_with_b64_in_and_out(rest: RestClient) -> None:
    # two_io: sum = a[0] + a[1]; tag_bytes = tag reversed, written as b64 for its _bytes name.
    rows = [{"a": [1.0, 2.0], "tag": "ab"}, {"a": [3.0, 4.5], "tag": b64(b"\x00\xff")}]
    answer = rest.post("/v1/models/two_io:predict", {"instances": rows})
    assert answer.status == 200, answer.body
    assert answer.json() == {
        "predictions": [
            {"sum": 3.0, "tag_bytes": b64(b"ba")},
            {"sum": 7.5, "tag_bytes": b64(b"\xff\x00")},
        ]
    }
    columns = {"a": [[1.0, 1.0], [2.0, 0.5]], "tag": ["xy", b64(b"\x01\x02")]}
    answer = rest.post("/v1/models/two_io:predict", {"inputs": columns})
    assert answer.json() == {
        "outputs": {"sum": [2.0, 2.5], "tag_bytes": [b64(b"yx"), b64(b"\x02\x01")]}
    }


def test_b64_string_inputs_of_a_single_input_model(rest: RestClient) -> None:
    instances = [b64(b"servo"), "the", b64(b"unknown")]
    answer = rest.post("/v1/models/vocab:predict", {"instances": instances})
    assert answer.json() == {"predictions": [8, 1, -1]}
    answer = rest.post("/v1/models/vocab:predict", {"inputs": [b64(b"the")]})
    assert answer.json() == {"outputs": [1]}


def test_nan_and_infinity_in_and_out(rest: RestClient) -> None:
    answer = rest.post(
        "/v1/models/two_io:predict",
        b'{"signature_name": "echo", "instances": [NaN, Infinity, -Infinity, 1.5]}',
    )
    assert answer.body == b'{"predictions":[NaN,Infinity,-Infinity,1.5]}'
    values = json.loads(answer.body)["predictions"]
    assert math.isnan(values[0]) and values[1:3] == [math.inf, -math.inf]
    answer = rest.post(f"{H2}:predict", b'{"inputs": [[NaN], [-Infinity]]}')
    assert answer.body == b'{"outputs":[[NaN],[-Infinity]]}'


def test_onnx_lookup_and_python_example_models(
    rest: RestClient, api_model_dirs: dict[str, Path]
) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 10
    answer = rest.post("/v1/models/mlp:predict", {"instances": x.tolist()})
    session = ort.InferenceSession(str(api_model_dirs["mlp"] / "1" / "model.onnx"))
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, rtol=1e-6)
    answer = rest.post("/v1/models/vocab:predict", {"instances": ["servo", "unknown", "the"]})
    assert answer.json() == {"predictions": [8, -1, 1]}
    answer = rest.post("/v1/models/word_count:predict", {"instances": ["a model server"]})
    assert answer.json() == {"predictions": [{"words": 3, "chars": 14}]}


def test_classify_and_regress_without_context(rest: RestClient) -> None:
    answer = rest.post(
        f"{H2}:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]},
    )
    assert answer.json() == {"results": [[["", 2.5]], [["", 4.0]]]}
    answer = rest.post(
        f"{H2}:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    assert answer.json() == {"results": [2.5, 3.0]}
    answer = rest.post(
        f"{H2}:regress",
        {"signature_name": "regress_x_to_y2", "examples": [{"x": 1.0}, {"x": [4.0]}]},
    )
    assert answer.json() == {"results": [3.5, 5.0]}  # x / 2 + 3
    answer = rest.post(
        "/v1/models/half_plus_three:regress",
        {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]},
    )
    assert answer.json() == {"results": [3.5]}


def test_classify_and_regress_with_context(rest: RestClient) -> None:
    # The context's features join every example's.
    answer = rest.post(
        f"{H2}:classify",
        {"signature_name": "classify_x_to_y", "context": {"x": 3.0}, "examples": [{}, {}]},
    )
    assert answer.json() == {"results": [[["", 3.5]], [["", 3.5]]]}
    answer = rest.post(
        f"{H2}:regress",
        {"signature_name": "regress_x_to_y2", "context": {"x": 4.0}, "examples": [{}]},
    )
    assert answer.json() == {"results": [5.0]}
    answer = rest.post(
        f"{H2}/versions/123:regress",
        {"signature_name": "regress_x_to_y", "context": {"y": 1.0}, "examples": [{"x": 6.0}]},
    )
    assert answer.json() == {"results": [5.0]}


# -- status and metadata -------------------------------------------------------------------

AVAILABLE = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_status_of_a_loaded_model(rest: RestClient) -> None:
    expected = {"model_version_status": [{"version": "123", **AVAILABLE}]}
    assert rest.get(H2).json() == expected
    assert rest.get(f"{H2}/versions/123").json() == expected
    # Written as TFS writes proto JSON: indented, int64 as strings, enums by name.
    assert rest.get(H2).body.decode() == json.dumps(expected, indent=2)


def test_status_of_two_versions_and_their_labels(rest: RestClient) -> None:
    answer = rest.get("/v1/models/two_versions").json()
    assert answer == {
        "model_version_status": [{"version": "124", **AVAILABLE}, {"version": "123", **AVAILABLE}]
    }
    for label, version in [("stable", "123"), ("canary", "124")]:
        answer = rest.get(f"/v1/models/two_versions/labels/{label}").json()
        assert answer == {"model_version_status": [{"version": version, **AVAILABLE}]}


def test_status_of_a_version_that_failed_names_its_error(
    served: FakeCore, rest: RestClient
) -> None:
    served.set_state("half_plus_two", 125, ManagerState.END, Status(Code.NOT_FOUND, "no model"))
    entry = {"version": "125", "state": "END"}
    entry["status"] = {"error_code": "NOT_FOUND", "error_message": "no model"}  # type: ignore[assignment]
    assert rest.get(f"{H2}/versions/125").json() == {"model_version_status": [entry]}
    assert rest.get(H2).json()["model_version_status"] == [entry, {"version": "123", **AVAILABLE}]
    assert rest.get(f"{H2}/metadata").json()["model_spec"]["version"] == "123"  # still serving


def test_every_model_is_listed_with_its_versions(served: FakeCore, rest: RestClient) -> None:
    """GET /v1/models (servo's route): each model's GetModelStatus versions by name, a failed
    version with its error, a model with nothing loaded yet with none."""
    served.set_state("half_plus_two", 125, ManagerState.END, Status(Code.NOT_FOUND, "no model"))
    served.states["waiting"] = {}
    answer = rest.get("/v1/models")
    assert answer.status == 200
    models = {m["name"]: m["model_version_status"] for m in answer.json()["models"]}
    assert list(models) == served.model_names()
    assert models["half_plus_two"] == [
        {
            "version": "125",
            "state": "END",
            "status": {"error_code": "NOT_FOUND", "error_message": "no model"},
        },
        {"version": "123", **AVAILABLE},
    ]
    assert models["two_versions"] == [
        {"version": "124", **AVAILABLE},
        {"version": "123", **AVAILABLE},
    ]
    assert models["waiting"] == []
    assert rest.get("/V1/MODELS").json() == answer.json()  # TFS's routes ignore case


def test_every_model_is_listed_with_its_version_labels(served: FakeCore, rest: RestClient) -> None:
    """Each listed model carries its labels (label -> version, a string as versions are; none:
    {}), so that the status page can show them beside the versions."""
    served.states["waiting"] = {}
    labels = {m["name"]: m["version_labels"] for m in rest.get("/v1/models").json()["models"]}
    assert labels["two_versions"] == {"canary": "124", "stable": "123"}
    assert labels["half_plus_two"] == {}
    assert labels["waiting"] == {}


def without_name(metadata: dict) -> dict:
    metadata = json.loads(json.dumps(metadata))
    metadata["model_spec"].pop("name")
    return metadata


def test_metadata_is_the_saved_signature_map(rest: RestClient, tfs_models: TfsModels) -> None:
    answer = rest.get(f"{H2}/metadata").json()
    assert answer["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    version = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    assert answer["metadata"] == {"signature_def": saved_signature_map_json(version)}
    assert rest.get(f"{H2}/versions/123/metadata").json() == answer
    answer = rest.get("/v1/models/two_versions/versions/124/metadata").json()
    assert answer["model_spec"]["version"] == "124"
    version = tfs_models.path("saved_model_half_plus_two_2_versions", "00000124")
    assert answer["metadata"] == {"signature_def": saved_signature_map_json(version)}
    # The spec names the model as the path does, a label's version by number.
    answer = rest.get("/v1/models/two_versions/labels/stable/metadata").json()
    assert answer["model_spec"] == {"name": "two_versions", "signature_name": "", "version": "123"}


@pytest.mark.tfs_testdata
def test_metadata_equals_tfs_samples(rest: RestClient) -> None:
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)
    answer = rest.get(f"{H2}/metadata").json()
    assert answer["model_spec"]["name"] == "half_plus_two"
    assert without_name(answer) == without_name(expected)
    assert rest.get(f"{H2}/versions/123/metadata").json() == answer
    with open(tfs_path("saved_model_half_plus_two_2_versions_metadata.json")) as f:
        expected = json.load(f)
    version = expected["model_spec"]["version"]
    answer = rest.get(f"/v1/models/two_versions/versions/{version}/metadata").json()
    assert without_name(answer) == without_name(expected)


# -- CORS ------------------------------------------------------------------------------------

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "POST, GET",
    "access-control-allow-headers": "Content-Type",
}


def cors_headers(answer: RestAnswer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}


def test_cors_headers_on_every_v1_answer_and_the_preflight(rest: RestClient) -> None:
    for answer in [
        rest.post(f"{H2}:predict", {"instances": [1.0]}),
        rest.get(H2),
        rest.get(f"{H2}/metadata"),
        rest.get("/v1/models/nope"),
        rest.post(f"{H2}:predict", b"not json"),
        rest.get("/v1/foo"),
    ]:
        assert cors_headers(answer) == CORS
    # TFS answers a preflight that has an Origin with 200, one without with 400.
    preflight = rest.options(
        f"{H2}:predict",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert (preflight.status, preflight.body) == (200, b"")
    assert cors_headers(preflight) == CORS
    for headers in [{}, {"Origin": ""}, {"Origin": "null"}, {"Origin": "example.com"}]:
        answer = rest.options(f"{H2}:predict", headers=headers)
        assert answer.status == 400
        assert answer.json() == {"error": "Origin header is missing in CORS preflight"}
        assert cors_headers(answer) == CORS


def test_without_cors_no_cors_headers_but_preflights_are_answered(plain: RestClient) -> None:
    """As TFS: a preflight is answered with or without --rest_api_enable_cors_support."""
    answer = plain.post(f"{H2}:predict", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    assert cors_headers(answer) == {}
    assert cors_headers(plain.get("/v1/models/nope")) == {}
    for path in (f"{H2}:predict", H2, "/v1/anything"):
        preflight = plain.options(path, headers={"Origin": "http://example.com"})
        assert (preflight.status, preflight.body) == (200, b"")
        assert cors_headers(preflight) == {}
        assert preflight.headers["content-type"] == "application/json"


# -- bodies: limits, encodings, chunks ------------------------------------------------------


def test_gzip_request_bodies_are_accepted(rest: RestClient) -> None:
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    for encoding in ("gzip", " GZip "):
        answer = rest.post(f"{H2}:predict", body, headers={"Content-Encoding": encoding})
        assert answer.json() == {"predictions": [2.5, 3.0]}
    answer = rest.post(f"{H2}:predict", body, headers={"Content-Encoding": "gzip"}, chunked=True)
    assert answer.json() == {"predictions": [2.5, 3.0]}
    answer = rest.post(
        f"{H2}:predict", {"instances": [1.0]}, headers={"Content-Encoding": "identity"}
    )
    assert answer.json() == {"predictions": [2.5]}


def test_other_content_encodings_are_415(rest: RestClient) -> None:
    """HTTP's Unsupported Media Type, naming what servo reads (finding 9 of issue 11: 501)."""
    for encoding, named in [("br", "br"), ("gzip, br", "gzip, br"), (" Deflate", "deflate")]:
        answer = rest.post(f"{H2}:predict", b"{}", headers={"Content-Encoding": encoding})
        assert (answer.status, answer.error) == (
            415,
            f"Unsupported Content-Encoding: {named}; servo reads bodies in gzip or identity",
        )


def test_the_decoded_size_limits_are_the_apps_own(served: FakeCore) -> None:
    """RestOptions' limits reach predict, classify and regress; over them is 400."""
    limits = DecodeLimits(max_tensor_bytes=16, max_request_bytes=32)
    rest = RestClient(data_plane(served), RestOptions(decode_limits=limits))
    try:
        assert rest.post(f"{H2}:predict", {"instances": [1.0] * 4}).status == 200
        answer = rest.post(f"{H2}:predict", {"instances": [1.0] * 5})
        assert (answer.status, answer.error) == (
            400,
            "Input 'x' of shape [5] and type DT_FLOAT would take 20 bytes decoded, over the "
            "limit of 16 bytes per tensor (--max_decoded_bytes_per_tensor)",
        )
        for api in ("classify", "regress"):
            answer = rest.post(f"{H2}:{api}", {"examples": [{"x": 1.0}] * 5})
            assert answer.status == 400
            assert answer.error.startswith("The request's 5 examples would take ")
            assert answer.error.endswith("bytes per tensor (--max_decoded_bytes_per_tensor)")
    finally:
        rest.close()
    served.assert_released()


def test_a_corrupt_gzip_body_is_400(rest: RestClient) -> None:
    for body in [b"not gzip", gzip.compress(b'{"instances": [1.0]}')[:-12]]:
        answer = rest.post(f"{H2}:predict", body, headers={"Content-Encoding": "gzip"})
        assert answer.status == 400
        assert answer.error.startswith("Invalid gzip body: ")
    answer = rest.post(
        f"{H2}:predict",
        gzip.compress(b'{"instances": [1.0]}')[:-12],
        headers={"Content-Encoding": "gzip"},
    )
    assert answer.error == "Invalid gzip body: truncated"


def test_chunked_request_bodies_are_accepted(rest: RestClient) -> None:
    answer = rest.post(f"{H2}:predict", b'{"instances": [1.0, 2.0]}', chunked=True, chunk=5)
    assert answer.json() == {"predictions": [2.5, 3.0]}
    assert answer.reads == 5  # read piece by piece: 25 bytes in five


def test_classify_and_regress_bodies_are_read_the_same_ways(rest: RestClient) -> None:
    body = json.dumps({"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}).encode()
    for kwargs in ({}, {"chunked": True, "chunk": 7}):
        assert rest.post(f"{H2}:regress", body, **kwargs).json() == {"results": [2.5]}
    answer = rest.post(f"{H2}:classify", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    # Read and decoded, then found to name a signature that cannot classify.
    assert answer.status == 400
    assert answer.error.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: '
    )


def test_bodies_over_the_limit_are_413_and_the_app_keeps_serving(rest: RestClient) -> None:
    big = json.dumps({"instances": [1.0] * MAX_BODY_BYTES}).encode()
    answer = rest.post(f"{H2}:predict", big)
    assert answer.status == 413
    assert answer.error == f"Request body of {len(big)} bytes is over the {MAX_BODY_BYTES} limit"
    # Refused on its Content-Length, then read to its end and dropped (it is under
    # DRAIN_BYTES): the answer reaches a client still sending and the connection stays open.
    assert answer.reads > 0 and "connection" not in answer.headers
    # Declared larger than the drain, or held back until asked (Expect: 100-continue):
    # refused unread, and the connection closed.
    for headers in (
        {"Content-Length": str(DRAIN_BYTES + 1)},
        {"Expect": "100-continue"},
    ):
        answer = rest.post(f"{H2}:predict", big, headers=headers)
        assert (answer.status, answer.reads) == (413, 0), headers
        assert answer.headers["connection"] == "close", headers
    # Small on the wire, over the limit once inflated.
    bomb = gzip.compress(b" " * (10 * MAX_BODY_BYTES))
    answer = rest.post(f"{H2}:predict", bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status == 413
    assert answer.error == (f"Request body inflates to more than the {MAX_BODY_BYTES} bytes limit")
    # Without a Content-Length: refused once the chunks pass the limit, never holding more;
    # the rest is read and dropped (up to DRAIN_BYTES) so that a client still sending gets
    # the answer rather than a reset connection.
    answer = rest.post(f"{H2}:predict", b" " * 10_000_000, chunked=True, chunk=10_000)
    assert answer.status == 413
    assert answer.error == f"Request body is over the {MAX_BODY_BYTES} limit"
    assert answer.reads == 1000  # 10 MB, under the drain's cap: all of it
    answer = rest.post(f"{H2}:predict", b" " * 40_000_000, chunked=True, chunk=1_000_000)
    assert answer.status == 413
    assert answer.reads == 1 + DRAIN_BYTES // 1_000_000 + 1  # the cap, then no more
    assert answer.headers["connection"] == "close"  # its unread rest is no next request
    # A Content-Length that lies: the body read is measured.
    answer = rest.post(f"{H2}:predict", big, headers={"Content-Length": "10"})
    assert (answer.status, answer.error) == (
        413,
        f"Request body of {len(big)} bytes is over the {MAX_BODY_BYTES} limit",
    )
    # At the limit exactly: accepted.
    exact = b'{"instances": [1.0]}'.ljust(MAX_BODY_BYTES)
    assert rest.post(f"{H2}:predict", exact).json() == {"predictions": [2.5]}
    answer = rest.post(f"{H2}:predict", gzip.compress(exact), headers={"Content-Encoding": "gzip"})
    assert answer.json() == {"predictions": [2.5]}
    answer = rest.post(f"{H2}:predict", {"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}


def test_the_default_body_limit_is_64_mib() -> None:
    assert RestOptions().max_body_bytes == 64 * 2**20


# -- deadlines -------------------------------------------------------------------------------


def test_a_call_over_the_timeout_is_504_and_keeps_its_version_until_it_ends(
    served: FakeCore,
) -> None:
    gate = Gate()
    served.add("gated", gate.servable)
    rest = RestClient(data_plane(served), RestOptions(timeout=0.05))
    try:
        answer = rest.post("/v1/models/gated:predict", {"instances": [1.0]})
        assert answer.status == 504
        assert answer.json() == {"error": "Deadline Exceeded"}
        assert gate.started.is_set()
        assert served.held == 1  # the answer is out; the call, on the pool, holds its version
        gate.open()
        served.assert_released()
        assert rest.post(f"{H2}:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}
        assert rest.post("/v1/models/gated:predict", {"instances": [1.0]}).status == 200
    finally:
        gate.open()
        rest.close()


def test_the_default_timeout_is_tfs_30_seconds() -> None:
    assert RestOptions().timeout == 30.0


# -- metrics ---------------------------------------------------------------------------------


def families(rest: RestClient) -> dict:
    page = rest.get(METRICS_PATH)
    assert page.status == 200
    assert page.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert ":tensorflow:serving:request_count counter" in page.body.decode()  # no _total
    return {f.name: f for f in text_string_to_metric_families(page.body.decode())}


def test_metrics_count_requests_by_model_and_status_and_time_the_good_ones(
    rest: RestClient, metrics: ServerMetrics
) -> None:
    for _ in range(3):
        rest.post("/v1/models/half_plus_three:predict", {"instances": [1.0]})
    rest.post("/v1/models/half_plus_three:predict", {"instances": ["bad"]})
    rest.post(
        "/v1/models/half_plus_three:regress",
        {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]},
    )
    rest.get("/v1/models/half_plus_three")  # TFS's HTTP server counts status requests too
    rest.get("/v1/models/half_plus_three/metadata")
    rest.post("/v1/models/never_served:predict", {"instances": [1.0]})

    count = metrics.request_count.value
    assert count("half_plus_three", "OK") == 6
    assert count("half_plus_three", "INVALID_ARGUMENT") == 1
    assert count("never_served", "NOT_FOUND") == 1
    latency = metrics.request_latency.count
    assert latency("half_plus_three", "predict", "REST") == 3
    assert latency("half_plus_three", "regress", "REST") == 1
    assert latency("half_plus_three", "", "REST") == 2  # status and metadata: no API
    assert latency("never_served", "predict", "REST") == 0  # only successes are timed
    # The model runs themselves (the bad request never ran), with TFS's name for TF's runtime.
    assert metrics.runtime_latency.count("half_plus_three", "Predict", "TF1") == 3
    assert metrics.runtime_latency.count("half_plus_three", "Regress", "TF1") == 1
    assert metrics.request_example_count_total.value("half_plus_three") == 1

    page = families(rest)
    samples = {
        (s.labels["model_name"], s.labels["status"]): s.value
        for s in page[":tensorflow:serving:request_count"].samples
    }
    assert samples[("half_plus_three", "OK")] == 6
    buckets = [
        s
        for s in page[":tensorflow:serving:request_latency"].samples
        if s.name.endswith("_bucket") and s.labels["model_name"] == "half_plus_three"
    ]
    assert len({s.labels["le"] for s in buckets}) == 34  # TFS's 33 bounds and +Inf


def test_metrics_count_what_fails_before_a_model_is_named(
    served: FakeCore, rest: RestClient, metrics: ServerMetrics
) -> None:
    served.add("buggy", raising(RuntimeError("boom")))
    rest.get("/v1/foo")  # no model in the path: counted under ""
    rest.options(f"{H2}:predict", headers={"Origin": "http://a"})
    rest.options(f"{H2}:predict")
    rest.post(f"{H2}:predict", b" " * (MAX_BODY_BYTES + 1))
    rest.post(f"{H2}:predict", b"{}", headers={"Content-Encoding": "br"})
    rest.post("/v1/models/buggy:predict", {"instances": [1.0]})
    rest.get("/v2/elsewhere")  # outside /v1: not counted
    count = metrics.request_count.value
    assert count("", "INVALID_ARGUMENT") == 1
    assert count("", "OK") == 1  # the preflight with an Origin
    assert count("", "FAILED_PRECONDITION") == 1
    assert count("half_plus_two", "RESOURCE_EXHAUSTED") == 1
    assert count("half_plus_two", "INVALID_ARGUMENT") == 1  # the Content-Encoding: 415
    assert count("buggy", "INTERNAL") == 1
    assert sum(metrics.request_count._values.values()) == 6


def test_a_cancelled_request_is_counted_cancelled(served: FakeCore) -> None:
    gate = Gate()
    served.add("gated", gate.servable)
    metrics = ServerMetrics()
    rest = RestClient(data_plane(served, metrics=metrics), RestOptions(timeout=None))

    async def cancel() -> None:
        task = asyncio.ensure_future(
            rest.send("POST", "/v1/models/gated:predict", b'{"instances":[1]}')
        )
        assert await asyncio.to_thread(gate.started.wait, Gate.WAIT)  # the call runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        rest.run(asyncio.wait_for(cancel(), Gate.WAIT))
        assert metrics.request_count.value("gated", "CANCELLED") == 1
    finally:
        gate.open()
        rest.close()
    served.assert_released()


def test_the_metrics_page_is_a_get_of_its_path_only(rest: RestClient, plain: RestClient) -> None:
    assert rest.get(METRICS_PATH).status == 200
    answer = rest.post(METRICS_PATH)
    assert (answer.status, answer.error) == (404, f"Not found: POST {METRICS_PATH}")
    answer = rest.get(METRICS_PATH + "/")
    assert (answer.status, answer.error) == (404, f"Not found: GET {METRICS_PATH}/")
    # Metrics off: no page.
    answer = plain.get(METRICS_PATH)
    assert (answer.status, answer.error) == (404, f"Not found: GET {METRICS_PATH}")


def test_the_metrics_page_is_what_server_metrics_renders(
    rest: RestClient, metrics: ServerMetrics
) -> None:
    rest.post(f"{H2}:predict", {"instances": [1.0]})
    assert rest.get(METRICS_PATH).body == metrics.render()


def test_a_page_path_without_metrics_serves_no_page(served: FakeCore) -> None:
    rest = RestClient(data_plane(served), RestOptions(metrics_path=METRICS_PATH))
    try:
        answer = rest.get(METRICS_PATH)
        assert (answer.status, answer.error) == (404, f"Not found: GET {METRICS_PATH}")
    finally:
        rest.close()


def test_servo_errors_of_the_plane_keep_their_code_in_the_answer(served: FakeCore) -> None:
    served.add("unavailable", raising(ServoError(Code.UNAVAILABLE, "try later")))
    rest = RestClient(data_plane(served))
    try:
        answer = rest.post("/v1/models/unavailable:predict", {"instances": [1.0]})
        assert (answer.status, answer.error) == (503, "try later")
    finally:
        rest.close()


class _RefusingWatch:
    """A read watch that fails any read put under it (closing the read it refuses, which
    would otherwise be left never awaited)."""

    timeout = 30.0

    async def read(self, work: Coroutine[Any, Any, bytes]) -> bytes:
        work.close()
        raise AssertionError("a body read went through the read deadline's watch")


def test_a_body_that_has_come_whole_is_read_without_the_deadline_watch(
    plain: RestClient,
) -> None:
    # servo's HTTP server marks a request whose body has arrived `complete`: there is no wait
    # to bound. One still arriving (`complete` false, or a server that does not say) is read
    # under the watch, as the 408 of tests/integration/test_connections.py needs.
    from tests.support.inprocess import _Protocol, _Scope

    plain.app._read_watch = _RefusingWatch()  # type: ignore[assignment]
    body = b'{"instances": [1.0]}'
    scope = _Scope("POST", f"{H2}:predict", {"content-length": str(len(body))})

    def send(complete: bool | None) -> tuple[int, list[tuple[str, str]], bytes]:
        proto = _Protocol(body, 1000)
        if complete is not None:
            proto.complete = complete  # type: ignore[attr-defined]
        plain.run(plain.app.__rsgi__(scope, proto))
        assert proto.answer is not None
        return proto.answer

    status, _, answer = send(True)
    assert (status, json.loads(answer)) == (200, {"predictions": [2.5]})
    for complete in (False, None):
        status, _, answer = send(complete)
        assert status == 500 and b"read deadline's watch" in answer, (complete, answer)


class _OverBudget:
    """A proto whose body read fails as servo's HTTP server's does when the body takes the
    server past --rest_api_max_buffered_body_bytes."""

    complete = False

    def __init__(self) -> None:
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    async def __call__(self) -> bytes:
        raise BodyBudgetExceeded("The server holds 9 bytes of request bodies; retry later")

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> bytes:
        raise BodyBudgetExceeded("The server holds 9 bytes of request bodies; retry later")

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answer = (status, headers, body)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/models/half_plus_three:predict", {"content-length": "20"}),
        ("/v1/models/half_plus_three:predict", {"transfer-encoding": "chunked"}),
        ("/v2/models/half_plus_three/infer", {"transfer-encoding": "chunked"}),
    ],
)
def test_a_body_past_the_servers_bound_is_a_503_counted_unavailable(
    rest: RestClient, metrics: ServerMetrics, path: str, headers: dict[str, str]
) -> None:
    from tests.support.inprocess import _Scope

    proto = _OverBudget()
    rest.run(rest.app.__rsgi__(_Scope("POST", path, headers), proto))
    assert proto.answer is not None
    status, _, body = proto.answer
    assert status == 503
    assert json.loads(body) == {"error": "The server holds 9 bytes of request bodies; retry later"}
    if path.startswith("/v1"):
        assert metrics.request_count.value("half_plus_three", "UNAVAILABLE") == 1


class _BoundInDrain:
    """A body of `size` bytes in 10,000-byte pieces whose read fails, as the server's bound on
    the bodies held would fail it, after `pieces` pieces."""

    complete = False

    def __init__(self, size: int, pieces: int) -> None:
        self.size, self.pieces = size, pieces
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    async def __call__(self) -> bytes:
        raise AssertionError("a body over the limit is drained piece by piece")

    async def _pieces(self) -> Any:
        for _ in range(self.pieces):
            yield b" " * 10_000
        raise BodyBudgetExceeded("past the server's bound")

    def __aiter__(self) -> Any:
        return self._pieces()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answer = (status, headers, body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_servers_bound_while_a_body_over_the_limit_is_drained_keeps_the_413(
    rest: RestClient, chunked: bool
) -> None:
    # The drain reads on so that the 413 reaches a client still sending; the bound stopping
    # it leaves the 413 (the body is too large, not the server too busy), closing the
    # connection as its rest is unread.
    from tests.support.inprocess import _Scope

    size = 2 * MAX_BODY_BYTES
    headers = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(size)}
    proto = _BoundInDrain(size, pieces=15)
    rest.run(rest.app.__rsgi__(_Scope("POST", f"{H2}:predict", headers), proto))
    assert proto.answer is not None
    status, answer_headers, body = proto.answer
    assert status == 413 and b"limit" in body
    assert dict(answer_headers)["connection"] == "close"
