"""Body read deadlines for every request at the cost of a dict entry each.

`asyncio.timeout` around each body read schedules and cancels a timer per request (about 3 us
on the development machine, a few percent of a small model's request). `ReadWatch` keeps
instead the start of every read in progress and one task that looks at them once every
`timeout / 8` seconds (at most a second) while reads are in progress, cancelling those past
their deadline: a slow body is cut between `timeout` and `timeout` plus a sweep's interval
after its headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class ReadTimeout(Exception):
    """A read that had not ended `timeout` seconds after it began."""


class ReadWatch:
    """Thread-safety: one event loop's; the sweep runs on the loop of the first read."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._reads: dict[asyncio.Task[object], float] = {}  # task -> when its read began
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def read(self, work: Awaitable[T]) -> T:
        """`await work`, or ReadTimeout once it has taken longer than `timeout`."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, no deadline
            return await work
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        self._reads[task] = loop.time()
        try:
            return await work
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                task.uncancel()
                raise ReadTimeout from None
            raise
        finally:
            self._reads.pop(task, None)

    async def _sweep(self) -> None:
        """Runs while reads are in progress (an idle server has no task pending)."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, max(self.timeout / 8, 0.01))
        while self._reads:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, began in list(self._reads.items()):
                if now - began > self.timeout and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
