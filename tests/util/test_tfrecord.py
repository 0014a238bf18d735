"""TFRecord framing: servo's reader and writer against TensorFlow's own, and every damage found.

TensorFlow is the reference here: files it writes must read back equal, files servo writes
must read back equal through both of TensorFlow's readers, and a flipped byte in any field of
any record, or a cut at any byte, must be DATA_LOSS naming the file, the record and the fault.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import hypothesis.strategies as st
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings

from servo.core.status import Code, ServoError
from servo.util.tfrecord import (
    FOOTER_SIZE,
    HEADER_SIZE,
    RecordWriter,
    frame,
    masked_crc32c,
    read_records,
)

RECORDS = st.lists(st.binary(max_size=300), max_size=6)
SOME_RECORDS = st.lists(st.binary(max_size=40), min_size=1, max_size=4)
# tmp_path is shared by a test's examples; every example writes its files afresh.
EXAMPLES = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=60
)


def write_records(path: str, records: Iterable[bytes]) -> int:
    """A new TFRecord file of `records` at `path`, written by servo's writer; how many."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
        return writer.records_written


def tf_write(path: Path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def tf_read(path: Path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def error_of(path: Path) -> ServoError:
    with pytest.raises(ServoError) as err:
        list(read_records(str(path)))
    return err.value


# -- against TensorFlow ------------------------------------------------------------------------


def test_masked_crc_of_the_standard_check_string() -> None:
    # CRC32C("123456789") is the published check value 0xE3069283; the mask is TensorFlow's.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@EXAMPLES
@given(RECORDS)
def test_tensorflow_writes_servo_reads(tmp_path: Path, records: list[bytes]) -> None:
    path = tmp_path / "tf.tfrecord"
    tf_write(path, records)
    assert list(read_records(str(path))) == records
    assert path.read_bytes() == b"".join(frame(r) for r in records)  # byte for byte


@EXAMPLES
@given(RECORDS)
def test_servo_writes_tensorflow_reads(tmp_path: Path, records: list[bytes]) -> None:
    path = tmp_path / "servo.tfrecord"
    assert write_records(str(path), records) == len(records)
    assert tf_read(path) == records
    assert list(tf.compat.v1.io.tf_record_iterator(str(path))) == records


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    write_records(str(path), [])
    assert path.read_bytes() == b""
    assert list(read_records(str(path))) == []
    assert tf_read(path) == []


def test_max_records_stops_early_without_reading_on(tmp_path: Path) -> None:
    path = tmp_path / "r"
    tf_write(path, [b"a", b"b", b"c"])
    with path.open("ab") as f:
        f.write(b"garbage after the third record")
    assert list(read_records(str(path), max_records=2)) == [b"a", b"b"]
    assert list(read_records(str(path), max_records=0)) == []
    assert "record 3" in error_of(path).message


def test_a_large_record(tmp_path: Path) -> None:
    path = tmp_path / "big"
    record = bytes(range(256)) * 20_000  # 5 MB: more than any single read buffer
    write_records(str(path), [record, b""])
    assert list(read_records(str(path))) == [record, b""]
    assert tf_read(path) == [record, b""]


# -- the writer --------------------------------------------------------------------------------


def test_writer_truncates_appends_or_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "log.tfrecord"  # parents are created
    with RecordWriter(str(path)) as writer:
        writer.write(b"a")
        writer.write(b"b")
        assert writer.records_written == 2
    with RecordWriter(str(path), append=True) as writer:
        writer.write(b"c")
        assert writer.records_written == 1
    assert tf_read(path) == [b"a", b"b", b"c"]
    with pytest.raises(ServoError) as err:
        RecordWriter(str(path), exclusive=True)
    assert err.value.code == Code.ALREADY_EXISTS and str(path) in err.value.message
    with RecordWriter(str(path)) as writer:
        writer.write(b"d")
    assert tf_read(path) == [b"d"]


def test_write_after_close_is_failed_precondition(tmp_path: Path) -> None:
    writer = RecordWriter(str(tmp_path / "w"))
    writer.close()
    writer.close()  # twice is fine
    assert writer.closed
    with pytest.raises(ServoError) as err:
        writer.write(b"x")
    assert err.value.code == Code.FAILED_PRECONDITION


def test_autoflush_makes_each_record_readable_at_once(tmp_path: Path) -> None:
    path = tmp_path / "live"
    with RecordWriter(str(path), autoflush=True) as writer:
        writer.write(b"first")
        assert list(read_records(str(path))) == [b"first"]
        writer.write(b"second")
        assert tf_read(path) == [b"first", b"second"]
    with RecordWriter(str(path)) as writer:
        writer.write(b"x" * 100)
        writer.flush()
        assert list(read_records(str(path))) == [b"x" * 100]


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    writer = RecordWriter(str(path))
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        for i in range(250):
            writer.write(f"{t}:{i}:".encode() + bytes([t]) * (i % 97))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert writer.records_written == 2000
    records = tf_read(path)
    assert sorted(records) == sorted(
        f"{t}:{i}:".encode() + bytes([t]) * (i % 97) for t in range(8) for i in range(250)
    )
    for t in range(8):  # each thread's records stay in its order
        mine = [r for r in records if r.startswith(f"{t}:".encode())]
        assert [int(r.split(b":")[1]) for r in mine] == list(range(250))


def test_opening_errors_carry_tensorflows_codes(tmp_path: Path) -> None:
    with pytest.raises(ServoError) as err:
        list(read_records(str(tmp_path / "missing")))
    assert err.value.code == Code.NOT_FOUND and "missing" in err.value.message
    with pytest.raises(ServoError) as err:
        list(read_records(str(tmp_path)))
    assert err.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(ServoError) as err:
        RecordWriter(str(tmp_path))
    assert err.value.code == Code.FAILED_PRECONDITION
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ServoError) as err:  # a file where a parent directory should be
        RecordWriter(str(tmp_path / "file" / "sub" / "log"))
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "not a directory" in err.value.message.lower()


# -- damage ------------------------------------------------------------------------------------

# The four fields of a record, as (name, start, size) for a record of `n` data bytes, and the
# words the reader uses for damage in each: the length and its CRC can only be told apart
# from each other by TensorFlow's reader as "the length's CRC does not match", and likewise
# for the data and its CRC.
FIELDS = {
    "length": (lambda n: (0, 8), "the CRC of its length does not match"),
    "length CRC": (lambda n: (8, 4), "the CRC of its length does not match"),
    "data": (lambda n: (HEADER_SIZE, n), "the CRC of its data does not match"),
    "data CRC": (lambda n: (HEADER_SIZE + n, FOOTER_SIZE), "the CRC of its data does not match"),
}


@EXAMPLES
@given(records=SOME_RECORDS, data=st.data())
def test_a_flipped_byte_in_any_field_is_data_loss(
    tmp_path: Path, records: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(records) - 1), label="record")
    names = [f for f in FIELDS if f != "data" or records[index]]  # empty data has no bytes
    field = data.draw(st.sampled_from(names), label="field")
    span, words = FIELDS[field]
    start, size = span(len(records[index]))
    at = data.draw(st.integers(0, size - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")

    path = tmp_path / "damaged"
    write_records(str(path), records)
    blob = bytearray(path.read_bytes())
    offset = sum(HEADER_SIZE + len(r) + FOOTER_SIZE for r in records[:index])
    blob[offset + start + at] ^= flip
    path.write_bytes(bytes(blob))

    reader = read_records(str(path))
    for record in records[:index]:  # the records before it still read
        assert next(reader) == record
    with pytest.raises(ServoError) as err:
        next(reader)
    error = err.value
    assert error.code == Code.DATA_LOSS
    assert error.message.startswith(f"corrupted record at {offset} in {path} (record {index}): ")
    assert words in error.message  # a damaged length is never believed before its CRC
    with pytest.raises(tf.errors.DataLossError):  # TensorFlow agrees the file is damaged
        tf_read(path)


@pytest.mark.parametrize("records", [[b"payload"], [b"", b"ab", b"xyz" * 5]])
def test_a_cut_at_every_offset(tmp_path: Path, records: list[bytes]) -> None:
    path = tmp_path / "cut"
    write_records(str(path), records)
    whole = path.read_bytes()
    ends, at = [0], 0  # the offsets where a record ends: a cut there is a shorter valid file
    for r in records:
        at += HEADER_SIZE + len(r) + FOOTER_SIZE
        ends.append(at)
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])
        if cut in ends:
            assert list(read_records(str(path))) == records[: ends.index(cut)]
            continue
        index = max(i for i, end in enumerate(ends) if end < cut)
        error = error_of(path)
        assert error.code == Code.DATA_LOSS, cut
        assert error.message.startswith(f"truncated record at {ends[index]} in {path} ")
        assert f"(record {index})" in error.message


def test_a_compressed_file_is_reported_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "gz"
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        writer.write(b"inside a gzip stream")
    error = error_of(path)
    assert error.code == Code.DATA_LOSS
    assert "not an uncompressed TFRecord file" in error.message and "(record 0)" in error.message


def test_a_length_beyond_the_file_is_not_allocated(tmp_path: Path) -> None:
    # A header whose CRC is right but whose length is absurd: reported, never read.
    path = tmp_path / "huge"
    length = (2**62).to_bytes(8, "little")
    path.write_bytes(length + masked_crc32c(length).to_bytes(4, "little") + b"xx")
    error = error_of(path)
    assert error.code == Code.DATA_LOSS
    assert f"promises {2**62} bytes of data" in error.message and "only 2 bytes" in error.message
