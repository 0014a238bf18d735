"""The REST port's access log: an RSGI app around the REST app that writes one line per
request (servo.apis.access_log).

The server wraps its app in `AccessLogged` only when --access_log is on, so with it off the
request path has nothing of this. The wrapper hands the app a protocol object that counts the
body's bytes as the app reads them (as sent: before gzip decoding) and the answer's status
and bytes as the app writes them; the API is named from the route the path takes, the model
and version by the data plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from servo.apis import access_log

_V1_INFERENCE = ("predict", "classify", "regress")


class AccessLogged:
    """An RSGI app: `app`, each request's access log line written after its answer.
    `metrics_path` is the Prometheus page's (None when metrics are off)."""

    def __init__(self, app: Any, metrics_path: str | None = None) -> None:
        self.app = app
        self.metrics_path = metrics_path

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            await self.app.__rsgi__(scope, proto)
            return
        method, path = scope.method, scope.path
        entry = access_log.begin("rest", scope.client, method, path)
        entry.api = self.api(method, path)
        counted = _Counted(proto, entry)
        try:
            await self.app.__rsgi__(scope, counted)
        finally:
            if entry.status == "":
                entry.status = 499  # no answer written: the request ended (the client left)
            access_log.write(entry)

    def api(self, method: str, path: str) -> str:
        """servo's name for the route `path` takes ("" for none)."""
        if method == "OPTIONS":
            return "preflight"
        lower = path.lower()
        if lower.startswith("/v1/"):
            if lower == "/v1/openapi.json":
                return "openapi"
            if method == "POST":
                verb = lower.rpartition(":")[2]
                return verb if verb in _V1_INFERENCE else ""
            if lower in ("/v1/models", "/v1/models/"):
                return "models"
            if lower.endswith("/metadata"):
                return "metadata"
            return "status" if lower.startswith("/v1/models/") else ""
        if path in ("/v2", "/v2/"):
            return "server_metadata"
        if path.startswith("/v2/"):
            return _v2_api(path)
        if path == self.metrics_path:
            return "metrics"
        return ""


def _v2_api(path: str) -> str:
    if path == "/v2/health/live":
        return "server_live"
    if path == "/v2/health/ready":
        return "server_ready"
    if path == "/v2/repository/index":
        return "repository_index"
    if path.startswith("/v2/repository/models/"):
        if path.endswith("/load"):
            return "repository_model_load"
        return "repository_model_unload" if path.endswith("/unload") else ""
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "infer"
        return "model_ready" if path.endswith("/ready") else "metadata"
    return ""


class _Counted:
    """The HTTP server's protocol object as the app uses it, counting what passes."""

    __slots__ = ("_entry", "_proto")

    def __init__(self, proto: Any, entry: access_log.AccessEntry) -> None:
        self._proto = proto
        self._entry = entry

    async def __call__(self) -> bytes:
        body: bytes = await self._proto()
        self._entry.bytes_in += len(body)
        return body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        async for piece in self._proto:
            self._entry.bytes_in += len(piece)
            yield piece

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._entry.status = status
        self._entry.bytes_out = len(body)
        self._proto.response_bytes(status, headers, body)
