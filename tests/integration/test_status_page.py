"""The status page in a real browser (Debian's headless Chromium, driven by selenium through
chromedriver) against a real servo: the page shows the served versions and their states,
follows a new version as the server loads it and unloads the old one, shows the request rate
and latencies from the metrics page, shows a failed version's error as text, and logs no
console error and no Content-Security-Policy violation. Every wait is on the page's DOM or the
server's state, never a fixed time.

Chromium runs with a user-data directory of its own; chromedriver listens on a free loopback
port. Both are stopped after the module (driver.quit()), and every process chromedriver
started is checked to be gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.server import ServerProcess, alive, free_port, model_config, running_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
METRICS_PATH = "/monitoring/prometheus/metrics"
WAIT = 30.0  # seconds for the page to show a state the server has reached


# -- the browser -----------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children, ...), read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, its console log kept (every level) for the tests to read."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, port=free_port(), service_args=["--allowed-ips=127.0.0.1"])
    driver = webdriver.Chrome(options=options, service=service)
    started = descendants(service.process.pid) | {service.process.pid}
    try:
        yield driver
    finally:
        started |= descendants(service.process.pid)  # the renderers the pages started too
        driver.quit()  # closes Chromium and stops chromedriver
        left: set[int] = set()
        try:
            wait_until(
                lambda: not any(alive(pid) for pid in started), timeout=20, what="browser gone"
            )
        except AssertionError:
            left = {pid for pid in started if alive(pid)}
            for pid in left:
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left running after driver.quit(): {sorted(left)}"


def open_page(driver: webdriver.Chrome, url: str) -> None:
    """Loads the page and starts recording CSP violations the script can see (the browser's
    console shows every violation too, as an error)."""
    driver.get_log("browser")  # what earlier pages logged is theirs
    driver.get(url)
    driver.execute_script(
        "window.servoViolations = [];"
        "document.addEventListener('securitypolicyviolation', (e) =>"
        "  window.servoViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )


def assert_no_errors(driver: webdriver.Chrome) -> None:
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    assert driver.execute_script("return window.servoViolations") == []


def wait_for(driver: webdriver.Chrome, check: Any, what: str) -> Any:
    """WebDriverWait on the DOM until `check(driver)` holds; fails with what the page shows
    then."""
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(check)
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}: {snapshot(driver)}") from None


# What the page shows, read in one script run: the page re-renders every second, but never
# while a script runs, so the snapshot is one rendering's.
SNAPSHOT = """
const texts = (root, selector) => Object.fromEntries(
  [...root.querySelectorAll(selector)].map((d) => [d.dataset.stat, d.textContent]));
return {
  problem: document.getElementById("problem").textContent,
  note: document.getElementById("metrics-note").textContent,
  summary: texts(document.getElementById("summary"), "dd[data-stat]"),
  models: Object.fromEntries([...document.querySelectorAll("section[data-model]")].map((s) => [
    s.dataset.model,
    {
      stats: texts(s, "dd[data-stat]"),
      versions: Object.fromEntries([...s.querySelectorAll("tr[data-version]")].map((r) => [
        r.dataset.version,
        {
          state: r.querySelector("td.state").textContent,
          badge: r.querySelector("td.state .badge").className,
          labels: [...r.querySelectorAll("td.labels .label")].map((l) => l.textContent),
          code: r.cells[3].querySelector(".code")?.textContent ?? "",
          status: r.cells[3].textContent,
          elements: [...r.cells[3].querySelectorAll("*")].map((e) => e.tagName.toLowerCase()),
        },
      ])),
    },
  ])),
};
"""


def snapshot(driver: webdriver.Chrome) -> dict[str, Any]:
    return dict(driver.execute_script(SNAPSHOT))


def states(driver: webdriver.Chrome, model: str) -> dict[str, str]:
    """The page's versions of `model` and the state each shows."""
    shown = snapshot(driver)["models"].get(model, {"versions": {}})
    return {version: row["state"] for version, row in shown["versions"].items()}


def stats(driver: webdriver.Chrome, model: str) -> dict[str, str]:
    return dict(snapshot(driver)["models"][model]["stats"])


# -- the server ------------------------------------------------------------------------------


def write_vocab(base: Path, version: int, words: list[str]) -> None:
    """A lookup table's version directory, written beside the base path and moved in whole,
    so that a poll never sees half of it."""
    staging = base.parent / f".{base.name}-{version}"
    staging.mkdir(parents=True)
    (staging / "vocab.txt").write_text("".join(f"{w}\n" for w in words))
    base.mkdir(exist_ok=True)
    staging.rename(base / str(version))


def serve(tmp_path: Path, *, metrics: bool, extra: str = "", args: tuple[str, ...] = ()) -> Any:
    """A servo serving `tmp_path/models/vocab` (a lookup table, version 1), polling every
    second, load failures final at once (no retries)."""
    base = tmp_path / "models" / "vocab"
    write_vocab(base, 1, ["servo", "serves", "models"])
    config = tmp_path / "models.config"
    config.write_text(model_config([("vocab", base, "lookup", extra)]))
    flags = [
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
        *args,
    ]
    if metrics:
        monitoring = tmp_path / "monitoring.config"
        monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
        flags.append(f"--monitoring_config_file={monitoring}")
    return running_server(flags)


def server_states(server: ServerProcess) -> dict[str, str]:
    answer = httpx.get(f"{server.rest}/v1/models/vocab").json()
    return {v["version"]: v["state"] for v in answer["model_version_status"]}


def server_count(server: ServerProcess, model: str) -> int:
    """The server's own request count for `model` (every status), from its metrics page."""
    text = httpx.get(f"{server.rest}{METRICS_PATH}").text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if family.name == ":tensorflow:serving:request_count"
            and sample.labels["model_name"] == model
        )
    )


# -- the tests -------------------------------------------------------------------------------


def test_the_page_follows_a_new_version_and_shows_requests(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    with serve(tmp_path, metrics=True) as server:
        open_page(browser, f"{server.rest}/")
        assert browser.title == "servo status"
        wait_for(browser, lambda d: states(d, "vocab") == {"1": "AVAILABLE"}, "version 1")
        assert f"from the metrics page {METRICS_PATH}" in snapshot(browser)["note"]

        # A new version: the page shows it load, and the old one unloaded (latest policy).
        write_vocab(tmp_path / "models" / "vocab", 2, ["servo", "serves", "more", "models"])
        wait_for(
            browser,
            lambda d: states(d, "vocab") == {"2": "AVAILABLE", "1": "END"},
            "version 2 AVAILABLE and version 1 END",
        )
        assert server_states(server) == {"2": "AVAILABLE", "1": "END"}
        summary = snapshot(browser)["summary"]
        assert (summary["models"], summary["ready"], summary["available"]) == ("1", "1 of 1", "1")

        # Requests: the page's count is the server's, and a rate and latencies appear.
        requests = 40
        with httpx.Client(base_url=server.rest) as client:
            for _ in range(requests):
                answer = client.post("/v1/models/vocab:predict", json={"instances": ["more"]})
                assert answer.json() == {"predictions": [2]}

        counted = server_count(server, "vocab")  # these and the status request above
        assert counted == requests + 1

        def measured(driver: webdriver.Chrome) -> dict[str, str] | None:
            shown = stats(driver, "vocab")
            if shown["total"] != str(counted) or not shown["rate"].endswith("/s"):
                return None
            if float(shown["rate"].removesuffix("/s")) <= 0 or shown["p50"] == "\u2013":
                return None
            return shown

        shown = wait_for(browser, measured, f"{counted} requests, a rate and a latency")
        assert shown["failed"] == "0.00/s"
        for key in ("p50", "p99", "mean"):
            assert shown[key].endswith(("\u00b5s", " ms", " s")), shown
        assert_no_errors(browser)

        # The page is served at / only (a query string is not part of the path); HEAD too.
        page = httpx.get(f"{server.rest}/")
        assert httpx.get(f"{server.rest}/?refresh=1").content == page.content
        for path in ("/index.html", "//", "/status"):
            assert httpx.get(f"{server.rest}{path}").status_code == 404, path
        head = httpx.head(f"{server.rest}/")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(page.content))
        assert server.stop() == 0


def test_a_failed_version_shows_its_error_as_text_and_labels(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """Metrics off: no rates, a note that says how to turn them on. A version that fails to
    load (a key twice in its table) shows its error code and message, written as text: the
    message holds markup that must not become elements."""
    labels = 'version_labels { key: "stable" value: 1 }'
    with serve(tmp_path, metrics=False, extra=labels) as server:
        open_page(browser, f"{server.rest}/")
        wait_for(browser, lambda d: states(d, "vocab") == {"1": "AVAILABLE"}, "version 1")
        shown = snapshot(browser)
        assert shown["models"]["vocab"]["versions"]["1"]["labels"] == ["stable"]
        assert "Request rates and latencies are off" in shown["note"]
        assert "--monitoring_config_file" in shown["note"]
        assert shown["models"]["vocab"]["stats"] == {}  # no rates without metrics
        assert "rate" not in shown["summary"]

        write_vocab(tmp_path / "models" / "vocab", 2, ["a", "<b>x</b>", "<b>x</b>"])
        wait_for(
            browser,
            lambda d: states(d, "vocab") == {"2": "END", "1": "AVAILABLE"},
            "version 2 failed, version 1 still serving",
        )
        shown = snapshot(browser)
        failed = shown["models"]["vocab"]["versions"]["2"]
        assert failed["code"] == "INVALID_ARGUMENT"
        assert failed["status"] == (
            f"INVALID_ARGUMENT{tmp_path}/models/vocab/2/vocab.txt: "
            "key '<b>x</b>' on line 3 already appears on line 2"
        )
        assert failed["elements"] == ["span"]  # the code's; the message is text, no <b>
        assert "s-FAILED" in failed["badge"].split()
        assert shown["models"]["vocab"]["versions"]["1"]["labels"] == ["stable"]
        assert shown["summary"]["failed"] == "1"
        assert_no_errors(browser)
        assert server.stop() == 0


def test_the_page_says_when_the_server_is_gone(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """The page keeps what it last read and says the server does not answer (a failed fetch,
    which Chromium logs as a console error: expected here, so the log is not checked)."""
    with serve(tmp_path, metrics=False) as server:
        open_page(browser, f"{server.rest}/")
        wait_for(browser, lambda d: states(d, "vocab") == {"1": "AVAILABLE"}, "version 1")
        assert server.stop() == 0
        wait_for(
            browser,
            lambda d: "Cannot read the server's status" in snapshot(d)["problem"],
            "the server gone",
        )
        assert states(browser, "vocab") == {"1": "AVAILABLE"}


def test_turned_off_the_root_is_404(tmp_path: Path) -> None:
    with serve(tmp_path, metrics=False, args=("--enable_status_page=false",)) as server:
        answer = httpx.get(f"{server.rest}/")
        assert answer.status_code == 404
        assert answer.json() == {"error": "Not found: GET /"}
        assert server.stop() == 0


def test_debians_packages_are_what_the_tests_drive() -> None:
    """The browser is the Makefile's (`debian-packages`): a missing one fails, never skips."""
    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(program), f"{program} is missing: run `make debian-packages`"
    version = subprocess.run([CHROMEDRIVER, "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("ChromeDriver"), version
