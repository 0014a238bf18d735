"""Waiting for a state that another process or thread reaches: re-checked until it holds,
within a bound. What is awaited is the state (a version AVAILABLE, a file a model writes),
never a length of time; the pause between checks only keeps the polling cheap."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT = 60.0  # seconds; a bound never reached when things work
POLL = 0.02  # seconds between checks


def wait_until(check: Callable[[], T], timeout: float = WAIT, what: str = "") -> T:
    """`check()`'s first true result; fails the test when none comes within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never reached: {what or check}"
        time.sleep(POLL)
