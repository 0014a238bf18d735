"""`servo split-table`: splits a lookup table into shards, each a version directory that a servo
of its own serves, and optionally writes the front that joins them.

    servo split-table --table=/models/emb/3 --shards=3 --out=/models/emb-shards \
        [--version=3] [--front=10.0.0.1:8500,10.0.0.2:8500,10.0.0.3:8500] [--model=emb]

reads the table in `--table` (`vocab.txt`, `embeddings.tsv` or a binary table, with its
`lookup.json`) and writes `OUT/shard-<i>/<version>/` for each shard i: a binary table of the
keys that belong to shard i (`servo.platforms.sharding`'s hash), with the table's settings and
`"shard": {"index": i, "count": n}` in its `lookup.json`. With `--front`, also
`OUT/front/<version>/sharded.json` listing those addresses (shard 0 first) and `--model`, the
table's model name on the shard servers (no version pinned: the front asks for each shard's
newest and refuses an answer that mixes versions). The version is `--version`, or the table
directory's name when it is a number. Each version directory is written under a temporary name
and renamed into place when complete, so a server polling OUT never sees half a shard; an
existing version is never overwritten.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from servo.core.status import ServoError
from servo.platforms import lookup
from servo.platforms.options import PlatformOptions
from servo.platforms.sharding import shard_of
from servo.platforms.table_file import write_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servo split-table",
        description="Split a lookup table into shards (binary tables) for the sharded platform.",
    )
    parser.add_argument("--table", required=True, help="the table's version directory")
    parser.add_argument("--shards", required=True, type=int, help="how many shards (>= 1)")
    parser.add_argument("--out", required=True, help="where shard-<i>/ (and front/) go")
    parser.add_argument("--version", type=int, help="the shards' version (default: --table's)")
    parser.add_argument(
        "--front", help="comma-separated shard gRPC addresses, shard 0 first: write front/"
    )
    parser.add_argument(
        "--model", help="the table's model name on the shard servers (default: --table's parent)"
    )
    return parser


def _place(final: str, write: Callable[[str], None]) -> None:
    """Runs `write(tmp)` into a temporary directory beside `final`, then renames it there."""
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(directory: str, name: str, doc: Any) -> None:
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def _write_shard(
    directory: str, kind: str, keys: list[bytes], values: np.ndarray, settings: dict[str, Any]
) -> None:
    write_table(directory, kind, keys, values)
    _write_json(directory, lookup.SETTINGS_FILE, settings)


def split(
    table_dir: str,
    count: int,
    out: str,
    version: int | None = None,
    front: list[str] | None = None,
    model: str | None = None,
) -> list[str]:
    """Writes the shards (and the front) as the module docstring says; returns the version
    directories written."""
    if count < 1:
        raise ValueError("--shards must be at least 1")
    table_dir = os.path.normpath(table_dir)
    if version is None:
        name = os.path.basename(table_dir)
        if not name.isdigit():
            raise ValueError(f"{table_dir} is not a numbered version directory: give --version")
        version = int(name)
    if front is not None and len(front) != count:
        raise ValueError(f"--front lists {len(front)} addresses for {count} shards")
    settings = lookup.read_settings(table_dir)
    if "shard" in settings:
        raise ValueError(f"{table_dir} is already a shard ({settings['shard']})")
    table = lookup.load(table_dir, PlatformOptions())
    assert isinstance(table, lookup.VocabTable | lookup.EmbeddingTable)
    try:
        keys, values = table.contents()
        kind = "vocab" if isinstance(table, lookup.VocabTable) else "embeddings"
        owners = shard_of(keys, count)
        sizes = np.bincount(owners, minlength=count)
        finals = [os.path.join(out, f"shard-{i}", str(version)) for i in range(count)]
        if front is not None:
            finals.append(os.path.join(out, "front", str(version)))
        # Everything that can refuse the split does so before anything is written.
        for final in finals:
            if os.path.exists(final):
                raise ValueError(f"{final} exists: a version is never overwritten")
        if not sizes.all():
            empty = int(np.flatnonzero(sizes == 0)[0])
            raise ValueError(f"shard {empty} of {count} would hold no key: use fewer shards")
        for index in range(count):
            rows = np.flatnonzero(owners == index)
            write = functools.partial(
                _write_shard,
                kind=kind,
                keys=[keys[i] for i in rows.tolist()],
                values=values[rows],
                settings={**settings, "shard": {"index": index, "count": count}},
            )
            _place(finals[index], write)
            print(f"{finals[index]}: {len(rows)} of {len(keys)} keys", file=sys.stderr)
        if front is not None:
            doc = {
                "model": model or os.path.basename(os.path.dirname(table_dir)),
                "shards": front,
            }
            _place(finals[-1], functools.partial(_write_json, name="sharded.json", doc=doc))
            print(f"{finals[-1]}: the front of {count} shards", file=sys.stderr)
        return finals
    finally:
        table.close()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    front = [a.strip() for a in args.front.split(",")] if args.front else None
    try:
        split(args.table, args.shards, args.out, args.version, front, args.model)
    except (ValueError, ServoError) as exc:
        print(f"servo split-table: {exc}", file=sys.stderr)
        return 2
    return 0
