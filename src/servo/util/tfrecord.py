"""TFRecord files: TensorFlow's record framing, read and written without TensorFlow.

Each record is `length (uint64, little-endian) | masked CRC32C of the length bytes | data |
masked CRC32C of the data`, where masking is `((crc >> 15) | (crc << 17)) + 0xa282ead8` on 32
bits. Both CRCs are checked on reading; a file that is truncated or whose CRCs do not match is
DATA_LOSS, naming the file, the record and what is wrong. Compressed TFRecords are not read.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import google_crc32c

from servo.core.status import Code, ServoError

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = _LENGTH.size + _CRC.size


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record, framed."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc(length)), data, _CRC.pack(masked_crc(data))))


def _loss(path: str, index: int, what: str) -> ServoError:
    return ServoError(Code.DATA_LOSS, f"{path}: record {index}: {what}")


def read_records(path: str, *, max_records: int | None = None) -> Iterator[bytes]:
    """The records of a TFRecord file, in order; stops after `max_records` when given."""
    with open(path, "rb") as f:
        yield from _read(f, path, max_records)


def _read(f: BinaryIO, path: str, max_records: int | None) -> Iterator[bytes]:
    index = 0
    while max_records is None or index < max_records:
        header = f.read(_HEADER)
        if not header:
            return
        if len(header) < _HEADER:
            raise _loss(path, index, f"truncated header ({len(header)} of {_HEADER} bytes)")
        length_bytes, crc_bytes = header[: _LENGTH.size], header[_LENGTH.size :]
        if _CRC.unpack(crc_bytes)[0] != masked_crc(length_bytes):
            raise _loss(path, index, "corrupted record length (its CRC does not match)")
        (length,) = _LENGTH.unpack(length_bytes)
        data = f.read(length)
        if len(data) < length:
            raise _loss(path, index, f"truncated data ({len(data)} of {length} bytes)")
        footer = f.read(_CRC.size)
        if len(footer) < _CRC.size:
            raise _loss(path, index, "truncated data CRC")
        if _CRC.unpack(footer)[0] != masked_crc(data):
            raise _loss(path, index, "corrupted record data (its CRC does not match)")
        yield data
        index += 1


def write_records(path: str, records: Iterable[bytes]) -> None:
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)


class RecordWriter:
    """Appends records to a TFRecord file (created if missing).

    Thread-safety: `write`, `flush` and `close` may be called from any thread; each record is
    written whole.
    """

    def __init__(self, path: str, *, append: bool = False) -> None:
        self.path = path
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file: BinaryIO | None = open(path, "ab" if append else "wb")  # noqa: SIM115
        self._lock = threading.Lock()
        self.count = 0

    def write(self, record: bytes) -> None:
        framed = frame(record)
        with self._lock:
            if self._file is None:
                raise ValueError(f"{self.path} is closed")
            self._file.write(framed)
            self.count += 1

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
