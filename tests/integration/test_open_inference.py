"""The Open Inference Protocol's health routes on a real server: readiness false while a
configured model has no AVAILABLE version (loading, or failed) and true once it has one; gRPC
health per model beside it (Check and Watch), and the model listing of GET /v1/models."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.test_safe_reloads import GATED_MODEL, VERSION_MODEL, write_atomically
from tests.support.models import write_python_model
from tests.support.server import grpc_stubs, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

BROKEN_MODEL = """
class Model:
    def load(self, path):
        raise RuntimeError("this version cannot load")

    def predict(self, inputs, signature_name):
        return inputs["inputs"]
"""


def test_readiness_follows_every_models_versions(tmp_path: Path) -> None:
    a = write_python_model(tmp_path / "a", VERSION_MODEL, version=1)
    slow = write_python_model(tmp_path / "slow", GATED_MODEL, version=1)
    broken = write_python_model(tmp_path / "broken", BROKEN_MODEL, version=1)
    config = tmp_path / "models.config"
    write_atomically(config, model_config([("a", a, "python")]))
    with (
        running_server(
            [
                f"--model_config_file={config}",
                "--model_config_file_poll_wait_seconds=1",
                "--max_num_load_retries=0",
                "--enable_grpc_healthcheck_service",
            ]
        ) as server,
        grpc_stubs(server) as stubs,
    ):

        def get(path: str) -> httpx.Response:
            return httpx.get(f"{server.rest}{path}", timeout=10)

        health = health_pb2_grpc.HealthStub(stubs.channel)

        def check(service: str) -> int:
            request = health_pb2.HealthCheckRequest(service=service)
            return health.Check(request, timeout=10).status  # type: ignore[no-any-return]

        assert get("/v2/health/live").json() == {"live": True}
        assert get("/v2/health/ready").status_code == 200
        write_atomically(config, model_config([("a", a, "python"), ("slow", slow, "python")]))
        wait_until(lambda: get("/v2/health/ready").status_code == 400, what="not ready")
        assert "slow (version 1 LOADING)" in get("/v2/health/ready").json()["error"]
        assert get("/v2/models/slow/ready").status_code == 400
        assert get("/v2/models/a/ready").json() == {"name": "a", "ready": True}
        # gRPC health per model: Check from the states now, Watch as they change.
        assert (check("a"), check("slow"), check("")) == (SERVING, NOT_SERVING, SERVING)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="slow"), timeout=60)
        assert next(watch).status == NOT_SERVING
        (Path(slow) / "gate").write_text("")
        assert next(watch).status == SERVING
        watch.cancel()
        wait_until(lambda: get("/v2/health/ready").status_code == 200, what="ready again")
        # A model whose only version failed keeps the server not ready, and says why.
        write_atomically(
            config,
            model_config(
                [("a", a, "python"), ("slow", slow, "python"), ("broken", broken, "python")]
            ),
        )
        wait_until(
            lambda: "version 1 END" in get("/v2/health/ready").json().get("error", ""),
            what="the failed load in the readiness answer",
        )
        error = get("/v2/health/ready").json()["error"]
        assert "broken (version 1 END: " in error and "this version cannot load" in error
        assert check("broken") == NOT_SERVING
        models = {m["name"]: m["model_version_status"] for m in get("/v1/models").json()["models"]}
        assert list(models) == ["a", "slow", "broken"]
        assert [v["state"] for v in models["broken"]] == ["END"]
        assert "this version cannot load" in models["broken"][0]["status"]["error_message"]
        assert server.stop() == 0
