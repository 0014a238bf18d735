"""The paths the manifests send Kubernetes, KServe and Prometheus to, GET on a real servo
started with the manifests' own monitoring config: each probe and the ServiceMonitor's page
answer 200, and the counter the Prometheus adapter's rule reads is on that page. A path servo
does not serve is shown to fail the same check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.manifests import (
    KSERVE,
    KUBERNETES,
    documents,
    http_get_paths,
    kustomize,
    one,
)
from tests.support.models import TWO_IO_MODEL, write_python_model
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.integration
ADAPTER_SERIES = ":tensorflow:serving:request_count"


def manifest_paths() -> set[str]:
    objects: list[dict[str, Any]] = []
    for name in ("base", "overlays/s3", "overlays/local"):
        objects += kustomize(KUBERNETES / name)
    for name in ("cluster-serving-runtime.yaml", "serving-runtime.yaml"):
        objects += documents(KSERVE / name)
    paths = {path for path, _port in http_get_paths(objects)}
    monitor = one(kustomize(KUBERNETES / "base"), "ServiceMonitor")
    return paths | {e["path"] for e in monitor["spec"]["endpoints"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("probes")
    monitoring = one(kustomize(KUBERNETES / "base"), "ConfigMap")["data"]["monitoring.config"]
    (tmp / "monitoring.config").write_text(monitoring)
    base = write_python_model(tmp / "model", TWO_IO_MODEL)
    args = [
        "--model_name=model",
        f"--model_base_path={base}",
        f"--monitoring_config_file={Path(tmp) / 'monitoring.config'}",
    ]
    with running_server(args) as server:
        yield server


def answers(server: ServerProcess, path: str) -> int:
    return httpx.get(server.rest + path, timeout=10).status_code


def test_every_manifest_path_is_served(server: ServerProcess) -> None:
    paths = manifest_paths()
    assert {"/v2/health/live", "/v2/health/ready", "/monitoring/prometheus/metrics"} <= paths
    assert {p: answers(server, p) for p in sorted(paths)} == {p: 200 for p in sorted(paths)}


def test_a_path_servo_does_not_serve_fails(server: ServerProcess) -> None:
    assert answers(server, "/v2/health/readiness") != 200
    assert answers(server, "/healthz") != 200


def test_the_adapter_series_is_on_the_page(server: ServerProcess) -> None:
    predict = httpx.post(
        server.rest + "/v1/models/model:predict",
        json={"signature_name": "echo", "inputs": {"x": [1.0, 2.0]}},
        timeout=10,
    )
    assert predict.status_code == 200, predict.text
    page = httpx.get(server.rest + "/monitoring/prometheus/metrics", timeout=10).text
    series = [line for line in page.splitlines() if line.startswith(ADAPTER_SERIES + "{")]
    assert any('model_name="model"' in line for line in series), page[:2000]
