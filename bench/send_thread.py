"""Would a writer thread take the socket's sends off the Python thread for less? The bare
predict app of bench/bare_asgi.py on servo's HTTP server, its answers written two ways: by
uvloop's transport on the event loop's thread (`inline`, as servo does), and handed to one
Python thread that writes them with os.write (`thread`: the send's system call, and the
loopback delivery it carries, then run while the event loop goes on, as granian's Rust threads
do theirs). wrk with 16 connections, --rounds rounds of --seconds alternating the two; per
round and in medians: requests/s, p99, the server's and wrk's CPU per request, and how busy
the CPUs were. Loopback only; every process is stopped by its PID.

    python bench/send_thread.py [--seconds 6] [--rounds 4]

The `thread` way is an experiment, never servo's: its writes bypass the transport (no
buffering, no flow control), which only a bench whose answers are small can allow.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare import children_cpu_seconds, cpu_seconds, cpu_ticks  # noqa: E402
from rest_predict import REPO, free_port, process, wait_http, wrk  # noqa: E402

V1 = "/v1/models/mlp:predict"
MODES = ("inline", "thread")


def write_on_a_thread() -> None:
    """Makes servo's HTTP connections hand what they write to one writer thread."""
    from servo.apis.rest import http_server

    pending: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()

    def writer() -> None:
        while True:
            fd, data = pending.get()
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    select.select([], [fd], [], 1.0)
                except OSError:  # the client went: its answer is dropped
                    break

    threading.Thread(target=writer, name="writer", daemon=True).start()

    def write(self: Any, data: bytes) -> None:
        fd = getattr(self, "_writer_fd", None)
        if fd is None:
            fd = self._writer_fd = self.transport.get_extra_info("socket").fileno()
        pending.put((fd, data))

    http_server.HttpConnection.write = write  # type: ignore[method-assign]


def serve(mode: str, port: int) -> None:
    import uvloop

    from bare_asgi import rsgi_app
    from servo.apis.rest.http_server import HttpServer

    if mode == "thread":
        write_on_a_thread()

    async def main() -> None:
        server = HttpServer(rsgi_app, "127.0.0.1", port)
        await server.start()
        await server.serve()

    uvloop.run(main())


def measure(mode: str, model: Path, seconds: float) -> tuple[float, ...]:
    """(req/s, p99 ms, server us/request, wrk us/request, CPUs busy %) of one round."""
    port = free_port()
    env = {"SERVO_BENCH_MODEL": str(model), "PYTHONPATH": f"{REPO / 'src'}:{BENCH}"}
    url = f"http://127.0.0.1:{port}{V1}"
    with process([sys.executable, __file__, "--serve", mode, str(port)], env) as proc:
        wait_http(url)
        wrk(url, 1, 16)  # warm-up
        server, load = cpu_seconds(proc.pid), children_cpu_seconds()
        busy, total = cpu_ticks()
        got = wrk(url, seconds, 16)
        server = cpu_seconds(proc.pid) - server
        load = children_cpu_seconds() - load
        busy_after, total_after = cpu_ticks()
    if got["errors"]:
        sys.exit(f"{mode}: {got['errors']:.0f} answers were not 2xx")
    requests = got["requests"]
    return (
        got["rps"],
        got["p99_ms"],
        server / requests * 1e6,
        load / requests * 1e6,
        (busy_after - busy) / (total_after - total) * 100,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    results: dict[str, list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="servo-send-thread-") as tmp:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", tmp, "--only", "mlp"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        model = Path(tmp) / "mlp" / "1" / "model.onnx"
        for round_ in range(args.rounds):
            for mode in MODES:
                row = measure(mode, model, args.seconds)
                results.setdefault(mode, []).append(row)
                print(f"round {round_ + 1} {mode:6s} " + line(row), flush=True)
    print(f"\nmedians of {args.rounds} rounds of {args.seconds:g} s, 16 connections (wrk):")
    for mode, rows in results.items():
        print(f"  {mode:6s} " + line(tuple(statistics.median(c) for c in zip(*rows, strict=True))))


def line(row: tuple[float, ...]) -> str:
    rps, p99, server, load, busy = row
    return (
        f"{rps:7,.0f} req/s  p99 {p99:.2f} ms  server {server:.0f} us/req  "
        f"wrk {load:.0f} us/req  CPUs busy {busy:.0f}%"
    )


if __name__ == "__main__":
    main()
