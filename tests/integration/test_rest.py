"""The TFS REST API through a real server process, for what only one shows: answers over a
socket from servo's HTTP server, the URL decoding it does before the app sees a path, chunked and
oversized bodies on the wire (and the connection still serving after them), the flags that
reach the app (CORS, the body limit, the metrics page), and the Prometheus page as
prometheus_client reads it.

Everything the app decides, every error text included, is tested in process in
tests/apis/rest/test_app.py. The server is conftest's `api_server`, shared with test_grpc.py.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servo.apis.rest.app import DRAIN_BYTES
from tests.integration.conftest import METRICS_PATH, REST_MAX_BODY_BYTES
from tests.support.requests import predict_request, tfs
from tests.support.server import GrpcStubs, ServerProcess

pytestmark = pytest.mark.integration

H2 = "/v1/models/half_plus_two"


def test_tfs_readme_example_and_its_status_metadata_and_errors(rest: httpx.Client) -> None:
    answer = rest.post(f"{H2}:predict", content=b'{"instances": [1.0, 2.0, 5.0]}')
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    answer = rest.get(H2)
    assert answer.json() == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert rest.get(f"{H2}/metadata").json()["model_spec"]["version"] == "123"
    answer = rest.post("/v1/models/nope:predict", json={"instances": [1.0]})
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "Servable not found for request: Latest(nope)"},
    )
    answer = rest.get("/v2/models/half_plus_two/labels/stable")  # v1's form is not v2's
    assert answer.status_code == 404


def test_paths_are_case_insensitive_and_names_url_decoded(rest: httpx.Client) -> None:
    answer = rest.post("/V1/MODELS/half%5Fplus%5Ftwo:predict", json={"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    answer = rest.post("/v1/Models/two_versions/Labels/st%61ble:predict", json={"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}
    # Decoded once: %255F is "%5F", not "_"
    answer = rest.get("/v1/models/half%255Fplus%255Ftwo")
    assert (answer.status_code, answer.json()) == (
        404,
        {"error": "Could not find any versions of model half%5Fplus%5Ftwo"},
    )


def test_chunked_request_bodies_are_accepted(rest: httpx.Client) -> None:
    pieces = [b'{"instances": ', b"[1.0, ", b"2.0]}"]
    answer = rest.post(f"{H2}:predict", content=iter(pieces))
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert answer.json() == {"predictions": [2.5, 3.0]}


def test_bodies_over_the_limit_are_413_and_the_server_keeps_serving(rest: httpx.Client) -> None:
    big = json.dumps({"instances": [1.0] * REST_MAX_BODY_BYTES}).encode()
    answer = rest.post(f"{H2}:predict", content=big)
    assert answer.status_code == 413
    assert answer.json() == {
        "error": f"Request body of {len(big)} bytes is over the {REST_MAX_BODY_BYTES} limit"
    }
    # Without a Content-Length: refused once the chunks pass the limit.
    chunks = (b" " * 10_000 for _ in range(1000))
    answer = rest.post(f"{H2}:predict", content=chunks)
    assert answer.status_code == 413
    assert answer.json() == {"error": f"Request body is over the {REST_MAX_BODY_BYTES} limit"}
    answer = rest.post(f"{H2}:predict", json={"instances": [1.0]})
    assert answer.json() == {"predictions": [2.5]}


def _connection(server: ServerProcess) -> http.client.HTTPConnection:
    address = urlsplit(server.rest)
    assert address.hostname is not None and address.port is not None
    return http.client.HTTPConnection(address.hostname, address.port, timeout=30)


def test_a_413_keeps_its_connection_once_the_body_is_read_and_closes_one_left_unread(
    api_server: ServerProcess,
) -> None:
    # Declared over the limit and sent: read to its end and dropped, so the same connection
    # carries the next request (a client that reuses it must not find it closed under it).
    connection = _connection(api_server)
    connection.request("POST", f"{H2}:predict", body=b"x" * (4 * REST_MAX_BODY_BYTES))
    refused = connection.getresponse()
    refused.read()
    assert (refused.status, refused.will_close) == (413, False)
    socket_used = connection.sock
    connection.request("POST", f"{H2}:predict", body=b'{"instances": [1.0]}')
    answer = connection.getresponse()
    assert json.loads(answer.read()) == {"predictions": [2.5]}
    assert connection.sock is socket_used
    connection.close()
    # Larger than servo reads to drop, or held back until the server asks for it: answered
    # at once, unread, and the connection closed (its bytes would be read as a request).
    for headers in (
        {"Content-Length": str(DRAIN_BYTES + 1)},
        {"Content-Length": str(4 * REST_MAX_BODY_BYTES), "Expect": "100-continue"},
    ):
        connection = _connection(api_server)
        connection.putrequest("POST", f"{H2}:predict")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        refused = connection.getresponse()
        assert refused.status == 413, headers
        assert refused.getheader("connection") == "close", headers
        assert "over the" in json.loads(refused.read())["error"]
        connection.close()


def test_cors_headers_with_the_flag(rest: httpx.Client) -> None:
    cors = {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST, GET",
        "access-control-allow-headers": "Content-Type",
    }
    answer = rest.post(f"{H2}:predict", json={"instances": [1.0]})
    assert cors.items() <= answer.headers.items()
    preflight = rest.options(
        f"{H2}:predict",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert cors.items() <= preflight.headers.items()


def test_the_prometheus_page_counts_both_protocols(rest: httpx.Client, stubs: GrpcStubs) -> None:
    def families() -> dict:
        page = rest.get(METRICS_PATH)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert ":tensorflow:serving:request_count counter" in page.text  # TFS's name: no _total
        return {f.name: f for f in text_string_to_metric_families(page.text)}  # valid Prometheus

    def sample(page: dict, metric: str, suffix: str, **labels: str) -> float:
        return sum(
            s.value
            for s in page[metric].samples
            if s.name.endswith(suffix) and labels.items() <= s.labels.items()
        )

    count, latency = ":tensorflow:serving:request_count", ":tensorflow:serving:request_latency"
    before = families()
    rest.post(f"{H2}:predict", json={"instances": [1.0]})
    rest.post(f"{H2}:predict", json={"instances": ["bad"]})
    stubs.predictions.Predict(tfs(predict_request("half_plus_two", [[1.0]])), timeout=30)
    after = families()

    def added(metric: str, suffix: str, **labels: str) -> float:
        return sample(after, metric, suffix, **labels) - sample(before, metric, suffix, **labels)

    assert added(count, "", model_name="half_plus_two", status="OK") == 2
    assert added(count, "", model_name="half_plus_two", status="INVALID_ARGUMENT") == 1
    for entrypoint, api in (("REST", "predict"), ("GRPC", "Predict")):
        labels = {"model_name": "half_plus_two", "API": api, "entrypoint": entrypoint}
        assert added(latency, "_count", **labels) == 1
    runtime = {"model_name": "half_plus_two", "runtime": "TF1"}
    assert added(":tensorflow:serving:runtime_latency", "_count", **runtime) == 2
    buckets = [
        s
        for s in after[latency].samples
        if s.name.endswith("_bucket") and s.labels["model_name"] == "half_plus_two"
    ]
    assert len({s.labels["le"] for s in buckets}) == 34  # TFS's 33 bounds and +Inf
    states = {s.labels["model_name"]: s.value for s in after["servo_model_version_state"].samples}
    assert states["half_plus_two"] == 30  # AVAILABLE
