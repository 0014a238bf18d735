"""Runner: where a model call runs, from measurements: on the event loop's thread, on a pool
of threads, or through a batch queue; and the request's deadline around it.

The data plane decides what to run and names it by a cost key; the runner decides where.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from servo.core.servable_handle import ServableHandle
from servo.core.status import Code, ServoError

if TYPE_CHECKING:
    from servo.metrics import ServerMetrics


DEADLINE_MESSAGE = "Deadline Exceeded"


def size_class(inputs: Mapping[str, np.ndarray]) -> int:
    """A request's size as a class of cost: the bit length of its inputs' bytes, so that
    requests within a factor of two of each other share their measurements."""
    return sum(array.nbytes for array in inputs.values()).bit_length()


class _Cost:
    """Where one (servable, signature) runs, from measurements.

    On the pool a call's wall time includes waiting for the interpreter lock while the loop
    runs, so the pool is judged by the fastest of its recent calls; inline calls hold the lock
    and are judged by their moving average. The two thresholds differ so that a model near the
    limit does not flip back and forth.
    """

    __slots__ = ("average", "best", "inline", "samples")

    def __init__(self) -> None:
        self.inline = False
        self.best = float("inf")  # fastest pool call of the current window
        self.samples = 0  # pool calls in the current window
        self.average = 0.0  # moving average of inline calls


class Runner:
    """Runs model calls where they are cheapest.

    A model call that takes less than `inline_seconds` runs on the event loop's thread: for
    small models a thread hop costs more than the model. Longer calls run on a pool of
    `threads` threads (the model runtimes release the interpreter lock while they compute), so
    the loop keeps serving and a deadline can answer DEADLINE_EXCEEDED while the run finishes
    in the background. Every key starts on the pool (a first call of unknown cost must not
    stall the loop) and moves inline once a window of `POOL_WINDOW` pool calls shows one
    faster than `inline_seconds`; it moves back when its inline average passes twice that.
    Servables that say `may_run_inline = False` (user code, which may block) stay on the pool.
    Costs are kept per servable and key; the data plane keys calls by signature and request
    size (`size_class`), so a request much larger than those measured, a big batch, is
    measured on the pool before it may run inline. An inline call cannot be interrupted: one
    that outlasts its deadline answers DEADLINE_EXCEEDED all the same when it ends. A call
    with a batch queue goes there instead.

    A call on the pool or in a batch queue holds its own reference to the version
    (`ServableHandle.share`) until it ends, even after a deadline has answered the client:
    the version stays loaded while its code runs.

    Thread-safety: `run` is called from the event loop's thread.
    """

    POOL_WINDOW = 16

    def __init__(
        self,
        threads: int = 0,
        inline_seconds: float = 0.0002,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(
            threads or max(2, os.cpu_count() or 2), thread_name_prefix="servo-run"
        )
        self._inline_seconds = inline_seconds
        # TFS's runtime latency: the model call's own time (a batched call's includes its
        # wait in the batch queue, as TFS's batching session's does), by model, API, runtime.
        self._runtime_latency = metrics.runtime_latency if metrics is not None else None
        self._costs: weakref.WeakKeyDictionary[Any, dict[Hashable, _Cost]] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _cost(self, servable: Any, key: Hashable) -> _Cost:
        costs = self._costs.get(servable)
        if costs is None:
            costs = self._costs.setdefault(servable, {})
        cost = costs.get(key)
        if cost is None:
            cost = costs[key] = _Cost()
        return cost

    def _observe(self, handle: ServableHandle, api: str, seconds: float) -> None:
        histogram = self._runtime_latency
        if histogram is not None and api:
            platform = handle.servable.platform
            runtime = "TF1" if platform == "tensorflow" else platform  # TFS's name for TF's
            histogram.observe(seconds * 1e6, handle.id.name, api, runtime)

    async def run(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        key: Hashable,
        timeout: float | None,
        api: str = "",
        queue: Callable[[], Future[Any] | None] | None = None,
    ) -> Any:
        """Runs `call()`, a model call on `handle`'s servable, where it is cheapest.

        `key` names the call for its cost (the data plane's: the signature, with the request's
        size where the cost depends on it); `timeout` in seconds (None: no limit) answers
        DEADLINE_EXCEEDED when over; `api` ("Predict", "Classify", ...) labels the call's
        runtime latency (none recorded without it). `queue`, when given, is the servable's
        batch queue for this call: it enqueues the call and returns the future of its result,
        or None when the call is not batched (it then runs as any other).

        The caller holds `handle` until this returns; a call that may outlive that (on the
        pool, in a batch queue) holds a reference of its own until it ends.
        """
        if queue is not None:
            started = time.perf_counter()
            future = queue()
            if future is not None:
                return await self._wait_batched(handle, future, started, timeout, api)
        cost = self._cost(handle.servable, key)
        if not cost.inline:
            return await self._run_in_pool(handle, call, cost, timeout, api)
        started = time.perf_counter()
        try:
            result = call()
        finally:
            spent = time.perf_counter() - started
            cost.average = 0.9 * cost.average + 0.1 * spent
            if cost.average > 2 * self._inline_seconds:
                cost.inline, cost.best, cost.samples = False, float("inf"), 0
            self._observe(handle, api, spent)
        if timeout is not None and spent > timeout:
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
        return result

    async def _run_in_pool(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        cost: _Cost,
        timeout: float | None,
        api: str,
    ) -> Any:
        limit = self._inline_seconds if getattr(handle.servable, "may_run_inline", True) else 0.0
        own = handle.share()

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return call()
            finally:
                spent = time.perf_counter() - started
                self._observe(own, api, spent)
                cost.best = min(cost.best, spent)
                cost.samples += 1
                if cost.samples >= self.POOL_WINDOW:
                    if cost.best < limit:
                        cost.inline, cost.average = True, cost.best
                    cost.best, cost.samples = float("inf"), 0

        try:
            future = self._pool.submit(timed)
        except BaseException:
            own.release()
            raise
        future.add_done_callback(lambda _: own.release())
        return await self._wait(asyncio.wrap_future(future), timeout)

    async def _wait_batched(
        self,
        handle: ServableHandle,
        future: Future[Any],
        started: float,
        timeout: float | None,
        api: str,
    ) -> Any:
        own = handle.share()

        def done(_: Any) -> None:
            self._observe(own, api, time.perf_counter() - started)
            own.release()

        future.add_done_callback(done)
        return await self._wait(asyncio.wrap_future(future), timeout)

    @staticmethod
    async def _wait(awaitable: Any, timeout: float | None) -> Any:
        if timeout is None:
            return await awaitable
        try:
            return await asyncio.wait_for(asyncio.shield(awaitable), timeout)
        except TimeoutError:
            # The call's own end (an error, often: a servable that stops its call at the
            # deadline raises) is nobody's to see now; taken, so asyncio logs no traceback.
            awaitable.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
