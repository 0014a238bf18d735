"""The Open Inference Protocol's health and server routes on the REST app (in process, over
the fake core): live, server readiness that follows every configured model's versions, a
model's readiness, server metadata."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import servo
from servo.core.servable_state import ManagerState
from servo.core.status import Code, Status
from tests.support.inprocess import FakeCore, RestClient, data_plane


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
