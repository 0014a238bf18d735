"""The access log: one line per request, REST and gRPC, when --access_log is on.

Each protocol's boundary starts an `AccessEntry` when a request arrives (`begin`, which makes
it the current one of the request's task), fills in what it learns (the API, the status, the
bytes), and `write`s it once the answer is out. The data plane, which resolves the model
spec, records the model and the version that served (`note_spec`, `note_served`) into the
current entry, so that every protocol's line names them the same way. The logger is
`servo.access` at INFO; `servo.util.log_format` writes an entry as text
(`protocol=rest client=... status=200 ...`) or, in JSON, as keys of the line's object.

Off, none of this runs: the boundaries and the data plane check one boolean. Thread-safety:
an entry belongs to one request's task; `write` may run on any thread (logging locks).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from typing import Any

import orjson

from servo.util import log_format

log = logging.getLogger(log_format.ACCESS_LOGGER)

# With --workers > 1: this worker's process ID, which every line then ends with (`worker=`),
# so that a line says which of the processes sharing the ports answered.
WORKER_PID: int | None = None

_current: contextvars.ContextVar[AccessEntry | None] = contextvars.ContextVar(
    "servo_access_entry", default=None
)

FIELDS = (
    "protocol",
    "client",
    "method",
    "path",
    "status",
    "api",
    "model",
    "version",
    "bytes_in",
    "bytes_out",
    "latency_ms",
)


class AccessEntry:
    """What one request's line says. `status` is the HTTP status (REST) or the gRPC code's
    name; `version` the version that served, None when none did (or the request named no
    model); `model` the model the request named (None when none); `api` servo's name for
    the route or method (predict, classify, regress, multi_inference, infer, metadata,
    status, ...)."""

    __slots__ = (
        "api",
        "bytes_in",
        "bytes_out",
        "client",
        "latency_ms",
        "method",
        "model",
        "path",
        "protocol",
        "started",
        "status",
        "version",
    )

    def __init__(self, protocol: str, client: str, method: str, path: str) -> None:
        self.protocol = protocol
        self.client = client
        self.method = method
        self.path = path
        self.status: int | str = ""
        self.api = ""
        self.model: str | None = None
        self.version: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.perf_counter()
        self.latency_ms = 0.0

    def fields(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in FIELDS}
        if WORKER_PID is not None:
            fields["worker"] = WORKER_PID
        return fields

    def summary(self) -> str:
        """The JSON line's message: the request and its status."""
        return f"{self.method} {self.path} {self.status}"

    def __str__(self) -> str:
        """The text line: key=value pairs, a value with spaces, quotes or `=` in JSON quotes;
        `-` for what is not known."""
        version = "-" if self.version is None else self.version
        return (
            f"protocol={self.protocol} client={_text(self.client)} method={_text(self.method)} "
            f"path={_text(self.path)} status={_text(self.status)} api={_text(self.api)} "
            f"model={_text(self.model)} version={version} bytes_in={self.bytes_in} "
            f"bytes_out={self.bytes_out} latency_ms={self.latency_ms:.3f}"
            + ("" if WORKER_PID is None else f" worker={WORKER_PID}")
        )


_PLAIN = re.compile(r'[^\s"=\\]+')


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) is None or not text.isprintable():
        return orjson.dumps(text).decode()
    return text


def begin(protocol: str, client: str, method: str, path: str) -> AccessEntry:
    """A new entry, current for the calling task (and the tasks it starts) from now on."""
    entry = AccessEntry(protocol, client, method, path)
    _current.set(entry)
    return entry


def current() -> AccessEntry | None:
    return _current.get()


def note_spec(name: str, version: int | None) -> None:
    """The model (and version, when the request names one) the current request asks for."""
    entry = _current.get()
    if entry is not None:
        entry.model = name
        entry.version = version


def note_served(version: int) -> None:
    """The version that holds the current request's handle."""
    entry = _current.get()
    if entry is not None:
        entry.version = version


def write(entry: AccessEntry) -> None:
    """Writes the entry's line, its latency measured from `begin` to now."""
    entry.latency_ms = (time.perf_counter() - entry.started) * 1000.0
    if log.isEnabledFor(logging.INFO):
        # The record made directly: logging's search of the stack for the caller is a good
        # part of a line's cost, and an access line's caller is always this one.
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, "%s", (entry,), None, extra={"access": entry}
        )
        log.handle(record)
