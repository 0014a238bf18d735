"""REST predict throughput: servo against bare apps doing the same work, one run.

Writes the example ONNX MLP (16 float inputs, 64 hidden units, 4 outputs), starts servo on it,
the bare app of bench/bare_asgi.py on uvicorn (ASGI; uvloop + httptools) and on granian (RSGI;
uvloop; the server servo ran on before its own), and, with --kserve-python, KServe's Python
server, all on loopback ports, and drives each with wrk: 16 connections, one thread, a one-row
predict body, a warm-up and then a measured run, in turns (servo, bare, servo, bare, ...) so
all see the same noise. Prints requests/s and p50/p99 latency per round and the median over
rounds. Every process it starts is stopped. Needs wrk (Debian package `wrk`; `make bench`
installs it).

    python bench/rest_predict.py [--seconds 10] [--rounds 3] [--connections 16]
                                 [--also-servo OTHER_CHECKOUT/src ...]

`--also-servo` adds a servo run from another checkout's sources (an older commit's worktree,
say) to the same rounds, so that a change is measured against what it changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BODY = json.dumps({"instances": [[0.1 * i for i in range(16)]]})
CPU = "cpu_s_per_1k"  # a result's server CPU seconds per 1,000 requests, where measured


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0, body: str = BODY) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(
                url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.2)  # polling a process that is starting up; not a measurement


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(
    url: str,
    seconds: float,
    connections: int,
    body: str | bytes = BODY,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """wrk POSTing `body` (any bytes) with `headers` (a JSON content type unless they give
    one) for `seconds`: requests/s, p50/p99 latency, non-2xx answers and requests done."""
    data = body.encode() if isinstance(body, str) else body
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(data)}"]
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        lines.append(f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{round(seconds)}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "errors": float(errors.group(1)) if errors else 0.0,
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),
    }


def lua_string(data: bytes) -> str:
    """`data` as a Lua string literal: printable ASCII as it is, any other byte (and the
    quote and the backslash) as a three-digit decimal escape, so binary bodies go through."""
    return (
        '"'
        + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in data)
        + '"'
    )


def print_round(round_: int, name: str, result: dict[str, float], unit: str = "req/s") -> None:
    print(
        f"round {round_ + 1} {name:14s} {result['rps']:9.0f} {unit}  "
        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"errors {result['errors']:.0f}{_cpu(result)}",
        flush=True,
    )


def print_medians(
    results: dict[str, list[dict[str, float]]], header: str, unit: str = "req/s"
) -> dict[str, float]:
    """Prints each contender's medians over the rounds; returns the median rates by name."""
    print(f"\nmedian of {header}:")
    rates = {}
    for name, rounds in results.items():
        rates[name] = statistics.median(r["rps"] for r in rounds)
        print(
            f"  {name:14s} {rates[name]:9.0f} {unit}  "
            f"p50 {statistics.median(r['p50_ms'] for r in rounds):.2f} ms  "
            f"p99 {statistics.median(r['p99_ms'] for r in rounds):.2f} ms"
            + (_cpu({CPU: statistics.median(r[CPU] for r in rounds)}) if CPU in rounds[0] else "")
        )
    return rates


def _cpu(result: dict[str, float]) -> str:
    return f"  cpu {result[CPU]:.3f} s/1k req" if CPU in result else ""


def also_servo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--also-servo",
        action="append",
        default=[],
        metavar="SRC",
        help="another checkout's src directory: its servo joins the comparison",
    )


def other_servos(sources: list[str]) -> dict[str, dict[str, str]]:
    """Each extra servo's name ("servo@<checkout>") and the environment that runs it."""
    return {
        f"servo@{Path(src).resolve().parent.name}": {"PYTHONPATH": str(Path(src).resolve())}
        for src in sources
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--kserve-python",
        help="an interpreter with kserve and onnxruntime installed: adds KServe's Python "
        "model server (bench/kserve_model.py) to the comparison",
    )
    also_servo(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="servo-bench-"))
    try:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", "mlp"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        model = workdir / "mlp" / "1" / "model.onnx"
        servo_port, bare_port, granian_port = free_port(), free_port(), free_port()

        def servo_args(rest_port: int) -> list[str]:
            return [
                sys.executable,
                "-m",
                "servo",
                "serve",
                f"--port={free_port()}",
                f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1",
                "--model_name=mlp",
                f"--model_base_path={workdir / 'mlp'}",
                "--log_level=warning",
            ]

        bare_args = [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_asgi:app",
            "--app-dir",
            str(REPO / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(bare_port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        granian_args = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "rsgi",
            "--loop",
            "uvloop",
            "--host",
            "127.0.0.1",
            "--port",
            str(granian_port),
            "--workers",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            "bare_asgi:rsgi_app",
        ]
        contenders = {
            "servo": (
                servo_args(servo_port),
                {},
                f"http://127.0.0.1:{servo_port}/v1/models/mlp:predict",
            ),
            "bare uvicorn": (
                bare_args,
                {"SERVO_BENCH_MODEL": str(model)},
                f"http://127.0.0.1:{bare_port}/",
            ),
            "bare granian": (
                granian_args,
                {"SERVO_BENCH_MODEL": str(model), "PYTHONPATH": str(REPO / "bench")},
                f"http://127.0.0.1:{granian_port}/",
            ),
        }
        for name, env in other_servos(args.also_servo).items():
            port = free_port()
            contenders[name] = (
                servo_args(port),
                env,
                f"http://127.0.0.1:{port}/v1/models/mlp:predict",
            )
        if args.kserve_python:
            kserve_port = free_port()
            contenders["kserve"] = (
                [
                    args.kserve_python,
                    str(REPO / "bench" / "kserve_model.py"),
                    str(model),
                    str(kserve_port),
                ],
                {},
                f"http://127.0.0.1:{kserve_port}/v1/models/mlp:predict",
            )
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        with ExitStack() as stack:
            for command, env, _ in contenders.values():
                stack.enter_context(process(command, env))
            for _, _, url in contenders.values():
                wait_http(url)
                wrk(url, 2, args.connections)  # warm-up
            for round_ in range(args.rounds):
                for name, (_, _, url) in contenders.items():
                    result = wrk(url, args.seconds, args.connections)
                    results[name].append(result)
                    print_round(round_, name, result)
        print_medians(
            results,
            f"{args.rounds} rounds, {args.connections} connections, {args.seconds:g} s each, "
            f"{os.cpu_count()} CPUs",
        )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
