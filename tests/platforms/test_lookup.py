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


# -- the binary format and shards ------------------------------------------------------------


def _text_and_binary(tmp_path: Path, kind: str) -> tuple[object, object]:
    """The same table as text and as a binary table (written from the text one's contents)."""
    text_dir, binary_dir = tmp_path / "text", tmp_path / "binary"
    text_dir.mkdir()
    if kind == "vocab":
        (text_dir / "vocab.txt").write_text("the\ncat\nsat\nčaj\n\n", encoding="utf-8")
    else:
        (text_dir / "embeddings.tsv").write_text("a\t1 2\nb\t3 4\nčaj\t5 6\n", encoding="utf-8")
    settings = {"default_value": 7 if kind == "vocab" else [9, 9], "default_key": "?"}
    if kind == "embeddings":
        settings.pop("default_key")
    (text_dir / "lookup.json").write_text(json.dumps(settings))
    text = lookup.load(str(text_dir), PlatformOptions())
    assert isinstance(text, lookup.VocabTable | lookup.EmbeddingTable)
    from servo.platforms.table_file import write_table

    write_table(str(binary_dir), kind, *text.contents())
    (binary_dir / "lookup.json").write_text(json.dumps(settings))
    return text, lookup.load(str(binary_dir), PlatformOptions())


@pytest.mark.parametrize("kind", ["vocab", "embeddings"])
def test_a_binary_table_answers_as_its_text_table(tmp_path: Path, kind: str) -> None:
    text, binary = _text_and_binary(tmp_path, kind)
    assert text.signatures == binary.signatures
    asked = keys("čaj", "nope", "the", "", "a", "b").reshape(2, 3)
    expected = run(text, {"keys": asked})
    got = run(binary, {"keys": asked})
    assert expected.keys() == got.keys()
    for alias in expected:
        assert got[alias].tolist() == expected[alias].tolist()
        assert got[alias].dtype == expected[alias].dtype
    if kind == "vocab":
        ids = np.array([[3, 0], [42, -1], [4, 1]])
        back = run(binary, {"ids": ids}, "ids_to_keys")
        assert back["keys"].tolist() == run(text, {"ids": ids}, "ids_to_keys")["keys"].tolist()


def test_a_binary_vocabulary_keeps_ids_that_are_not_its_rows(tmp_path: Path) -> None:
    from servo.platforms.table_file import write_table

    write_table(str(tmp_path), "vocab", [b"x", b"y", b"z"], np.array([100, 5, 7]))
    table = lookup.load(str(tmp_path), PlatformOptions())
    assert run(table, {"keys": keys("z", "x", "w")})["ids"].tolist() == [7, 100, -1]
    back = run(table, {"ids": np.array([5, 100, 6, 7])}, "ids_to_keys")["keys"]
    assert back.tolist() == [b"y", b"x", b"", b"z"]


def test_one_table_per_version_directory(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("a\n")
    (tmp_path / "table.json").write_text("{}")
    with pytest.raises(ServoError) as caught:
        lookup.load(str(tmp_path), PlatformOptions())
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "vocab.txt and table.json" in caught.value.message


def _shard_of_embeddings(tmp_path: Path, index: int, count: int, lines: list[str]) -> Path:
    (tmp_path / "embeddings.tsv").write_text("".join(f"{line}\n" for line in lines))
    (tmp_path / "lookup.json").write_text(json.dumps({"shard": {"index": index, "count": count}}))
    return tmp_path


def test_a_shard_holds_only_its_keys_and_says_which_shard_answers(tmp_path: Path) -> None:
    from servo.platforms.sharding import shard_of

    words = [f"w{i}" for i in range(30)]
    owners = shard_of([w.encode() for w in words], 3).tolist()
    mine = [w for w, s in zip(words, owners, strict=True) if s == 1]
    lines = [f"{w}\t{i} {i}" for i, w in enumerate(mine)]
    table = lookup.load(str(_shard_of_embeddings(tmp_path, 1, 3, lines)), PlatformOptions())
    assert set(table.signatures) == {"serving_default", "shard"}
    out = run(table, {"keys": keys(mine[1], "other")}, "shard")
    assert out["values"].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert out["shard"].tolist() == [1, 3]
    assert set(run(table, {"keys": keys(mine[0])})) == {"values"}  # serving_default: the table's
    picked = table.run(table.signatures["shard"], {"keys": keys(mine[0])}, ["shard"])
    assert set(picked) == {"shard"}


def test_a_shard_holding_another_shards_key_is_refused_naming_it(tmp_path: Path) -> None:
    from servo.platforms.sharding import shard_of

    (other,) = [w for w in ("a", "b", "c", "d", "e") if shard_of([w.encode()], 2)[0] == 1][:1]
    lines = [f"{other}\t1"]
    with pytest.raises(ServoError) as caught:
        lookup.load(str(_shard_of_embeddings(tmp_path, 0, 2, lines)), PlatformOptions())
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "is shard 0 of 2, but 1 of its 1 keys belong to other shards" in caught.value.message
    assert f"first: b'{other}', of shard 1" in caught.value.message


def test_a_text_vocabulary_cannot_be_a_shard(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("a\n")
    (tmp_path / "lookup.json").write_text(json.dumps({"shard": {"index": 0, "count": 1}}))
    with pytest.raises(ServoError) as caught:
        lookup.load(str(tmp_path), PlatformOptions())
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "must be a binary table" in caught.value.message
