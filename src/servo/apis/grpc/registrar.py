"""Where the gRPC port's services register: the server, with each method's handler wrapped
once, at registration, for what every call of every service gets (TFS's, the Open Inference
Protocol's, health, the profiler), whichever way the service registers (generic handlers, or
grpc.aio's registered method handlers, which take precedence over generic ones):

- its request message held to the bound on the messages held at once
  (servo.apis.grpc.message_budget, --grpc_max_buffered_message_bytes): a call past it is
  answered UNAVAILABLE without running;
- under --access_log, its access log line (servo.apis.grpc.access), written when the call
  ends, the refused ones included.

The wrapper's request deserializer passes the message's length (its bytes as received) along
with the parsed message. With the access log on, the wrapper serializes each answer itself to
count its bytes, and the handler's serializer passes the bytes through. A unary call, a stream
that is an async generator and a stream that a coroutine writes with `context.write`
(grpc.health.v1's Watch) each have their form; servo serves no method that streams requests.

Thread-safety: calls run on the gRPC server's event loop only.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from servo.apis import access_log
from servo.apis.grpc import access
from servo.apis.grpc.message_budget import MessageBudget


class Registrar:
    """Stands in for `server` where services register: they reach it with every method held to
    `budget` (None: no bound) and, when `log` is set, access-logged."""

    def __init__(self, server: Any, budget: MessageBudget | None, *, log: bool = False) -> None:
        self.server = server
        self.budget = budget
        self.log = log

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([_Generic(self, handler) for handler in handlers])

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.server.add_registered_method_handlers(
            service,
            {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()},
        )

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler`, of the method path `method`, with what every call gets."""
        if handler.request_streaming or (self.budget is None and not self.log):
            return handler
        return _wrap(method, handler, self.budget, self.log)


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods are wrapped, each once, when first called."""

    def __init__(self, registrar: Registrar, inner: grpc.GenericRpcHandler) -> None:
        self.registrar = registrar
        self.inner = inner
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.registrar.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(
    method: str, handler: grpc.RpcMethodHandler, budget: MessageBudget | None, log: bool
) -> grpc.RpcMethodHandler:
    api = access.api_name(method)
    parse = handler.request_deserializer
    serialize = handler.response_serializer
    # With the access log on, the wrapper serializes the answers (to count their bytes).
    serializer = access.passed if log else serialize

    def deserialize(data: bytes) -> tuple[int, Any]:
        return len(data), (parse(data) if parse is not None else data)

    def begin(size: int, context: grpc.aio.ServicerContext) -> access_log.AccessEntry | None:
        return access.begin(method, api, size, context) if log else None

    async def hold(size: int, message: Any, context: grpc.aio.ServicerContext) -> bool:
        """Holds the call's message (True), or ends the call UNAVAILABLE (abort raises);
        False when there is no bound."""
        if budget is None:
            return False
        refused = budget.take(size)
        if refused is not None:
            if budget.on_refused is not None:
                budget.on_refused(method, message)
            await context.abort(grpc.StatusCode.UNAVAILABLE, refused)
        return True

    def end(
        size: int,
        held: bool,
        entry: access_log.AccessEntry | None,
        context: grpc.aio.ServicerContext,
        ended: str,
    ) -> None:
        if held:
            assert budget is not None
            budget.release(size)
        if entry is not None:
            access.end(entry, context, ended)

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
            size, message = request
            entry = begin(size, context)
            held, ended = False, "OK"
            try:
                held = await hold(size, message, context)
                response = behavior(message, context)
                if inspect.isawaitable(response):
                    response = await response
                if entry is None:
                    return response
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
                end(size, held, entry, context, ended)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserialize, response_serializer=serializer
        )

    stream_behavior = handler.unary_stream
    assert stream_behavior is not None
    if not inspect.isasyncgenfunction(stream_behavior):
        # A stream written with context.write by a coroutine (grpc.health.v1's Watch): held
        # until the coroutine returns; logged, the context it is given serializes and counts
        # each answer.
        async def written(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
            size, message = request
            entry = begin(size, context)
            held, ended = False, "OK"
            try:
                held = await hold(size, message, context)
                writer = context if entry is None else access.Counting(context, entry, serialize)
                return await stream_behavior(message, writer)
            except asyncio.CancelledError:
                ended = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                ended = "UNKNOWN"
                raise
            finally:
                end(size, held, entry, context, ended)

        return grpc.unary_stream_rpc_method_handler(
            written, request_deserializer=deserialize, response_serializer=serializer
        )

    async def stream(
        request: tuple[int, Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        size, message = request
        entry = begin(size, context)
        held, ended = False, "OK"
        try:
            held = await hold(size, message, context)
            async for response in stream_behavior(message, context):
                if entry is not None:
                    response = serialize(response) if serialize is not None else response
                    entry.bytes_out += len(response)
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            ended = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            ended = "UNKNOWN"
            raise
        finally:
            end(size, held, entry, context, ended)

    return grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=deserialize, response_serializer=serializer
    )
