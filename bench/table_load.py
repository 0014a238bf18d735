"""Loading a lookup table: servo's binary format (memory-mapped) against the same table as
`embeddings.tsv` (parsed), and their lookups, in one run.

Writes an embedding table of `--keys` keys ("key<i>") and `--dim` float32 values with a fixed
seed, once as text and once as a binary table, then, in rounds that alternate the two, times
`lookup.load` on each (a fresh load each time; the files stay in the page cache, as for a
server that restarts) and a batch of `--batch` random keys looked up `--lookups` times. Both
answers are checked equal first. Prints per round and the medians, and the files' sizes.

    python bench/table_load.py [--keys 1000000] [--dim 32] [--rounds 3] [--batch 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from servo.platforms import lookup
from servo.platforms.options import PlatformOptions
from servo.platforms.table_file import write_table


def _write(root: Path, keys: int, dim: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(20261202)
    values = rng.standard_normal((keys, dim)).astype(np.float32)
    names = [f"key{i}" for i in range(keys)]
    text, binary = root / "text", root / "binary"
    text.mkdir()
    with open(text / "embeddings.tsv", "w", encoding="utf-8") as f:
        for name, row in zip(names, values, strict=True):
            f.write(f"{name}\t{' '.join(map(repr, row.tolist()))}\n")
    write_table(str(binary), "embeddings", [n.encode() for n in names], values)
    return text, binary


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="servo-table-bench-") as tmp:
        text, binary = _write(Path(tmp), args.keys, args.dim)
        rng = np.random.default_rng(1)
        asked = np.array(
            [f"key{i}".encode() for i in rng.integers(0, args.keys * 1.1, args.batch)],
            dtype=object,
        )
        loads: dict[str, list[float]] = {"text": [], "binary": []}
        runs: dict[str, list[float]] = {"text": [], "binary": []}
        answers: dict[str, np.ndarray] = {}
        for round_no in range(1, args.rounds + 1):
            for way, path in (("text", text), ("binary", binary)):
                start = time.perf_counter()
                table = lookup.load(str(path), PlatformOptions())
                loads[way].append(time.perf_counter() - start)
                signature = table.signatures["serving_default"]
                answers[way] = table.run(signature, {"keys": asked})["values"]
                start = time.perf_counter()
                for _ in range(args.lookups):
                    table.run(signature, {"keys": asked})
                runs[way].append((time.perf_counter() - start) / args.lookups)
                table.close()
                print(
                    f"round {round_no} {way:6s} load {loads[way][-1] * 1000:9.1f} ms  "
                    f"lookup of {args.batch} keys {runs[way][-1] * 1e6:8.1f} us"
                )
            if not np.array_equal(answers["text"], answers["binary"]):
                raise SystemExit("the binary table answers differently from the text table")
        print(f"\n{args.keys:,} keys x {args.dim} float32, medians of {args.rounds} rounds:")
        for way, path in (("text", text), ("binary", binary)):
            load_ms = statistics.median(loads[way]) * 1000
            lookup_us = statistics.median(runs[way]) * 1e6
            print(
                f"  {way:6s} {_size(path) / 2**20:8.1f} MiB on disk  load {load_ms:9.1f} ms  "
                f"lookup of {args.batch} keys {lookup_us:8.1f} us "
                f"({args.batch / lookup_us * 1e6:,.0f} keys/s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
