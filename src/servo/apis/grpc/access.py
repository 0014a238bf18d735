"""The gRPC port's access log (servo.apis.access_log): one line per call of every service,
written by the wrapper every method gets at registration (servo.apis.grpc.registrar) when
--access_log is on.

A line's size in is the request message's bytes as received, its size out the answers' bytes
(summed over a stream); its status is the code the call ended with (an abort's, `set_code`'s,
CANCELLED, UNKNOWN for an exception); the model and version come from the data plane.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc

from servo.apis import access_log

# servo's API names for gRPC methods, shared with the REST routes that do the same.
API_NAMES = {
    "Predict": "predict",
    "Classify": "classify",
    "Regress": "regress",
    "MultiInference": "multi_inference",
    "GetModelMetadata": "metadata",
    "GetModelStatus": "status",
    "HandleReloadConfigRequest": "reload_config",
    "ModelInfer": "infer",
    "ModelMetadata": "metadata",
    "ModelReady": "model_ready",
    "ServerLive": "server_live",
    "ServerReady": "server_ready",
    "ServerMetadata": "server_metadata",
    "Check": "health_check",
    "Watch": "health_watch",
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def api_name(method: str) -> str:
    """servo's API name of a gRPC method path (`/package.Service/Method`)."""
    name = method.rpartition("/")[2]
    return API_NAMES.get(name) or _CAMEL.sub("_", name).lower()


def begin(
    method: str, api: str, size: int, context: grpc.aio.ServicerContext
) -> access_log.AccessEntry:
    """A call's entry, begun when its handler starts: its method's path, servo's API name for
    it and its request message's size (bytes as received)."""
    entry = access_log.begin("grpc", _client(context.peer()), "POST", method)
    entry.api = api
    entry.bytes_in = size
    return entry


def end(entry: access_log.AccessEntry, context: grpc.aio.ServicerContext, ended: str) -> None:
    """Writes the call's line, its status the code set on the context, else `ended` ("OK",
    "CANCELLED", "UNKNOWN" for an exception)."""
    entry.status = _code_name(context, ended)
    access_log.write(entry)


class Counting:
    """A call's context whose `write` serializes each answer itself and counts its bytes
    into the access entry (the handler's serializer then passes the bytes through)."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        entry: access_log.AccessEntry,
        serialize: Callable[[Any], bytes] | None,
    ) -> None:
        self._context = context
        self._entry = entry
        self._serialize = serialize

    async def write(self, message: Any) -> None:
        data = self._serialize(message) if self._serialize is not None else message
        self._entry.bytes_out += len(data)
        await self._context.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def passed(data: bytes) -> bytes:
    """The serializer of answers the wrapper has serialized already."""
    return data


def _code_name(context: grpc.aio.ServicerContext, ended: str) -> str:
    """The call's status: the code set on the context (abort, set_code), else `ended`."""
    code = context.code()
    if code is None:
        return ended
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


def _client(peer: str) -> str:
    """gRPC's peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`) as host:port."""
    return peer.partition(":")[2] if peer.startswith(("ipv4:", "ipv6:")) else peer
