"""The metrics of issue 16 on a real server's page, and the Grafana dashboard's queries
(deploy/grafana/servo-dashboard.json) evaluated by a real Prometheus scraping that server
(tests/support/dashboard.py): every panel's expression parses, and the main panels' return
series with a positive value (not only NaN or 0: a quantile of a histogram nothing was added
to, or the increase of a counter that did not move, is a series too). Prometheus is Debian's
package (`make debian-packages`)."""

from __future__ import annotations

import math
import shutil
import subprocess
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
    VARIABLES,
    PrometheusServer,
    add_version,
    dashboard,
    demo_server,
    panel_queries,
    prometheus,
    send_load,
    wait_for_series,
    wait_version,
)
from tests.support.server import ServerProcess
from tests.support.testdata import TfsModels
from tests.support.waiting import wait_until

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


# Rate windows for the checks: Grafana's $__rate_interval on a longer dashboard range, so a
# rate stays positive for the whole test after the load is sent.
CHECK_VARIABLES = {**VARIABLES, "$__rate_interval": "1m"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def server(tfs_models: TfsModels, work: Path) -> Iterator[ServerProcess]:
    saved_model = Path(tfs_models.path("saved_model_half_plus_two_cpu"))
    with demo_server(saved_model, work) as process:
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
    [attempt] = [
        s for s in families[attempts].samples if s.labels["model_path"].endswith("/00000123")
    ]
    assert attempt.labels["status"] == "success" and attempt.value == 1
    assert samples(":tensorflow:cc:saved_model:load_latency") > 0
    assert samples("servo_model_warmup_records_read", model_path=attempt.labels["model_path"]) == 3


def test_the_example_scrape_config_reads_servos_metrics_path() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: make debian-packages"
    checked = subprocess.run(
        [promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_importable_grafana_json() -> None:
    """What Grafana's import needs and what makes a dashboard portable: a uid, a schema
    version, a Prometheus data-source variable every panel and query uses (no data source
    named by its instance uid), unique panel ids, panels inside the 24-column grid and not
    overlapping, unique refIds with an expression in each panel."""
    data = dashboard()
    assert isinstance(data["uid"], str) and 0 < len(data["uid"]) <= 40
    assert isinstance(data["schemaVersion"], int) and data["schemaVersion"] >= 36
    assert data["title"] and "id" not in data  # an id is the importing Grafana's to give
    [source] = [v for v in data["templating"]["list"] if v["type"] == "datasource"]
    assert source["name"] == "datasource" and source["query"] == "prometheus"
    ours = {"type": "prometheus", "uid": "${datasource}"}
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == ours, variable["name"]
    panels = data["panels"]
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= pos.keys(), panel["title"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == ours, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ours and target["expr"], panel["title"]


def test_every_panel_query_runs_on_prometheus_and_the_main_ones_have_values(
    server: ServerProcess, work: Path, tmp_path: Path
) -> None:
    data = dashboard()
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "instance", "model"}
    queries = panel_queries(CHECK_VARIABLES)
    assert {q.panel for q in queries} >= MAIN_PANELS
    target = server.rest.removeprefix("http://")
    with prometheus(target, tmp_path / "prometheus") as prom:
        prom.wait_target_up()
        # a load while Prometheus scrapes: the load panels have an increase to show
        add_version(work, 124)
        wait_version(server, 124)
        send_load(server, rounds=4)  # counted between scrapes: rates over more than one
        for query in queries:
            answer = prom.query(query.expr)
            assert answer["status"] == "success", (query, answer)
        for query in queries:
            if query.panel in MAIN_PANELS:
                wait_for_positive_value(prom, query.expr)
        _variables_resolve(prom)


def wait_for_positive_value(prom: PrometheusServer, expr: str) -> None:
    """Until one of the query's series has a positive finite value."""

    def positive() -> bool:
        answer = prom.query(expr)
        assert answer["status"] == "success", answer
        values = [float(s["value"][1]) for s in answer["data"]["result"]]
        return any(math.isfinite(v) and v > 0 for v in values)

    wait_until(positive, what=f"a positive value of {expr}")


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
