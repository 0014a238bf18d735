"""The lookup platform: vocabulary and embedding tables read from a version directory.

A version directory holds one table file, and optionally `lookup.json` with settings:

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

A key listed twice is an error (as in TensorFlow's text-file tables), reported with its line.

`run` checks a call as ModelServable's contract says (`servable.check_inputs`): the table's own
signature, its one input as an array of its dtype (keys: bytes or str), no other input, and
output aliases of that signature.
"""

from __future__ import annotations

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
    check_inputs,
    check_outputs,
    unknown_signature,
    unloaded,
)

VOCAB_FILE = "vocab.txt"
EMBEDDINGS_FILE = "embeddings.tsv"
SETTINGS_FILE = "lookup.json"
REVERSE_SIGNATURE = "ids_to_keys"


def _bad(path: str, message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"{path}: {message}")


def _read_settings(path: str) -> dict[str, Any]:
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


class _Table(ModelServable):
    """What both tables share: their path and signatures, the checks of a call, and close.

    Thread-safety: immutable after load; `run` may be called from any thread.
    """

    platform = "lookup"

    def __init__(self, path: str, signatures: dict[str, Signature]) -> None:
        self.path = path
        self._signatures = signatures
        self._closed = False

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def _checked(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
    ) -> Signature:
        """The table's own signature of `signature`'s name, once the call fits it."""
        if self._closed:
            raise unloaded(f"Lookup table {self.path}")
        own = self._signatures.get(signature.name)
        if own is None:
            raise unknown_signature(signature.name)
        check_inputs(own, inputs)
        check_outputs(own, output_names)
        return own

    def close(self) -> None:
        self._closed = True


class VocabTable(_Table):
    """A vocabulary: key -> id (its line), and id -> key."""

    def __init__(
        self, path: str, keys: list[bytes], default_value: int, default_key: bytes
    ) -> None:
        self._ids = {k: i for i, k in enumerate(keys)}
        self._keys = np.empty(len(keys) + 1, dtype=object)
        self._keys[: len(keys)] = keys
        self._keys[len(keys)] = default_key
        self._default_value = default_value
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
        super().__init__(path, signatures)

    def __len__(self) -> int:
        return len(self._ids)

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        signature = self._checked(signature, inputs, output_names)
        if signature.name == REVERSE_SIGNATURE:
            ids = inputs["ids"]
            index = np.where((ids >= 0) & (ids < len(self._ids)), ids, len(self._ids))
            return {"keys": self._keys[index]}
        keys = inputs["keys"]
        get, default = self._ids.get, self._default_value
        found = np.fromiter(
            (get(k, default) for k in _as_key_list(keys)), dtype=np.int64, count=keys.size
        )
        return {"ids": found.reshape(keys.shape)}


class EmbeddingTable(_Table):
    """An embedding table: key -> vector of D floats."""

    def __init__(
        self, path: str, keys: list[bytes], vectors: np.ndarray, default: np.ndarray
    ) -> None:
        self._rows = {k: i for i, k in enumerate(keys)}
        # The default vector is one more row, so one gather answers known and unknown keys.
        self._matrix = np.vstack([vectors, default[np.newaxis, :]]).astype(np.float32)
        self.dim = int(vectors.shape[1])
        signature = Signature(
            DEFAULT_SIGNATURE,
            {"keys": TensorSpec(DataType.DT_STRING, None, "keys")},
            {"values": TensorSpec(DataType.DT_FLOAT, None, "values")},
        )
        super().__init__(path, {DEFAULT_SIGNATURE: signature})

    def __len__(self) -> int:
        return len(self._rows)

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self._checked(signature, inputs, output_names)
        keys = inputs["keys"]
        get, missing = self._rows.get, len(self._rows)
        rows = np.fromiter(
            (get(k, missing) for k in _as_key_list(keys)), dtype=np.intp, count=keys.size
        )
        return {"values": self._matrix[rows].reshape(*keys.shape, self.dim)}


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


def _unique_keys(path: str, keys: list[str]) -> list[bytes]:
    seen: dict[bytes, int] = {}
    encoded = []
    for line, key in enumerate(keys, start=1):
        b = key.encode()
        if b in seen:
            raise _bad(path, f"key {key!r} on line {line} already appears on line {seen[b]}")
        seen[b] = line
        encoded.append(b)
    return encoded


def load_vocab(path: str, settings: Mapping[str, Any]) -> VocabTable:
    vocab_path = os.path.join(path, VOCAB_FILE)
    keys = _unique_keys(vocab_path, _read_lines(vocab_path))
    default_value = settings.get("default_value", -1)
    if not isinstance(default_value, int) or isinstance(default_value, bool):
        raise _bad(os.path.join(path, SETTINGS_FILE), "a vocab's default_value must be an integer")
    default_key = settings.get("default_key", "")
    if not isinstance(default_key, str):
        raise _bad(os.path.join(path, SETTINGS_FILE), "default_key must be a string")
    return VocabTable(path, keys, default_value, default_key.encode())


def load_embeddings(path: str, settings: Mapping[str, Any]) -> EmbeddingTable:
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
    dim = len(rows[0])
    default = settings.get("default_value", 0.0)
    if isinstance(default, int | float) and not isinstance(default, bool):
        default_row = np.full(dim, float(default), dtype=np.float32)
    elif isinstance(default, list) and len(default) == dim:
        default_row = np.asarray(default, dtype=np.float32)
    else:
        raise _bad(
            os.path.join(path, SETTINGS_FILE),
            f"an embedding's default_value must be a number or a list of {dim} numbers",
        )
    vectors = np.asarray(rows, dtype=np.float32)
    return EmbeddingTable(path, _unique_keys(table_path, keys), vectors, default_row)


def load(path: str, options: PlatformOptions) -> ModelServable:
    """Loads the table in version directory `path`."""
    settings = _read_settings(path)
    has_vocab = os.path.exists(os.path.join(path, VOCAB_FILE))
    has_embeddings = os.path.exists(os.path.join(path, EMBEDDINGS_FILE))
    if has_vocab and has_embeddings:
        raise _bad(path, f"holds both {VOCAB_FILE} and {EMBEDDINGS_FILE}; keep one")
    if has_vocab:
        return load_vocab(path, settings)
    if has_embeddings:
        return load_embeddings(path, settings)
    raise ServoError(
        Code.NOT_FOUND, f"{path}: a lookup table needs {VOCAB_FILE} or {EMBEDDINGS_FILE}"
    )
