"""Body read deadlines for every request at the cost of a dict entry each.

`asyncio.timeout` around each body read schedules and cancels a timer per request (about 3 us
on the development machine, a few percent of a small model's request). `ReadWatch` keeps
instead the start of every read in progress and one task that looks at them once every
`timeout / 8` seconds (at most a second) while reads are in progress, cancelling those past
their deadline: a slow body is cut between `timeout` and `timeout` plus a sweep's interval
after its headers.

A read costs no system call: the loop is looked up once (`asyncio.get_running_loop()`, and
`asyncio.current_task()` without a loop, call getpid() each time on Python 3.11), and the
reading task is found from it.
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
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the reads

    async def read(self, work: Awaitable[T]) -> T:
        """`await work`, or ReadTimeout once it has taken longer than `timeout`."""
        loop = self._loop
        if loop is None or not loop.is_running():  # the first read, or a new loop's
            loop = self._loop = asyncio.get_running_loop()
            self._sweeper = None  # a sweep of an earlier loop does not run on this one
        task = asyncio.current_task(loop)
        if task is None:  # not in a task: nothing to cancel, no deadline
            return await work
        sweeper = self._sweeper
        if sweeper is None or sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        reads = self._reads
        reads[task] = loop.time()
        try:
            return await work
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                task.uncancel()
                raise ReadTimeout from None
            raise
        finally:
            reads.pop(task, None)

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
