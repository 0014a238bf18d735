"""`servo split-table`: shards that hold exactly their keys, together the whole table, written
whole or not at all, and a front that lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servo.cli.split_table import split
from servo.platforms import lookup
from servo.platforms.options import PlatformOptions
from servo.platforms.sharding import shard_of
from servo.platforms.table_file import write_table


def _embeddings(path: Path, count: int = 200) -> Path:
    version = path / "emb" / "4"
    version.mkdir(parents=True)
    rows = "".join(f"key{i}\t{i} {-i}\n" for i in range(count))
    (version / "embeddings.tsv").write_text(rows)
    (version / "lookup.json").write_text(json.dumps({"default_value": [0.5, 0.5]}))
    return version


def _load(path: Path) -> lookup.VocabTable | lookup.EmbeddingTable:
    table = lookup.load(str(path), PlatformOptions())
    assert isinstance(table, lookup.VocabTable | lookup.EmbeddingTable)
    return table


def test_the_shards_hold_their_keys_and_together_the_whole_table(tmp_path: Path) -> None:
    whole = _load(_embeddings(tmp_path))
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    written = split(str(tmp_path / "emb" / "4"), 3, str(tmp_path / "out"), front=addresses)
    assert written[-1] == str(tmp_path / "out" / "front" / "4")
    front = json.loads((tmp_path / "out" / "front" / "4" / "sharded.json").read_text())
    assert front == {"model": "emb", "shards": addresses}
    all_keys, all_values = whole.contents()
    expected = dict(zip(all_keys, all_values.tolist(), strict=True))
    seen: dict[bytes, list[float]] = {}
    for index in range(3):
        shard = _load(tmp_path / "out" / f"shard-{index}" / "4")
        assert shard.shard is not None and (shard.shard.index, shard.shard.count) == (index, 3)
        shard_keys, shard_values = shard.contents()
        assert set(shard_of(shard_keys, 3).tolist()) == {index}
        seen.update(zip(shard_keys, shard_values.tolist(), strict=True))
        # The table's settings go with each shard.
        missing = shard.run(shard.signatures["shard"], {"keys": np.array([b"nope"], object)})
        assert missing["values"].tolist() == [[0.5, 0.5]]
    assert seen == expected


def test_a_vocabulary_keeps_its_ids_in_its_shards(tmp_path: Path) -> None:
    version = tmp_path / "vocab" / "1"
    version.mkdir(parents=True)
    words = [f"w{i}" for i in range(50)]
    (version / "vocab.txt").write_text("".join(f"{w}\n" for w in words))
    split(str(version), 2, str(tmp_path / "out"))
    for index in range(2):
        shard = _load(tmp_path / "out" / f"shard-{index}" / "1")
        mine = [w for w in words if shard_of([w.encode()], 2)[0] == index]
        asked = np.array([w.encode() for w in mine], dtype=object)
        ids = shard.run(shard.signatures["serving_default"], {"keys": asked})["ids"]
        assert ids.tolist() == [words.index(w) for w in mine]


def test_a_version_is_never_overwritten_and_a_failed_split_leaves_nothing(
    tmp_path: Path,
) -> None:
    table = _embeddings(tmp_path)
    split(str(table), 2, str(tmp_path / "out"))
    before = sorted(p.name for p in (tmp_path / "out" / "shard-0").iterdir())
    with pytest.raises(ValueError, match="exists: a version is never overwritten"):
        split(str(table), 2, str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out" / "shard-0").iterdir()) == before
    # More shards than keys: refused before anything of that shard count is written.
    small = tmp_path / "small" / "1"
    write_table(str(small), "vocab", [b"a"], np.array([0]))
    with pytest.raises(ValueError, match="would hold no key"):
        split(str(small), 5, str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_the_command_line(tmp_path: Path) -> None:
    table = _embeddings(tmp_path)
    out = tmp_path / "out"
    ok = subprocess.run(
        [sys.executable, "-m", "servo", "split-table", f"--table={table}", "--shards=2",
         f"--out={out}", "--version=9", "--front=127.0.0.1:1,127.0.0.1:2", "--model=emb"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (out / "shard-1" / "9" / "table.json").exists()
    assert "the front of 2 shards" in ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "servo", "split-table", f"--table={table}", "--shards=3",
         f"--out={out}", "--front=127.0.0.1:1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--front lists 1 addresses for 3 shards" in bad.stderr
