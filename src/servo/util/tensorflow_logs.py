"""TensorFlow's C++ logs: quiet unless the operator asks for them.

TensorFlow's C++ code logs through its own logger, which reads `TF_CPP_MIN_LOG_LEVEL` once,
when the first of its libraries loads (0 writes everything, 1 hides INFO, 2 also WARNING, 3
also ERROR): `configure` sets it before anything imports TensorFlow.

That level does not reach the lines the libraries write while they load: their static
initializers log (the oneDNN notice, "Could not find cuda drivers on your machine") before
TensorFlow's logging is set up, through absl, which writes all of them to stderr with
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR".
`import tensorflow` loads two libraries that each carry a copy of that start-up code
(`_pywrap_tensorflow_internal.so`, then `profiler/internal/_pywrap_profiler_plugin.so`), so
the banner appears twice in one process. `quiet_import` runs an import with stderr passed
through a filter that drops those lines below the level (every other line goes through, as
it is written); nothing servo can set makes the libraries themselves skip them.

An op library can undo the level: ydf-tf's `inference.so` defines absl's `minloglevel` flag,
whose initializer sets the process's absl level (TensorFlow's, shared) back to INFO when it
loads. `restore_level(library)` sets it again after such a load, through absl's own setter.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
from collections.abc import Iterator

ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = 3  # every C++ line hidden: TensorFlow's errors reach servo as statuses
LEVELS = (0, 1, 2, 3)

# absl's line prefix: severity letter, MMDD (00:00 before logging is initialized), time.
_ABSL_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 4}
_lock = threading.Lock()


def configure(level: int | None) -> int:
    """Sets TF_CPP_MIN_LOG_LEVEL for this process (and the processes it starts): `level`
    when given, else the environment's when it holds one of LEVELS, else DEFAULT_LEVEL.
    Returns the level set. Takes effect only before TensorFlow's first import."""
    if level is None:
        current = os.environ.get(ENV, "").strip()
        level = int(current) if current in {str(n) for n in LEVELS} else DEFAULT_LEVEL
    os.environ[ENV] = str(level)
    return level


_ABSL_SET_MIN_LEVEL = re.compile(
    rb"_ZN4absl\w{1,40}?log_internal17RawSetMinLogLevelENS\w{1,4}?LogSeverityAtLeastE"
)


def restore_level(library: str) -> bool:
    """Sets absl's minimum log level to TF_CPP_MIN_LOG_LEVEL again after the shared library
    at `library` loaded (its absl flags reset it); True when it could. Best effort: the
    setter's name is read from the library's symbols, as its absl version mangles it."""
    level = min_level()
    if level < 1:
        return False
    try:
        with open(library, "rb") as f:
            found = _ABSL_SET_MIN_LEVEL.search(f.read())
        if found is None:
            return False
        setter = getattr(ctypes.CDLL(library), found.group(0).decode())
        setter.argtypes = [ctypes.c_int]
        setter(level)
    except (OSError, AttributeError):
        return False
    return True


def min_level() -> int:
    """The level TensorFlow will read (its default, 0, when unset or not a number)."""
    try:
        return int(os.environ.get(ENV, "0"))
    except ValueError:
        return 0


def keep(line: bytes, level: int) -> bool:
    """Whether a line written to stderr while TensorFlow loads passes `level`."""
    if line.startswith(_ABSL_NOTICE):
        return level < 1
    match = _ABSL_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= level


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Runs the `with` body (an import that may load TensorFlow's libraries) with stderr's
    lines below TF_CPP_MIN_LOG_LEVEL dropped. Nothing is done when TensorFlow is imported
    already or the level is 0. Other threads' lines written meanwhile pass through."""
    level = min_level()
    if level < 1 or "tensorflow" in sys.modules:
        yield
        return
    with _lock:
        if "tensorflow" in sys.modules:  # another thread imported it while this one waited
            yield
            return
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        forward = threading.Thread(
            target=_forward, args=(read_end, saved, level), name="servo-tf-stderr", daemon=True
        )
        forward.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer goes: the forwarder reads to its end
            forward.join()
            os.close(saved)


def _forward(read_end: int, out: int, level: int) -> None:
    """Copies the pipe's lines to `out` as they come, dropping those `keep` refuses."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if keep(line, level))
            _write(out, kept)
    if pending and keep(pending, level):
        _write(out, pending)


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
