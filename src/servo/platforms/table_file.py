"""servo's binary table format: a lookup table that is memory-mapped, not parsed, so that a
table of any size loads in milliseconds and its pages are shared by every process that maps it.

A version directory holds five files; the `.npy` ones are numpy's format (little-endian), so
any program with numpy can write them:

    table.json          {"format": "servo-table", "format_version": 1,
                         "kind": "embeddings" | "vocab", "rows": N,
                         "hash": "farmhash-fingerprint64"}
    table.hashes.npy    uint64 [N]: each row's key's Fingerprint64 (servo.platforms.sharding),
                        ascending
    table.offsets.npy   int64 [N + 1]: row i's key is table.keys.bin[offsets[i]:offsets[i+1]]
    table.keys.bin      the keys' UTF-8 bytes, back to back, in row order
    table.values.npy    embeddings: float32 [N, D]; vocab: int64 [N], each key's id

Rows are in the order of their key's hash (keys whose hashes are equal in any order), and no
key appears twice. A vocabulary stores its ids, so a shard of one keeps the ids the whole table
gives its keys. `open_table` checks the header, the files' dtypes and sizes, that the offsets
run from 0 to the keys' size without going back, and that the hashes ascend; it does not hash
every key again (a key whose stored hash is wrong is simply not found). `write_table` writes a
table from keys and values (`servo split-table` uses it).
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servo.core.status import Code, ServoError
from servo.platforms.sharding import HASH_NAME, fingerprints

HEADER_FILE = "table.json"
HASHES_FILE = "table.hashes.npy"
OFFSETS_FILE = "table.offsets.npy"
KEYS_FILE = "table.keys.bin"
VALUES_FILE = "table.values.npy"
FORMAT = "servo-table"
FORMAT_VERSION = 1
KINDS: dict[str, np.dtype[Any]] = {"embeddings": np.dtype(np.float32), "vocab": np.dtype(np.int64)}


def _bad(path: str, message: str) -> ServoError:
    return ServoError(Code.DATA_LOSS, f"{path}: {message}")


@dataclass(frozen=True)
class BinaryTable:
    """An open binary table: its arrays, memory-mapped read-only.

    Thread-safety: immutable; `rows` may be called from any thread."""

    path: str
    kind: str
    hashes: np.ndarray
    offsets: np.ndarray
    keys: mmap.mmap | bytes  # bytes when every key is empty (an empty file cannot be mapped)
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)

    def key(self, row: int) -> bytes:
        return self.keys[int(self.offsets[row]) : int(self.offsets[row + 1])]

    def all_keys(self) -> list[bytes]:
        """Every key, in row order (reads the whole keys file)."""
        data, ends = bytes(self.keys), self.offsets.tolist()
        return [data[ends[i] : ends[i + 1]] for i in range(len(self))]

    def rows(self, keys: Sequence[bytes]) -> np.ndarray:
        """Each key's row (intp), -1 for a key the table does not hold."""
        hashes = fingerprints(keys)
        count = len(self.hashes)
        candidate = np.minimum(np.searchsorted(self.hashes, hashes), count - 1)
        starts, ends = self.offsets[candidate], self.offsets[candidate + 1]
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        # A key is found where its hash and its length match the candidate's and so do its
        # bytes, compared for all keys at once: the candidates' bytes gathered in one array
        # against the keys' bytes joined.
        same = (self.hashes[candidate] == hashes) & (ends - starts == lengths)
        picked = np.flatnonzero(same)
        sizes = lengths[picked]
        total = int(sizes.sum())
        if total:
            first = np.cumsum(sizes) - sizes  # where each picked key begins in the joined bytes
            at = np.repeat(starts[picked] - first, sizes) + np.arange(total)
            stored = np.frombuffer(self.keys, dtype=np.uint8)[at]
            asked = np.frombuffer(b"".join([keys[i] for i in picked.tolist()]), dtype=np.uint8)
            nonempty = sizes > 0
            differs = np.add.reduceat(stored != asked, first[nonempty]) > 0
            same[picked[nonempty][differs]] = False
        rows = np.where(same, candidate, -1)
        # Rare: a key whose candidate is another key of the same hash (the next rows may hold it).
        for i in np.flatnonzero(~same & (self.hashes[candidate] == hashes)).tolist():
            rows[i] = self._scan(keys[i], int(candidate[i]) + 1, hashes[i])
        return rows

    def _scan(self, key: bytes, row: int, hash_value: np.uint64) -> int:
        """The row of `key` among the rows from `row` on whose hash is also `hash_value`."""
        while row < len(self.hashes) and self.hashes[row] == hash_value:
            if self.key(row) == key:
                return row
            row += 1
        return -1

    def close(self) -> None:
        if isinstance(self.keys, mmap.mmap):
            self.keys.close()


def _header(path: str) -> dict[str, Any]:
    file = os.path.join(path, HEADER_FILE)
    try:
        with open(file, encoding="utf-8") as f:
            header = json.load(f)
    except OSError as exc:
        raise ServoError(Code.NOT_FOUND, f"{file}: cannot read: {exc}") from None
    except ValueError as exc:
        raise _bad(file, f"not a JSON file: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(file, f'not a servo table header (no "format": "{FORMAT}")')
    if header.get("format_version") != FORMAT_VERSION:
        raise _bad(
            file,
            f"format_version {header.get('format_version')!r}; this servo reads {FORMAT_VERSION}",
        )
    if header.get("kind") not in KINDS:
        raise _bad(file, f'"kind" must be one of {", ".join(KINDS)}')
    if header.get("hash") != HASH_NAME:
        raise _bad(file, f'"hash" must be "{HASH_NAME}"')
    rows = header.get("rows")
    if type(rows) is not int or rows < 1:
        raise _bad(file, '"rows" must be the number of rows (a table has at least one)')
    return header


def _array(path: str, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    file = os.path.join(path, name)
    try:
        array: np.ndarray = np.load(file, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ServoError(Code.NOT_FOUND, f"{file}: missing (a binary table has it)") from None
    except (OSError, ValueError) as exc:
        raise _bad(file, f"not a .npy file: {exc}") from None
    if array.dtype != dtype or array.shape[: len(shape)] != shape:
        raise _bad(
            file,
            f"holds {array.dtype} {list(array.shape)}; the table needs {dtype} "
            f"[{', '.join(map(str, shape))}, ...]",
        )
    # A plain view of the mapping: numpy's memmap subclass costs microseconds per operation.
    return array.view(np.ndarray)


def open_table(path: str) -> BinaryTable:
    """The binary table in directory `path`, checked as the module docstring says."""
    header = _header(path)
    kind, count = header["kind"], header["rows"]
    hashes = _array(path, HASHES_FILE, np.dtype(np.uint64), (count,))
    offsets = _array(path, OFFSETS_FILE, np.dtype(np.int64), (count + 1,))
    values = _array(path, VALUES_FILE, KINDS[kind], (count,))
    if hashes.ndim != 1 or offsets.ndim != 1:
        raise _bad(path, f"{HASHES_FILE} and {OFFSETS_FILE} must be one-dimensional")
    if values.ndim != (2 if kind == "embeddings" else 1):
        raise _bad(path, f"{VALUES_FILE}: a {kind} table's values have another rank")
    if np.any(hashes[1:] < hashes[:-1]):
        raise _bad(path, f"{HASHES_FILE}: the hashes do not ascend")
    keys_file = os.path.join(path, KEYS_FILE)
    try:
        size = os.path.getsize(keys_file)
    except OSError as exc:
        raise ServoError(Code.NOT_FOUND, f"{keys_file}: cannot read: {exc}") from None
    if offsets[0] != 0 or offsets[-1] != size or np.any(offsets[1:] < offsets[:-1]):
        raise _bad(
            path, f"{OFFSETS_FILE} must run from 0 to {KEYS_FILE}'s {size} bytes, never back"
        )
    keys: mmap.mmap | bytes = b""
    if size:
        with open(keys_file, "rb") as f:
            keys = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return BinaryTable(path, kind, hashes, offsets, keys, values)


def write_table(path: str, kind: str, keys: Sequence[bytes], values: np.ndarray) -> None:
    """Writes `keys` (unique) and their `values` as a binary table in directory `path`
    (made if missing); the header last, so that a table cut short has none."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    values = np.asarray(values, dtype=KINDS[kind])
    if len(keys) == 0 or len(values) != len(keys):
        raise ValueError(f"{len(keys)} keys and {len(values)} rows of values: need as many, >0")
    if values.ndim != (2 if kind == "embeddings" else 1):
        raise ValueError(
            f"a {kind} table's values are {'[N, D]' if kind == 'embeddings' else '[N]'}"
        )
    hashes = fingerprints(keys)
    order = np.argsort(hashes, kind="stable")
    ordered = [keys[i] for i in order.tolist()]
    sorted_hashes = hashes[order]
    for i in np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1]).tolist():
        # Keys with equal hashes (rare) are fine; the same key twice is a mistake.
        j = i
        while j >= 0 and sorted_hashes[j] == sorted_hashes[i + 1]:
            if ordered[j] == ordered[i + 1]:
                raise ValueError(f"key {ordered[j]!r} appears twice")
            j -= 1
    lengths = np.fromiter((len(k) for k in ordered), dtype=np.int64, count=len(ordered))
    offsets = np.zeros(len(ordered) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, HASHES_FILE), sorted_hashes)
    np.save(os.path.join(path, OFFSETS_FILE), offsets)
    with open(os.path.join(path, KEYS_FILE), "wb") as f:
        f.write(b"".join(ordered))
    np.save(os.path.join(path, VALUES_FILE), values[order])
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "rows": len(keys),
        "hash": HASH_NAME,
    }
    with open(os.path.join(path, HEADER_FILE), "w", encoding="utf-8") as f:
        json.dump(header, f, indent=1)
        f.write("\n")
