"""HTTP/1.1 for the REST port: an asyncio protocol over httptools (llhttp, the parser of
Node.js) on the process's event loop, serving an app in the RSGI form the REST app is
written in (`app.__rsgi__(scope, proto)`: `proto()` the whole body, `aiter(proto)` its pieces,
`proto.response_bytes(status, headers, body)` the answer).

Chosen by measurement (bench/http_stack.py, and servo on each server side by side): servo's
requests are bound by the one Python thread that runs them, and granian's embedded server
hands every request from its Rust threads to that thread and back. On the development machine
servo's REST predict on this server spends 15 to 25% less CPU per request than on granian
(168 against 197 us in one run, 127 against 161 to 175 in another) and, with `--workers 2`,
serves about a fifth more; one process serves up to a fifth less, as granian wrote the
answers on its threads on another CPU (README, Performance).

What it does, and the flags behind it:
- keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelined requests answered in order
  (`max_pipelined` waiting at most, --rest_api_max_pipelined_requests, with at most
  `max_read_ahead_bytes` of bodies buffered before the app takes them,
  --rest_api_max_read_ahead_bytes; then the connection is not read until the app catches
  up); `Expect: 100-continue` answered when the app reads the body;
- at most `max_connections` connections at once (--rest_api_max_connections, fitted under the
  open-file limit): past it the listening socket is not read, so new clients wait in the
  listen backlog, holding no descriptor of the process;
- `idle_timeout` (--rest_api_idle_timeout_seconds): a connection that has not sent a whole
  request head for that long (from its start, or since its last answer) is closed;
- request heads over `max_head_bytes` (--rest_api_max_request_head_bytes) are refused with
  431, malformed requests with 400, both closing the connection; the body's limits and read
  deadline are the app's;
- the request bodies held at once, over every connection, are bounded by
  `max_buffered_body_bytes` (--rest_api_max_buffered_body_bytes): a body's bytes count as
  they arrive until its request ends (the app holds them until then), and the read that
  takes the server past the bound fails that request's body read (`BodyBudgetExceeded`,
  which the app answers 503) and closes its connection once answered. What arrived counts,
  not what a Content-Length announces: a client that announces a large body and sends
  nothing holds nothing;
- an answer that closes the connection is followed by a half-close, and what the client still
  sends is read and dropped for up to `close_linger` seconds (--rest_api_close_linger_seconds;
  0 closes at once): closed with input unread, the socket would be reset, and the part of
  the answer still in flight lost;
- `stop()`: stops accepting, closes idle connections, lets requests in flight finish (their
  answers say `connection: close`); `serve()` returns once every connection has ended.

A client that leaves while its request still waits for its body cancels that request; one
that leaves during the model call does not (the call ends, the answer is dropped).
Thread-safety: everything runs on the event loop that called `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import http
import logging
import math
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any, NamedTuple
from urllib.parse import unquote

import httptools
import orjson

log = logging.getLogger(__name__)

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
# Bodies being streamed (`aiter(proto)`), and the bodies of pipelined requests waiting their
# turn, are buffered up to this much before the connection stops being read.
DEFAULT_MAX_READ_AHEAD_BYTES = 1024 * 1024
# Requests a client may pipeline ahead of the one being answered before its connection stops
# being read.
DEFAULT_MAX_PIPELINED = 16
DEFAULT_CLOSE_LINGER_SECONDS = 2.0  # after a closing answer: how long unread input is drained
# The request bodies held at once, over every connection (--rest_api_max_buffered_body_bytes):
# sixteen bodies of the largest size the REST app takes by default.
DEFAULT_MAX_BUFFERED_BODY_BYTES = 1024 * 1024 * 1024
_ACCEPTS_PER_WAKEUP = 64
_HEAD_CACHE_SIZE = 256

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in http.HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyBudgetExceeded(Exception):
    """A body took the server past its bound on the request bodies held at once: the request
    cannot be read on (its connection closes once it is answered)."""


class Headers(dict[str, str]):
    """A request's headers by lower-case name; a repeated header's values joined by ", "."""


class Scope:
    """What the app reads of a request (RSGI's scope, the parts servo uses)."""

    __slots__ = ("client", "headers", "http_version", "method", "path", "query_string")
    proto = "http"

    def __init__(
        self, method: str, path: str, query_string: str, headers: Headers, client: str, version: str
    ) -> None:
        self.method = method
        self.path = path  # percent-decoded, without the query
        self.query_string = query_string
        self.headers = headers
        self.client = client  # "address:port"
        self.http_version = version


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def value(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_date = _Date()


class Request:
    """One request on a connection: the `proto` of RSGI the app answers through."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_continue",
        "_over",
        "_size",
        "_streaming",
        "_waiter",
        "complete",
        "head",
        "held",
        "keep_alive",
        "responded",
        "scope",
        "task",
    )

    def __init__(self, conn: HttpConnection, scope: Scope, keep_alive: bool) -> None:
        self._conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.head = scope.method == "HEAD"
        self._chunks: list[bytes] = []
        self._size = 0  # bytes buffered, not yet taken by the app
        self.held = 0  # bytes of its body counted against the server's bound
        self._over: str | None = None  # why its body cannot be read on (the bound's message)
        self._waiter: asyncio.Future[None] | None = None
        self._streaming = False
        self._continue = scope.headers.get("expect", "").lower() == "100-continue"
        self.complete = False  # the whole body has arrived
        self.responded = False
        self.task: asyncio.Task[None] | None = None

    # -- the body, as the parser delivers it --------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.responded or self._over is not None:
            return  # answered without it, or past the bound: the rest is dropped
        self._chunks.append(data)
        self._size += len(data)
        conn = self._conn
        conn.take_body_bytes(self, len(data))
        if (self._streaming and self._size > conn.read_ahead) or conn.read_ahead_full(self):
            conn.pause_body()  # read on once the app takes it, or once it is its turn
        self._wake()

    def end(self) -> None:
        self.complete = True
        self._wake()

    def overflow(self, message: str) -> None:
        """Its body took the server past the bound: the app's read raises, the answer
        closes the connection."""
        self._over = message
        self.keep_alive = False
        self._chunks, self._size = [], 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _more(self) -> None:
        """Waits for more of the body (or its end)."""
        if self._continue:
            self._continue = False
            self._conn.write(_CONTINUE)
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- RSGI's proto ----------------------------------------------------------------------

    async def __call__(self) -> bytes:
        """The whole body."""
        while not self.complete and self._over is None:
            await self._more()
        if self._over is not None:
            raise BodyBudgetExceeded(self._over)
        chunks = self._chunks
        self._chunks, self._size = [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        self._streaming = True
        while True:
            if self._over is not None:
                raise BodyBudgetExceeded(self._over)
            if self._chunks:
                chunks = self._chunks
                self._chunks, self._size = [], 0
                self._conn.resume_body()
                for chunk in chunks:
                    yield chunk
            elif self.complete:
                return
            else:
                await self._more()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.responded:
            raise RuntimeError("This request has been answered already")
        self.responded = True
        self._chunks, self._size = [], 0
        self._conn.respond(self, status, headers, body)


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the app on each in turn, writes answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.read_ahead = server.max_read_ahead_bytes
        self.max_pipelined = server.max_pipelined
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.idle_since: float | None = server.loop.time()  # None while a request is read
        self._url = b""
        self._headers = Headers()
        # A head is bounded twice: by what the parser hands over (a head whose end came in
        # one read) and by the bytes read while it is unfinished (the parser holds those).
        self._head_bytes = 0
        self._in_head = False  # a request's head has begun and not ended
        self._head_read = 0  # bytes of the reads since then, the one that began it whole
        self._parsing: Request | None = None  # the request whose body is being parsed
        self._active: Request | None = None  # the request the app is answering
        self._queued: deque[Request] = deque()  # pipelined requests, waiting their turn
        self._paused = False
        self._body_paused = False
        self._broken: tuple[int, str] | None = None  # a parse error, answered in turn
        self._over_budget = False  # a body of this connection took the server past its bound
        self._ready: Request | None = None  # parsed head, its app to start after this read
        self._closing = False
        self._draining = False  # answered and half-closed: input is read and dropped

    # -- the transport ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = f"{peer[0]}:{peer[1]}"
        self.server.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for request in (self._active, self._parsing, *self._queued):
            if request is not None:
                self.release_body_bytes(request)
                if not request.complete and request.task is not None:
                    request.task.cancel()  # waiting for a body that will not come
        self._queued.clear()
        self.server.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        if self._broken is not None or self._draining:
            return
        try:
            self.parser.feed_data(data)
            if self._in_head:  # a head not ended yet: the parser holds it unparsed
                self._head_read += len(data)
                if self._head_read > self.server.max_head_bytes:
                    self._head_too_large()
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol upgrades: the request is answered, then closed
        except httptools.HttpParserError as exc:
            if self._broken is None:
                reason = str(exc) or type(exc).__name__
                self._broken = (400, f"Malformed HTTP request: {reason}")
            self._stop_reading()
        ready = self._ready
        if ready is not None:
            self._ready = None
            self._start(ready)
        elif self._broken is not None and self._active is None:
            self._answer_broken()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def close_after_answer(self) -> None:
        """Closes once the answer is sent, reading and dropping what the client still sends
        for a while: closing a socket with unread input resets the connection, and the
        client could lose the answer (a 413 or 431 sent while its request still comes)."""
        transport = self.transport
        self._closing = True
        linger = self.server.close_linger
        if (
            linger <= 0
            or transport is None
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            self.close()
            return
        transport.write_eof()
        self._draining = True
        self._body_paused = False
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self.loop.call_later(linger, self.close)

    def close_if_idle(self) -> None:
        """At stop: closes the connection unless a request is in progress."""
        self._closing = True
        if self._active is None and self._parsing is None:
            self.close()

    def _stop_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (
            self._paused
            and not self._body_paused
            and self._broken is None
            and not self._over_budget
        ):
            self._paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def read_ahead_full(self, request: Request) -> bool:
        """Whether `request` waits behind the one being answered (its app not started:
        nothing takes its body yet, nor has checked its size) and the bodies read ahead for
        the waiting requests are past `max_read_ahead_bytes`."""
        if request is self._active:
            return False
        return self._read_ahead() > self.read_ahead

    def _read_ahead(self) -> int:
        return sum(waiting._size for waiting in self._queued)

    def pause_body(self) -> None:
        self._body_paused = True
        self._stop_reading()

    def resume_body(self) -> None:
        """Reads on, unless the bodies of the requests still waiting are past the bound:
        the request whose turn has come (or whose app took its body) may not be the one
        whose body stopped the reading."""
        if self._body_paused and self._read_ahead() <= self.read_ahead:
            self._body_paused = False
            if len(self._queued) < self.max_pipelined:
                self._resume_reading()

    # -- the server's bound on the bodies held ---------------------------------------------

    def take_body_bytes(self, request: Request, size: int) -> None:
        """Counts `size` more bytes of `request`'s body; past the server's bound, the request
        cannot be read on and the connection is not read any more."""
        server = self.server
        server.body_bytes += size
        request.held += size
        if server.body_bytes > server.max_buffered_body_bytes:
            request.overflow(server.over_budget_message())
            self._over_budget = True  # not read again: the answer closes (and lingers)
            self._stop_reading()

    def release_body_bytes(self, request: Request) -> None:
        held, request.held = request.held, 0
        self.server.body_bytes -= held

    # -- the parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = Headers()
        self._head_bytes = 0
        self._in_head, self._head_read = True, 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.server.max_head_bytes:
            self._head_too_large()

    def _head_too_large(self) -> None:
        limit = self.server.max_head_bytes
        self._broken = (
            431,
            f"Request head (request line and headers) over {limit} bytes: send shorter "
            "headers, or raise --rest_api_max_request_head_bytes",
        )
        raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        self.idle_since = None
        url = httptools.parse_url(self._url)
        raw_path = url.path or b"/"
        path = (
            unquote(raw_path.decode("utf-8", "replace"))
            if b"%" in raw_path
            else raw_path.decode("utf-8", "replace")
        )
        scope = Scope(
            parser.get_method().decode("ascii", "replace"),
            path,
            url.query.decode("latin-1") if url.query else "",
            self._headers,
            self.client,
            parser.get_http_version(),
        )
        request = Request(self, scope, parser.should_keep_alive())
        self._parsing = request
        if self._active is None:
            self._active = self._ready = request  # started once this read is parsed
        else:
            self._queued.append(request)
            if len(self._queued) >= self.max_pipelined:
                self._stop_reading()

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is not None:
            self._parsing = None
            request.end()
            if request.responded and self._active is None and not self._queued:
                self.idle_since = self.loop.time()  # answered before its body had come

    # -- running the app -------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        """Runs the app on `request`. One whose body has come whole runs at once, in this
        call, until it first waits (most run to their end: no task is made for them); it
        goes on in a task from there. One still waiting for its body runs in a task from
        its start, so that the body's read deadline (which needs its task) holds."""
        self._active = request
        self.resume_body()  # its body, held back while it waited, may come on
        coro = self.server.app.__rsgi__(request.scope, request)
        context = contextvars.copy_context()  # each request its own (the access log's)
        if not request.complete:
            self._track(request, self.loop.create_task(coro, context=context))
            return
        try:
            waits_on = context.run(coro.send, None)
        except StopIteration:
            self._ended(request, None)
            return
        except BaseException as exc:  # the app's error boundary let it through
            self._ended(request, exc)
            return
        # The coroutine waits on `waits_on` (a future, or None for a bare yield): a task
        # takes it on once that is done, as its first step resumes the coroutine. (Its body
        # has come whole, so nothing cancels it meanwhile.)
        on = getattr(waits_on, "add_done_callback", None)

        def resume(_: object = None) -> None:
            self._track(request, self.loop.create_task(coro, context=context))

        if on is None:
            self.loop.call_soon(resume)
        else:
            waits_on._asyncio_future_blocking = False
            on(resume)

    def _track(self, request: Request, task: asyncio.Task[None]) -> None:
        request.task = task
        task.add_done_callback(lambda done: self._ended(request, _failure(done)))

    def _ended(self, request: Request, failure: BaseException | None) -> None:
        self.release_body_bytes(request)
        cancelled = isinstance(failure, asyncio.CancelledError)
        if failure is not None and not cancelled:
            log.error(
                "REST %s %s failed", request.scope.method, request.scope.path, exc_info=failure
            )
        if not request.responded:  # the app ended without an answer (or was cancelled)
            request.keep_alive = False
            if not cancelled:
                request.response_bytes(
                    500,
                    [("content-type", "application/json")],
                    b'{"error": "Internal error: the request ended without an answer"}',
                )
            else:
                request.responded = True
                self.close()
        self._active = None
        if self._closing:
            if self._parsing is None and not self._draining:  # draining closes by itself
                self.close()
            return
        if self._queued:
            self._start(self._queued.popleft())
            if len(self._queued) < self.max_pipelined and not self._body_paused:
                self._resume_reading()
        elif self._broken is not None:
            self._answer_broken()
        elif self._parsing is None:
            self.idle_since = self.loop.time()

    def _answer_broken(self) -> None:
        assert self._broken is not None
        status, message = self._broken
        body = b'{"error": ' + _json_string(message) + b"}"
        head = _STATUS_LINES.get(status, f"HTTP/1.1 {status} Error\r\n") + (
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\ndate: {_date.value()}\r\n\r\n"
        )
        self.write(head.encode("latin-1") + body)
        self.close_after_answer()

    def respond(
        self, request: Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        block = self.server.header_block(headers)
        keep = request.keep_alive and not self._closing and self.server.serving and not block.close
        length = block.length if request.head and block.length is not None else len(body)
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
        if keep:
            ending = (
                "\r\n" if request.scope.http_version == "1.1" else "connection: keep-alive\r\n\r\n"
            )
        else:
            ending = "connection: close\r\n\r\n"
            self._closing = True
        head = f"{line}{block.lines}content-length: {length}\r\ndate: {_date.value()}\r\n{ending}"
        data = head.encode("latin-1")
        if request.head:
            self.write(data)
        elif len(body) < 65536:
            self.write(data + body)
        else:
            self.write(data)
            self.write(body)
        if not keep:
            self.close_after_answer()


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


def _json_string(text: str) -> bytes:
    return orjson.dumps(text)


class HttpServer:
    """The REST port's server: `await start()` binds (OSError when it cannot), `await serve()`
    serves until `stop()` and every connection has ended."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        max_connections: int = 1024,
        idle_timeout: float | None = 30.0,
        backlog: int = 1024,
        reuse_port: bool = False,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        max_pipelined: int = DEFAULT_MAX_PIPELINED,
        max_read_ahead_bytes: int = DEFAULT_MAX_READ_AHEAD_BYTES,
        close_linger: float = DEFAULT_CLOSE_LINGER_SECONDS,
        max_buffered_body_bytes: int = DEFAULT_MAX_BUFFERED_BODY_BYTES,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.max_connections = max(1, max_connections)
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.max_head_bytes = max_head_bytes
        self.max_pipelined = max(1, max_pipelined)
        self.max_read_ahead_bytes = max(1, max_read_ahead_bytes)
        self.close_linger = max(0.0, close_linger)
        self.max_buffered_body_bytes = max(1, max_buffered_body_bytes)
        self.body_bytes = 0  # of the requests not ended, over every connection
        self._budget_logged = -math.inf  # when the bound's warning was last written
        self.serving = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start
        self._socket: socket.socket | None = None
        self._connections: set[HttpConnection] = set()
        self._accepting = False
        self._opening = 0  # accepted sockets whose connection is not made yet
        self._ended: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._heads: dict[tuple[tuple[str, str], ...], HeaderBlock] = {}

    @property
    def connections(self) -> int:
        """The connections open (or being opened) now."""
        return self._open()

    @property
    def bound_port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self.serving = True
        self._accept_on()
        if self.idle_timeout is not None:
            self._sweeper = self.loop.create_task(self._sweep(self.idle_timeout))

    async def serve(self) -> None:
        """Returns once `stop()` was called and every connection has ended."""
        assert self._ended is not None, "start() first"
        await self._ended.wait()

    def stop(self) -> None:
        if not self.serving:
            return
        self.serving = False
        self._accept_off()
        if self._socket is not None:
            self._socket.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._connections):
            conn.close_if_idle()
        self._check_ended()

    # -- accepting, within the cap -----------------------------------------------------------

    def _accept_on(self) -> None:
        if not self._accepting and self.serving and self._socket is not None:
            self._accepting = True
            self.loop.add_reader(self._socket.fileno(), self._accept)

    def _accept_off(self) -> None:
        if self._accepting and self._socket is not None:
            self._accepting = False
            self.loop.remove_reader(self._socket.fileno())

    def _open(self) -> int:
        return len(self._connections) + self._opening

    def _accept(self) -> None:
        sock = self._socket
        assert sock is not None
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if self._open() >= self.max_connections:
                self._accept_off()  # the next clients wait in the listen backlog
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("Cannot accept a REST connection (%s); retrying in 1 s", exc)
                    self._accept_off()
                    self.loop.call_later(1.0, self._accept_on)
                    return
                continue  # the client left before it was accepted (ECONNABORTED, ...)
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._opening += 1
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: HttpConnection(self), conn)
        except OSError:
            conn.close()
        finally:
            self._opening -= 1
            self._check_ended()

    def connection_opened(self, conn: HttpConnection) -> None:
        self._connections.add(conn)
        if not self.serving:
            conn.close_if_idle()

    def connection_closed(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if self.serving and self._open() < self.max_connections:
            self._accept_on()
        self._check_ended()

    def _check_ended(self) -> None:
        if not self.serving and self._open() == 0 and self._ended is not None:
            self._ended.set()

    # -- idle connections --------------------------------------------------------------------

    async def _sweep(self, timeout: float) -> None:
        interval = min(1.0, max(timeout / 4, 0.05))
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self._connections):
                since = conn.idle_since
                if since is not None and now - since > timeout:
                    conn.close()

    # -- answers ---------------------------------------------------------------------------------

    def over_budget_message(self) -> str:
        """The answer to the request whose body took the server past the bound; the bound's
        warning is written to the log at most once a minute."""
        limit = self.max_buffered_body_bytes
        now = time.monotonic()
        if now - self._budget_logged >= 60:
            self._budget_logged = now
            log.warning(
                "REST request bodies held reached %d bytes (--rest_api_max_buffered_body_bytes"
                " %d): requests past it get 503",
                self.body_bytes,
                limit,
            )
        return (
            f"This request's body took the request bodies the server holds to "
            f"{self.body_bytes} bytes, past its bound of {limit} "
            "(--rest_api_max_buffered_body_bytes); retry later"
        )

    def header_block(self, headers: list[tuple[str, str]]) -> HeaderBlock:
        """The app's headers as one block of lines, but `connection` and `content-length`
        (the server writes both). Apps answer with a few constant header lists, so blocks
        are kept."""
        key = tuple(headers)
        try:
            return self._heads[key]
        except KeyError:
            pass
        lines, close, length = [], False, None
        for name, value in headers:
            lower = name.lower()
            if lower == "connection":
                close = close or value.strip().lower() == "close"
            elif lower == "content-length":
                length = value.strip()
            else:
                lines.append(f"{name}: {value}\r\n")
        block = HeaderBlock("".join(lines), close, length)
        if len(self._heads) >= _HEAD_CACHE_SIZE:
            self._heads.clear()
        self._heads[key] = block
        return block


class HeaderBlock(NamedTuple):
    lines: str  # "name: value\r\n" each
    close: bool  # the app asks for the connection to close after this answer
    length: str | None  # the app's content-length: a HEAD answer's, the GET answer's length
