"""The gRPC port's access log: a server interceptor that writes one line per call of every
service (servo.apis.access_log).

The server installs `AccessLogInterceptor` only when --access_log is on. For a unary call it
wraps the method's handler: the request deserializer passes on the message's length (the
bytes as received), and the handler serializes the answer itself to count its bytes (the
serializer then passes the bytes through). The status is the code the call ended with (an
abort's, `set_code`'s, CANCELLED, UNKNOWN for an exception); the model and version come
from the data plane. A streaming call (grpc.health.v1.Health's Watch) gets its line when its
stream ends, its answer bytes summed.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable
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


class AccessLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method's handler (once per method) so that each call writes its line."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # servo serves no client-streaming method
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    api = api_name(method)
    parse = handler.request_deserializer
    serialize = handler.response_serializer

    def deserialize(data: bytes) -> tuple[int, Any]:
        return len(data), (parse(data) if parse is not None else data)

    def entry_of(size: int, context: grpc.aio.ServicerContext) -> access_log.AccessEntry:
        entry = access_log.begin("grpc", _client(context.peer()), "POST", method)
        entry.api = api
        entry.bytes_in = size
        return entry

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
            size, message = request
            entry = entry_of(size, context)
            ended = "OK"
            try:
                response = behavior(message, context)
                if inspect.isawaitable(response):
                    response = await response
                data = serialize(response) if serialize is not None else response
                entry.bytes_out = len(data)
                return data
            except asyncio.CancelledError:
                ended = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                ended = "UNKNOWN"
                raise
            finally:
                entry.status = _code_name(context, ended)
                access_log.write(entry)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserialize, response_serializer=_passed
        )

    stream_behavior = handler.unary_stream
    if not inspect.isasyncgenfunction(stream_behavior):
        # A stream written with context.write by a coroutine (grpc.health.v1's Watch): the
        # context it is given serializes and counts each answer.
        async def written(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
            size, message = request
            entry = entry_of(size, context)
            ended = "OK"
            try:
                return await stream_behavior(message, _Counting(context, entry, serialize))
            except asyncio.CancelledError:
                ended = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                ended = "UNKNOWN"
                raise
            finally:
                entry.status = _code_name(context, ended)
                access_log.write(entry)

        return grpc.unary_stream_rpc_method_handler(
            written, request_deserializer=deserialize, response_serializer=_passed
        )

    async def stream(
        request: tuple[int, Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        size, message = request
        entry = entry_of(size, context)
        ended = "OK"
        try:
            async for response in stream_behavior(message, context):
                data = serialize(response) if serialize is not None else response
                entry.bytes_out += len(data)
                yield data
        except (asyncio.CancelledError, GeneratorExit):
            ended = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            ended = "UNKNOWN"
            raise
        finally:
            entry.status = _code_name(context, ended)
            access_log.write(entry)

    return grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=deserialize, response_serializer=_passed
    )


class _Counting:
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


def _passed(data: bytes) -> bytes:
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
