"""Memory over load/unload cycles: resident memory after 200 cycles within 10% of after 10.

Starts one servo server on loopback ports serving a model that stays (`keep`), and then, per
cycle, adds a model (`cycled`, the example ONNX MLP by default, or a `python` model) with a
HandleReloadConfigRequest (which answers once it is loaded), asks it for one REST predict, and
removes it with another reload, waiting through the status API until its version is END. The
server's resident memory (VmRSS of its PID, from /proc) is read after `--baseline` cycles and
after the last; the run passes when the last is within `--tolerance` of the baseline. Prints
the readings; exits 1 when over. Bounded by `--cycles` and `--max-seconds`; the one server it
starts is stopped by its PID.

    python bench/memory.py [--cycles 200] [--baseline 10] [--tolerance 0.10]
                           [--platform onnx|python] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from servo_process import REPO, Servo

sys.path.insert(0, str(REPO / "src"))

import grpc

from servo.protos import model_management_pb2

RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"

PYTHON_MODEL = """
import numpy as np


class Model:
    def load(self, path):
        self.weights = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)

    def predict(self, inputs, signature_name):
        return {"outputs": inputs["inputs"] * self.weights[0, 0]}
"""
BODIES = {
    "onnx": {"instances": [[0.1 * i for i in range(16)]]},
    "python": {"instances": [1.0, 2.0]},
}


def write_models(work: Path, platform: str) -> dict[str, Path]:
    """`keep` (a python model) and `cycled` (of `platform`), each with version 1."""
    keep = work / "keep" / "1"
    keep.mkdir(parents=True)
    (keep / "model.py").write_text(PYTHON_MODEL)
    if platform == "onnx":
        subprocess.run(
            [sys.executable, "scripts/make_example_models.py", str(work), "--only", "mlp"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        cycled = work / "mlp"
    else:
        cycled = work / "cycled"
        (cycled / "1").mkdir(parents=True)
        (cycled / "1" / "model.py").write_text(PYTHON_MODEL)
    return {"keep": work / "keep", "cycled": cycled}


def reload_request(models: dict[str, tuple[Path, str]]) -> bytes:
    request = model_management_pb2.ReloadConfigRequest()
    for name, (base_path, platform) in models.items():
        entry = request.config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str(base_path)
        entry.model_platform = platform
    return request.SerializeToString()


def predict(servo: Servo, model: str, body: object) -> None:
    request = urllib.request.Request(
        f"{servo.rest}/v1/models/{model}:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 200:
            raise RuntimeError(f"predict on {model}: {answer.status}")


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=10, help="cycles before the baseline")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--platform", choices=sorted(BODIES), default="onnx")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds

    with tempfile.TemporaryDirectory(prefix="servo-memory-") as tmp:
        work = Path(tmp)
        paths = write_models(work, args.platform)
        config = work / "models.config"
        config.write_text(
            "model_config_list {\n"
            f'  config {{ name: "keep" base_path: "{paths["keep"]}" model_platform: "python" }}\n'
            "}\n"
        )
        keep_only = reload_request({"keep": (paths["keep"], "python")})
        with_cycled = reload_request(
            {"keep": (paths["keep"], "python"), "cycled": (paths["cycled"], args.platform)}
        )
        with (
            Servo([f"--model_config_file={config}"], log=work / "servo.log") as servo,
            grpc.insecure_channel(servo.grpc_target) as channel,
        ):
            reload = channel.unary_unary(
                RELOAD,
                request_serializer=lambda b: b,
                response_deserializer=model_management_pb2.ReloadConfigResponse.FromString,
            )
            readings: dict[int, int] = {0: servo.rss_bytes()}
            print(f"start: {mib(readings[0])}", flush=True)
            for cycle in range(1, args.cycles + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    print(f"memory: over --max-seconds {args.max_seconds:.0f}")
                    return 1
                reload(with_cycled, timeout=remaining)
                predict(servo, "cycled", BODIES[args.platform])
                reload(keep_only, timeout=remaining)
                servo.wait_state("cycled", 1, "END", timeout=remaining)
                if cycle in (args.baseline, args.cycles) or cycle % 50 == 0:
                    readings[cycle] = servo.rss_bytes()
                    print(f"after {cycle} cycles: {mib(readings[cycle])}", flush=True)
            servo.stop()

    base, last = readings[args.baseline], readings[args.cycles]
    change = (last - base) / base
    verdict = "within" if abs(change) <= args.tolerance else "OVER"
    print(
        f"\nmemory: {args.cycles} load/unload cycles of a {args.platform} model: "
        f"{mib(base)} after {args.baseline}, {mib(last)} after {args.cycles} "
        f"({change:+.1%}, {verdict} {args.tolerance:.0%})"
    )
    return 0 if verdict == "within" else 1


if __name__ == "__main__":
    sys.exit(main())
