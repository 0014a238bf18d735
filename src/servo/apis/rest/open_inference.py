"""The Open Inference Protocol's ("KServe v2") health and server routes on the REST port,
answered from the same server core as TFS's routes:

    GET /v2                                     server metadata (name, version, extensions)
    GET /v2/health/live                         200 while the server runs
    GET /v2/health/ready                        200 when every configured model has an
                                                AVAILABLE version; 400 naming those that have none
    GET /v2/models/{m}[/versions/{v}]/ready     200 when the model (the version) is AVAILABLE;
                                                400 when it is not, 404 for an unknown model

As the protocol says, a 200 means true and a 4xx false; the bodies are JSON
(`{"live": true}`, `{"ready": true}`, `{"name": m, "ready": true}`), errors `{"error": ...}`.
Paths are matched as written (the protocol's are case-sensitive, unlike TFS's).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import orjson

import servo
from servo.apis.data_plane import ModelSpec
from servo.core.servable_state import ManagerState

if TYPE_CHECKING:
    from servo.apis.data_plane import DataPlane
    from servo.server.server_core import VersionStatus

SERVER_NAME = "servo"
EXTENSIONS: tuple[str, ...] = ()  # none of the protocol's extensions yet
_MODEL_READY = re.compile(r"/v2/models/([^/]+)(?:/versions/(\d+))?/ready")


def answer(plane: DataPlane, method: str, path: str) -> tuple[int, bytes]:
    """The status and body of a /v2 request; 404 for a route this server does not have."""
    if method == "GET":
        if path in ("/v2", "/v2/"):
            return 200, orjson.dumps(
                {"name": SERVER_NAME, "version": servo.__version__, "extensions": EXTENSIONS}
            )
        if path == "/v2/health/live":
            return 200, orjson.dumps({"live": True})
        if path == "/v2/health/ready":
            return _server_ready(plane)
        match = _MODEL_READY.fullmatch(path)
        if match is not None:
            name, version = match.group(1), match.group(2)
            return _model_ready(plane, name, None if version is None else int(version))
    return 404, orjson.dumps({"error": f"Not found: {method} {path}"})


def _server_ready(plane: DataPlane) -> tuple[int, bytes]:
    waiting = [
        f"{name} ({_describe(versions)})"
        for name, versions in plane.models()
        if not any(v.state is ManagerState.AVAILABLE for v in versions)
    ]
    if waiting:
        error = f"Not ready: no AVAILABLE version of {len(waiting)} model(s): " + "; ".join(waiting)
        return 400, orjson.dumps({"error": error})
    return 200, orjson.dumps({"ready": True})


def _model_ready(plane: DataPlane, name: str, version: int | None) -> tuple[int, bytes]:
    if name not in plane.model_names():
        return 404, orjson.dumps({"error": f"Model {name} is not in the server's config"})
    versions = plane.versions(ModelSpec(name, version))
    if any(v.state is ManagerState.AVAILABLE for v in versions):
        return 200, orjson.dumps({"name": name, "ready": True})
    what = name if version is None else f"version {version} of {name}"
    return 400, orjson.dumps({"error": f"Not ready: {what} ({_describe(versions)})"})


def _describe(versions: list[VersionStatus]) -> str:
    """A model's versions as an operator reads them: `version 2 LOADING; version 1 END:
    NOT_FOUND: no model`; `nothing loaded yet` when it has none."""
    if not versions:
        return "nothing loaded yet"
    parts = []
    for v in versions:
        part = f"version {v.version} {v.state.name}"
        if not v.status.ok:
            part += f": {v.status.code.name}: {v.status.message}"
        parts.append(part)
    return "; ".join(parts)
