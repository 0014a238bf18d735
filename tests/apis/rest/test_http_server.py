"""The REST port's HTTP/1.1 server (servo.apis.rest.http_server) on a loopback socket, with
small apps and raw sockets as clients: what reaches the app, keep-alive and pipelining, the
limits and errors of the protocol, and stopping. Every wait is on a state (bytes read up to
the end of an answer or of the connection) within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop

from servo.apis.rest.http_server import (
    DEFAULT_MAX_BUFFERED_BODY_BYTES,
    DEFAULT_MAX_READ_AHEAD_BYTES,
    BodyBudgetExceeded,
    HttpConnection,
    HttpServer,
)

BOUND = 20.0  # seconds: a bound on every wait, not a timing
ONE_READ = 256 * 1024  # at most what uvloop reads from a socket at once (250 KiB)


def on_uvloop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """The test run on uvloop, the server's loop in production."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(test(*args, **kwargs))

    return run


class App:
    """Echoes what it was asked: method, path, query, a header, the body's length."""

    def __init__(self, handler: Callable[[Any, Any], Awaitable[None]] | None = None) -> None:
        self.handler = handler
        self.seen: list[Any] = []

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        self.seen.append(scope)
        if self.handler is not None:
            await self.handler(scope, proto)
            return
        body = await proto()
        text = f"{scope.method} {scope.path} {scope.query_string} {len(body)} {scope.client}"
        proto.response_bytes(200, [("content-type", "text/plain")], text.encode())


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[HttpServer]:
    server = HttpServer(app, "127.0.0.1", 0, **options)
    await server.start()
    task = asyncio.create_task(server.serve())
    try:
        yield server
    finally:
        server.stop()
        await asyncio.wait_for(task, BOUND)


async def exchange(port: int, data: bytes, answers: int = 1) -> bytes:
    """Sends `data`, reads until `answers` whole answers (or the end of the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        for _ in range(answers):
            got += await asyncio.wait_for(read_answer(reader), BOUND)
    finally:
        writer.close()
    return got


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), BOUND)


async def until(state: Callable[[], bool]) -> None:
    """Waits, a loop turn at a time, for `state()` to hold (within BOUND)."""

    async def poll() -> None:
        while not state():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), BOUND)


@on_uvloop
async def test_the_app_sees_the_decoded_path_the_query_the_body_and_the_client() -> None:
    app = App()
    async with serving(app) as server:
        answer = await exchange(
            server.bound_port,
            b"POST /v1/models/a%2Fb:predict?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing: 1\r\n"
            b"X-Thing: 2\r\nContent-Length: 5\r\n\r\nhello",
        )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"POST /v1/models/a/b:predict x=1 5 " + app.seen[0].client.encode())
    assert app.seen[0].client.startswith("127.0.0.1:")
    assert app.seen[0].headers["x-thing"] == "1, 2"
    assert b"content-length: " in answer and b"date: " in answer


@on_uvloop
async def test_keep_alive_answers_pipelined_requests_in_order() -> None:
    async def slow_first(scope: Any, proto: Any) -> None:
        if scope.path == "/first":
            await asyncio.sleep(0)  # yields, so the second request is parsed meanwhile
        proto.response_bytes(200, [], scope.path.encode())

    async with serving(App(slow_first)) as server:
        answer = await exchange(
            server.bound_port,
            b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n",
            answers=2,
        )
    assert answer.index(b"/first") < answer.index(b"/second")
    assert b"connection: close" not in answer


@on_uvloop
async def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    async with serving(App()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /a HTTP/1.0\r\n\r\n")
        closed = await read_to_eof(reader)
        writer.close()
        kept = await exchange(
            server.bound_port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
    assert b"connection: close" in closed
    assert b"connection: keep-alive" in kept


@on_uvloop
async def test_chunked_bodies_stream_and_expect_continue_is_answered_on_read() -> None:
    async def count(scope: Any, proto: Any) -> None:
        size = 0
        async for piece in proto:
            size += len(piece)
        proto.response_bytes(200, [], str(size).encode())

    async with serving(App(count)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(
            b"POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        answer = await asyncio.wait_for(read_answer(reader), BOUND)
        writer.close()
    assert answer.endswith(b"\r\n\r\n7")


@on_uvloop
async def test_head_answers_carry_no_body_and_connection_close_from_the_app_closes() -> None:
    async def answer(scope: Any, proto: Any) -> None:
        headers = [("connection", "close")] if scope.path == "/close" else []
        proto.response_bytes(200, headers, b"twelve bytes")

    async with serving(App(answer)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /close HTTP/1.1\r\nHost: h\r\n\r\n")
        both = await read_to_eof(reader)
        writer.close()
    head, _, rest = both.partition(b"\r\n\r\n")
    assert b"content-length: 12" in head
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body between the two answers
    assert rest.count(b"connection: close") == 1 and rest.endswith(b"twelve bytes")


@on_uvloop
async def test_the_content_length_is_the_servers_but_for_a_head_answer_the_app_measured() -> None:
    """An app answering HEAD itself gives the GET answer's length with no body; elsewhere
    the server writes the body's true length once, whatever the app said."""

    async def answer(scope: Any, proto: Any) -> None:
        if scope.method == "HEAD":
            proto.response_bytes(200, [("content-length", "15728")], b"")
        else:
            proto.response_bytes(200, [("Content-Length", "99")], b"four")

    async with serving(App(answer)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        both = await read_to_eof(reader)
        writer.close()
    head, _, rest = both.partition(b"\r\n\r\n")
    assert head.lower().count(b"content-length") == 1 and b"content-length: 15728" in head
    get, _, body = rest.partition(b"\r\n\r\n")
    assert get.lower().count(b"content-length") == 1 and b"content-length: 4" in get
    assert body.startswith(b"four")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X: " + b"b" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
@on_uvloop
async def test_malformed_and_oversized_heads_are_refused_and_closed(
    request_bytes: bytes, status: bytes
) -> None:
    app = App()
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(request_bytes)
        answer = await read_to_eof(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    assert b"connection: close" in answer and b'{"error": ' in answer
    assert app.seen == []


@on_uvloop
async def test_a_closing_answer_reaches_a_client_that_still_sends() -> None:
    """A request asking to close, then more input sent before the client reads: the server
    answers, half-closes and reads on (dropping it). Closed with input unread, the socket
    would be reset, and the part of the answer not yet delivered dropped with it."""
    size = 16 * 1024 * 1024

    async def big(scope: Any, proto: Any) -> None:
        proto.response_bytes(200, [("connection", "close")], b"a" * size)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as conn:
            conn.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            with contextlib.suppress(OSError):  # a reset shows in what is read below
                conn.sendall(b"x" * 1_000_000)
            chunks = []
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(1 << 20):
                    chunks.append(chunk)
            return b"".join(chunks)

    async with serving(App(big)) as server:
        answer = await asyncio.to_thread(client, server.bound_port)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in head
    assert len(body) == size


@pytest.mark.parametrize("read_ahead", [None, 64 * 1024])
@on_uvloop
async def test_a_pipelined_body_is_held_back_until_its_request_s_turn(
    read_ahead: int | None,
) -> None:
    """While the first request is answered, the body of one pipelined behind it is buffered
    only up to a bound (its size is the app's to check, once it starts); then the connection
    stops being read, and reading goes on when that request's turn comes. The bound is
    `max_read_ahead_bytes` (1 MiB unless set)."""
    release = asyncio.Event()

    async def slow_then_count(scope: Any, proto: Any) -> None:
        if scope.path == "/slow":
            await release.wait()
            proto.response_bytes(200, [], b"slow")
        else:
            size = 0
            async for piece in proto:
                size += len(piece)
            proto.response_bytes(200, [], str(size).encode())

    length = 64 * 1024 * 1024

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as conn:
            conn.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
            conn.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nConnection: close\r\n")
            conn.sendall(f"Content-Length: {length}\r\n\r\n".encode())
            conn.setblocking(False)
            sent, piece = 0, b"z" * 65536
            while sent < length:  # until the server stops reading and the buffers fill
                try:
                    sent += conn.send(piece[: length - sent])
                except BlockingIOError:
                    break
            loop.call_soon_threadsafe(sent_first.set_result, sent)
            conn.settimeout(BOUND)
            conn.sendall(b"z" * (length - sent))  # goes on once the server reads again
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    loop = asyncio.get_running_loop()
    sent_first: asyncio.Future[int] = loop.create_future()
    options = {} if read_ahead is None else {"max_read_ahead_bytes": read_ahead}
    limit = read_ahead or DEFAULT_MAX_READ_AHEAD_BYTES
    async with serving(App(slow_then_count), **options) as server:
        answers = asyncio.create_task(asyncio.to_thread(client, server.bound_port))
        sent = await asyncio.wait_for(sent_first, BOUND)
        (conn,) = server._connections
        queued = conn._queued[0]
        assert sent < length  # the server stopped reading before the body's end
        assert queued._size <= limit + ONE_READ  # the bound, and the read that passed it
        release.set()
        answer = await asyncio.wait_for(answers, BOUND)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(str(length).encode())


class RecordingTransport:
    """A transport that keeps what is written and whether reading is paused."""

    def __init__(self) -> None:
        self.written = b""
        self.paused = False
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


@on_uvloop
async def test_a_body_read_ahead_stays_held_when_the_request_before_it_starts() -> None:
    """One read brings a request and, pipelined behind it, a body past the read-ahead bound:
    reading stops, and stays stopped when the first request's app starts at the read's end
    (only the waiting request's turn, or its app taking the body, reads on)."""
    release = asyncio.Event()

    async def held_first(scope: Any, proto: Any) -> None:
        if scope.path == "/held":
            await release.wait()
        size = 0
        async for piece in proto:
            size += len(piece)
        proto.response_bytes(200, [], f"{scope.path} {size}".encode())

    async with serving(App(held_first), max_read_ahead_bytes=1024) as server:
        conn = HttpConnection(server)
        transport = RecordingTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        head = b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n"
        head += b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 8192\r\n\r\n"
        conn.data_received(head + b"z" * 4096)
        assert transport.paused  # held by the body read ahead, not resumed by /held's start
        release.set()
        await until(lambda: not transport.paused)  # /big's turn: its app takes its body
        conn.data_received(b"z" * 4096)
        await until(lambda: transport.written.endswith(b"/big 8192"))
        conn.connection_lost(None)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2


@pytest.mark.parametrize("max_pipelined", [1, 3])
@on_uvloop
async def test_past_the_pipelining_bound_the_connection_is_not_read(max_pipelined: int) -> None:
    """Requests pipelined behind one being answered wait their turn up to `max_pipelined`;
    then the connection stops being read, and is read again as answers go out. Every request
    is answered, in order."""
    release = asyncio.Event()

    async def held_first(scope: Any, proto: Any) -> None:
        if scope.path == "/held":
            await release.wait()
        proto.response_bytes(200, [], scope.path.encode())

    app = App(held_first)
    async with serving(app, max_pipelined=max_pipelined) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
        await until(lambda: len(app.seen) == 1)
        (conn,) = server._connections
        for n in range(max_pipelined):  # one at a time, so that each is read on its own
            writer.write(f"GET /{n} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            await until(lambda n=n: len(conn._queued) == n + 1)  # type: ignore[misc]
            assert conn._paused == (n + 1 == max_pipelined)
        writer.write(b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n")  # waits in the socket
        assert len(conn._queued) == max_pipelined
        release.set()
        answers = b""
        for _ in range(max_pipelined + 2):
            answers += await asyncio.wait_for(read_answer(reader), BOUND)
        writer.close()
    order = [b"/held", *(f"/{n}".encode() for n in range(max_pipelined)), b"/last"]
    positions = [answers.index(b"\r\n\r\n" + path) for path in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize("linger", [None, 0.0])
@on_uvloop
async def test_a_closing_answer_lingers_unless_the_linger_is_zero(linger: float | None) -> None:
    """After an answer that closes, the server half-closes and reads on (for
    `close_linger` seconds, 2 by default); with 0 it closes the connection at once. Either
    way the client reads the whole answer and then the end of the connection."""
    connections: list[Any] = []

    async def closing(scope: Any, proto: Any) -> None:
        connections.append(proto._conn)
        proto.response_bytes(200, [("connection", "close")], b"bye")

    options = {} if linger is None else {"close_linger": linger}
    async with serving(App(closing), **options) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        everything = await read_to_eof(reader)
        (conn,) = connections
        if linger is None:
            assert conn._draining and server.connections == 1  # until the client closes
        else:
            assert not conn._draining
            await until(lambda: server.connections == 0)  # the client has not closed
        writer.close()
    assert everything.startswith(b"HTTP/1.1 200 OK") and everything.endswith(b"bye")


@on_uvloop
async def test_a_head_that_never_ends_is_refused_once_past_the_limit() -> None:
    """A header line sent piece by piece without its end: the parser would hold it whole, so
    the bytes read into an unfinished head are bounded too (431 past the limit)."""
    async with serving(App()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET / HTTP/1.1\r\nX-Endless: ")
        sent = 0
        while not reader.at_eof() and sent < 10 * server.max_head_bytes:
            writer.write(b"z" * 4096)
            await writer.drain()
            sent += 4096
            if sent > 2 * server.max_head_bytes:
                break  # past twice the limit it must have answered
        answer = await read_to_eof(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"--rest_api_max_request_head_bytes" in answer


@on_uvloop
async def test_an_app_that_fails_or_answers_nothing_gets_a_500_and_the_connection_closes() -> None:
    async def broken(scope: Any, proto: Any) -> None:
        if scope.path == "/raise":
            raise RuntimeError("a bug")

    async with serving(App(broken)) as server:
        for path in (b"/raise", b"/silent"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = await read_to_eof(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 500 "), answer
            assert b"without an answer" in answer


def post(path: str, length: int, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n".encode() + body


def chunked(path: str, *pieces: bytes, last: bool = True) -> bytes:
    """A chunked request's head and `pieces`, and its end when `last`."""
    head = f"POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    return head + chunks(*pieces, last=last)


def chunks(*pieces: bytes, last: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return body + (b"0\r\n\r\n" if last else b"")


class Holding:
    """An app that reads each body (whole, or piece by piece with `pieces`) and, for /hold,
    keeps its request open until `release`; a body past the server's bound answers 503 with
    the server's reason."""

    def __init__(self, pieces: bool = False) -> None:
        self.release = asyncio.Event()
        self.held = 0
        self.paths: list[str] = []
        self.pieces = pieces  # read bodies as they come (`aiter(proto)`), not whole

    async def read(self, proto: Any) -> bytes:
        if not self.pieces:
            return await proto()  # type: ignore[no-any-return]
        return b"".join([piece async for piece in proto])

    async def __call__(self, scope: Any, proto: Any) -> None:
        self.paths.append(scope.path)
        try:
            body = await self.read(proto)
        except BodyBudgetExceeded as exc:
            proto.response_bytes(503, [], str(exc).encode())
            return
        if scope.path == "/hold":
            self.held += 1
            await self.release.wait()
        proto.response_bytes(200, [], f"{scope.path} {len(body)}".encode())


def test_the_default_bound_on_bodies_held_is_sixteen_of_the_largest_rest_body() -> None:
    assert DEFAULT_MAX_BUFFERED_BODY_BYTES == 16 * 64 * 2**20
    assert HttpServer(App(), "127.0.0.1", 0).max_buffered_body_bytes == 2**30


@on_uvloop
async def test_bodies_held_over_every_connection_are_bounded_as_they_arrive() -> None:
    """A body counts from its first byte until its request ends: the request whose body takes
    the server past the bound fails its read (503 here) and its connection closes, a body
    only announced holds nothing, and once the holding request ends the same request is
    served."""
    holding = Holding()
    async with serving(App(holding), max_buffered_body_bytes=10_000) as server:
        port = server.bound_port
        _, hold = await asyncio.open_connection("127.0.0.1", port)
        hold.write(post("/hold", 6000, b"h" * 6000))
        await until(lambda: holding.held == 1)
        assert server.body_bytes == 6000

        _, waits = await asyncio.open_connection("127.0.0.1", port)
        waits.write(post("/later", 1_000_000))  # announced, not sent: nothing held
        waits.write(b"w" * 500)
        await until(lambda: server.body_bytes == 6500)

        refused = await exchange(port, post("/x", 4000, b"x" * 4000))
        assert refused.startswith(b"HTTP/1.1 503 ") and b"connection: close" in refused
        assert b"to 10500 bytes, past its bound of 10000" in refused
        assert b"--rest_api_max_buffered_body_bytes" in refused and b"retry later" in refused
        await until(lambda: server.body_bytes == 6500)
        fits = await exchange(port, post("/fits", 3500, b"f" * 3500))
        assert fits.endswith(b"/fits 3500")
        assert server.body_bytes == 6500

        waits.close()  # /later's client leaves: its 500 bytes are given back
        await until(lambda: server.body_bytes == 6000)
        holding.release.set()
        await until(lambda: server.body_bytes == 0)
        served = await exchange(port, post("/x", 4000, b"x" * 4000))
        assert served.endswith(b"/x 4000")
        hold.close()


@pytest.mark.parametrize("pieces", [False, True], ids=["whole", "pieces"])
@on_uvloop
async def test_a_chunked_body_past_the_bound_ends_its_request_and_its_connection(
    pieces: bool,
) -> None:
    """A chunked body counts as it comes: the piece that takes the server past the bound
    fails the app's read, whole or piece by piece (`BodyBudgetExceeded`), the answer closes
    the connection, and the bytes it held are given back."""
    holding = Holding(pieces)
    async with serving(App(holding), max_buffered_body_bytes=10_000) as server:
        port = server.bound_port
        _, hold = await asyncio.open_connection("127.0.0.1", port)
        hold.write(post("/hold", 6000, b"h" * 6000))
        await until(lambda: holding.held == 1)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(chunked("/stream", b"a" * 3000, last=False))
        await until(lambda: server.body_bytes == 9000)
        writer.write(chunks(b"b" * 1001, last=False))  # 10,001 bytes held; no end comes
        answer = await read_to_eof(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in answer
        assert b"to 10001 bytes" in answer and b"--rest_api_max_buffered_body_bytes" in answer
        await until(lambda: server.body_bytes == 6000)

        fits = await exchange(port, chunked("/small", b"s" * 4000))
        assert fits.endswith(b"/small 4000")
        holding.release.set()
        await until(lambda: server.body_bytes == 0)
        hold.close()


@on_uvloop
async def test_past_the_bound_a_chunked_body_s_connection_is_not_read_until_answered() -> None:
    """The read that takes the server past the bound stops the connection's reading (what
    follows would only be dropped), also once the request's turn comes behind a pipelined
    one and while its app has not read yet; the closing answer's linger reads and drops."""
    first, reads = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, proto: Any) -> None:
        await (first if scope.path == "/first" else reads).wait()
        try:
            await proto()
        except BodyBudgetExceeded:
            proto.response_bytes(503, [], b"")
            return
        proto.response_bytes(200, [], b"")

    async with serving(App(app), max_buffered_body_bytes=1000) as server:
        conn = HttpConnection(server)
        transport = RecordingTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(
            b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
            + chunked("/stream", b"a" * 1001, b"b" * 500, last=False)
        )
        assert transport.paused
        assert server.body_bytes == 1001  # what followed the bound's read was dropped
        first.set()  # /first is answered and /stream's app starts, not reading yet
        await until(lambda: transport.written.startswith(b"HTTP/1.1 200 "))
        assert transport.paused
        reads.set()
        await until(lambda: transport.eof)  # answered 503, half-closed
        assert b"HTTP/1.1 503 " in transport.written and not transport.paused
        conn.connection_lost(None)
    assert server.body_bytes == 0


@on_uvloop
async def test_a_request_that_leaves_gives_back_the_bytes_it_held() -> None:
    """Bodies counted for requests that never end (their client left before the body came,
    or while a pipelined request waited its turn) are given back with the connection."""
    holding = Holding()
    async with serving(App(holding), max_buffered_body_bytes=10_000) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(post("/hold", 100, b"h" * 100) + post("/queued", 5000, b"q" * 10))
        await until(lambda: holding.held == 1 and server.body_bytes == 110)
        writer.close()
        await until(lambda: server.body_bytes == 0)
        holding.release.set()


@on_uvloop
async def test_a_client_that_leaves_before_its_body_cancels_its_request() -> None:
    reading = asyncio.Event()
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def wait_body(scope: Any, proto: Any) -> None:
        reading.set()
        try:
            await proto()
        except asyncio.CancelledError:
            ended.set_result("cancelled")
            raise
        ended.set_result("read")

    async with serving(App(wait_body)) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.wait_for(reading.wait(), BOUND)
        writer.close()
        assert await asyncio.wait_for(ended, BOUND) == "cancelled"


@on_uvloop
async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async with serving(App(), idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        everything = await read_to_eof(reader)  # the answer, then the close
        writer.close()
    assert everything.startswith(b"HTTP/1.1 200 OK") and b"connection: close" not in everything


@on_uvloop
async def test_past_the_connection_cap_a_client_waits_until_a_connection_closes() -> None:
    async with serving(App(), max_connections=1) as server:
        first_reader, first = await asyncio.open_connection("127.0.0.1", server.bound_port)
        first.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(read_answer(first_reader), BOUND)
        second_reader, second = await asyncio.open_connection("127.0.0.1", server.bound_port)
        second.write(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        # One more answer on the first connection: the loop has seen the second arrive.
        first.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(read_answer(first_reader), BOUND)
        assert server.connections == 1  # the second waits in the listen backlog
        first.close()
        assert b"GET /2" in await asyncio.wait_for(read_answer(second_reader), BOUND)
        second.close()


@on_uvloop
async def test_stop_lets_the_request_in_flight_finish_and_closes_idle_connections() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def held(scope: Any, proto: Any) -> None:
        if scope.path == "/held":
            started.set()
            await release.wait()
        proto.response_bytes(200, [], b"done")

    server = HttpServer(App(held), "127.0.0.1", 0)
    await server.start()
    port = server.bound_port
    serve = asyncio.create_task(server.serve())
    idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
    busy_reader, busy = await asyncio.open_connection("127.0.0.1", port)
    busy.write(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(started.wait(), BOUND)
    server.stop()
    assert await read_to_eof(idle_reader) == b""  # the idle one is closed at once
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=BOUND).close()
    assert not serve.done()
    release.set()
    answer = await read_to_eof(busy_reader)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer
    await asyncio.wait_for(serve, BOUND)
    idle.close()
    busy.close()


@on_uvloop
async def test_a_busy_port_fails_the_start_unless_the_port_is_shared() -> None:
    async with serving(App()) as server:
        with pytest.raises(OSError):
            await HttpServer(App(), "127.0.0.1", server.bound_port).start()
    shared = HttpServer(App(), "127.0.0.1", 0, reuse_port=True)
    await shared.start()
    other = HttpServer(App(), "127.0.0.1", shared.bound_port, reuse_port=True)
    await other.start()
    shared.stop()
    other.stop()
