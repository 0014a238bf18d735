"""TFRecord framing against TensorFlow's own reader and writer; every corruption detected."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings

from servo.core.status import Code, ServoError
from servo.util.tfrecord import RecordWriter, read_records, write_records

RECORDS = st.lists(st.binary(max_size=64), max_size=8)
FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@FIXTURE
@given(RECORDS)
def test_tensorflow_writes_servo_reads(tmp_path: Path, records: list[bytes]) -> None:
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert list(read_records(path)) == records


@FIXTURE
@given(RECORDS)
def test_servo_writes_tensorflow_reads(tmp_path: Path, records: list[bytes]) -> None:
    path = str(tmp_path / "servo.tfrecord")
    write_records(path, records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records


def test_writer_appends_and_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "log.tfrecord")
    with RecordWriter(path) as writer:
        writer.write(b"a")
    with RecordWriter(path, append=True) as writer:
        writer.write(b"b")
        assert writer.count == 1
    assert list(read_records(path)) == [b"a", b"b"]
    assert list(read_records(path, max_records=1)) == [b"a"]
    with pytest.raises(ValueError):
        writer.write(b"c")


@pytest.mark.parametrize(
    ("offset", "what"),
    [
        (0, "corrupted record length"),
        (9, "corrupted record length"),
        (13, "corrupted record data"),
        (17, "corrupted record data"),
    ],
)
def test_each_corruption_is_data_loss(tmp_path: Path, offset: int, what: str) -> None:
    path = tmp_path / "r.tfrecord"
    write_records(str(path), [b"first", b"abcde"])
    data = bytearray(path.read_bytes())
    record = len(data) // 2  # corrupt the second record: the first still reads
    data[record + offset] ^= 0x01
    path.write_bytes(bytes(data))
    reader = read_records(str(path))
    assert next(reader) == b"first"
    with pytest.raises(ServoError) as err:
        next(reader)
    assert err.value.code == Code.DATA_LOSS
    assert what in err.value.message and "record 1" in err.value.message


def test_truncation_at_every_offset_is_data_loss(tmp_path: Path) -> None:
    path = tmp_path / "r.tfrecord"
    write_records(str(path), [b"payload"])
    whole = path.read_bytes()
    for cut in range(1, len(whole)):
        path.write_bytes(whole[:cut])
        with pytest.raises(ServoError) as err:
            list(read_records(str(path)))
        assert err.value.code == Code.DATA_LOSS
        assert "truncated" in err.value.message or "corrupted" in err.value.message
