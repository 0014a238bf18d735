"""Which shard holds a key: the stable hash every writer and reader of a sharded table uses.

A key (its UTF-8 bytes) belongs to shard `fingerprint64(key) mod count`, where fingerprint64 is
FarmHash's Fingerprint64 read as an unsigned 64-bit integer. It is the hash TensorFlow's
`tf.strings.to_hash_bucket_fast(keys, count)` computes, and BigQuery's `FARM_FINGERPRINT` (a
signed int64: add 2**64 when negative), so tools other than servo's can write shards; it
never changes between releases, machines or processes (Python's `hash` does).

A shard's settings (in its `lookup.json`) say which shard it is: `"shard": {"index": i,
"count": n}` with 0 <= i < n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import farmhash
import numpy as np

from servo.core.status import Code, ServoError

HASH_NAME = "farmhash-fingerprint64"
# A shard's lookup that also says which shard answers: keys -> the table's output and
# SHARD_OUTPUT (DT_INT64 [2]: index, count); the `sharded` front calls it.
SHARD_SIGNATURE = "shard"
SHARD_OUTPUT = "shard"


def fingerprints(keys: Sequence[bytes]) -> np.ndarray:
    """Each key's Fingerprint64, as uint64."""
    return np.fromiter(map(farmhash.fingerprint64, keys), dtype=np.uint64, count=len(keys))


def shard_of(keys: Sequence[bytes], count: int) -> np.ndarray:
    """Each key's shard index (intp) among `count` shards."""
    return (fingerprints(keys) % np.uint64(count)).astype(np.intp)


@dataclass(frozen=True, slots=True)
class Shard:
    """Which fraction of a table a servable holds: shard `index` of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def read_shard(settings: Mapping[str, Any], where: str) -> Shard | None:
    """The `shard` setting of a table's settings, or None when it is a whole table."""
    value = settings.get("shard")
    if value is None:
        return None
    index = value.get("index") if isinstance(value, dict) else None
    count = value.get("count") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or set(value) != {"index", "count"}
        or type(index) is not int
        or type(count) is not int
        or not 0 <= index < count
    ):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f'{where}: "shard" must be {{"index": i, "count": n}} with 0 <= i < n; got {value!r}',
        )
    return Shard(index, count)
