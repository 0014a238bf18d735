"""--workers: REST predict throughput and resident memory of servo with 1 and with 2 workers.

Writes the example ONNX MLP, starts servo on it with `--workers=1` and with `--workers=2` (one
at a time, each on fresh loopback ports), drives each with wrk (one-row predict, a warm-up,
then the measured run; 16 connections, which Linux spreads over the workers' listeners) and
reads the resident memory of the whole server, the supervisor's and every worker's (VmRSS
from /proc). Rounds alternate 1, 2, 1, 2 ... so both see the same noise. Every process it
starts is stopped. Needs wrk.

    python bench/workers.py [--seconds 10] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rest_predict import REPO, free_port, print_medians, print_round, process, wait_http, wrk


def rss_bytes(pid: int, descendants: bool = True) -> int:
    """The resident memory of `pid` and (unless told otherwise) of its descendants."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) * 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not descendants or not children.exists():
        return total
    for child in children.read_text().split():
        with contextlib.suppress(FileNotFoundError):  # ended meanwhile
            total += rss_bytes(int(child))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="servo-bench-workers-"))
    try:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", "mlp"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results: dict[str, list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            for workers in (1, 2):
                name = f"servo --workers={workers}"
                rest_port = free_port()
                command = [
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
                    f"--workers={workers}",
                ]
                url = f"http://127.0.0.1:{rest_port}/v1/models/mlp:predict"
                with process(command) as server:
                    wait_http(url)
                    wrk(url, 1, args.connections)  # warm-up
                    result = wrk(url, args.seconds, args.connections)
                    result["rss_mb"] = rss_bytes(server.pid) / 2**20
                    result["own_rss_mb"] = rss_bytes(server.pid, descendants=False) / 2**20
                results.setdefault(name, []).append(result)
                print_round(round_, name, result)
                print(
                    f"    resident memory, every process: {result['rss_mb']:.0f} MB "
                    f"(the first process alone: {result['own_rss_mb']:.0f} MB)"
                )
        print_medians(results, f"{args.rounds} rounds of {args.seconds} s")
        for name, rounds in results.items():
            rss = sorted(r["rss_mb"] for r in rounds)[len(rounds) // 2]
            print(f"  {name:14s} resident memory {rss:.0f} MB (median)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
