"""The status page at `/` on the REST port: one static HTML file (`status_page.html`, package
data beside this module, inline CSS and JS, no framework) that polls the status routes
(`GET /v1/models`: models, versions, states, errors, labels) and, when metrics are on, the
Prometheus page (request rates and latencies), every second, in the browser.

The page is read-only and shows nothing those routes do not: the server only hands out the
file. Exactly `/` is served (GET and HEAD; other methods 405): no other path opens it or
anything else, and nothing is read from disk by a request's path. The one thing filled in
per server is the metrics page's path (or none), in a `<meta>` tag the script reads. Its
Content-Security-Policy allows only its own inline script and style (by hash) and requests
to its own origin; the script writes what the server answers as text, never as HTML.
TFS answers 404 at `/`; `--enable_status_page=false` brings that back.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

PATH = "/"
PAGE_FILE = Path(__file__).with_name("status_page.html")
ALLOWED_METHODS = ("GET", "HEAD")
_METRICS_META = '<meta name="servo-metrics-path" content="">'
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


class StatusPage:
    """The page's bytes and headers, made once per server (the file is read on first use)."""

    def __init__(self, metrics_path: str | None) -> None:
        self._metrics_path = metrics_path
        self._answer: tuple[list[tuple[str, str]], bytes] | None = None

    def answer(self, method: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """The status, headers and body for a request to `/` (a HEAD's body is empty, its
        headers a GET's)."""
        if method not in ALLOWED_METHODS:
            raise MethodNotAllowed(method)
        if self._answer is None:
            self._answer = self._build()
        headers, body = self._answer
        if method == "HEAD":
            return 200, [*headers, ("content-length", str(len(body)))], b""
        return 200, headers, body

    def _build(self) -> tuple[list[tuple[str, str]], bytes]:
        text = PAGE_FILE.read_text(encoding="utf-8")
        if _METRICS_META not in text:
            raise RuntimeError(f"{PAGE_FILE} has no {_METRICS_META} to fill in")
        path = html.escape(self._metrics_path or "", quote=True)
        text = text.replace(_METRICS_META, f'<meta name="servo-metrics-path" content="{path}">')
        return headers_for(text), text.encode("utf-8")


class MethodNotAllowed(Exception):
    """A method the page does not answer (HTTP 405, with an Allow header)."""

    def __init__(self, method: str) -> None:
        super().__init__(
            f"Method {method} is not allowed on the status page; use {' or '.join(ALLOWED_METHODS)}"
        )


def headers_for(text: str) -> list[tuple[str, str]]:
    """The page's headers: HTML, revalidated on every load (it changes with the server), and
    a policy that runs only the page's own inline script and style (their SHA-256 hashes)."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, content in _INLINE.findall(text):
        digest = base64.b64encode(hashlib.sha256(content.encode("utf-8")).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(hashes["script"]) or "'none'"
    styles = " ".join(hashes["style"]) or "'none'"
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ]
