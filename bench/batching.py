"""Batching throughput: the large example MLP with batching off and on, in one run.

Writes the example model `mlp_large` (512 float inputs, four 2048-wide ReLU layers, 10
outputs; about 54 MB of float32 weights), then serves it twice on loopback ports, once without
and once with `--enable_batching` and the parameters below, and drives each with wrk at 64
connections with a one-row predict body, in turns (off, on, off, on, ...). Prints requests/s
and p50/p99 latency per round and the medians. Every process it starts is stopped. Needs wrk
(`make bench` installs it).

    python bench/batching.py [--seconds 10] [--rounds 2] [--connections 64]
                             [--parameters FILE] [--server-flag=--flag=value ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rest_predict import REPO, free_port, print_medians, print_round, process, wait_http, wrk

# The parameters the README's figures were measured with: batches of up to 32 rows, run as
# soon as a thread is free (no timeout: on a busy server requests gather in the queue while
# the thread runs the previous batch), one thread, a deep queue so that 64 clients never
# see 503.
BATCHING_PARAMETERS = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""
BODY = json.dumps({"instances": [[round(0.001 * i, 3) for i in range(512)]]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--parameters",
        type=Path,
        help="a BatchingParameters text file to measure instead of the built-in one",
    )
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        help="an extra servo flag for both servers, "
        "e.g. --server-flag=--tensorflow_intra_op_parallelism=1",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="servo-bench-"))
    try:
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", "mlp_large"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        params = workdir / "batching.config"
        params.write_text(args.parameters.read_text() if args.parameters else BATCHING_PARAMETERS)
        modes = {
            "batching off": [],
            "batching on": ["--enable_batching", f"--batching_parameters_file={params}"],
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
        for round_ in range(args.rounds):
            for name, flags in modes.items():
                port = free_port()
                command = [
                    sys.executable,
                    "-m",
                    "servo",
                    "serve",
                    f"--port={free_port()}",
                    f"--rest_api_port={port}",
                    "--bind_address=127.0.0.1",
                    "--model_name=mlp_large",
                    f"--model_base_path={workdir / 'mlp_large'}",
                    "--log_level=warning",
                    *args.server_flag,
                    *flags,
                ]
                url = f"http://127.0.0.1:{port}/v1/models/mlp_large:predict"
                with process(command):
                    wait_http(url, body=BODY)
                    wrk(url, 3, args.connections, body=BODY)  # warm-up
                    result = wrk(url, args.seconds, args.connections, body=BODY)
                results[name].append(result)
                print_round(round_, name, result)
        medians = print_medians(
            results, f"{args.rounds} rounds, {args.connections} connections, {args.seconds} s each"
        )
        print(f"  speed-up      {medians['batching on'] / medians['batching off']:.2f}x")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
