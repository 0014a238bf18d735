"""The Grafana dashboard's queries against a real Prometheus server scraping a real servo.

Used by tests/integration/test_dashboard.py (every panel's query parses, the main ones return
series) and by scripts/render_dashboard.py (the panels drawn from the same queries). Three
parts:

- `demo_server`: servo serving a SavedModel (TFS's half_plus_two stand-in) with batching, a
  warm-up file, request logging and the Prometheus page on, so that every family has points;
  `send_load` sends it predict, classify, regress and a bad request over REST and gRPC, and
  `add_version` puts a new version in its base path, so that the load families move while
  Prometheus is scraping (the first load happens before it starts).
- `PrometheusServer`: Debian's `prometheus` on a free loopback port, its own storage
  directory, scraping one target every second; stopped by its PID.
- `panel_queries`: each panel's expressions with the dashboard's variables substituted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from servo.protos import prediction_log_pb2
from servo.tensor_codec import from_ndarray
from servo.util.tfrecord import RecordWriter
from tests.support.requests import classify_request, predict_request, regress_request, tfs
from tests.support.server import ServerProcess, free_port, grpc_stubs, running_server
from tests.support.testdata import REPO
from tests.support.waiting import wait_until

DASHBOARD = REPO / "deploy" / "grafana" / "servo-dashboard.json"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
METRICS_PATH = "/monitoring/prometheus/metrics"
MODEL = "half_plus_two"

# What Grafana puts in place of the dashboard's variables, for a Prometheus scraping every
# second: "All" of the multi-value variables, rate windows of several scrapes.
VARIABLES = {
    "$__rate_interval": "10s",
    "$__range": "1m",
    "$instance": ".*",
    "$model": ".*",
}


# -- the dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str  # the panel's title
    ref: str  # the target's refId
    expr: str  # with the variables substituted
    legend: str


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def substitute(expr: str, variables: Mapping[str, str] = VARIABLES) -> str:
    for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before $__range
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"a variable left in {expr}"
    return expr


def panel_queries(variables: Mapping[str, str] = VARIABLES) -> list[PanelQuery]:
    """Every target of every panel (rows excluded), in the dashboard's order."""
    return [
        PanelQuery(
            panel["title"],
            target["refId"],
            substitute(target["expr"], variables),
            target.get("legendFormat", ""),
        )
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


# -- servo with every family in use ------------------------------------------------------------


def _warmup_file(version: Path) -> None:
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = RecordWriter(str(path))
    for value in (1.0, 2.0, 3.0):
        log = prediction_log_pb2.PredictionLog()
        request = log.predict_log.request
        request.model_spec.name = MODEL
        request.inputs["x"].CopyFrom(from_ndarray(np.array([[value]], dtype=np.float32)))
        writer.write(log.SerializeToString())
    writer.close()


def demo_args(saved_model: Path, work: Path) -> list[str]:
    """servo's flags for the demo, its model a copy of the SavedModel base path
    `saved_model` under `work` with a warm-up file in each version."""
    base = work / MODEL
    shutil.copytree(saved_model, base)
    for version in base.iterdir():
        _warmup_file(version)
    logs = work / "logs" / MODEL
    (work / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "{MODEL}" base_path: "{base}" model_platform: "tensorflow"\n'
        f'    logging_config {{ log_collector_config {{ filename_prefix: "{logs}" }}\n'
        "      sampling_config { sampling_rate: 0.5 } } }\n"
        "}\n"
    )
    (work / "batching.config").write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } "
        "num_batch_threads { value: 2 } allowed_batch_sizes: 4 allowed_batch_sizes: 8 "
        'thread_pool_name { value: "batch_threads" }'
    )
    (work / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
    )
    return [
        f"--model_config_file={work / 'models.config'}",
        "--enable_batching",
        f"--batching_parameters_file={work / 'batching.config'}",
        f"--monitoring_config_file={work / 'monitoring.config'}",
    ]


def version_states(server: ServerProcess) -> dict[int, str]:
    answer = httpx.get(f"{server.rest}/v1/models/{MODEL}", timeout=30).json()
    return {int(v["version"]): v["state"] for v in answer["model_version_status"]}


def wait_version(server: ServerProcess, version: int, state: str = "AVAILABLE") -> None:
    wait_until(lambda: version_states(server).get(version) == state, what=f"v{version} {state}")


@contextmanager
def demo_server(saved_model: Path, work: Path, *more: str) -> Iterator[ServerProcess]:
    """servo on `demo_args` (and the flags `more`), once its model's version is AVAILABLE."""
    with running_server([*demo_args(saved_model, work), *more]) as server:
        wait_until(
            lambda: "AVAILABLE" in version_states(server).values(), what=f"{MODEL} AVAILABLE"
        )
        yield server


def add_version(work: Path, version: int, *, broken: bool = False) -> None:
    """A copy of the demo model's newest version (its warm-up file too) as `version`, built
    beside the base path and renamed into it whole, so servo never sees half a directory.
    `broken`: its saved_model.pb is not a SavedModel, so the load fails."""
    base = work / MODEL
    newest = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    staging = work / f".staging-{version}"
    shutil.copytree(newest, staging)
    if broken:
        (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    staging.rename(base / str(version))


def send_load(server: ServerProcess, rounds: int = 1) -> None:
    """Per round: REST predicts of 1 to 3 rows, a gRPC predict, classify and regress of a few
    examples, and one bad request (INVALID_ARGUMENT)."""
    url = f"{server.rest}/v1/models/{MODEL}"
    with httpx.Client(timeout=30) as rest, grpc_stubs(server) as stubs:
        for i in range(rounds):
            rows = 1 + i % 3
            answer = rest.post(f"{url}:predict", json={"instances": [[1.0]] * rows})
            assert answer.status_code == 200, answer.text
            stubs.predictions.Predict(tfs(predict_request(MODEL, [[2.0]])), timeout=30)
            stubs.predictions.Classify(
                tfs(classify_request(MODEL, "classify_x_to_y", *[1.0] * rows)), timeout=30
            )
            stubs.predictions.Regress(
                tfs(regress_request(MODEL, "regress_x_to_y", 1.0, 2.0)), timeout=30
            )
            if i % 4 == 0:
                bad = rest.post(f"{url}:predict", json={"instances": [["not a float"]]})
                assert bad.status_code == 400


# -- Prometheus --------------------------------------------------------------------------------


class PrometheusServer:
    """Debian's Prometheus on a free loopback port, scraping `target` (host:port) at
    `METRICS_PATH` every second, its data in `storage`."""

    def __init__(self, target: str, storage: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: make debian-packages"
        storage.mkdir(parents=True, exist_ok=True)
        config = storage / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: servo\n"
            f"    metrics_path: {METRICS_PATH}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = storage / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={storage / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def _get(self, path: str, **params: Any) -> httpx.Response | None:
        try:
            return self.client.get(path, params=params)
        except httpx.TransportError:
            assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()}"
            return None

    def wait_target_up(self) -> None:
        """Until Prometheus has scraped the target and found it up."""

        def up() -> bool:
            answer = self._get("/api/v1/targets")
            if answer is None or answer.status_code != 200:
                return False
            targets = answer.json()["data"]["activeTargets"]
            return any(t["health"] == "up" for t in targets)

        wait_until(up, what="prometheus's target up")

    def query(self, expr: str) -> dict[str, Any]:
        """The answer of /api/v1/query (status, data or error), at the latest scrape."""
        answer = self._get("/api/v1/query", query=expr)
        assert answer is not None
        result: dict[str, Any] = answer.json()
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        answer = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        assert answer is not None
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def prometheus(target: str, storage: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(target, storage)
    try:
        yield server
    finally:
        server.stop()


def wait_for_series(server: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    """The query's series once it has any (Prometheus scrapes on its own clock)."""

    def series() -> list[dict[str, Any]] | None:
        answer = server.query(expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"] or None

    result: list[dict[str, Any]] = wait_until(series, what=f"series of {expr}")
    return result
