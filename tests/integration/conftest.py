"""Shared pieces of the integration tests: the model directories, and the one API server the
REST and gRPC tests share (test_rest.py, test_grpc.py), with a client of each protocol.

That server runs twice (`api_store`): once on local base paths, once with every model, its
--model_config_file and its --monitoring_config_file in a bucket of moto's S3 server, so
every REST and gRPC test passes on models served from object storage too."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.support.catalog import ServedModel, api_models, config_text, pick, write_model_dirs
from tests.support.s3 import S3Server
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


@pytest.fixture(scope="session", params=["local", "s3"])
def api_store(request: pytest.FixtureRequest) -> str:
    """Where the API server's models and config files are: local paths, or a bucket."""
    return str(request.param)


@pytest.fixture(scope="session")
def api_bucket(api_store: str, request: pytest.FixtureRequest) -> str | None:
    """The bucket of the S3 run, holding `api/<model>/...`; None for the local run."""
    if api_store != "s3":
        return None
    s3: S3Server = request.getfixturevalue("s3")
    bucket = f"api-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    return bucket


@pytest.fixture(scope="session")
def api_config(
    tmp_path_factory: pytest.TempPathFactory,
    api_models_served: list[ServedModel],
    api_bucket: str | None,
    request: pytest.FixtureRequest,
) -> Path:
    """The API server's model config (a local copy of it, for tests that send it back)."""
    models = api_models_served
    if api_bucket is not None:
        s3: S3Server = request.getfixturevalue("s3")
        for model in models:
            s3.upload_tree(model.base_path, api_bucket, f"api/{model.name}")
        models = [
            replace(m, base_path=f"s3://{api_bucket}/api/{m.name}")  # type: ignore[arg-type]
            for m in models
        ]
    path = tmp_path_factory.mktemp("api_server") / "models.config"
    path.write_text(config_text(models))
    if api_bucket is not None:
        s3.put(api_bucket, "api/models.config", path.read_bytes())
    return path


@pytest.fixture(scope="session")
def api_server(
    api_config: Path,
    api_bucket: str | None,
    tfs_models: TfsModels,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[ServerProcess]:
    """One server for the REST and gRPC tests, which leave it as they found it: TFS's test
    models (the stand-ins; the two-version one with labels), the example models and Python
    ones; CORS on, Prometheus metrics from TFS's monitoring config text, a small body limit,
    the health service; python models over the network (a reload test adds one). In the S3
    run, the models, the model config and the monitoring config are read from the bucket."""
    config, monitoring = str(api_config), tfs_models.path("monitoring_config.txt")
    env: dict[str, str] = {}
    more: list[str] = []
    if api_bucket is not None:
        s3: S3Server = request.getfixturevalue("s3")
        s3.put(api_bucket, "api/monitoring_config.txt", Path(monitoring).read_bytes())
        config = f"s3://{api_bucket}/api/models.config"
        monitoring = f"s3://{api_bucket}/api/monitoring_config.txt"
        env = s3.env()
        more = [f"--model_cache_dir={tmp_path_factory.mktemp('api_cache')}"]
    with running_server(
        [
            f"--model_config_file={config}",
            "--allow_python_models_over_network",
            f"--monitoring_config_file={monitoring}",
            "--rest_api_enable_cors_support",
            f"--rest_api_max_body_bytes={REST_MAX_BODY_BYTES}",
            "--enable_grpc_healthcheck_service",
            *more,
        ],
        env,
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
