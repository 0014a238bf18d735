"""servo's log lines: the handlers and formats of --log_level, --log_format and the access log.

Text (the default): `2026-12-03 10:00:00.123 I servo.server] message`, a traceback after it.
JSON (`--log_format=json`): one object per line with `time` (ISO 8601, UTC, milliseconds),
`level`, `logger`, `message`, `exception` (the traceback's text, when there is one) and, for
an access line, its fields as keys (servo.apis.access_log). Either way no line holds a
credential servo knows of (servo.util.gfile.redact). Python's warnings are logged
(`py.warnings`), so they take the same format.

The access log (`servo.access`, INFO) has a handler of its own, to stderr or a file, so that
its lines are written whatever --log_level says and do not reach the root's.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from servo.util import gfile

FORMATS = ("text", "json")
ACCESS_LOGGER = "servo.access"
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s"
TEXT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's doc)."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        message = access.summary() if access is not None else record.getMessage()
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": gfile.redact(message),
        }
        if record.exc_info:
            doc["exception"] = gfile.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exception"] = gfile.redact(record.exc_text)
        if record.stack_info:
            doc["stack"] = gfile.redact(self.formatStack(record.stack_info))
        if access is not None:
            for key, value in access.fields().items():
                doc[key] = gfile.redact(value) if isinstance(value, str) else value
        return orjson.dumps(doc).decode()


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format != "text":
        raise ValueError(f"--log_format: expected one of {', '.join(FORMATS)}, got {log_format!r}")
    return gfile.RedactingFormatter(TEXT_FORMAT, datefmt=TEXT_DATE_FORMAT)


def configure(
    level: int,
    log_format: str = "text",
    *,
    access_log: bool = False,
    access_log_file: str = "",
) -> None:
    """The root logger at `level` on stderr in `log_format`; the access logger on stderr or
    `access_log_file` (appended to; reopened when moved away, as log rotation does) when
    `access_log`. Raises OSError when the file cannot be opened."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    access = logging.getLogger(ACCESS_LOGGER)
    for old in list(access.handlers):
        access.removeHandler(old)
        old.close()
    access.propagate = False
    if not access_log:
        access.setLevel(logging.CRITICAL + 1)
        return
    access.setLevel(logging.INFO)
    to: logging.Handler
    if access_log_file:
        to = logging.handlers.WatchedFileHandler(access_log_file, encoding="utf-8")
    else:
        to = logging.StreamHandler(sys.stderr)
    to.setFormatter(formatter(log_format))
    access.addHandler(to)
