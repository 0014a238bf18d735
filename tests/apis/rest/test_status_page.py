"""The status page (servo.apis.rest.status_page) as the REST app serves it, in process: the
HTML at exactly `/` with its policy and the metrics page's path filled in, HEAD, 405 for the
other methods, 404 when it is off or at any other path; and the page's script writing what the
server says as text only. The page in a browser: tests/integration/test_status_page.py."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import pytest

from servo.apis.rest import status_page
from servo.apis.rest.app import RestOptions
from servo.metrics import ServerMetrics
from tests.support.inprocess import FakeCore, RestClient, data_plane

METRICS_PATH = "/monitoring/prometheus/metrics"
TEMPLATE = status_page.PAGE_FILE.read_text(encoding="utf-8")


def client(options: RestOptions) -> Iterator[RestClient]:
    rest = RestClient(data_plane(FakeCore(), metrics=ServerMetrics()), options)
    yield rest
    rest.close()


@pytest.fixture
def rest() -> Iterator[RestClient]:
    """The page on, metrics on (as with TFS's monitoring_config.txt)."""
    yield from client(RestOptions(metrics_path=METRICS_PATH))


@pytest.fixture
def plain() -> Iterator[RestClient]:
    """servo's defaults: the page on, metrics off."""
    yield from client(RestOptions())


@pytest.fixture
def off() -> Iterator[RestClient]:
    yield from client(RestOptions(metrics_path=METRICS_PATH, status_page=False))


def metrics_meta(page: str) -> str:
    found = re.findall(r'<meta name="servo-metrics-path" content="([^"]*)">', page)
    assert len(found) == 1, found
    return found[0]


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_page_is_served_at_the_root_with_the_metrics_path_filled_in(rest: RestClient) -> None:
    answer = rest.get("/")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-content-type-options"] == "nosniff"
    page = answer.body.decode()
    assert page.startswith("<!doctype html>")
    assert metrics_meta(page) == METRICS_PATH
    # The one difference from the file: the meta tag.
    assert page == TEMPLATE.replace(
        '"servo-metrics-path" content=""', f'"servo-metrics-path" content="{METRICS_PATH}"'
    )


def test_without_metrics_the_meta_is_empty(plain: RestClient) -> None:
    answer = plain.get("/")
    assert answer.status == 200
    assert answer.body.decode() == TEMPLATE
    assert metrics_meta(answer.body.decode()) == ""


def test_the_policy_runs_only_the_pages_own_script_and_style(rest: RestClient) -> None:
    page = rest.get("/").body.decode()
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    policy = directives(rest.get("/").headers["content-security-policy"])
    assert policy == {
        "default-src": "'none'",
        "script-src": sha256(script),
        "style-src": sha256(style),
        "connect-src": "'self'",
        "img-src": "data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    # Nothing else runs or loads: no other script, handler attribute, style attribute, or
    # resource from elsewhere.
    assert page.count("<script") == 1 and page.count("<style") == 1
    assert not re.search(r"\son[a-z]+=|\sstyle=|\ssrc=|https?://", page)


def test_the_script_writes_the_servers_text_as_text(rest: RestClient) -> None:
    """Model names, states and error messages come from the server (a model's error can hold
    any text a file on disk holds): the script builds nodes and sets their textContent,
    never parses a string as HTML."""
    (script,) = re.findall(r"<script>(.*?)</script>", rest.get("/").body.decode(), re.DOTALL)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "textContent" in script


def test_a_metrics_path_is_escaped_into_the_meta() -> None:
    """The path comes from the monitoring config: quoted as an attribute, it cannot end the
    tag (the browser hands the script the path itself)."""
    for rest in client(RestOptions(metrics_path='/m"><script>alert(1)</script>')):
        page = rest.get("/").body.decode()
        assert metrics_meta(page) == "/m&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
        assert page.count("<script") == 1


def test_head_has_the_headers_of_a_get_and_no_body(rest: RestClient) -> None:
    get, head = rest.get("/"), rest.request("HEAD", "/")
    assert head.status == 200
    assert head.body == b""
    assert head.headers == {**get.headers, "content-length": str(len(get.body))}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(rest: RestClient, method: str) -> None:
    answer = rest.request(method, "/", b"{}")
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"
    assert answer.headers["content-type"] == "application/json"
    assert answer.error == f"Method {method} is not allowed on the status page; use GET or HEAD"


def test_turned_off_the_root_is_404_as_in_tfs(off: RestClient) -> None:
    for method in ("GET", "HEAD", "POST"):
        answer = off.request(method, "/")
        assert (answer.status, answer.error) == (404, f"Not found: {method} /")
    assert off.get(METRICS_PATH).status == 200  # the rest is served as before


@pytest.mark.parametrize(
    "path",
    ["//", "/index.html", "/status_page.html", "/status", "/%2F", "/.", "/ ", "/v1/", "/static"],
)
def test_no_other_path_serves_the_page(rest: RestClient, path: str) -> None:
    answer = rest.get(path)
    assert answer.status in (400, 404), (path, answer.status)
    assert b"<html" not in answer.body
