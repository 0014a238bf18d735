"""What a REST predict costs servo's Python, with no socket: the example ONNX MLP served by
servo's own server core (built from its flags, as `servo serve` builds it), one keep-alive
connection of servo's HTTP server (servo.apis.rest.http_server) fed whole HTTP requests on a
transport that only keeps what is written, and beside it the bare predict app of
bench/bare_asgi.py (parse, ONNX Runtime, write) on the same kind of connection, and ONNX
Runtime's call alone. Rounds alternate the three; medians of the per-request times.

    python bench/rest_inprocess.py [--requests 20000] [--rounds 5] [--profile]

What the route costs over the bare app is what servo's routing, handle, checks, runner and
TFS's JSON forms add; the syscalls, the event loop's polling and wrk are not in it (those
are bench/http_stack.py's). `--profile` runs servo's route once more under cProfile and prints
where its time goes, by each function's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from rest_predict import BODY, REPO  # noqa: E402
from servo.cli.model_server import ModelServer  # noqa: E402

PATH = "/v1/models/mlp:predict"


def http_request(body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Transport:
    """A transport that keeps what is written and wakes whoever waits for an answer."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("the connection was closed: an answer asked for it")


class Connection:
    """One connection of servo's HTTP server running `app`, on the running loop."""

    def __init__(self, app: Any) -> None:
        from servo.apis.rest.http_server import HttpConnection, HttpServer

        server = HttpServer(app, "127.0.0.1", 0, idle_timeout=None)
        server.loop = asyncio.get_running_loop()
        server.serving = True  # as once started; the connection is never accepted
        self.transport = Transport()
        self.conn = HttpConnection(server)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    async def ask(self, request: bytes) -> bytes:
        """Feeds one request and returns its answer, waiting only if the app had to."""
        transport = self.transport
        transport.written.clear()
        self.conn.data_received(request)
        if not transport.written:
            transport.waiter = asyncio.get_running_loop().create_future()
            await transport.waiter
            transport.waiter = None
        return transport.written[0]

    async def time(self, request: bytes, count: int) -> float:
        """Microseconds per request over `count` requests."""
        ask = self.ask
        started = time.perf_counter()
        for _ in range(count):
            await ask(request)
        return (time.perf_counter() - started) / count * 1e6


def build_servo(model_base: Path) -> tuple[ModelServer, Any]:
    """The server (its core loaded) and its REST app, as `servo serve` builds them."""
    from servo.cli.flags import build_parser

    args = build_parser().parse_args(
        [
            "--model_name=mlp",
            f"--model_base_path={model_base}",
            "--tensorflow_intra_op_parallelism=1",
            "--rest_api_port=1",  # not bound: the app is fed directly
            "--file_system_poll_wait_seconds=0",
        ]
    )
    server = ModelServer(args)
    server.load_models()
    server.build_plane()
    return server, server.rest_app()


def onnx_call(model: Path) -> Callable[[], Any]:
    import numpy as np
    import onnxruntime as ort
    import orjson

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.asarray(orjson.loads(BODY)["instances"], dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    names = [o.name for o in session.get_outputs()]
    return lambda: session.run(names, feed)


async def measure(args: argparse.Namespace, model: Path) -> None:
    os.environ["SERVO_BENCH_MODEL"] = str(model)
    from bare_asgi import rsgi_app

    server, app = build_servo(model.parent.parent)
    try:
        servo, bare = Connection(app), Connection(rsgi_app)
        request = http_request(BODY.encode())
        for name, conn in (("servo", servo), ("bare", bare)):
            answer = await conn.ask(request)
            if not answer.startswith(b"HTTP/1.1 200"):
                sys.exit(f"{name}: {answer[:200]!r}")
        # The runner measures a new key on its thread pool before it runs it inline.
        await servo.time(request, 200)
        run = onnx_call(model)
        times: dict[str, list[float]] = {"servo route": [], "bare app": [], "ONNX Runtime": []}
        for _ in range(args.rounds):
            times["servo route"].append(await servo.time(request, args.requests))
            times["bare app"].append(await bare.time(request, args.requests))
            started = time.perf_counter()
            for _ in range(args.requests):
                run()
            times["ONNX Runtime"].append((time.perf_counter() - started) / args.requests * 1e6)
        print(
            f"REST predict in process, example MLP, servo's HTTP server on a fake transport; "
            f"{args.rounds} rounds of {args.requests} requests, medians (us per request)"
        )
        for name, values in times.items():
            spread = f"{min(values):.1f} to {max(values):.1f}"
            print(f"  {name:14} {statistics.median(values):7.1f}   (rounds {spread})")
        gap = statistics.median(times["servo route"]) - statistics.median(times["bare app"])
        print(f"  servo over the bare app: {gap:.1f} us")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await servo.time(request, args.requests)
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
    finally:
        assert server.core is not None
        server.core.stop(drain_timeout=5)
        if server.runner is not None:
            server.runner.close(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory(prefix="servo-rest-inprocess-") as tmp:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", tmp, "--only", "mlp"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        uvloop.run(measure(args, Path(tmp) / "mlp" / "1" / "model.onnx"))


if __name__ == "__main__":
    main()
