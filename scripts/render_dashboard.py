"""Draws the Grafana dashboard's panels (deploy/grafana/servo-dashboard.json) from real data,
without Grafana: servo (the demo of tests/support/dashboard.py: a SavedModel with batching,
warm-up and request logging), Debian's Prometheus scraping it every second, a recording of
`--seconds` under load in which a new version is added (a third in) and then a broken one (two
thirds in), so the load panels have loads to show; then each panel's queries are read back
with /api/v1/query_range and drawn with matplotlib in the dashboard's grid. It is a rendering
of the panels' queries, not Grafana's look.

    python scripts/render_dashboard.py [--seconds 90] [--out docs/dashboard.png]

A panel without data is drawn only when it is in EMPTY, with the reason written on it; any
other empty panel fails the rendering. Needs Prometheus (`make debian-packages`) and
matplotlib (servo's `bench` extra).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from tests.support.dashboard import (  # noqa: E402
    VARIABLES,
    add_version,
    dashboard,
    demo_server,
    prometheus,
    send_load,
    substitute,
    version_states,
)
from tests.support.testdata import generated_tfs_models  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

ROW_HEIGHT = 0.32  # inches per grid unit of height
WIDTH = 22.0  # inches for the 24 grid columns
TITLE_UNITS = 2.0  # grid units of height above the dashboard for the figure's title

# The panels this demo leaves empty, and why.
STORAGE = "no data: the demo serves no model from object storage (s3://, gs://)"
EMPTY = {
    "Version downloads": STORAGE,
    "Download throughput": STORAGE,
    "Storage poll errors": STORAGE,
}
COLOURS = {  # Grafana's named colours used by value mappings
    "blue": "#5794f2",
    "yellow": "#fade2a",
    "green": "#73bf69",
    "orange": "#ff9830",
    "red": "#f2495c",
    "text": "#8e8e8e",
}

Series = list[tuple[str, list[tuple[float, float]]]]
Refs = list[str]  # each series' refId


def unit_of(panel: dict[str, Any], ref: str) -> str:
    """The panel's unit, or an override's for the query `ref` (Grafana's byFrameRefID)."""
    unit: str = panel["fieldConfig"]["defaults"].get("unit", "")
    for override in panel["fieldConfig"].get("overrides", []):
        if override["matcher"] == {"id": "byFrameRefID", "options": ref}:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    unit = prop["value"]
    return unit


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    text = re.sub(r"\S*/(half_plus_two/\d+)", r"…/\1", text)  # a temporary directory's path
    return " ".join(text.split())[:60] or str(labels)


def unit_formatter(unit: str) -> FuncFormatter:
    """Numbers the way Grafana's units write them (roughly)."""

    def short(v: float) -> str:
        for size, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " K")):
            if abs(v) >= size:
                return f"{v / size:.3g}{suffix}"
        return f"{v:.3g}"

    def micros(v: float) -> str:
        for size, suffix in ((1e6, " s"), (1e3, " ms")):
            if abs(v) >= size:
                return f"{v / size:.4g}{suffix}"
        return f"{v:.3g} µs"

    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.3g}%")
    if unit == "µs":
        return FuncFormatter(lambda v, _: micros(v))
    return FuncFormatter(lambda v, _: short(v))


def draw(
    fig: Any, panel: dict[str, Any], series: Series, refs: Refs, start: float, total: float
) -> None:
    pos = panel["gridPos"]
    top = 1 - (pos["y"] + TITLE_UNITS) / total
    ax = fig.add_axes(
        (
            pos["x"] / 24 + 0.03,
            top - pos["h"] / total + 0.02,
            pos["w"] / 24 - 0.04,
            pos["h"] / total - 0.045,
        )
    )
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "")
    ax.set_title(f"{panel['title']}  [{unit}]", fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    if not series:
        ax.text(0.5, 0.5, EMPTY[panel["title"]], ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel["type"] == "bargauge":
        # Grafana's bar gauge: the last value of each series, its name and value written on it
        values = [points[-1][1] for _, points in series]
        ax.barh(range(len(values)), values, color="#5794f2", height=0.6)
        ax.set_yticks([])
        ax.set_ylim(-0.6, len(values) - 0.4)
        ax.set_xlim(0, max(values) * 1.05 or 1)
        ax.invert_yaxis()
        for i, ((name, _), value, ref) in enumerate(zip(series, values, refs, strict=True)):
            ax.text(0.01, i - 0.36, name, fontsize=7, transform=ax.get_yaxis_transform())
            ax.text(
                0.99,
                i,
                unit_formatter(unit_of(panel, ref))(value),
                fontsize=8,
                weight="bold",
                ha="right",
                va="center",
                transform=ax.get_yaxis_transform(),
            )
        if len({unit_of(panel, ref) for ref in refs}) == 1:
            ax.xaxis.set_major_formatter(unit_formatter(unit))
        else:
            ax.set_xticks([])  # one axis cannot carry two units
        return
    if panel["type"] == "state-timeline":
        mapped = {
            float(value): (option["text"], COLOURS.get(option["color"], option["color"]))
            for mapping in defaults.get("mappings", [])
            for value, option in mapping["options"].items()
        }
        for row, (_, points) in enumerate(series):
            for t, value in points:  # one step (a second) each: a gap stays a gap
                colour = mapped.get(value, ("", "#cccccc"))[1]
                ax.barh(row, 1, left=t - start, color=colour, height=0.7)
            # the state's name at the middle of each run of the same value
            runs: list[list[tuple[float, float]]] = []
            for point in points:
                if runs and runs[-1][-1][1] == point[1]:
                    runs[-1].append(point)
                else:
                    runs.append([point])
            for run in runs:
                if run[-1][0] + 1 - run[0][0] < (points[-1][0] - start) / 8:
                    continue  # too short to write on
                middle = (run[0][0] + run[-1][0] + 1) / 2 - start
                state = mapped.get(run[0][1], (f"{run[0][1]:g}", ""))[0]
                ax.text(middle, row, state, fontsize=7, ha="center", va="center")
        ax.set_yticks([])
        for row, (name, _) in enumerate(series):
            ax.text(0.01, row - 0.4, name, fontsize=7, transform=ax.get_yaxis_transform())
        ax.set_ylim(-0.8, len(series) - 0.4)
        ax.invert_yaxis()
        ax.set_xlabel("seconds", fontsize=7)
        return
    for name, points in series:
        ax.plot([t - start for t, _ in points], [v for _, v in points], label=name, lw=1.2)
    ax.yaxis.set_major_formatter(unit_formatter(unit))
    ax.set_xlabel("seconds", fontsize=7)
    ax.legend(fontsize=6, loc="upper left", framealpha=0.6, ncol=1 + len(series) // 6)
    ax.grid(alpha=0.3)


def record(seconds: float) -> tuple[list[tuple[dict[str, Any], Series, Refs]], float, float]:
    """The demo under load for `seconds`, and each panel's series over that time."""
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    saved_model = generated_tfs_models() / "saved_model_half_plus_two_cpu"
    with (
        tempfile.TemporaryDirectory() as directory,
        # a broken version fails once and stays failed, rather than retrying for minutes
        demo_server(saved_model, Path(directory), "--max_num_load_retries=0") as server,
        prometheus(server.rest.removeprefix("http://"), Path(directory) / "prometheus") as prom,
    ):
        work = Path(directory)
        prom.wait_target_up()
        started = time.time()
        stop = threading.Event()

        def load() -> None:
            rounds = 0
            while not stop.is_set():
                # bursts of varying size, so that the rates and batch sizes move
                send_load(server, rounds=1 + rounds % 6)
                rounds += 1
                stop.wait(0.2)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        # the length of the recording is a choice, not a synchronisation
        stop.wait(seconds / 3)
        add_version(work, 124)
        wait_until(lambda: version_states(server).get(124) == "AVAILABLE", what="v124")
        stop.wait(max(0.0, started + 2 * seconds / 3 - time.time()))
        add_version(work, 125, broken=True)
        wait_until(lambda: version_states(server).get(125) == "END", what="v125 failed")
        stop.wait(max(0.0, started + seconds - time.time()))
        stop.set()
        for thread in threads:
            thread.join()
        end = time.time()
        assert version_states(server).get(124) == "AVAILABLE", version_states(server)
        variables = {**VARIABLES, "$__range": f"{math.ceil(end - started)}s"}
        results = []
        for panel in panels:
            series: Series = []
            refs: Refs = []
            for target in panel["targets"]:
                expr = substitute(target["expr"], variables)
                answer = prom.query_range(expr, started, end, 1)
                assert answer["status"] == "success", (expr, answer)
                for item in answer["data"]["result"]:
                    # Grafana draws no point for NaN (a quantile of nothing observed)
                    points = [
                        (float(t), float(v)) for t, v in item["values"] if math.isfinite(float(v))
                    ]
                    if points:
                        name = legend(target.get("legendFormat", ""), item["metric"])
                        series.append((name, points))
                        refs.append(target["refId"])
            empty = panel["title"] in EMPTY
            assert bool(series) != empty, f"{panel['title']}: {'data' if series else 'no data'}"
            results.append((panel, series, refs))
    return results, started, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    args = parser.parse_args()
    data = dashboard()
    results, started, end = record(args.seconds)
    total = TITLE_UNITS + max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in data["panels"])
    fig = plt.figure(figsize=(WIDTH, total * ROW_HEIGHT), dpi=60)
    fig.suptitle(
        f"{data['title']}: the dashboard's panels drawn with matplotlib from Prometheus "
        f"query_range over {end - started:.0f} s of a demo servo under load (v124 added at "
        "a third, a broken v125 at two thirds); not Grafana",
        fontsize=12,
        y=1 - 0.6 / total,
    )
    for panel, series, refs in results:
        draw(fig, panel, series, refs, started, total)
    for row in (p for p in data["panels"] if p["type"] == "row"):
        y = 1 - (row["gridPos"]["y"] + TITLE_UNITS + 0.7) / total
        fig.text(0.005, y, row["title"], weight="bold", fontsize=11)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
