"""Isolation between models: an ONNX model's latency alone, beside a slow model and beside a
hung one, all in one server process, one run.

Starts servo on loopback ports with three models: the large example ONNX MLP, a Python model whose
calls take `--slow-seconds` (a sleep, as a model waiting on I/O or a remote store would), and
a Python model whose calls hang until the bench releases them. Each phase drives the MLP with
wrk (`--connections`, `--seconds`) while `--clients` threads of this process keep calling the
other model (none, the slow one, the hung one; their calls end at the server's deadline,
`--rest_api_timeout_in_ms=2000`, or at once when refused). Prints the MLP's requests/s and
p50/p99 per phase and what the other model's clients got. With `--also-servo`, each phase
runs on another checkout's servo too (an older commit's worktree, say), in turns. Every
process it starts is stopped. Needs wrk (`make bench` installs it).

    python bench/isolation.py [--seconds 10] [--connections 8] [--clients 16]
                              [--slow-seconds 1] [--also-servo OTHER_CHECKOUT/src ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

from rest_predict import REPO, also_servo, free_port, other_servos, process, wait_http, wrk

# The large example MLP (512 -> 4 x 2048 -> 10): about 2.6 ms a row, so its calls run on
# the model-call threads (a call under 200 us would run on the event loop, beside no pool).
MODEL = "mlp_large"
MLP_BODY = json.dumps({"instances": [[round(0.001 * i, 3) for i in range(512)]]})
OTHER_BODY = json.dumps({"instances": [1.0]}).encode()

# Sleeps `SECONDS` per call; with a file "hang" in its version directory, waits instead until
# a file "release" appears there.
OTHER_MODEL = """
import os
import time

SECONDS = {seconds}

class Model:
    def load(self, path):
        self.path = path

    def predict(self, inputs, signature_name):
        if os.path.exists(os.path.join(self.path, "hang")):
            while not os.path.exists(os.path.join(self.path, "release")):
                time.sleep(0.01)
        else:
            time.sleep(SECONDS)
        return inputs["inputs"]
"""


def write_models(workdir: Path, slow_seconds: float) -> Path:
    subprocess.run(
        [sys.executable, "scripts/make_example_models.py", str(workdir), "--only", MODEL],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for name in ("slow", "hung"):
        version = workdir / name / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(textwrap.dedent(OTHER_MODEL.format(seconds=slow_seconds)))
    (workdir / "hung" / "1" / "hang").touch()
    config = workdir / "models.config"
    entries = [(MODEL, "onnx"), ("slow", "python"), ("hung", "python")]
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{workdir / n}" model_platform: "{p}" }}\n'
            for n, p in entries
        )
        + "}\n"
    )
    return config


class Clients:
    """`count` threads calling `url` back to back until stopped; counts the answers' codes."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.codes: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(count)]

    def _call(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                self.url, data=OTHER_BODY, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    code = answer.status
            except urllib.error.HTTPError as error:
                code = error.code
            except OSError:
                code = 0  # no answer
            with self._lock:
                self.codes[code] += 1

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slow-seconds", type=float, default=1.0)
    also_servo(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    contenders = {"servo": {}, **other_servos(args.also_servo)}
    workdir = Path(tempfile.mkdtemp(prefix="servo-bench-"))
    try:
        config = write_models(workdir, args.slow_seconds)
        print(
            f"MLP: wrk {args.connections} connections x {args.seconds} s per phase; "
            f"other model: {args.clients} clients"
        )
        for phase in ("alone", "slow", "hung"):
            for name, env in contenders.items():
                (workdir / "hung" / "1" / "release").unlink(missing_ok=True)
                rest = free_port()
                command = [
                    sys.executable,
                    "-m",
                    "servo",
                    "serve",
                    f"--port={free_port()}",
                    f"--rest_api_port={rest}",
                    "--bind_address=127.0.0.1",
                    f"--model_config_file={config}",
                    "--rest_api_timeout_in_ms=2000",
                ]
                base = f"http://127.0.0.1:{rest}/v1/models"
                with process(command, env):
                    wait_http(f"{base}/{MODEL}:predict", body=MLP_BODY)
                    wrk(f"{base}/{MODEL}:predict", 2, args.connections, MLP_BODY)  # warm-up
                    clients = Clients(
                        f"{base}/{phase}:predict", 0 if phase == "alone" else args.clients
                    )
                    try:
                        with clients:
                            result = wrk(
                                f"{base}/{MODEL}:predict", args.seconds, args.connections, MLP_BODY
                            )
                    finally:
                        (workdir / "hung" / "1" / "release").touch()  # the hung calls end
                others = ", ".join(
                    f"{code or 'none'}: {n}" for code, n in sorted(clients.codes.items())
                )
                print(
                    f"{phase:6} {name:18} mlp {result['rps']:8.0f} req/s  p50 "
                    f"{result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
                    f"errors {result['errors']:.0f}  other model's answers: {others or '-'}"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
