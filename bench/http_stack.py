"""The REST port's HTTP stack, chosen by measurement: the bare predict app of bench/bare_asgi.py
(parse the JSON, run the ONNX MLP, write the JSON) on servo's own HTTP server
(servo.apis.rest.http_server: an asyncio protocol over httptools, on uvloop), on granian's
embedded server (the one servo used before) and on socketify (uWebSockets, C++, its own event
loop on the Python thread, called through CFFI), and servo itself on its server with one and
with two workers. wrk with --connections connections for --seconds (after a 1 s warm-up), --rounds
rounds alternating the servers; medians of requests/s, p99 and server CPU per request (utime +
stime of the process and its children, from /proc). Loopback only; every process is stopped
by its PID.

    python bench/http_stack.py [--seconds 8] [--rounds 3] [--connections 16]
                               [--also-servo OTHER_CHECKOUT/src]

`--also-servo` adds servo from another checkout's sources (one process and --workers 2) to the
same rounds: servo before and after a change, side by side.

The bare apps run in a process of their own each (`--serve STACK PORT`, internal).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare import cpu_seconds  # noqa: E402
from rest_predict import REPO, free_port, process, wait_http, wrk  # noqa: E402

V1 = "/v1/models/mlp:predict"


def serve(stack: str, port: int) -> None:
    """Runs the bare app on `stack` ("servo-http", "granian-embed" or "socketify") until
    stopped."""
    if stack == "socketify":
        serve_socketify(port)
        return
    import uvloop

    from bare_asgi import rsgi_app

    async def main() -> None:
        if stack == "servo-http":
            from servo.apis.rest.http_server import HttpServer

            server = HttpServer(rsgi_app, "127.0.0.1", port)
            await server.start()
            await server.serve()
        else:
            from granian.constants import HTTPModes, Interfaces
            from granian.server.embed import Server

            embedded = Server(
                rsgi_app,
                address="127.0.0.1",
                port=port,
                interface=Interfaces.RSGI,
                http=HTTPModes.http1,
                log_enabled=False,
            )
            await embedded.serve()

    uvloop.run(main())


def serve_socketify(port: int) -> None:
    """The bare predict on socketify: its handlers are plain callbacks, the body comes in
    pieces (`on_data`), and the answer is written once it is whole."""
    # ONNX Runtime first: it crashes (SIGSEGV) when it loads after socketify's library.
    from bare_asgi import predict  # noqa: I001
    from socketify import App

    def on_predict(res: Any, req: Any) -> None:
        pieces: list[bytes] = []

        def on_data(res: Any, piece: bytes, last: bool) -> None:
            if piece:
                pieces.append(piece)
            if last:
                answer = predict(b"".join(pieces))
                res.write_header("content-type", "application/json")
                res.end(answer)

        res.on_aborted(lambda res: None)  # socketify requires one before the body is read
        res.on_data(on_data)

    app = App()
    app.post(V1, on_predict)
    app.listen(port, lambda config: None)
    app.run()


def commands(model: Path, port: int, also: Path | None) -> dict[str, tuple[list[str], str]]:
    """Each server's command and the PYTHONPATH it runs with."""
    here_path = f"{REPO / 'src'}:{BENCH}"
    servo = [
        sys.executable,
        "-m",
        "servo",
        "serve",
        f"--port={free_port()}",
        f"--rest_api_port={port}",
        "--bind_address=127.0.0.1",
        "--model_name=mlp",
        f"--model_base_path={model.parent.parent}",
        "--tensorflow_intra_op_parallelism=1",
        "--log_level=warning",
    ]
    here = [sys.executable, __file__, "--serve"]
    servers = {
        "bare app, servo's HTTP server": ([*here, "servo-http", str(port)], here_path),
        "bare app, granian embedded": ([*here, "granian-embed", str(port)], here_path),
        "bare app, socketify": ([*here, "socketify", str(port)], here_path),
        "servo, 1 process": (servo, here_path),
        "servo, --workers 2": ([*servo, "--workers=2"], here_path),
    }
    if also is not None:
        servers[f"{also}: 1 process"] = (servo, str(also))
        servers[f"{also}: --workers 2"] = ([*servo, "--workers=2"], str(also))
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--also-servo", type=Path, help="another checkout's src directory")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory(prefix="servo-http-stack-") as tmp:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", tmp, "--only", "mlp"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        run(args, Path(tmp) / "mlp" / "1" / "model.onnx")


def run(args: argparse.Namespace, model: Path) -> None:
    if args.also_servo is not None and not (args.also_servo / "servo").is_dir():
        sys.exit(f"--also-servo {args.also_servo}: no servo package there")
    results: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        port = free_port()
        for name, (command, path) in commands(model, port, args.also_servo).items():
            env = {"SERVO_BENCH_MODEL": str(model), "PYTHONPATH": path}
            with process(command, env) as proc:
                wait_http(f"http://127.0.0.1:{port}{V1}")
                wrk(f"http://127.0.0.1:{port}{V1}", 1, args.connections)  # warm-up
                before = cpu_seconds(proc.pid)
                got = wrk(f"http://127.0.0.1:{port}{V1}", args.seconds, args.connections)
                spent = cpu_seconds(proc.pid) - before
            if got["errors"]:
                sys.exit(f"{name}: {got['errors']:.0f} answers were not 2xx")
            cpu_us = spent / got["requests"] * 1e6
            results.setdefault(name, []).append((got["rps"], got["p99_ms"], cpu_us))
    print(
        f"ONNX MLP predict, {args.connections} connections (wrk), "
        f"{args.rounds} rounds of {args.seconds:g} s, medians"
    )
    width = max(len(name) for name in results)
    print(f"| {'server':{width}} | req/s | p99 ms | CPU us/request |")
    print(f"|{'-' * (width + 2)}|------:|-------:|---------------:|")
    for name, rows in results.items():
        rps, p99, cpu = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {name:{width}} | {rps:,.0f} | {p99:.2f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
