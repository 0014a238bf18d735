"""The shard of a key: FarmHash Fingerprint64 mod the shard count, stable and TensorFlow's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from servo.core.status import Code, ServoError
from servo.platforms.sharding import Shard, fingerprints, read_shard, shard_of

KEYS = [b"apple", b"", "café".encode(), b"x" * 100]


def test_the_hash_is_fingerprint64_with_known_values() -> None:
    # Fixed numbers: a release that changed them would move every key of every shard.
    assert shard_of(KEYS, 3).tolist() == [1, 2, 2, 1]
    assert shard_of(KEYS, 1000003).tolist() == [113034, 377723, 721082, 107918]
    assert fingerprints(KEYS).dtype == np.uint64


@given(st.lists(st.binary(max_size=40), max_size=50), st.integers(1, 1000))
def test_every_key_has_one_shard_below_the_count(keys: list[bytes], count: int) -> None:
    shards = shard_of(keys, count)
    assert len(shards) == len(keys)
    assert all(0 <= s < count for s in shards.tolist())
    assert shard_of(keys, count).tolist() == shards.tolist()


def test_it_is_tensorflows_to_hash_bucket_fast() -> None:
    """Any TensorFlow program can say which shard holds a key (TensorFlow is in the test
    environment: `make` installs every extra)."""
    tf = pytest.importorskip("tensorflow")
    keys = KEYS + [f"key{i}".encode() for i in range(200)]
    for count in (1, 2, 3, 7, 1 << 20):
        expected = tf.strings.to_hash_bucket_fast(keys, count).numpy().tolist()
        assert shard_of(keys, count).tolist() == expected


def test_shard_settings() -> None:
    assert read_shard({}, "x") is None
    assert read_shard({"shard": {"index": 2, "count": 3}}, "x") == Shard(2, 3)
    assert str(Shard(2, 3)) == "shard 2 of 3"
    for bad in (
        {"index": 3, "count": 3},
        {"index": -1, "count": 3},
        {"index": 0},
        {"index": 0, "count": 0},
        {"index": True, "count": 2},
        {"index": 0, "count": 2, "extra": 1},
        [0, 2],
    ):
        with pytest.raises(ServoError) as caught:
            read_shard({"shard": bad}, "/m/1/lookup.json")
        assert caught.value.code == Code.INVALID_ARGUMENT
        assert "/m/1/lookup.json" in caught.value.message
        assert "0 <= i < n" in caught.value.message
