"""The metrics of issue 16 on a real server's page, and the Grafana dashboard's queries
(deploy/grafana/servo-dashboard.json) evaluated by a real Prometheus scraping that server
(tests/support/dashboard.py): every panel's expression parses, and the main panels' return
series. Prometheus is Debian's package (`make debian-packages`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.dashboard import (
    METRICS_PATH,
    MODEL,
    SCRAPE_CONFIG,
    PrometheusServer,
    dashboard,
    demo_server,
    panel_queries,
    prometheus,
    send_load,
    wait_for_series,
)
from tests.support.server import ServerProcess
from tests.support.testdata import TfsModels

pytestmark = pytest.mark.integration

# Panels whose queries must return series from the demo server (the others may be empty:
# nothing downloaded from object storage, no failed poll, no failed load).
MAIN_PANELS = {
    "Request rate by model and status",
    "Error ratio by model",
    "Successful requests by API and entrypoint",
    "Request latency quantiles",
    "Runtime latency quantiles",
    "Examples per request",
    "Request log records",
    "Model version states",
    "Model loads by outcome",
    "Model load time (p90)",
    "SavedModel load attempts",
    "SavedModel mean load time",
    "Warm-up",
    "Batch runs",
    "Batch sizes",
    "Batch queuing latency (p99)",
}


@pytest.fixture(scope="module")
def server(
    tfs_models: TfsModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    saved_model = Path(tfs_models.path("saved_model_half_plus_two_cpu"))
    with demo_server(saved_model, tmp_path_factory.mktemp("dashboard")) as process:
        send_load(process, rounds=8)
        yield process


def test_the_new_families_are_on_the_page_as_valid_prometheus_text(server: ServerProcess) -> None:
    page = httpx.get(f"{server.rest}{METRICS_PATH}", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(page)}

    def samples(name: str, suffix: str = "", **labels: str) -> float:
        return sum(
            s.value
            for s in families[name].samples
            if s.name.endswith(suffix) and labels.items() <= s.labels.items()
        )

    examples = ":tensorflow:serving:request_example_counts"
    assert families[examples].type == "histogram"
    assert samples(examples, "_count", model=MODEL) == 16  # 8 classify + 8 regress
    log_count = ":tensorflow:serving:request_log_count"
    assert families[log_count].type == "counter"
    assert samples(log_count, model_name=MODEL, status_code="OK") > 0  # sampled at 0.5
    batching = ":tensorflow:serving:batching_session:"
    assert samples(f"{batching}wrapped_run_count") > 0
    assert samples(f"{batching}input_batch_size", "_count") > 0
    assert samples(f"{batching}processed_batch_size", "_count") > 0
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    [attempt] = families[attempts].samples
    assert attempt.labels["status"] == "success" and attempt.value == 1
    assert attempt.labels["model_path"].endswith(f"/{MODEL}/00000123")
    assert samples(":tensorflow:cc:saved_model:load_latency") > 0
    assert samples("servo_model_warmup_records_read") == 3


def test_the_example_scrape_config_reads_servos_metrics_path() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH


def test_every_panel_query_runs_on_prometheus_and_the_main_ones_have_series(
    server: ServerProcess, tmp_path: Path
) -> None:
    data = dashboard()
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "instance", "model"}
    queries = panel_queries()
    assert {q.panel for q in queries} >= MAIN_PANELS
    target = server.rest.removeprefix("http://")
    with prometheus(target, tmp_path / "prometheus") as prom:
        prom.wait_target_up()
        send_load(server, rounds=4)  # counted between scrapes: rates over more than one
        for query in queries:
            answer = prom.query(query.expr)
            assert answer["status"] == "success", (query, answer)
        for query in queries:
            if query.panel in MAIN_PANELS:
                wait_for_series(prom, query.expr)
        _variables_resolve(prom)


def _variables_resolve(prom: PrometheusServer) -> None:
    """The variables' label_values(...) queries, as Grafana runs them: series of the metric."""
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = variable["definition"]
        metric = definition.removeprefix("label_values(").rsplit(",", 1)[0]
        series = wait_for_series(prom, metric.replace("$instance", ".*"))
        label = definition.rsplit(",", 1)[1].strip(" )")
        assert all(label in s["metric"] for s in series)
