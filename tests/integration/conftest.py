"""Shared pieces of the integration tests: the model directories, and the one API server the
REST and gRPC tests share (test_rest.py, test_grpc.py), with a client of each protocol."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.catalog import ServedModel, api_models, config_text, pick, write_model_dirs
from tests.support.server import GrpcStubs, ServerProcess, grpc_stubs, running_server
from tests.support.testdata import TfsModels

METRICS_PATH = "/monitoring/prometheus/metrics"  # as TFS's monitoring_config.txt sets it
REST_MAX_BODY_BYTES = 100_000
API_SERVER_MODELS = (
    "half_plus_two",
    "two_versions",
    "mlp",
    "vocab",
    "word_count",
    "two_io",
    "slow",
    "summer",
)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example models and the Python ones (tests/support/catalog.py): name -> base path."""
    return write_model_dirs(tmp_path_factory.mktemp("models"))


def copy_tfs_model(tfs_models: TfsModels, name: str, dest: Path) -> Path:
    """A writable copy of one of the stand-ins for TFS's test models."""
    target = dest / name
    shutil.copytree(tfs_models.path(name), target)
    return target


@pytest.fixture(scope="session")
def api_models_served(tfs_models: TfsModels, model_dirs: dict[str, Path]) -> list[ServedModel]:
    return pick(api_models(tfs_models, model_dirs), *API_SERVER_MODELS)


@pytest.fixture(scope="session")
def api_config(
    tmp_path_factory: pytest.TempPathFactory, api_models_served: list[ServedModel]
) -> Path:
    path = tmp_path_factory.mktemp("api_server") / "models.config"
    path.write_text(config_text(api_models_served))
    return path


@pytest.fixture(scope="session")
def api_server(api_config: Path, tfs_models: TfsModels) -> Iterator[ServerProcess]:
    """One server for the REST and gRPC tests, which leave it as they found it: TFS's test
    models (the stand-ins; the two-version one with labels), the example models and Python
    ones; CORS on, Prometheus metrics from TFS's monitoring config text, a small body limit,
    the health service; python models over the network (a reload test adds one)."""
    with running_server(
        [
            f"--model_config_file={api_config}",
            "--allow_python_models_over_network",
            f"--monitoring_config_file={tfs_models.path('monitoring_config.txt')}",
            "--rest_api_enable_cors_support",
            f"--rest_api_max_body_bytes={REST_MAX_BODY_BYTES}",
            "--enable_grpc_healthcheck_service",
        ]
    ) as process:
        yield process


def _every_rest_answer_is_json(response: httpx.Response) -> None:
    if response.request.url.path != METRICS_PATH:
        assert response.headers["content-type"] == "application/json", (
            f"{response.request.method} {response.request.url}: {response.headers}"
        )


@pytest.fixture(scope="session")
def rest(api_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of `api_server` that fails any answer (but the metrics page) that is not
    application/json."""
    with httpx.Client(
        base_url=api_server.rest,
        timeout=30,
        event_hooks={"response": [_every_rest_answer_is_json]},
    ) as client:
        yield client


@pytest.fixture(scope="session")
def stubs(api_server: ServerProcess) -> Iterator[GrpcStubs]:
    """The official client's stubs of `api_server`; the client's own message limits are
    raised, so that the server's are what the big-message test shows."""
    options = [("grpc.max_send_message_length", 2**30), ("grpc.max_receive_message_length", 2**30)]
    with grpc_stubs(api_server, options) as opened:
        yield opened
