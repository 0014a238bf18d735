"""The lookup platform: vocabulary and embedding tables read from a version directory.

A version directory holds one table, as a text file or in servo's binary format, and
optionally `lookup.json` with settings:

- `vocab.txt`: one key per line (UTF-8; the line's trailing newline is not part of the key).
  A key's id is its line number, from 0. Signatures:
    `serving_default` keys (DT_STRING, any shape) -> ids (DT_INT64, same shape); unknown keys
    map to `default_value` (default -1);
    `ids_to_keys` ids (DT_INT64) -> keys (DT_STRING); unknown ids map to `default_key`
    (default "").
- `embeddings.tsv`: one row per line, `key<TAB>v1 v2 ... vD` (values separated by spaces or
  tabs; every row the same D). Signature:
    `serving_default` keys (DT_STRING, any shape) -> values (DT_FLOAT, shape + [D]); unknown
    keys map to `default_value`: a number that fills the row (default 0.0) or a list of D
    numbers.
- `table.json` and its arrays: either kind in the binary format (`servo.platforms.table_file`),
  memory-mapped instead of read; the same signatures and settings. A binary vocabulary stores
  each key's id.

A key listed twice is an error (as in TensorFlow's text-file tables), reported with its line.

A shard of a table (`servo.platforms.sharding`) says so in its settings, `"shard": {"index":
i, "count": n}`: every key it holds must belong to shard i of n by the documented hash, or the
load fails naming the first key that does not, and it has one more signature, `shard`: keys ->
the table's output and `shard` (DT_INT64 [2]: i, n), which the `sharded` platform's front
calls so that every answer says which shard it comes from. A vocabulary's shard must be in the
binary format, which keeps the ids the whole table gives its keys (in a text shard, the line
numbers would be the shard's own).

`run` checks a call as ModelServable's contract says (`servable.checked_call`): the table's own
signature, its one input as an array of its dtype (keys: bytes or str), no other input, and
output aliases of that signature.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    ModelServable,
    Signature,
    TensorSpec,
    checked_call,
    unknown_signature,
    unloaded,
)
from servo.platforms.sharding import SHARD_OUTPUT, SHARD_SIGNATURE, Shard, read_shard, shard_of
from servo.platforms.table_file import HEADER_FILE, BinaryTable, open_table

VOCAB_FILE = "vocab.txt"
EMBEDDINGS_FILE = "embeddings.tsv"
SETTINGS_FILE = "lookup.json"
REVERSE_SIGNATURE = "ids_to_keys"


def _bad(path: str, message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"{path}: {message}")


def read_settings(path: str) -> dict[str, Any]:
    settings_path = os.path.join(path, SETTINGS_FILE)
    if not os.path.exists(settings_path):
        return {}
    try:
        with open(settings_path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as exc:
        raise _bad(settings_path, f"cannot read settings: {exc}") from None
    if not isinstance(settings, dict):
        raise _bad(settings_path, "settings must be a JSON object")
    return settings


def _as_key_list(keys: np.ndarray) -> list[Any]:
    flat = keys.ravel().tolist()
    return [k.encode() if isinstance(k, str) else k for k in flat]


class _TextIndex:
    """A text table's keys: a dict from key to row."""

    def __init__(self, keys: list[bytes], rows: dict[bytes, int]) -> None:
        self._keys = keys
        self._rows = rows

    def __len__(self) -> int:
        return len(self._keys)

    def rows(self, keys: Sequence[bytes]) -> np.ndarray:
        get = self._rows.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.intp, count=len(keys))

    def key(self, row: int) -> bytes:
        return self._keys[row]

    def all_keys(self) -> list[bytes]:
        return self._keys

    def shards(self, count: int) -> np.ndarray:
        return shard_of(self._keys, count)

    def close(self) -> None:
        pass


class _BinaryIndex:
    """A binary table's keys, looked up in its memory-mapped arrays."""

    def __init__(self, table: BinaryTable) -> None:
        self._table = table
        self.rows = table.rows
        self.key = table.key
        self.all_keys = table.all_keys

    def __len__(self) -> int:
        return len(self._table)

    def shards(self, count: int) -> np.ndarray:
        return (self._table.hashes % np.uint64(count)).astype(np.intp)

    def close(self) -> None:
        self._table.close()


_Index = _TextIndex | _BinaryIndex


class _Table(ModelServable):
    """What both tables share: their keys, signatures, shard, the checks of a call, and close.

    Thread-safety: immutable after load; `run` may be called from any thread.
    """

    platform = "lookup"
    output = ""  # the alias of what a key maps to

    def __init__(
        self,
        path: str,
        index: _Index,
        signatures: dict[str, Signature],
        shard: Shard | None,
    ) -> None:
        self.path = path
        self._index = index
        self.shard = shard
        if shard is not None:
            lookup = signatures[DEFAULT_SIGNATURE]
            outputs = dict(lookup.outputs)
            outputs[SHARD_OUTPUT] = TensorSpec(DataType.DT_INT64, (2,), SHARD_OUTPUT)
            signatures[SHARD_SIGNATURE] = Signature(SHARD_SIGNATURE, lookup.inputs, outputs)
            self._shard_array = np.array([shard.index, shard.count], dtype=np.int64)
        self._signatures = signatures
        self._closed = False

    def __len__(self) -> int:
        return len(self._index)

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise unloaded(f"Lookup table {self.path}")
        own = checked_call(self._signatures, signature, inputs, output_names)
        if own.name == REVERSE_SIGNATURE:
            return {"keys": self._keys_of(inputs["ids"])}
        keys = inputs["keys"]
        found = self._lookup(self._index.rows(_as_key_list(keys)))
        answer = {self.output: found.reshape(keys.shape + found.shape[1:])}
        if own.name == SHARD_SIGNATURE:
            answer[SHARD_OUTPUT] = self._shard_array
        return {name: answer[name] for name in output_names} if output_names else answer

    def _lookup(self, rows: np.ndarray) -> np.ndarray:
        """The values of `rows` (-1: a key the table lacks), one per row."""
        raise NotImplementedError

    def contents(self) -> tuple[list[bytes], np.ndarray]:
        """Every key and its value (id or vector), in the table's row order."""
        raise NotImplementedError

    def _keys_of(self, ids: np.ndarray) -> np.ndarray:
        raise unknown_signature(REVERSE_SIGNATURE)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._index.close()


class VocabTable(_Table):
    """A vocabulary: key -> id, and id -> key."""

    output = "ids"

    def __init__(
        self,
        path: str,
        index: _Index,
        ids: np.ndarray,
        default_value: int,
        default_key: bytes,
        shard: Shard | None = None,
    ) -> None:
        self._ids = ids
        self._default_value = default_value
        self._default_key = default_key
        signatures = {
            DEFAULT_SIGNATURE: Signature(
                DEFAULT_SIGNATURE,
                {"keys": TensorSpec(DataType.DT_STRING, None, "keys")},
                {"ids": TensorSpec(DataType.DT_INT64, None, "ids")},
            ),
            REVERSE_SIGNATURE: Signature(
                REVERSE_SIGNATURE,
                {"ids": TensorSpec(DataType.DT_INT64, None, "ids")},
                {"keys": TensorSpec(DataType.DT_STRING, None, "keys")},
            ),
        }
        super().__init__(path, index, signatures, shard)

    def contents(self) -> tuple[list[bytes], np.ndarray]:
        return self._index.all_keys(), np.asarray(self._ids)

    def _lookup(self, rows: np.ndarray) -> np.ndarray:
        if not len(self._ids):  # an empty vocabulary: every key is unknown
            return np.full(len(rows), self._default_value, dtype=np.int64)
        found: np.ndarray = self._ids[np.maximum(rows, 0)]
        found[rows < 0] = self._default_value
        return found

    @functools.cached_property
    def _by_id(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the order of their ids, and those ids (made on the first reverse call: a
        text vocabulary's ids are its rows; a binary one's are any numbers)."""
        order = np.argsort(self._ids, kind="stable")
        return order, np.asarray(self._ids[order])

    def _keys_of(self, ids: np.ndarray) -> np.ndarray:
        order, sorted_ids = self._by_id
        flat = ids.ravel()
        if not len(sorted_ids):
            return np.full(ids.shape, self._default_key, dtype=object)
        at = np.minimum(np.searchsorted(sorted_ids, flat), len(sorted_ids) - 1)
        hit = sorted_ids[at] == flat
        key = self._index.key
        keys = np.empty(flat.size, dtype=object)
        for i, (row, known) in enumerate(zip(order[at].tolist(), hit.tolist(), strict=True)):
            keys[i] = key(row) if known else self._default_key
        return keys.reshape(ids.shape)


class EmbeddingTable(_Table):
    """An embedding table: key -> vector of D floats."""

    output = "values"

    def __init__(
        self,
        path: str,
        index: _Index,
        vectors: np.ndarray,
        default: np.ndarray,
        shard: Shard | None = None,
    ) -> None:
        self._vectors = vectors
        self._default = default
        self.dim = int(vectors.shape[1])
        signature = Signature(
            DEFAULT_SIGNATURE,
            {"keys": TensorSpec(DataType.DT_STRING, None, "keys")},
            {"values": TensorSpec(DataType.DT_FLOAT, None, "values")},
        )
        super().__init__(path, index, {DEFAULT_SIGNATURE: signature}, shard)

    def contents(self) -> tuple[list[bytes], np.ndarray]:
        return self._index.all_keys(), np.asarray(self._vectors)

    def _lookup(self, rows: np.ndarray) -> np.ndarray:
        found: np.ndarray = self._vectors.take(np.maximum(rows, 0), axis=0)
        found[rows < 0] = self._default
        return found


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            # Lines end at "\n", "\r\n" or "\r" (the file's universal newlines), not where
            # str.splitlines would also cut (\x85, \u2028, ...: characters a key may hold).
            lines = f.read().split("\n")
    except UnicodeDecodeError as exc:
        raise _bad(path, f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        # NOT_FOUND, as the other platforms say of a model file they cannot read.
        raise ServoError(Code.NOT_FOUND, f"{path}: cannot read: {exc}") from None
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines


def _unique_keys(path: str, keys: list[str]) -> tuple[list[bytes], dict[bytes, int]]:
    """The keys as bytes, and each one's row; a key listed twice is refused."""
    rows: dict[bytes, int] = {}
    encoded = []
    for row, key in enumerate(keys):
        b = key.encode()
        if b in rows:
            raise _bad(path, f"key {key!r} on line {row + 1} already appears on line {rows[b] + 1}")
        rows[b] = row
        encoded.append(b)
    return encoded, rows


def _vocab_defaults(path: str, settings: Mapping[str, Any]) -> tuple[int, bytes]:
    default_value = settings.get("default_value", -1)
    if not isinstance(default_value, int) or isinstance(default_value, bool):
        raise _bad(os.path.join(path, SETTINGS_FILE), "a vocab's default_value must be an integer")
    default_key = settings.get("default_key", "")
    if not isinstance(default_key, str):
        raise _bad(os.path.join(path, SETTINGS_FILE), "default_key must be a string")
    return default_value, default_key.encode()


def _embedding_default(path: str, settings: Mapping[str, Any], dim: int) -> np.ndarray:
    default = settings.get("default_value", 0.0)
    if isinstance(default, int | float) and not isinstance(default, bool):
        return np.full(dim, float(default), dtype=np.float32)
    if isinstance(default, list) and len(default) == dim:
        return np.asarray(default, dtype=np.float32)
    raise _bad(
        os.path.join(path, SETTINGS_FILE),
        f"an embedding's default_value must be a number or a list of {dim} numbers",
    )


def _check_shard(path: str, index: _Index, shard: Shard | None) -> None:
    """That every key of a shard belongs to it by the documented hash."""
    if shard is None:
        return
    shards = index.shards(shard.count)
    wrong = np.flatnonzero(shards != shard.index)
    if wrong.size:
        first = int(wrong[0])
        raise _bad(
            path,
            f"is {shard}, but {wrong.size} of its {len(index)} keys belong to other shards "
            f"(first: {index.key(first)!r}, of shard {int(shards[first])}); a key's shard is "
            f"its FarmHash Fingerprint64 mod {shard.count} (`servo split-table` writes shards)",
        )


def load_vocab(path: str, settings: Mapping[str, Any], shard: Shard | None) -> VocabTable:
    if shard is not None:
        raise _bad(
            os.path.join(path, SETTINGS_FILE),
            f"a vocabulary's shard must be a binary table ({HEADER_FILE}; `servo split-table` "
            f"writes one), which keeps the ids of the whole table: in {VOCAB_FILE} the ids "
            "would be the shard's own line numbers",
        )
    vocab_path = os.path.join(path, VOCAB_FILE)
    keys, rows = _unique_keys(vocab_path, _read_lines(vocab_path))
    ids = np.arange(len(keys), dtype=np.int64)
    return VocabTable(path, _TextIndex(keys, rows), ids, *_vocab_defaults(path, settings))


def load_embeddings(path: str, settings: Mapping[str, Any], shard: Shard | None) -> EmbeddingTable:
    table_path = os.path.join(path, EMBEDDINGS_FILE)
    keys: list[str] = []
    rows: list[list[float]] = []
    for line_no, line in enumerate(_read_lines(table_path), start=1):
        if not line.strip():
            continue
        key, sep, values = line.partition("\t")
        if not sep:
            raise _bad(table_path, f"line {line_no} has no tab between key and values")
        try:
            row = [float(v) for v in values.split()]
        except ValueError as exc:
            raise _bad(table_path, f"line {line_no}: {exc}") from None
        if not row:
            raise _bad(table_path, f"line {line_no} has no values")
        if rows and len(row) != len(rows[0]):
            raise _bad(
                table_path,
                f"line {line_no} has {len(row)} values; earlier rows have {len(rows[0])}",
            )
        keys.append(key)
        rows.append(row)
    if not rows:
        raise _bad(table_path, "the table is empty")
    default_row = _embedding_default(path, settings, len(rows[0]))
    index = _TextIndex(*_unique_keys(table_path, keys))
    _check_shard(table_path, index, shard)
    vectors = np.asarray(rows, dtype=np.float32)
    return EmbeddingTable(path, index, vectors, default_row, shard)


def load_binary(path: str, settings: Mapping[str, Any], shard: Shard | None) -> _Table:
    table = open_table(path)
    try:
        index = _BinaryIndex(table)
        _check_shard(path, index, shard)
        if table.kind == "vocab":
            defaults = _vocab_defaults(path, settings)
            return VocabTable(path, index, table.values, *defaults, shard)
        default_row = _embedding_default(path, settings, int(table.values.shape[1]))
        return EmbeddingTable(path, index, table.values, default_row, shard)
    except BaseException:
        table.close()
        raise


_LOADERS = {VOCAB_FILE: load_vocab, EMBEDDINGS_FILE: load_embeddings, HEADER_FILE: load_binary}


def load(path: str, options: PlatformOptions) -> ModelServable:
    """Loads the table in version directory `path`."""
    settings = read_settings(path)
    shard = read_shard(settings, os.path.join(path, SETTINGS_FILE))
    present = [name for name in _LOADERS if os.path.exists(os.path.join(path, name))]
    if len(present) > 1:
        raise _bad(path, f"holds {' and '.join(present)}: one table per version; keep one")
    if not present:
        raise ServoError(
            Code.NOT_FOUND,
            f"{path}: a lookup table needs {VOCAB_FILE}, {EMBEDDINGS_FILE} or a binary table "
            f"({HEADER_FILE})",
        )
    return _LOADERS[present[0]](path, settings, shard)
