#!/usr/bin/env python3
"""Renders the status page from real data: docs/status_page.png.

Writes three of the example models (the ONNX MLP, the lookup table `vocab` in two versions,
one labelled `stable` and one `canary`, and the Python servable `word_count`) into a
temporary directory, serves them with servo on free loopback ports with metrics on, adds a
version of the MLP that fails to load (a truncated model.onnx, so that an error shows), sends
them requests for a while (a few that fail, so that the failure rate shows), opens the page
in Debian's headless Chromium and saves a screenshot once the page shows rates and
latencies for every model. Every process started is stopped by its PID.

Usage: python scripts/screenshot_status_page.py [--out docs/status_page.png]
Needs: selenium (servo-model-server[test]) and `make debian-packages` (chromium, chromedriver).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
METRICS_PATH = "/monitoring/prometheus/metrics"
MODELS = ("mlp", "vocab", "word_count")

# Request bodies per model, and how many requests a second each gets.
LOAD = {
    "mlp": ({"instances": [[float(i) for i in range(16)]] * 4}, 40),
    "vocab": ({"instances": [["servo", "serves", "a", "model"]]}, 25),
    "word_count": ({"instances": ["a model server", "servo serves"]}, 12),
}
BAD = ("word_count", {"instances": [1.0]}, 1)  # wrong input type: INVALID_ARGUMENT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_models(root: Path) -> Path:
    """The example models under `root/models`, vocab in versions 1 and 2, and their config."""
    models = root / "models"
    only = [arg for name in MODELS for arg in ("--only", name)]
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_example_models.py"), str(models), *only],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.copytree(models / "vocab" / "1", models / "vocab" / "2")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "mlp" base_path: "{models / "mlp"}" model_platform: "onnx" }}\n'
        f'  config {{ name: "vocab" base_path: "{models / "vocab"}" model_platform: "lookup"\n'
        "    model_version_policy { all {} }\n"
        '    version_labels { key: "stable" value: 1 }\n'
        '    version_labels { key: "canary" value: 2 } }\n'
        f'  config {{ name: "word_count" base_path: "{models / "word_count"}"'
        ' model_platform: "python" }\n'
        "}\n"
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    return root


def start_servo(root: Path, rest_port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servo",
            "serve",
            "--bind_address=127.0.0.1",
            f"--port={free_port()}",
            f"--rest_api_port={rest_port}",
            f"--model_config_file={root / 'models.config'}",
            f"--monitoring_config_file={root / 'monitoring.config'}",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    assert server.stdout is not None
    for line in server.stdout:  # until the REST port is open (or servo exits)
        if "Exporting HTTP/REST API" in line:
            break
    else:
        raise SystemExit(f"servo exited with code {server.wait()} before serving")
    # Keep reading its output, so that the pipe never fills.
    threading.Thread(target=lambda: [None for _ in server.stdout or ()], daemon=True).start()
    return server


def add_broken_version(root: Path) -> None:
    """mlp/2: the model cut in half, moved in whole once servo serves version 1."""
    mlp = root / "models" / "mlp"
    staging = root / "mlp-2"
    staging.mkdir()
    model = (mlp / "1" / "model.onnx").read_bytes()
    (staging / "model.onnx").write_bytes(model[: len(model) // 2])
    staging.rename(mlp / "2")


def send(url: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        error.read()


def load(rest: str, stop: threading.Event) -> list[threading.Thread]:
    """One thread per model (and one of bad requests), each at its rate, until `stop`."""

    def run(model: str, body: dict[str, object], per_second: int) -> None:
        url = f"{rest}/v1/models/{model}:predict"
        while not stop.is_set():
            send(url, body)
            stop.wait(1 / per_second)

    jobs = [(model, body, rate) for model, (body, rate) in LOAD.items()] + [BAD]
    threads = [threading.Thread(target=run, args=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    return threads


def every_model_measured(driver: webdriver.Chrome) -> bool:
    """Whether the page shows a p99 latency for every model (it has read two samples) and
    the broken version's error."""
    shown = driver.execute_script(
        "return [...document.querySelectorAll('section[data-model]')].map((s) =>"
        "  s.querySelector('dd[data-stat=\"p99\"]').textContent)"
    )
    failed = driver.execute_script(
        'return document.querySelector(\'section[data-model="mlp"] tr[data-version="2"]'
        " td.error') !== null"
    )
    return failed and len(shown) == len(MODELS) and all(value != "\u2013" for value in shown)


def screenshot(url: str, out: Path, width: int, height: int) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="servo-chromium-") as profile:
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            "--no-first-run",
        ):
            options.add_argument(arg)
        service = Service(CHROMEDRIVER, port=free_port())
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.get(url)
            try:
                WebDriverWait(driver, 60, poll_frequency=0.2).until(every_model_measured)
            except TimeoutException:
                raise SystemExit("the page never showed every model's latencies") from None
            # Let the 10 s window fill, so that the rates are steady.
            WebDriverWait(driver, 30, poll_frequency=0.5).until(
                lambda d: d.execute_script("return samples.length") >= 8
            )
            # The whole page, however long: the viewport grown to the document's height.
            page_height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": width,
                    "height": max(height, page_height),
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "status_page.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="servo-status-page-") as tmp:
        root = write_models(Path(tmp))
        rest_port = free_port()
        server = start_servo(root, rest_port)
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            rest = f"http://127.0.0.1:{rest_port}"
            add_broken_version(root)
            threads = load(rest, stop)
            screenshot(f"{rest}/", args.out, args.width, args.height)
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
