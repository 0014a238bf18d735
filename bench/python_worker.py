"""Per-call cost of a Python model in a worker process against the same model in the server's
process, in one run: `--python_model_isolation=process` against `thread`.

Loads one echo model (its predict returns its input) three ways: in this process (thread),
in a worker with inputs and outputs in shared memory (process, servo's way) and in a worker
with every array pickled over its pipe (process-pickle, what shared memory saves), and calls
`run` on each in turns (thread, process, process-pickle, thread, ...) for a small input and
larger ones. Prints microseconds per call per round and the medians, and the worker's
overhead (process minus thread). Every worker it starts is stopped.

    python bench/python_worker.py [--rounds 5] [--sizes 16,262144,4194304]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from servo.platforms.options import PlatformOptions  # noqa: E402
from servo.platforms.python_model import load_in_process  # noqa: E402
from servo.platforms.python_worker import WorkerServable  # noqa: E402
from servo.platforms.servable import ModelServable  # noqa: E402

ECHO_MODEL = """
class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
    }}

    def predict(self, inputs, signature_name):
        return {"y": inputs["x"]}
"""
BYTES_PER_ROUND = 256 * 2**20  # each round moves about this much (at least 20 calls)
MAX_CALLS = 2000


def per_call_us(servable: ModelServable, x: np.ndarray, calls: int) -> float:
    signature = servable.signatures["serving_default"]
    inputs = {"x": x}
    servable.run(signature, inputs)  # the first call sizes the shared memory
    started = time.perf_counter()
    for _ in range(calls):
        servable.run(signature, inputs)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sizes", default="16,262144,4194304", help="float32 elements per input, comma-separated"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        version = Path(tmp) / "echo" / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(ECHO_MODEL)
        servables: dict[str, ModelServable] = {
            "thread": load_in_process(str(version), PlatformOptions()),
            "process": WorkerServable.load(str(version), "echo"),
            "process-pickle": WorkerServable.load(str(version), "echo", shared_memory=False),
        }
        try:
            results: dict[tuple[int, str], list[float]] = {}
            for round_no in range(1, args.rounds + 1):
                for size in sizes:
                    x = np.arange(size, dtype=np.float32)
                    calls = max(20, min(MAX_CALLS, BYTES_PER_ROUND // max(1, x.nbytes)))
                    line = []
                    for mode, servable in servables.items():
                        us = per_call_us(servable, x, calls)
                        results.setdefault((size, mode), []).append(us)
                        line.append(f"{mode} {us:9.1f} us")
                    print(f"round {round_no} {x.nbytes:>10,} B x {calls:>5}: " + ", ".join(line))
        finally:
            for servable in servables.values():
                servable.close()
    print("\nmedians, microseconds per call:")
    print(f"{'input bytes':>12} {'thread':>10} {'process':>10} {'pickle':>10} {'overhead':>10}")
    for size in sizes:
        thread, process, pickled = (
            statistics.median(results[(size, mode)])
            for mode in ("thread", "process", "process-pickle")
        )
        print(
            f"{size * 4:>12,} {thread:>10.1f} {process:>10.1f} {pickled:>10.1f} "
            f"{process - thread:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
