"""Connections (issue 11, finding 7): idle connections are closed, slow requests are cut off,
and clients that open many connections use up their caps, never the process's file
descriptors: model polling and loading go on. Real server processes; every wait is on a state
(an answer, a socket's end of file, a version AVAILABLE) within a generous bound."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.models import write_python_model
from tests.support.server import ServerProcess, grpc_stubs, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EOF_BOUND = 60.0  # seconds: far more than any timeout set below; a bound, not a timing
SERVER_OPEN_FILES = 512  # the server's RLIMIT_NOFILE, soft and hard, in the fd tests

VERSION_MODEL = """
import os

class Model:
    def load(self, path):
        self.version = int(os.path.basename(path))

    def predict(self, inputs, signature_name):
        return {"outputs": inputs["inputs"] * 0 + self.version}
"""

# Calls whose first value is -k hold their thread until the file `gate` is in the version's
# directory, having written `holding-k` there; the others are answered at once.
GATED_MODEL = """
import os
import time

class Model:
    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        x = inputs["inputs"]
        if x.size and x.flat[0] < 0:
            open(os.path.join(self.path, f"holding-{int(-x.flat[0])}"), "w").close()
            end = time.monotonic() + 120  # bounded: a failed test does not hang the server
            while not os.path.exists(os.path.join(self.path, "gate")) and time.monotonic() < end:
                time.sleep(0.01)
        return {"outputs": x[:1] * 0 + x.size}
"""

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=EOF_BOUND)
    conn.settimeout(EOF_BOUND)
    return conn


def read_to_eof(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after EOF_BOUND)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def read_one_answer(conn: socket.socket) -> bytes:
    """One HTTP answer, its head and its Content-Length's bytes (fails after EOF_BOUND)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection ended within an answer's head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the connection ended within an answer's body"
        body += chunk
    return head + b"\r\n\r\n" + body


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` TCP connections to `port` that send nothing; closed on exit."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=EOF_BOUND))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_OPEN_FILES, SERVER_OPEN_FILES))


def model_version_states(server: ServerProcess, stubs: object, name: str) -> dict[int, int]:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    answer = stubs.models.GetModelStatus(request, timeout=10)  # type: ignore[attr-defined]
    return {s.version: s.state for s in answer.model_version_status}


def test_idle_connections_beyond_the_file_limit_leave_polling_and_new_requests_working(
    tmp_path: Path,
) -> None:
    """Finding 7 with the default flags: 1,000 idle connections to a server whose file limit
    is 512. They take their caps' share, polling still loads a new version, and once they
    close requests are answered again."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for the test's own sockets
    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with (
        running_server(
            ["--model_name=m", f"--model_base_path={base}", "--model_platform=python"],
            preexec_fn=limit_open_files,
        ) as server,
        grpc_stubs(server) as stubs,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        assert model_version_states(server, stubs, "m") == {1: 30}  # the channel is open
        with idle_connections(server.rest_port, 700), idle_connections(server.grpc_port, 300):
            # A new request waits for a free connection (it does not fail the server) ...
            waiting = pool.submit(
                httpx.post,
                f"{server.rest}/v1/models/m:predict",
                json={"instances": [1.0]},
                timeout=EOF_BOUND,
            )
            # ... and polling and loading go on: a new version is found and loaded.
            write_python_model(base, VERSION_MODEL, version=2)
            wait_until(
                lambda: model_version_states(server, stubs, "m").get(2) == 30,
                what="version 2 AVAILABLE while the connections are used up",
            )
        # The idle connections have closed: the waiting request and new ones are answered.
        assert waiting.result(EOF_BOUND).json() == {"predictions": [2.0]}
        answer = httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [1.0]})
        assert answer.json() == {"predictions": [2.0]}
        assert model_version_states(server, stubs, "m").get(2) == 30
    assert "Too many open files" not in server.output
    assert "connections capped at" in server.output


def test_idle_and_slow_connections_are_closed_after_their_timeouts(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--model_platform=python",
            "--rest_api_idle_timeout_seconds=1",
            "--rest_api_read_timeout_seconds=1",
            "--grpc_max_connection_idle_seconds=1",
            "--grpc_handshake_timeout_seconds=1",
            "--rest_api_max_request_head_bytes=1024",
        ]
    ) as server:
        # REST: a connection that never sends anything.
        with connect(server.rest_port) as conn:
            assert read_to_eof(conn) == b""
        # REST: a keep-alive connection after its request.
        with connect(server.rest_port) as conn:
            conn.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_to_eof(conn).startswith(b"HTTP/1.1 200 OK")
        # REST: headers sent slowly (never finished).
        with connect(server.rest_port) as conn:
            conn.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
            assert read_to_eof(conn) == b""
        # REST: a body that stops halfway: 408, and the connection closes.
        with connect(server.rest_port) as conn:
            conn.sendall(
                b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                b'{"instances": '
            )
            answer = read_to_eof(conn)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"--rest_api_read_timeout_seconds" in answer
        # REST: a request head over the flag's limit: 431, and the connection closes.
        with connect(server.rest_port) as conn:
            conn.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000)
            answer = read_to_eof(conn)
            assert answer.startswith(b"HTTP/1.1 431 "), answer
            assert b"--rest_api_max_request_head_bytes" in answer
        # gRPC: a connection that never sends its preface (gRPC may say why before it closes).
        with connect(server.grpc_port) as conn:
            read_to_eof(conn)
        # gRPC: an HTTP/2 connection without calls ends with GOAWAY (frame type 7).
        with connect(server.grpc_port) as conn:
            conn.sendall(H2_PREFACE)
            assert b"\x07" in read_to_eof(conn)
        # The server serves on.
        answer = httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [1.0]})
        assert answer.json() == {"predictions": [1.0]}


def test_connections_past_the_caps_wait_or_are_closed(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--model_platform=python",
            "--rest_api_max_connections=3",
            "--grpc_max_connections=3",
        ]
    ) as server:
        with (
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            idle_connections(server.rest_port, 3) as idle,
        ):
            # REST: the fourth connection's request waits until one of the three closes.
            waiting = pool.submit(httpx.get, f"{server.rest}/v1/models/m", timeout=EOF_BOUND)
            with connect(server.grpc_port) as probe:  # (proof that the server is not stuck)
                probe.sendall(H2_PREFACE)
            idle[0].close()
            assert waiting.result(EOF_BOUND).status_code == 200
        # gRPC: past three connections, a new one is closed as it arrives.
        with idle_connections(server.grpc_port, 3), connect(server.grpc_port) as extra:
            read_to_eof(extra)
        # Once they are gone (the server sees them close soon after), calls are answered.
        wait_until(lambda: grpc_answers(server), what="a gRPC call answered")


def grpc_answers(server: ServerProcess) -> bool:
    """True when a new channel's call is answered (each try a channel of its own, so that no
    reconnection backoff carries over)."""
    import grpc

    with grpc_stubs(server) as stubs:
        try:
            return model_version_states(server, stubs, "m") == {1: 30}
        except grpc.RpcError:
            return False


def test_request_bodies_held_over_every_connection_are_bounded(tmp_path: Path) -> None:
    """Bodies whose requests have not ended count against --rest_api_max_buffered_body_bytes
    as they arrive: two clients that send 3,900 of their 4,000 bytes and stall hold 7,800 of
    its 8,192, the request whose body passes it gets 503 with TFS's JSON error and its
    connection closes, and once a stalled client goes the same request is served."""
    base = write_python_model(tmp_path / "m", VERSION_MODEL, version=1)
    with running_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--model_platform=python",
            "--rest_api_max_body_bytes=4096",
            "--rest_api_max_buffered_body_bytes=8192",
        ]
    ) as server:
        body = b'{"instances": [' + b" " * 380 + b"1.0]}"
        request = (
            f"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        stalled = [connect(server.rest_port) for _ in range(2)]
        try:
            for conn in stalled:
                conn.sendall(
                    b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n"
                    b'\r\n{"instances": ' + b" " * (3900 - 14)
                )

            # Refused once both stalled bodies have been read (7,800 + 400 bytes), and the
            # connection closed after the answer.
            def refused() -> bytes | None:
                with connect(server.rest_port) as conn:
                    conn.sendall(request)
                    answer = read_one_answer(conn)
                    if not answer.startswith(b"HTTP/1.1 503 "):
                        return None
                    assert read_to_eof(conn) == b""
                return answer

            answer = wait_until(refused, what="a request past the bound refused")
            assert b"connection: close" in answer
            error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
            assert error.startswith(
                "This request's body took the request bodies the server holds to 8200 bytes, "
                "past its bound of 8192 (--rest_api_max_buffered_body_bytes)"
            )
            assert error.endswith("; retry later")
        finally:
            stalled.pop().close()
        served = wait_until(
            lambda: (
                answer
                if (
                    answer := httpx.post(f"{server.rest}/v1/models/m:predict", content=body)
                ).status_code
                == 200
                else None
            ),
            what="the request served once a stalled client left",
        )
        assert served.json() == {"predictions": [1.0]}
        for conn in stalled:
            conn.close()


def test_grpc_request_messages_held_over_every_connection_are_bounded(tmp_path: Path) -> None:
    """Messages of calls not ended count against --grpc_max_buffered_message_bytes: two calls
    of 3.6 MB held by the model hold 7.2 of its 8 MiB, the call whose 1.6 MB would pass it is
    UNAVAILABLE with the bound's message (and counted so), a small one is served meanwhile,
    and the same large call is served once the held ones end."""
    import grpc
    from tensorflow_serving.apis import predict_pb2

    from tests.support.requests import predict_request, tfs

    base = write_python_model(tmp_path / "gated", GATED_MODEL)
    version = base / "1"
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    with running_server(
        [
            "--model_name=gated",
            f"--model_base_path={base}",
            "--model_platform=python",
            "--max_concurrent_calls_per_model=4",
            "--max_decoded_bytes_per_request=4194304",  # messages up to 8 MiB received
            "--grpc_max_buffered_message_bytes=8388608",
            f"--monitoring_config_file={monitoring}",
        ]
    ) as server:

        def request(first: float, count: int) -> predict_pb2.PredictRequest:
            values = [first] + [1.0] * (count - 1)
            message: predict_pb2.PredictRequest = tfs(
                predict_request("gated", values, alias="inputs")
            )
            return message

        held = [request(-1, 900_000), request(-2, 900_000)]
        large, small = request(1, 400_000), request(1, 10)
        assert 2 * held[0].ByteSize() < 8 * 2**20 < 2 * held[0].ByteSize() + large.ByteSize()
        with grpc_stubs(server) as stubs, concurrent.futures.ThreadPoolExecutor(2) as pool:
            try:
                calls = [pool.submit(stubs.predictions.Predict, m, timeout=120) for m in held]
                wait_until(
                    lambda: all((version / f"holding-{k}").exists() for k in (1, 2)),
                    what="both large calls held by the model",
                )
                with pytest.raises(grpc.RpcError) as refused:
                    stubs.predictions.Predict(large, timeout=60)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                details = refused.value.details()
                assert details.startswith(
                    f"This request's message of {large.ByteSize()} bytes would take the request "
                    "messages the server holds to "
                ), details
                assert details.endswith(
                    "past its bound of 8388608 (--grpc_max_buffered_message_bytes); retry later"
                )
                answer = stubs.predictions.Predict(small, timeout=60)  # it fits: served
                assert list(answer.outputs["outputs"].float_val) == [10.0]
            finally:
                (version / "gate").write_text("")
            for call in calls:
                assert list(call.result(timeout=120).outputs["outputs"].float_val) == [900_000.0]
            answer = stubs.predictions.Predict(large, timeout=60)  # retried once they ended
            assert list(answer.outputs["outputs"].float_val) == [400_000.0]
        page = httpx.get(f"{server.rest}/monitoring/prometheus/metrics").text
        refusals = ':tensorflow:serving:request_count{model_name="gated",status="UNAVAILABLE"} 1'
        assert refusals in page
