"""TFRecord files: TensorFlow's record framing, read and written without TensorFlow.

This module owns the byte format of TFRecord files for the rest of servo (model warm-up reads
them, request logging writes them). Each record is

    uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data |
    uint32 masked CRC32C of data

where masking is TensorFlow's `((crc >> 15) | (crc << 17)) + 0xa282ead8` on 32 bits. Reading
checks the framing and both CRCs; a file that is truncated inside a record or whose CRCs do not
match raises `ServoError(DATA_LOSS)` naming the file, the record's index and byte offset and
what is wrong (in TensorFlow's words, "truncated record at" and "corrupted record at"). An
empty file, or one that ends exactly after a record, is fine. GZIP and ZLIB compressed files
are not read: their first bytes fail the length CRC like any other corruption.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Iterator
from typing import BinaryIO, cast

import google_crc32c

from servo.core.status import Code, ServoError

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _LENGTH.size + _CRC.size  # length and its CRC
FOOTER_SIZE = _CRC.size  # the data's CRC

# How TensorFlow's file system reports the errors of opening a file (its errno mapping).
_OS_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.EISDIR: Code.FAILED_PRECONDITION,
    errno.ENOTDIR: Code.FAILED_PRECONDITION,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
}


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC32C of `data`.

    TensorFlow masks the CRCs it stores because a CRC computed over data that itself holds
    CRCs is weak; the mask must match bit for bit or TensorFlow rejects the file.
    """
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """`data` as one framed record, ready to be appended to a TFRecord file."""
    length = _LENGTH.pack(len(data))
    return b"".join(
        (length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data)))
    )


def os_error(exc: OSError, action: str) -> ServoError:
    """An OSError as the ServoError TensorFlow's file system would have returned."""
    code = _OS_CODES.get(exc.errno or 0, Code.UNKNOWN)
    return ServoError(code, f"{action}: {exc.strerror or exc}")


def read_records(path: str, *, max_records: int | None = None) -> Iterator[bytes]:
    """The records of the TFRecord file at `path`, in order, each checked.

    Stops after `max_records` records when given, without looking further into the file (so
    a caller that wants to know whether there are more than N asks for N + 1). Raises
    ServoError: DATA_LOSS for a damaged file, NOT_FOUND / PERMISSION_DENIED / ... when the file
    cannot be opened or read.
    """
    if max_records is not None and max_records < 0:
        raise ValueError(f"max_records must be >= 0; got {max_records}")
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed by the with below, after the OSError map
    except OSError as exc:
        raise os_error(exc, f"Cannot open {path}") from exc
    with f:
        yield from _read(f, path, max_records)


def _read(f: BinaryIO, path: str, max_records: int | None) -> Iterator[bytes]:
    size = os.fstat(f.fileno()).st_size
    offset = 0
    index = 0
    while max_records is None or index < max_records:
        header = _read_exactly(f, path, HEADER_SIZE)
        if not header:
            return  # the end of the file, between two records: all is well
        if len(header) < HEADER_SIZE:
            raise _loss(
                path,
                index,
                offset,
                "truncated",
                f"the file ends {len(header)} bytes into its {HEADER_SIZE}-byte header",
            )
        length_bytes = header[: _LENGTH.size]
        (stored,) = _CRC.unpack_from(header, _LENGTH.size)
        if stored != masked_crc32c(length_bytes):
            raise _loss(
                path,
                index,
                offset,
                "corrupted",
                "the CRC of its length does not match (a damaged file, or not an uncompressed "
                "TFRecord file)",
            )
        (length,) = _LENGTH.unpack(length_bytes)
        body_at = offset + HEADER_SIZE
        # Checked against the file's size first, so that a bad length never makes us try to
        # allocate it.
        if length + FOOTER_SIZE > size - body_at:
            size = os.fstat(f.fileno()).st_size  # a file being written may have grown
        if length + FOOTER_SIZE > size - body_at:
            raise _loss(
                path,
                index,
                offset,
                "truncated",
                f"its header promises {length} bytes of data and a 4-byte CRC, but only "
                f"{max(0, size - body_at)} bytes follow",
            )
        body = _read_exactly(f, path, length + FOOTER_SIZE)
        if len(body) < length + FOOTER_SIZE:  # the file shrank while we read it
            raise _loss(
                path,
                index,
                offset,
                "truncated",
                f"expected {length + FOOTER_SIZE} more bytes, read {len(body)}",
            )
        data = body[:length]
        (stored,) = _CRC.unpack_from(body, length)
        if stored != masked_crc32c(data):
            raise _loss(path, index, offset, "corrupted", "the CRC of its data does not match")
        yield data
        offset = body_at + length + FOOTER_SIZE
        index += 1


def _read_exactly(f: BinaryIO, path: str, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the file."""
    chunks = []
    while n > 0:
        try:
            chunk = f.read(n)
        except OSError as exc:
            raise os_error(exc, f"Cannot read {path}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _loss(path: str, index: int, offset: int, kind: str, detail: str) -> ServoError:
    return ServoError(
        Code.DATA_LOSS, f"{kind} record at {offset} in {path} (record {index}): {detail}"
    )


class RecordWriter:
    """Writes records to a TFRecord file.

    The file is opened by the constructor: created or truncated by default, appended to with
    `append=True`, or created only if it does not exist yet with `exclusive=True` (ALREADY_EXISTS
    otherwise). Missing parent directories are created. With `autoflush=True` every record is
    handed to the operating system as soon as it is written, so that readers see whole records
    while the writer is still open and a crash of the process loses none. Opening or writing
    failures raise ServoError with the code TensorFlow's file system would give; a write after
    `close` raises ServoError(FAILED_PRECONDITION).

    Thread-safety: `write`, `flush` and `close` may be called from any thread at once; records
    are written whole and never interleave.
    """

    def __init__(
        self,
        path: str,
        *,
        append: bool = False,
        exclusive: bool = False,
        autoflush: bool = False,
    ) -> None:
        if append and exclusive:
            raise ValueError("append and exclusive exclude each other")
        self.path = path
        self.autoflush = autoflush
        self.records_written = 0
        self._lock = threading.Lock()
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            try:
                os.makedirs(directory, exist_ok=True)
            except FileExistsError as exc:  # a file where a directory should be
                raise ServoError(
                    Code.FAILED_PRECONDITION,
                    f"Cannot open {path} for writing: {exc.filename} is not a directory",
                ) from exc
            except OSError as exc:
                raise os_error(exc, f"Cannot open {path} for writing") from exc
        try:
            mode = "ab" if append else "xb" if exclusive else "wb"
            self._file: BinaryIO | None = cast(BinaryIO, open(path, mode))  # noqa: SIM115
        except OSError as exc:
            raise os_error(exc, f"Cannot open {path} for writing") from exc

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, record: bytes) -> None:
        """Appends one record."""
        framed = frame(record)  # CRCs computed outside the lock: writers only queue for I/O
        with self._lock:
            file = self._file
            if file is None:
                raise ServoError(Code.FAILED_PRECONDITION, f"{self.path} is closed")
            try:
                file.write(framed)
                if self.autoflush:
                    file.flush()
            except OSError as exc:
                raise os_error(exc, f"Cannot write to {self.path}") from exc
            self.records_written += 1

    def flush(self) -> None:
        """Hands what was written to the operating system."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.flush()
                except OSError as exc:
                    raise os_error(exc, f"Cannot write to {self.path}") from exc

    def close(self) -> None:
        """Flushes and closes the file; closing twice is fine."""
        with self._lock:
            file, self._file = self._file, None
            if file is not None:
                try:
                    file.close()
                except OSError as exc:
                    raise os_error(exc, f"Cannot write to {self.path}") from exc

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
