"""The gRPC port's bound on the request messages held at once, over every connection
(--grpc_max_buffered_message_bytes).

A call's request message counts, by its bytes as received, from the moment grpc hands it to
servo (received whole) until the call ends: while it waits for the model (the runner's
queue, a batch, the thread pool), while it runs and while its answer is made. The call whose
message takes the total past the bound is answered UNAVAILABLE at once, without running,
and its message is dropped; the calls already held go on. The bound's first refusal in a
minute is logged as a warning.

What grpc's C core buffers for messages still arriving is not counted: each of those is
bounded by grpc.max_receive_message_length, and connections by --grpc_max_connections.
Each worker (--workers) has its own bound, as it has its own connections.

`BoundedRegistrar` stands in for the server where services are registered, so that every
method of every service (TFS's, the Open Inference Protocol's, health, the profiler) is
bounded, whichever way it is registered.

Thread-safety: the counts are kept on the gRPC server's event loop only.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)

WARNING_SECONDS = 60.0
FLAG = "--grpc_max_buffered_message_bytes"

# Told of each call refused: its method's path (/package.Service/Method), its message as
# parsed (or a servo.apis.grpc.service.Malformed).
OnRefused = Callable[[str, Any], None]


class MessageBudget:
    """The request bytes the server holds, against `limit`. `on_refused(method, message)`
    (the request metrics) is told of each call refused; `clock` is time.monotonic but in
    tests."""

    def __init__(
        self,
        limit: int,
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.held = 0
        self.on_refused = on_refused
        self.clock = clock
        self._logged: float | None = None

    def take(self, size: int) -> str | None:
        """Holds `size` more bytes, or says why not (the bound would be passed): the
        refused call's answer."""
        total = self.held + size
        if total <= self.limit:
            self.held = total
            return None
        now = self.clock()
        if self._logged is None or now - self._logged >= WARNING_SECONDS:
            self._logged = now
            log.warning(
                "gRPC request messages held reached %d bytes (%s %d): calls past it get "
                "UNAVAILABLE",
                self.held,
                FLAG,
                self.limit,
            )
        return (
            f"This request's message of {size} bytes would take the request messages the "
            f"server holds to {total} bytes, past its bound of {self.limit} ({FLAG}); "
            "retry later"
        )

    def release(self, size: int) -> None:
        self.held -= size

    # -- wrapping the methods --------------------------------------------------------------

    def method_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` (of the method path `method`) with its request held to the bound."""
        if handler.request_streaming:
            return handler  # servo serves no method that streams requests
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> tuple[int, Any]:
            return len(data), (parse(data) if parse is not None else data)

        async def hold(size: int, message: Any, context: grpc.aio.ServicerContext) -> None:
            """Holds the call's message, or ends the call UNAVAILABLE (abort raises)."""
            refused = self.take(size)
            if refused is not None:
                if self.on_refused is not None:
                    self.on_refused(method, message)
                await context.abort(grpc.StatusCode.UNAVAILABLE, refused)

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
                size, message = request
                await hold(size, message, context)
                try:
                    response = behavior(message, context)
                    if inspect.isawaitable(response):
                        response = await response
                    return response
                finally:
                    self.release(size)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )

        stream_behavior = handler.unary_stream
        assert stream_behavior is not None
        if not inspect.isasyncgenfunction(stream_behavior):
            # A stream written with context.write by a coroutine (grpc.health.v1's Watch):
            # held until the coroutine returns.
            async def written(request: tuple[int, Any], context: grpc.aio.ServicerContext) -> Any:
                size, message = request
                await hold(size, message, context)
                try:
                    return await stream_behavior(message, context)
                finally:
                    self.release(size)

            return grpc.unary_stream_rpc_method_handler(
                written,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )

        async def stream(
            request: tuple[int, Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            size, message = request
            await hold(size, message, context)
            try:
                async for response in stream_behavior(message, context):
                    yield response
            finally:
                self.release(size)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )

    def generic_handler(self, handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        return _BoundedGeneric(self, handler)


class _BoundedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods are bounded; each wrapped once, when first called."""

    def __init__(self, budget: MessageBudget, inner: grpc.GenericRpcHandler) -> None:
        self.budget = budget
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
        wrapped = self.budget.method_handler(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class BoundedRegistrar:
    """What services register with in place of the server: they reach `server` with every
    method bounded by `budget`."""

    def __init__(self, server: Any, budget: MessageBudget) -> None:
        self.server = server
        self.budget = budget

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(
            [self.budget.generic_handler(handler) for handler in handlers]
        )

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.server.add_registered_method_handlers(
            service,
            {
                name: self.budget.method_handler(f"/{service}/{name}", handler)
                for name, handler in handlers.items()
            },
        )
