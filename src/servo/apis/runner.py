"""Runner: where a model call runs, from measurements: on the event loop's thread, on a pool
of threads, or through a batch queue; and the request's deadline around it.

The data plane decides what to run and names it by a cost key; the runner decides where.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from servo.core.servable_handle import ServableHandle
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError

if TYPE_CHECKING:
    from servo.metrics import ServerMetrics


DEADLINE_MESSAGE = "Deadline Exceeded"

# A version's model-call threads and the calls that may wait for one, unless told otherwise.
DEFAULT_CONCURRENCY = 4 * (os.cpu_count() or 1)
DEFAULT_QUEUE = 128


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


class _Lane:
    """One version's share of the model-call threads: its own pool of `limit` threads and at
    most `queue_limit` calls waiting for one. A call that outlives its deadline keeps its
    thread until it returns, so a hung or slow model uses up only its own lane."""

    __slots__ = ("__weakref__", "in_flight", "limit", "lock", "pool", "queue_limit")

    def __init__(self, name: str, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.in_flight = 0  # calls submitted and not yet ended (running or waiting)
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(limit, thread_name_prefix=f"servo-run-{name}")

    def enter(self, id: ServableId) -> None:
        with self.lock:
            if self.in_flight >= self.limit + self.queue_limit:
                raise ServoError(
                    Code.UNAVAILABLE,
                    f"Servable {id} is at its limit of calls: {self.limit} running and "
                    f"{self.queue_limit} waiting (--max_concurrent_calls_per_model, "
                    "--max_queued_calls_per_model); retry later",
                )
            self.in_flight += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


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

    Each version has its own pool (a `_Lane`): `concurrency(model_name)` threads, and at most
    `queue(model_name)` calls waiting for one; a call beyond that answers UNAVAILABLE at
    once. A slow or hung model thus holds only its own threads, and other models (and its
    own next version) keep theirs. A call still waiting when its deadline passes (or when
    its request goes away) is dropped before it runs.

    A call on the pool or in a batch queue holds its own reference to the version
    (`ServableHandle.share`) until it ends, even after a deadline has answered the client:
    the version stays loaded while its code runs, and unloads once its calls return.

    Thread-safety: `run` is called from the event loop's thread.
    """

    POOL_WINDOW = 16

    def __init__(
        self,
        concurrency: Callable[[str], int] = lambda name: DEFAULT_CONCURRENCY,
        queue: Callable[[str], int] = lambda name: DEFAULT_QUEUE,
        inline_seconds: float = 0.0002,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._concurrency = concurrency
        self._queue = queue
        self._inline_seconds = inline_seconds
        # TFS's runtime latency: the model call's own time (a batched call's includes its
        # wait in the batch queue, as TFS's batching session's does), by model, API, runtime.
        self._runtime_latency = metrics.runtime_latency if metrics is not None else None
        self._costs: weakref.WeakKeyDictionary[Any, dict[Hashable, _Cost]] = (
            weakref.WeakKeyDictionary()
        )
        self._lanes: weakref.WeakKeyDictionary[Any, _Lane] = weakref.WeakKeyDictionary()
        self._closed = False

    def close(self) -> None:
        """Stops every lane's threads once their calls end (without waiting for them)."""
        self._closed = True
        for lane in list(self._lanes.values()):
            lane.pool.shutdown(wait=False, cancel_futures=True)

    def _lane(self, handle: ServableHandle) -> _Lane:
        servable = handle.servable
        lane = self._lanes.get(servable)
        if lane is None:
            if self._closed:
                raise ServoError(Code.UNAVAILABLE, "The server is shutting down")
            name = handle.id.name
            limit = max(1, self._concurrency(name))
            lane = _Lane(f"{name}-{handle.id.version}", limit, max(0, self._queue(name)))
            self._lanes[servable] = lane
            # The lane's threads end with the version (the servable is dropped on unload).
            weakref.finalize(servable, lane.pool.shutdown, wait=False)
        return lane

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

        lane = self._lane(own)
        try:
            lane.enter(own.id)
        except BaseException:
            own.release()
            raise
        try:
            future = lane.pool.submit(timed)
        except BaseException:
            lane.leave()
            own.release()
            raise

        def done(_: Any) -> None:
            lane.leave()
            own.release()

        future.add_done_callback(done)
        return await self._wait(future, timeout)

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
        return await self._wait(future, timeout)

    @staticmethod
    async def _wait(future: Future[Any], timeout: float | None) -> Any:
        """The call's result; at the deadline (or when the request is cancelled) a call that
        has not started yet is dropped, and one that has goes on in the background."""
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            future.cancel()
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        except asyncio.CancelledError:
            future.cancel()
            raise
