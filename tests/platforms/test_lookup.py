"""The lookup platform: vocabulary and embedding tables, their file formats and settings. The
contract every platform keeps is checked in test_conformance.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms import lookup
from servo.platforms.options import PlatformOptions


def keys(*values: str) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() for v in values]
    return array


def run(servable, inputs, signature="serving_default"):
    return servable.run(servable.signatures[signature], inputs)


def test_vocab_maps_keys_to_lines_and_unknown_keys_to_the_default(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("the\ncat\nsat\nčaj\n", encoding="utf-8")
    table = lookup.load(str(tmp_path), PlatformOptions())
    assert len(table) == 4
    sig = table.signatures["serving_default"]
    assert sig.inputs["keys"].dtype == DataType.DT_STRING
    assert sig.outputs["ids"].dtype == DataType.DT_INT64
    out = run(table, {"keys": keys("cat", "dog", "čaj")})
    assert out["ids"].tolist() == [1, -1, 3]
    # Any shape in, the same shape out.
    grid = keys("the", "sat", "x", "cat").reshape(2, 2)
    assert run(table, {"keys": grid})["ids"].tolist() == [[0, 2], [-1, 1]]
    back = run(table, {"ids": np.array([3, 0, 9, -1])}, "ids_to_keys")
    assert back["keys"].tolist() == ["čaj".encode(), b"the", b"", b""]


def test_vocab_lines_end_at_newlines_only(tmp_path: Path) -> None:
    # \x85 and \u2028 are line breaks to str.splitlines, but characters of a key here
    (tmp_path / "vocab.txt").write_text("a\nb\x85c\nd\u2028e\r\nf\n", encoding="utf-8")
    table = lookup.load(str(tmp_path), PlatformOptions())
    out = run(table, {"keys": keys("a", "b\x85c", "d\u2028e", "f", "b")})
    assert out["ids"].tolist() == [0, 1, 2, 3, -1]


def test_vocab_default_from_settings(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "lookup.json").write_text(json.dumps({"default_value": 99, "default_key": "<unk>"}))
    table = lookup.load(str(tmp_path), PlatformOptions())
    assert run(table, {"keys": keys("zzz")})["ids"].tolist() == [99]
    assert run(table, {"ids": np.array([5])}, "ids_to_keys")["keys"].tolist() == [b"<unk>"]


def test_embeddings(tmp_path: Path) -> None:
    (tmp_path / "embeddings.tsv").write_text("cat\t1 2 3\ndog\t4\t5\t6\n\n")
    (tmp_path / "lookup.json").write_text(json.dumps({"default_value": [0.5, 0.5, 0.5]}))
    table = lookup.load(str(tmp_path), PlatformOptions())
    # keys of any shape: the metadata says unknown rank, as the answer has keys' shape + [3]
    assert table.signatures["serving_default"].inputs["keys"].shape is None
    assert table.signatures["serving_default"].outputs["values"].shape is None
    out = run(table, {"keys": keys("dog", "emu", "cat")})["values"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[4, 5, 6], [0.5, 0.5, 0.5], [1, 2, 3]])
    assert run(table, {"keys": keys("cat", "dog").reshape(2, 1)})["values"].shape == (2, 1, 3)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"vocab.txt": "a\nb\na\n"}, "key 'a' on line 3 already appears on line 1"),
        ({"embeddings.tsv": "a\t1 2\nb\t3\n"}, "line 2 has 1 values; earlier rows have 2"),
        ({"embeddings.tsv": "a 1 2\n"}, "line 1 has no tab"),
        ({"embeddings.tsv": "a\t1 x\n"}, "line 1: could not convert"),
        (
            {"embeddings.tsv": "a\t1\n", "lookup.json": '{"default_value": [1, 2]}'},
            "default_value must be a number or a list of 1 numbers",
        ),
        ({"vocab.txt": "a\n", "lookup.json": "{not json"}, "cannot read settings"),
        ({"vocab.txt": "a\n", "embeddings.tsv": "a\t1\n"}, "keep one"),
    ],
)
def test_bad_tables_fail_with_a_clear_error(tmp_path: Path, files: dict, message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ServoError) as err:
        lookup.load(str(tmp_path), PlatformOptions())
    assert message in err.value.message
    assert err.value.code in (Code.INVALID_ARGUMENT, Code.NOT_FOUND)
