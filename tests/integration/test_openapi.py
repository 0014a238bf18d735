"""The REST API's OpenAPI document (src/servo/apis/rest/openapi.json), served by the server and
held to the server's answers by schemathesis, on conftest's `api_server` (a real process on a
loopback port).

Schemathesis makes requests for every operation of the document (valid ones and, in its
negative mode, ones the document forbids), a fixed number per operation (`EXAMPLES`), and
checks each answer: no 5xx, a status code, content type, headers and body that the document
allows. The model names it tries are any text, or (so that the requests reach models) the
names this server serves, but for `slow`, which sleeps as long as it is asked to.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from servo.apis.rest.app import OPENAPI_FILE, OPENAPI_PATH
from tests.integration.conftest import API_SERVER_MODELS
from tests.support.server import ServerProcess

# On the local run of conftest's API server only (test_rest.py and test_grpc.py hold the S3
# run; the document does not depend on where the models are).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("api_store", ["local"], indirect=True),
]

EXAMPLES = 20  # per operation (29 operations: the repository's 3 are left out, below)
DOCUMENT = json.loads(OPENAPI_FILE.read_text())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def with_served_names(document: dict[str, Any]) -> dict[str, Any]:
    """The document, its model names any text or one this server serves."""
    served = [m for m in API_SERVER_MODELS if m != "slow"]
    narrowed = copy.deepcopy(document)
    for operations in narrowed["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model_name":
                    parameter["schema"] = {"anyOf": [{"enum": served}, parameter["schema"]]}
    return narrowed


# The repository extension's load and unload change the shared server's config (an unload of a
# served name would take it away from the other tests): tests/integration/test_tritonclient.py
# and tests/server/test_model_repository.py hold them to the protocol instead.
schema = schemathesis.openapi.from_dict(with_served_names(DOCUMENT)).exclude(
    path_regex="^/v2/repository/"
)


def test_the_server_serves_the_document(rest: httpx.Client) -> None:
    answer = rest.get(OPENAPI_PATH)
    assert answer.status_code == 200
    assert answer.json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.")
    # Every route TFS has, under the three ways to name a version.
    for spec in ("", "/versions/{version}", "/labels/{label}"):
        base = "/v1/models/{model_name}" + spec
        for tail in ("", "/metadata", ":predict", ":classify", ":regress"):
            assert base + tail in DOCUMENT["paths"], base + tail


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_keeps_the_document(case: Any, api_server: ServerProcess) -> None:
    case.call_and_validate(base_url=api_server.rest, checks=CHECKS, timeout=30)
