"""Runner: where a model call runs, from measurements: on the event loop's thread, on a pool
of threads, or through a batch queue; and the request's deadline around it.

The data plane decides what to run and names it by a cost key; the runner decides where.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
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


log = logging.getLogger(__name__)

DEADLINE_MESSAGE = "Deadline Exceeded"

# A version's calls that run at once and that may wait for a place, unless told otherwise;
# the threads that all versions' calls share.
DEFAULT_CONCURRENCY = 4 * (os.cpu_count() or 1)
DEFAULT_QUEUE = 128
DEFAULT_THREADS = 256


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
    """One version's share of the model-call threads: at most `limit` of its calls run at
    once, and at most `queue_limit` more wait for a place, in arrival order. A call that
    outlives its deadline keeps its place until it returns, so a slow or hung model uses up
    only its own share. Places are taken on the event loop and given back from any thread."""

    __slots__ = ("limit", "lock", "queue_limit", "running", "waiting")

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.running = 0  # places held: calls running, or about to
        self.waiting: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self.waiting = collections.deque()
        self.lock = threading.Lock()

    async def enter(self, id: ServableId, timeout: float | None) -> None:
        """Takes a place, waiting at most `timeout` seconds for one (TimeoutError after)."""
        with self.lock:
            if self.running < self.limit:
                self.running += 1
                return
            if len(self.waiting) >= self.queue_limit:
                raise ServoError(
                    Code.UNAVAILABLE,
                    f"Servable {id} is at its limit of calls: {self.limit} running and "
                    f"{self.queue_limit} waiting (--max_concurrent_calls_per_model, "
                    "--max_queued_calls_per_model); retry later",
                )
            loop = asyncio.get_running_loop()
            turn: asyncio.Future[None] = loop.create_future()
            self.waiting.append((loop, turn))
        try:
            await asyncio.wait_for(turn, timeout)
        except BaseException:
            with self.lock:
                queued = (loop, turn) in self.waiting
                if queued:
                    self.waiting.remove((loop, turn))
            # Not queued: a place was handed to this call. Still on its way, _grant passes it
            # on; already granted (the deadline fired in the same pass, which wait_for reports
            # as a timeout from Python 3.12), it is this call's to give back.
            if not queued and turn.done() and not turn.cancelled():
                self.leave()
            raise

    def leave(self) -> None:
        """Gives a place back: to the first call waiting, if any."""
        with self.lock:
            if not self.waiting:
                self.running -= 1
                return
            loop, turn = self.waiting.popleft()
        try:
            loop.call_soon_threadsafe(self._grant, turn)
        except RuntimeError:  # that loop is closed: nobody waits there any more
            self.leave()

    def _grant(self, turn: asyncio.Future[None]) -> None:
        if turn.done():  # its wait ended meanwhile (deadline, request gone): the next one's
            self.leave()
        else:
            turn.set_result(None)


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

    Calls on threads share one pool of up to `threads` threads (made as calls need them), and
    each version has its own share of it (a `_Lane`): `concurrency(model_name)` calls at
    once, and at most `queue(model_name)` waiting for a place; a call beyond that answers
    UNAVAILABLE at once. A slow or hung model thus holds only its own share, and other
    models (and its own next version) keep theirs. A call still waiting when its deadline
    passes (or when its request goes away) is dropped before it runs.

    A call on the pool or in a batch queue holds its own reference to the version
    (`ServableHandle.share`) until it ends, even after a deadline has answered the client:
    the version stays loaded while its code runs, and unloads once its calls return.

    Thread-safety: `run` is called from the event loop's thread.
    """

    POOL_WINDOW = 16

    def __init__(
        self,
        threads: int = DEFAULT_THREADS,
        concurrency: Callable[[str], int] = lambda name: DEFAULT_CONCURRENCY,
        queue: Callable[[str], int] = lambda name: DEFAULT_QUEUE,
        inline_seconds: float = 0.0002,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="servo-run")
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
        self._running: set[Future[Any]] = set()  # calls on the pool not yet ended
        self._running_lock = threading.Lock()

    def close(self, timeout: float | None = None) -> bool:
        """Takes no more calls, drops those still waiting for a thread, and waits for those
        running to end, at most `timeout` seconds (None: no bound); True when they all ended.
        A call still running after it is left to its thread: the pool's threads are not
        joined, so a model call that never returns does not hold the caller."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._running_lock:
            running = list(self._running)
        _, left = concurrent.futures.wait(running, timeout=timeout)
        if left:
            log.warning(
                "Stopping with %d model calls still running; they are left to end", len(left)
            )
        return not left

    def _lane(self, handle: ServableHandle) -> _Lane:
        servable = handle.servable
        lane = self._lanes.get(servable)
        if lane is None:
            name = handle.id.name
            lane = _Lane(max(1, self._concurrency(name)), max(0, self._queue(name)))
            lane = self._lanes.setdefault(servable, lane)
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
        started = time.monotonic()
        try:
            await lane.enter(own.id, timeout)
        except TimeoutError:
            own.release()
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        except BaseException:
            own.release()
            raise
        try:
            future = self._pool.submit(timed)
        except RuntimeError:  # the pool is shut down: the server is stopping
            lane.leave()
            own.release()
            raise ServoError(Code.UNAVAILABLE, "The server is shutting down") from None
        except BaseException:
            lane.leave()
            own.release()
            raise
        with self._running_lock:
            self._running.add(future)

        def done(_: Any) -> None:
            self._ended(future)
            lane.leave()
            own.release()

        future.add_done_callback(done)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        return await self._wait(future, left)

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

    def _ended(self, future: Future[Any]) -> None:
        with self._running_lock:
            self._running.discard(future)

    @staticmethod
    async def _wait(future: Future[Any], timeout: float | None) -> Any:
        """The call's result; at the deadline (or when the request is cancelled) a call that
        has not started yet is dropped, and one that has goes on in the background."""
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except TimeoutError:
            future.cancel()
            # The call's own end (an error, often: a servable that stops its call at the
            # deadline raises) is nobody's to see now; taken, so asyncio logs no traceback.
            wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        except asyncio.CancelledError:
            future.cancel()
            raise
