"""servo's binary table format: written, memory-mapped back, looked up, and refused when
its files do not fit together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servo.core.status import Code, ServoError
from servo.platforms import table_file
from servo.platforms.sharding import fingerprints
from servo.platforms.table_file import open_table, write_table


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.binary(max_size=12), min_size=1, max_size=40, unique=True),
    strangers=st.lists(st.binary(max_size=12), max_size=10),
)
def test_round_trip_answers_every_key_as_a_dict_does(
    tmp_path_factory: pytest.TempPathFactory, keys: list[bytes], strangers: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("table")
    values = np.arange(len(keys) * 3, dtype=np.float32).reshape(len(keys), 3)
    write_table(str(path), "embeddings", keys, values)
    table = open_table(str(path))
    try:
        asked = keys + [s for s in strangers if s not in keys]
        rows = table.rows(asked)
        for key, row in zip(asked, rows.tolist(), strict=True):
            if key in keys:
                assert table.key(row) == key
                assert table.values[row].tolist() == values[keys.index(key)].tolist()
            else:
                assert row == -1
        assert sorted(table.all_keys()) == sorted(keys)
    finally:
        table.close()


def test_keys_with_equal_hashes_are_told_apart_by_their_bytes(tmp_path: Path) -> None:
    # No two keys are known to share a Fingerprint64, so the file says they do: rows 0 and 1
    # both claim b"b"'s hash; looking up b"b" must walk past b"a" to its own row.
    keys = [b"a", b"b"]
    h = int(fingerprints([b"b"])[0])
    np.save(tmp_path / table_file.HASHES_FILE, np.array([h, h], dtype=np.uint64))
    np.save(tmp_path / table_file.OFFSETS_FILE, np.array([0, 1, 2], dtype=np.int64))
    (tmp_path / table_file.KEYS_FILE).write_bytes(b"".join(keys))
    np.save(tmp_path / table_file.VALUES_FILE, np.array([10, 20], dtype=np.int64))
    header = {
        "format": "servo-table",
        "format_version": 1,
        "kind": "vocab",
        "rows": 2,
        "hash": "farmhash-fingerprint64",
    }
    (tmp_path / table_file.HEADER_FILE).write_text(json.dumps(header))
    table = open_table(str(tmp_path))
    assert table.rows([b"b", b"a", b"c"]).tolist() == [1, -1, -1]  # b"a" is under another hash


def test_a_key_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appears twice"):
        write_table(str(tmp_path), "vocab", [b"a", b"b", b"a"], np.array([0, 1, 2]))
    assert not (tmp_path / table_file.HEADER_FILE).exists()


def test_the_empty_key_alone(tmp_path: Path) -> None:
    write_table(str(tmp_path), "vocab", [b""], np.array([7]))
    table = open_table(str(tmp_path))
    assert table.rows([b"", b"x"]).tolist() == [0, -1]


def _written(path: Path) -> Path:
    keys = [f"k{i}".encode() for i in range(10)]
    write_table(str(path), "embeddings", keys, np.ones((10, 2), dtype=np.float32))
    return path


@pytest.mark.parametrize(
    ("damage", "code", "words"),
    [
        (lambda p: (p / table_file.HEADER_FILE).unlink(), Code.NOT_FOUND, "cannot read"),
        (lambda p: (p / table_file.HEADER_FILE).write_text("{"), Code.DATA_LOSS, "not a JSON"),
        (
            lambda p: (p / table_file.HEADER_FILE).write_text(
                json.dumps({"format": "servo-table", "format_version": 9})
            ),
            Code.DATA_LOSS,
            "format_version 9",
        ),
        (lambda p: (p / table_file.VALUES_FILE).unlink(), Code.NOT_FOUND, "missing"),
        (
            lambda p: np.save(p / table_file.VALUES_FILE, np.ones((9, 2), dtype=np.float32)),
            Code.DATA_LOSS,
            "the table needs float32 [10",
        ),
        (
            lambda p: np.save(
                p / table_file.HASHES_FILE, np.arange(10, dtype=np.uint64)[::-1].copy()
            ),
            Code.DATA_LOSS,
            "do not ascend",
        ),
        (
            lambda p: (p / table_file.KEYS_FILE).write_bytes(b"short"),
            Code.DATA_LOSS,
            "must run from 0",
        ),
        (
            lambda p: (p / table_file.HASHES_FILE).write_bytes(b"not numpy"),
            Code.DATA_LOSS,
            "not a .npy file",
        ),
    ],
)
def test_files_that_do_not_fit_together_are_refused(
    tmp_path: Path, damage, code: Code, words: str
) -> None:
    path = _written(tmp_path)
    damage(path)
    with pytest.raises(ServoError) as caught:
        open_table(str(path))
    assert caught.value.code == code
    assert words in caught.value.message
    assert str(path) in caught.value.message
