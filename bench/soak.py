"""Soak: version swaps under steady REST and gRPC load, and a slow load beside a busy model.

Starts one servo server on loopback ports serving two `python` models whose answers are
their version number (`m`, the one that swaps, and `slow`, whose loads can be made slow), and
runs REST and gRPC clients (threads, each with one connection, one request at a time) against
`m` for the whole run. Phases:

1. steady state: load only, `--steady-seconds`;
2. `--swaps` version swaps of `m`: version n+1 is written beside the base path and renamed
   into it; odd swaps remove version n's directory at once, even ones after n+1 is AVAILABLE.
   Each swap waits, through the status API, for n+1 AVAILABLE and n END (a swap window runs
   from the rename to that END);
3. slow load beside a busy model: load only for `--slow-load-seconds` (before), then a
   version of `slow` whose load does `--slow-load-seconds` of pure-Python work (it holds the
   interpreter lock, as a real model's Python preprocessing does) is put in place; "during"
   runs from its LOADING to its AVAILABLE, while `m` stays under load.

Checks: every request succeeds, and every answer comes from a version that could be served
when the request began: one whose directory was in place then, or, once removed, one kept
serving by the availability-preserving policy until its successor was AVAILABLE (the set of
such versions is tracked over time from the swaps' own timestamps). Prints requests sent and
failed, wrong versions, and p50/p99 for steady state, swap windows, and the busy model before
and during the slow load; exits 1 on any failed request or wrong version.

Bounded: `--max-seconds` for the whole run (a run that exceeds it fails), each client stops
after `--max-requests`; every process started (one server) is stopped by its PID.

    python bench/soak.py [--quick] [--swaps 50] [--rest-clients 4] [--grpc-clients 4]
                         [--steady-seconds 10] [--slow-load-seconds 3] [--max-seconds 900]
                         [--server-flag=--python_model_isolation=process ...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servo_process import REPO, Servo

sys.path.insert(0, str(REPO / "src"))

import grpc

from servo.protos import predict_pb2

PREDICT = "/tensorflow.serving.PredictionService/Predict"
REST_BODY = json.dumps({"instances": [1.0, 2.0]}).encode()

# The model of both `m` and `slow`: its answer is its version (the directory's name); a file
# `load_seconds` in the version directory makes its load do that much pure-Python work.
MODEL_PY = """
import os
import time

import numpy as np


class Model:
    def load(self, path):
        self.version = float(os.path.basename(os.path.normpath(path)))
        spin = os.path.join(path, "load_seconds")
        if os.path.exists(spin):
            with open(spin) as f:
                end = time.perf_counter() + float(f.read())
            n = 0
            while time.perf_counter() < end:  # pure Python: holds the interpreter lock
                n += 1

    def predict(self, inputs, signature_name):
        x = inputs["inputs"]
        return {"outputs": np.full(x.shape, self.version, dtype=np.float32)}
"""


@dataclass
class Record:
    began: float
    ended: float
    protocol: str
    version: float | None  # the version the answer came from; None when it failed
    error: str = ""


@dataclass
class Versions:
    """When each version of `m` was placed (its directory renamed in), removed, and seen
    AVAILABLE: the versions that may serve a request that began at time t."""

    placed: dict[int, float] = field(default_factory=dict)
    removed: dict[int, float] = field(default_factory=dict)
    available: dict[int, float] = field(default_factory=dict)

    def servable_at(self, version: int, t: float) -> bool:
        placed = self.placed.get(version)
        if placed is None or t < placed:
            return False
        removed = self.removed.get(version, float("inf"))
        successor = self.available.get(version + 1, float("inf"))
        return t < max(removed, successor)


# -- clients ----------------------------------------------------------------------------------


class Load:
    """Client threads, each sending one request at a time until stopped or `max_requests`."""

    def __init__(self, servo: Servo, rest: int, grpc_: int, max_requests: int) -> None:
        self.stop = threading.Event()
        self.records: list[list[Record]] = []
        self.max_requests = max_requests
        self.threads = [
            threading.Thread(target=self._run, args=(self._rest_client(servo),), daemon=True)
            for _ in range(rest)
        ] + [
            threading.Thread(target=self._run, args=(self._grpc_client(servo),), daemon=True)
            for _ in range(grpc_)
        ]

    def _run(self, send: Callable[[], Record]) -> None:
        mine: list[Record] = []
        self.records.append(mine)
        while not self.stop.is_set() and len(mine) < self.max_requests:
            mine.append(send())

    def _rest_client(self, servo: Servo) -> Callable[[], Record]:
        connection = http.client.HTTPConnection("127.0.0.1", servo.rest_port, timeout=30)
        headers = {"Content-Type": "application/json"}

        def send() -> Record:
            nonlocal connection
            began = time.monotonic()
            try:
                connection.request("POST", "/v1/models/m:predict", REST_BODY, headers)
                answer = connection.getresponse()
                body = answer.read()
                ended = time.monotonic()
                if answer.status != 200:
                    return Record(began, ended, "REST", None, f"{answer.status} {body[:200]!r}")
                values = json.loads(body)["predictions"]
                if len(set(values)) != 1:
                    return Record(began, ended, "REST", None, f"mixed answer {values}")
                return Record(began, ended, "REST", float(values[0]))
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", servo.rest_port, timeout=30)
                return Record(began, time.monotonic(), "REST", None, repr(exc))

        return send

    def _grpc_client(self, servo: Servo) -> Callable[[], Record]:
        channel = grpc.insecure_channel(servo.grpc_target)
        predict = channel.unary_unary(
            PREDICT,
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        tensor = request.inputs["inputs"]
        tensor.dtype = 1  # DT_FLOAT
        tensor.tensor_shape.dim.add().size = 2
        tensor.float_val.extend([1.0, 2.0])

        def send() -> Record:
            began = time.monotonic()
            try:
                response = predict(request, timeout=30)
            except grpc.RpcError as exc:
                return Record(began, time.monotonic(), "gRPC", None, f"{exc.code()} {exc}")
            ended = time.monotonic()
            values = set(response.outputs["outputs"].float_val)
            version = response.model_spec.version.value
            if len(values) != 1 or float(version) not in values:
                return Record(began, ended, "gRPC", None, f"answer {values}, spec {version}")
            return Record(began, ended, "gRPC", float(version))

        return send

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> list[Record]:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        return [r for mine in self.records for r in mine]


# -- figures ----------------------------------------------------------------------------------


def percentiles(records: Sequence[Record]) -> str:
    ms = sorted((r.ended - r.began) * 1000 for r in records)
    if not ms:
        return "no requests"
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{len(ms):7d} requests  p50 {statistics.median(ms):7.2f} ms  p99 {p99:7.2f} ms"


def within(records: Iterable[Record], windows: Sequence[tuple[float, float]]) -> list[Record]:
    return [r for r in records if any(start <= r.began < end for start, end in windows)]


def report(name: str, records: Sequence[Record]) -> None:
    for protocol in ("REST", "gRPC"):
        mine = [r for r in records if r.protocol == protocol]
        print(f"  {name:28s} {protocol:4s} {percentiles(mine)}")


# -- the run ----------------------------------------------------------------------------------


def write_version(base: Path, version: int, load_seconds: float = 0.0) -> Path:
    """Writes a version beside `base` and renames it in (a version appears whole)."""
    staging = Path(tempfile.mkdtemp(dir=base.parent, prefix=f".{base.name}-{version}-"))
    (staging / "model.py").write_text(MODEL_PY)
    if load_seconds:
        (staging / "load_seconds").write_text(str(load_seconds))
    target = base / str(version)
    os.rename(staging, target)
    return target


def remove_version(base: Path, version: int) -> None:
    """Takes a version's directory out at once (one rename), then deletes it."""
    trash = base.parent / f".{base.name}-{version}-removed"
    os.rename(base / str(version), trash)
    shutil.rmtree(trash)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 swaps, 3 s phases")
    parser.add_argument("--swaps", type=int, default=50)
    parser.add_argument("--rest-clients", type=int, default=4)
    parser.add_argument("--grpc-clients", type=int, default=4)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--slow-load-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per client")
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        help="an extra servo flag, e.g. --server-flag=--python_model_isolation=process",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.swaps, args.steady_seconds, args.slow_load_seconds = 6, 3.0, 2.0
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="servo-soak-") as tmp:
        work = Path(tmp)
        m, slow = work / "m", work / "slow"
        m.mkdir()
        slow.mkdir()
        write_version(m, 1)
        write_version(slow, 1)
        config = work / "models.config"
        config.write_text(
            "model_config_list {\n"
            f'  config {{ name: "m" base_path: "{m}" model_platform: "python" }}\n'
            f'  config {{ name: "slow" base_path: "{slow}" model_platform: "python" }}\n'
            "}\n"
        )
        versions = Versions(placed={1: 0.0})
        print(f"soak: server log in {work / 'servo.log'} (removed at the end)", flush=True)
        with Servo(
            [
                f"--model_config_file={config}",
                "--file_system_poll_wait_seconds=1",
                *args.server_flag,
            ],
            log=work / "servo.log",
        ) as servo:
            load = Load(servo, args.rest_clients, args.grpc_clients, args.max_requests)
            load.start()
            try:
                steady, swaps, before, during = run_phases(servo, args, versions, m, slow)
            finally:
                records = load.finish()
                log_tail = servo.log.read_text().splitlines()[-20:]
            code = servo.stop()

    elapsed = time.monotonic() - started
    failed = [r for r in records if r.version is None]
    wrong = [
        r
        for r in records
        if r.version is not None and not versions.servable_at(int(r.version), r.began)
    ]
    print(
        f"\nsoak: {elapsed:.0f} s, {len(records)} requests, {args.swaps} swaps, "
        f"{len(failed)} failed, {len(wrong)} from a version not servable when they began; "
        f"server exit code {code}"
    )
    answered = sorted({int(r.version) for r in records if r.version is not None})
    if answered:
        print(f"  answers came from {len(answered)} versions of m, {answered[0]}-{answered[-1]}")
    report("steady state", within(records, [steady]))
    report("swap windows", within(records, swaps))
    print("  busy model (m) beside a slow load of another model:")
    report("before the load", within(records, [before]))
    report(f"during the load ({during[1] - during[0]:.1f} s)", within(records, [during]))
    for r in (failed + wrong)[:10]:
        print(f"  {r.protocol} at {r.began - started:.3f} s: version {r.version} {r.error}")
    if failed or wrong:
        print("\n".join(log_tail))
        return 1
    if elapsed > args.max_seconds:
        print(f"soak: over --max-seconds {args.max_seconds:.0f}")
        return 1
    return 0


Window = tuple[float, float]  # (start, end) on time.monotonic()


def run_phases(
    servo: Servo, args: argparse.Namespace, versions: Versions, m: Path, slow: Path
) -> tuple[Window, list[Window], Window, Window]:
    deadline = time.monotonic() + args.max_seconds
    pause = threading.Event()  # never set: waits below are measured periods, not syncs

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"soak: over --max-seconds {args.max_seconds:.0f}")
        return remaining

    start = time.monotonic()
    pause.wait(args.steady_seconds)
    steady = (start, time.monotonic())
    print(f"steady state: {args.steady_seconds:.0f} s", flush=True)

    windows = []
    for swap in range(1, args.swaps + 1):
        old, new = swap, swap + 1
        versions.placed[new] = time.monotonic()
        write_version(m, new)
        if swap % 2 == 1:  # odd: the old directory goes at once
            remove_version(m, old)
            versions.removed[old] = time.monotonic()
        _, versions.available[new] = servo.wait_state("m", new, "AVAILABLE", timeout=left())
        if swap % 2 == 0:  # even: the old directory goes once the new version is AVAILABLE
            remove_version(m, old)
            versions.removed[old] = time.monotonic()
        _, gone = servo.wait_state("m", old, "END", timeout=left())
        windows.append((versions.placed[new], gone))
        print(f"swap {swap}: {old} -> {new} in {gone - versions.placed[new]:.2f} s", flush=True)

    start = time.monotonic()
    pause.wait(args.slow_load_seconds)
    before = (start, time.monotonic())
    write_version(slow, 2, load_seconds=args.slow_load_seconds)
    _, loading = servo.wait_state("slow", 2, "LOADING", "AVAILABLE", timeout=left())
    _, available = servo.wait_state("slow", 2, "AVAILABLE", timeout=left())
    during = (loading, available)
    print(f"slow load: {available - loading:.1f} s", flush=True)
    return steady, windows, before, during


if __name__ == "__main__":
    sys.exit(main())
