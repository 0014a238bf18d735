"""Sharded lookups: an embedding table split 1, 2 and 3 ways behind the `sharded` front, and the
whole table served directly as the ceiling, side by side in one run.

Writes an embedding table with servo's own code (a binary table, `table_file.write_table`:
--rows keys, --dim float32 values each, a fixed --seed) and splits it 1, 2 and 3 ways with
`servo split-table`'s `split` (one way is one shard and a front). Starts, all on loopback
ports:

    whole table   one servo serving the table (`lookup`) as model `emb`
    N shards      a servo per shard (6 for 1 + 2 + 3), each serving its shard as `emb`
    front         one servo serving front1, front2 and front3 (platform `sharded`, from a
                  model config file), each listing its shards' gRPC addresses

Before measuring, each front is asked for a sample of keys (known ones in random order, a few
twice, and unknown ones) and for a few of the load's own requests, and must answer exactly, bit
for bit, what the whole table answers and what was written; or the bench fails.

The load is a separate process: grpc.aio, TFS gRPC Predict, pre-serialized requests (bytes in,
bytes out) of --batch random keys of the table each (64 different ones, in turn), --concurrency
calls in flight (closed loop), a warm-up and then --seconds measured. Rounds alternate the ways
(whole, 1, 2, 3 shards, then again). Per way: requests/s, lookups/s (requests/s x batch), p50 and
p99 latency, and the CPU seconds (user + system, /proc/PID/stat, read at the measured window's
start and end) per 1,000 requests of every servo process of that way, summed: the front and
its shards, or the whole table's server; the front's part and the load client's own CPU are
shown too. Prints each round and the medians, then each sharded way against the whole table.

What it measures is the fan-out's cost, not a speed-up: every process here shares this machine's
cores (the load client included), so on a machine with few cores more shards cannot answer
faster; each request to a front costs its decoding and hashing of the keys, one gRPC call per
shard holding keys (serialize, loopback, the shard's own decoding, hashing and lookup, the
answer back) and putting the rows back in order, where the whole table does one lookup. Shards
pay off when they run on machines of their own, or when the table does not fit on one.
Every process it starts is stopped by its PID, on errors and Ctrl-C too.

    python bench/sharded.py [--seconds 5] [--rounds 3] [--batch 256] [--concurrency 8]
                            [--rows 100000] [--dim 32] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc_predict import PREDICT, WARM_UP
from rest_predict import REPO, free_port
from servo_process import Servo

TABLE = "emb"  # the table's model name, on the whole table's server and on every shard's
VERSION = 1
SHARD_COUNTS = (1, 2, 3)
DISTINCT_REQUESTS = 64  # the load sends these in turn
SAMPLE_KEYS = 1000  # known keys in the check's sample (and a few twice, and unknown ones)
LOAD_CHECKS = 3  # how many of the load's own requests each way is checked with


@dataclass
class Way:
    """One contender: the model asked, the server that is asked, and the processes whose CPU
    is its cost (the front's first)."""

    name: str
    model: str
    target: str
    pids: list[int]
    results: list[dict[str, float]] = field(default_factory=list)


# -- the table and its requests -------------------------------------------------------------


def make_table(directory: Path, rows: int, dim: int, seed: int) -> tuple[list[bytes], Any]:
    """Writes the binary table; its keys and values (row i is key i's)."""
    import numpy as np

    from servo.platforms.table_file import write_table

    keys = [f"item:{i:07d}".encode() for i in range(rows)]
    values = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    write_table(str(directory), "embeddings", keys, values)
    return keys, values


def request_bytes(model: str, keys: Sequence[bytes]) -> bytes:
    import numpy as np

    from servo.dtypes import DataType
    from servo.protos import predict_pb2
    from servo.tensor_codec import from_ndarray

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    from_ndarray(np.array(keys, dtype=object), DataType.DT_STRING, into=request.inputs["keys"])
    return request.SerializeToString()


def write_bodies(path: Path, bodies: Sequence[bytes]) -> None:
    with path.open("wb") as f:
        for body in bodies:
            f.write(struct.pack("<I", len(body)) + body)


def read_bodies(path: Path) -> list[bytes]:
    data, bodies, at = path.read_bytes(), [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        bodies.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return bodies


def ask(target: str, body: bytes) -> Any:
    """The `values` a server answers to one serialized PredictRequest."""
    import grpc

    from servo.protos import predict_pb2
    from servo.tensor_codec import to_ndarray

    with grpc.insecure_channel(target) as channel:
        answer = channel.unary_unary(PREDICT)(body, timeout=30)
    outputs = predict_pb2.PredictResponse.FromString(answer).outputs
    if set(outputs) != {"values"}:
        raise AssertionError(f"{target} answers outputs {sorted(outputs)}, not values")
    return to_ndarray(outputs["values"])


def check_answers(
    ways: Sequence[Way],
    keys: list[bytes],
    values: Any,
    batches: Sequence[Any],
    seed: int,
) -> None:
    """Every way answers a sample of keys, and the first few requests of the load, exactly as
    the whole table (ways[0]) does and as the table was written (unknown keys: rows of 0.0);
    raises AssertionError naming the first that does not."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    known = rng.choice(len(keys), SAMPLE_KEYS, replace=False)
    sample = [keys[i] for i in known.tolist()]
    sample += sample[:3] + [f"missing:{i}".encode() for i in range(8)]
    expected = np.concatenate([values[known], values[known[:3]], np.zeros((8, values.shape[1]))])
    order = rng.permutation(len(sample))
    sample = [sample[i] for i in order.tolist()]
    expected = expected.astype(np.float32)[order]
    questions = [("the sample", sample, expected)] + [
        (f"load request {j}", [keys[i] for i in batch.tolist()], values[batch])
        for j, batch in enumerate(batches[:LOAD_CHECKS])
    ]
    for what, asked, wanted in questions:
        whole = ask(ways[0].target, request_bytes(ways[0].model, asked))
        for way in ways:
            got = ask(way.target, request_bytes(way.model, asked))
            for other, name in ((wanted, "the table as written"), (whole, "the whole table")):
                if got.dtype != np.float32 or not np.array_equal(got, other):
                    raise AssertionError(
                        f"{way.name} ({way.model}) answers {what} ({len(asked)} keys) "
                        f"otherwise than {name}"
                    )
    print(
        f"checked: {', '.join(w.name for w in ways)} answer {len(sample)} sample keys "
        f"({SAMPLE_KEYS} known, 3 twice, 8 unknown) and {LOAD_CHECKS} of the load's requests "
        "exactly as the whole table does",
        flush=True,
    )


# -- the load (a process of its own) ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    target: str, seconds: float, concurrency: int, bodies: list[bytes], pids: list[int]
) -> dict[str, Any]:
    """Closed loop: `concurrency` calls in flight, each the next of `bodies`; the servers' CPU
    (`pids`) and the client's own over the measured window."""
    import grpc

    latencies: list[float] = []
    errors = 0
    turn = itertools.count()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT)  # bytes in, bytes out: no client-side protobuf
        for i in range(WARM_UP):
            await call(bodies[i % len(bodies)], timeout=10)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                body = bodies[next(turn) % len(bodies)]
                started = time.perf_counter()
                try:
                    await call(body, timeout=10)
                    latencies.append(time.perf_counter() - started)
                except grpc.RpcError:
                    errors += 1

        cpu_before = [cpu_seconds(pid) for pid in pids]
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        client = time.process_time() - client_before
        cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "errors": float(errors),
        "requests": float(len(latencies)),
        "cpu": cpu,
        "client_cpu": client,
    }


def run_load(
    way: Way, bodies: Path, seconds: int, concurrency: int, batch: int
) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            way.target,
            str(bodies),
            "--pids",
            ",".join(map(str, way.pids)),
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=seconds + 120,
    ).stdout
    raw = json.loads(out.strip().splitlines()[-1])
    if raw["errors"]:
        raise RuntimeError(f"{way.name}: {raw['errors']:.0f} requests failed")
    per_1k = 1000 / raw["requests"]
    return {
        "rps": raw["rps"],
        "lookups": raw["rps"] * batch,
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "errors": raw["errors"],
        "cpu": sum(raw["cpu"]) * per_1k,
        "front_cpu": raw["cpu"][0] * per_1k,
        "client_cpu": raw["client_cpu"] * per_1k,
    }


# -- printing ------------------------------------------------------------------------------


def line(name: str, r: dict[str, float], sharded: bool) -> str:
    front = f" (front {r['front_cpu']:.3f})" if sharded else " " * 14
    return (
        f"{name:12s} {r['rps']:7.0f} req/s {r['lookups']:9.0f} lookups/s  "
        f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
        f"servo cpu {r['cpu']:.3f} s/1k req{front}  client {r['client_cpu']:.3f}"
    )


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="keys per request")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--rows", type=int, default=100_000, help="the table's keys")
    parser.add_argument("--dim", type=int, default=32, help="floats per key")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)  # internal: TARGET BODIES
    parser.add_argument("--pids", help=argparse.SUPPRESS)  # internal: the way's servo PIDs
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.load:
        target, bodies = args.load
        pids = [int(p) for p in args.pids.split(",")]
        result = load(target, args.seconds, args.concurrency, read_bodies(Path(bodies)), pids)
        print(json.dumps(asyncio.run(result)))
        return 0
    if args.batch > args.rows:
        parser.error("--batch must not exceed --rows")
    # This checkout's servo, whatever the interpreter has installed; and a SIGTERM unwinds as
    # Ctrl-C does, stopping every server.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="servo-bench-sharded-") as tmp:
            return bench(Path(tmp), args)
    except KeyboardInterrupt:
        print("interrupted: every process it started is stopped", file=sys.stderr)
        return 130


def bench(workdir: Path, args: argparse.Namespace) -> int:
    import numpy as np

    from servo.cli.split_table import split

    table_dir = workdir / "table" / TABLE / str(VERSION)
    keys, values = make_table(table_dir, args.rows, args.dim, args.seed)
    ports = {n: [free_port() for _ in range(n)] for n in SHARD_COUNTS}
    for n in SHARD_COUNTS:
        front = [f"127.0.0.1:{port}" for port in ports[n]]
        split(str(table_dir), n, str(workdir / f"split{n}"), front=front, model=TABLE)
    fronts = "".join(
        f'  config {{ name: "front{n}" base_path: "{workdir / f"split{n}" / "front"}" '
        'model_platform: "sharded" }\n'
        for n in SHARD_COUNTS
    )
    config = workdir / "front.config"
    config.write_text(f"model_config_list {{\n{fronts}}}\n")
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(args.rows, args.batch, replace=False) for _ in range(DISTINCT_REQUESTS)]
    logs = workdir / "logs"
    logs.mkdir()

    with ExitStack() as stack:
        started = time.monotonic()
        shards: dict[int, list[Servo]] = {}
        for n in SHARD_COUNTS:
            shards[n] = [
                stack.enter_context(
                    Servo(
                        [
                            f"--model_name={TABLE}",
                            f"--model_base_path={workdir / f'split{n}' / f'shard-{i}'}",
                        ],
                        log=logs / f"shard{n}-{i}.log",
                        grpc_port=port,
                    )
                )
                for i, port in enumerate(ports[n])
            ]
        whole = stack.enter_context(
            Servo(
                [f"--model_name={TABLE}", f"--model_base_path={table_dir.parent}"],
                log=logs / "whole.log",
            )
        )
        front = stack.enter_context(
            Servo([f"--model_config_file={config}"], log=logs / "front.log")
        )
        for servo in [whole, *itertools.chain(*shards.values())]:
            servo.wait_state(TABLE, VERSION, "AVAILABLE")
        for n in SHARD_COUNTS:
            front.wait_state(f"front{n}", VERSION, "AVAILABLE")
        print(
            f"{1 + sum(SHARD_COUNTS) + 1} servo processes up in "
            f"{time.monotonic() - started:.1f} s: the whole table, "
            f"{sum(SHARD_COUNTS)} shards, one front serving front1..front{max(SHARD_COUNTS)}",
            flush=True,
        )
        ways = [Way("whole table", TABLE, whole.grpc_target, [whole.pid])] + [
            Way(
                f"{n} shard{'s' if n > 1 else ''}",
                f"front{n}",
                front.grpc_target,
                [front.pid, *(s.pid for s in shards[n])],
            )
            for n in SHARD_COUNTS
        ]
        check_answers(ways, keys, values, batches, args.seed)
        bodies = {}
        for way in ways:
            bodies[way.name] = workdir / f"{way.model}.bodies"
            write_bodies(
                bodies[way.name],
                [request_bytes(way.model, [keys[i] for i in b.tolist()]) for b in batches],
            )
        for round_ in range(args.rounds):
            for way in ways:
                result = run_load(way, bodies[way.name], args.seconds, args.concurrency, args.batch)
                way.results.append(result)
                print(
                    f"round {round_ + 1} " + line(way.name, result, way.model != TABLE), flush=True
                )
    print(
        f"\nmedian of {args.rounds} rounds, {args.seconds} s each: {args.rows} keys x "
        f"{args.dim} float32, {args.batch} keys per request, {args.concurrency} calls in "
        f"flight, {os.cpu_count()} CPUs shared by every process (servo cpu: the way's servo "
        "processes, front + shards, per 1,000 requests; client: the load process's):"
    )
    best = {way.name: medians(way.results) for way in ways}
    for way in ways:
        print("  " + line(way.name, best[way.name], way.model != TABLE))
    ceiling = best[ways[0].name]
    print("\nagainst the whole table (the fan-out's cost, on the same cores):")
    for way in ways[1:]:
        r = best[way.name]
        print(
            f"  {way.name:10s} {r['rps'] / ceiling['rps']:.2f}x its requests/s, "
            f"{r['cpu'] / ceiling['cpu']:.2f}x its servo CPU per request "
            f"(the front alone {r['front_cpu'] / ceiling['cpu']:.2f}x), "
            f"p50 {r['p50_ms'] / ceiling['p50_ms']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
