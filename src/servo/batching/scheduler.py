"""BatchScheduler: TFS's shared batch scheduler.

One scheduler with `num_batch_threads` threads serves every queue (one queue per model version,
signature and output set). A request joins its queue's open batch when it fits, otherwise that
batch closes and a new one opens; with large-batch splitting a request too big for the open
batch is cut into pieces (the first fills the open batch, the rest fill new ones). A batch is
ready when it is closed or full, or when its oldest request has waited `batch_timeout_micros`.
Threads take one ready batch from a queue and move on to the next queue (round robin), so a
busy model cannot starve the others. A queue holding `max_enqueued_batches` batches refuses
requests with UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import cast

import numpy as np

from servo.batching.parameters import QueueOptions
from servo.core.status import Code, ServoError

log = logging.getLogger(__name__)

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


class Request:
    """One caller's inputs (all sharing dim 0 = `size`) and the future of its outputs.

    The future is settled exactly once: by the last piece's `deliver`, or by the first `fail`
    (whichever comes first; later calls do nothing)."""

    __slots__ = (
        "_lock",
        "_parts",
        "_remaining",
        "_settled",
        "deadline",
        "enqueued_at",
        "future",
        "inputs",
        "size",
    )

    def __init__(
        self, inputs: dict[str, np.ndarray], size: int, deadline: float | None = None
    ) -> None:
        self.inputs = inputs
        self.size = size
        self.deadline = deadline  # time.monotonic() after which the caller gave up; None: never
        self.future: Future[dict[str, np.ndarray]] = Future()
        self.enqueued_at = 0.0
        self._parts: list[dict[str, np.ndarray] | None] = []
        self._remaining = 0
        self._settled = False
        self._lock = threading.Lock()

    def _expect(self, pieces: int) -> None:
        self._parts = [None] * pieces
        self._remaining = pieces

    def deliver(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        """The outputs of piece `index`; the future resolves when every piece has come."""
        with self._lock:
            if self._settled:
                return
            self._parts[index] = outputs
            self._remaining -= 1
            if self._remaining:
                return
            self._settled = True
            parts = self._parts
        if len(parts) == 1:
            _settle(self.future, parts[0])
            return
        try:  # pieces of a split request, back in order
            filled = cast(list[dict[str, np.ndarray]], parts)  # every piece has come
            result = {k: np.concatenate([p[k] for p in filled]) for k in filled[0]}
        except ValueError as exc:
            _settle(
                self.future,
                error=ServoError(
                    Code.FAILED_PRECONDITION,
                    "The pieces of a split request have outputs of different shapes (with "
                    "pad_variable_length_inputs each batch pads to its own longest input); "
                    f"send at most max_execution_batch_size rows per request: {exc}",
                ),
            )
            return
        _settle(self.future, result)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self._settled:
                return
            self._settled = True
        _settle(self.future, error=error)


def _settle(
    future: Future[dict[str, np.ndarray]],
    result: dict[str, np.ndarray] | None = None,
    error: BaseException | None = None,
) -> None:
    """Sets the future's result or error, unless its waiter has cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


class Piece:
    """Rows [start, stop) of a request, as they sit in one batch."""

    __slots__ = ("index", "request", "start", "stop")

    def __init__(self, request: Request, index: int, start: int, stop: int) -> None:
        self.request = request
        self.index = index
        self.start = start
        self.stop = stop

    @property
    def size(self) -> int:
        return self.stop - self.start


class Batch:
    __slots__ = ("closed", "opened_at", "pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.size = 0
        self.opened_at = time.monotonic()
        self.closed = False


ProcessBatch = Callable[[Batch], None]


class BatchQueue:
    """One queue of the scheduler. Thread-safety: `schedule` may be called from any thread."""

    def __init__(
        self,
        scheduler: BatchScheduler,
        options: QueueOptions,
        process: ProcessBatch,
        name: str,
    ) -> None:
        self.scheduler = scheduler
        self.options = options
        self.process = process
        self.name = name
        self.batches: deque[Batch] = deque()
        self.closed = False

    def schedule(self, request: Request) -> None:
        """Adds `request` to the queue, or raises INVALID_ARGUMENT / UNAVAILABLE."""
        options = self.options
        if request.size > options.max_batch_size:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Task size {request.size} is larger than maximum input batch size "
                f"{options.max_batch_size}",
            )
        limit = options.execution_limit
        with self.scheduler.cond:
            if self.closed:
                raise ServoError(Code.UNAVAILABLE, f"Batch queue {self.name} is closed")
            open_batch = self.batches[-1] if self.batches and not self.batches[-1].closed else None
            room = limit - open_batch.size if open_batch is not None else 0
            sizes: list[int] = []  # piece sizes; the first goes in the open batch if it fits
            if request.size <= room:
                sizes = [request.size]
                new_batches = 0
            elif options.enable_large_batch_splitting:
                rest = request.size
                if room > 0:
                    sizes.append(room)
                    rest -= room
                while rest > 0:
                    sizes.append(min(rest, limit))
                    rest -= sizes[-1]
                new_batches = len(sizes) - (1 if room > 0 else 0)
            else:
                sizes = [request.size]
                new_batches = 1
            if len(self.batches) + new_batches > options.max_enqueued_batches:
                raise ServoError(Code.UNAVAILABLE, QUEUE_FULL)
            request.enqueued_at = time.monotonic()
            request._expect(len(sizes))
            start = 0
            for index, size in enumerate(sizes):
                batch = self.batches[-1] if self.batches and not self.batches[-1].closed else None
                if batch is None or batch.size + size > limit:
                    if batch is not None:
                        batch.closed = True
                    batch = Batch()
                    self.batches.append(batch)
                batch.pieces.append(Piece(request, index, start, start + size))
                batch.size += size
                start += size
                if batch.size >= limit:
                    batch.closed = True
            # One thread per piece: a split request may have made several batches ready.
            self.scheduler.cond.notify(len(sizes))

    def _due(self) -> float | None:
        """When the first batch is ready to run (now for a closed one); None without one."""
        if not self.batches:
            return None
        batch = self.batches[0]
        return 0.0 if batch.closed else batch.opened_at + self.options.batch_timeout_micros / 1e6

    def _has_ready_batch(self, now: float) -> bool:
        due = self._due()
        return due is not None and now >= due

    def _ready_batch(self, now: float) -> tuple[Batch | None, float | None]:
        """The queue's first batch when it is ready (taken off the queue), else when it will be."""
        due = self._due()
        if due is None or now < due:
            return None, due
        batch = self.batches.popleft()
        batch.closed = True
        return batch, None


class BatchScheduler:
    """The threads and the queues they serve.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, num_threads: int, name: str = "batch_threads") -> None:
        self.cond = threading.Condition()
        self.name = name
        self._queues: list[BatchQueue] = []
        self._next = 0
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"servo-{name}-{i}", daemon=True)
            for i in range(max(1, num_threads))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def num_threads(self) -> int:
        return len(self._threads)

    def add_queue(self, options: QueueOptions, process: ProcessBatch, name: str) -> BatchQueue:
        queue = BatchQueue(self, options, process, name)
        with self.cond:
            self._queues.append(queue)
        return queue

    def remove_queue(self, queue: BatchQueue, error: BaseException | None = None) -> None:
        """Removes `queue`; batches still in it fail with `error` (UNAVAILABLE by default).

        Callers drain first: a version's queue is removed only when it unloads, and it unloads
        only after every request holding it has been answered.
        """
        with self.cond:
            queue.closed = True
            if queue in self._queues:
                self._queues.remove(queue)
            left = list(queue.batches)
            queue.batches.clear()
        for batch in left:
            for piece in batch.pieces:
                piece.request.fail(
                    error or ServoError(Code.UNAVAILABLE, f"Batch queue {queue.name} was removed")
                )

    def stop(self) -> None:
        with self.cond:
            self._stopped = True
            self.cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _take(self) -> tuple[BatchQueue, Batch] | float | None:
        """A ready batch (round robin over queues), or how long to wait (None: until told)."""
        now = time.monotonic()
        count = len(self._queues)
        earliest: float | None = None
        for offset in range(count):
            index = (self._next + offset) % count
            queue = self._queues[index]
            batch, due = queue._ready_batch(now)
            if batch is not None:
                self._next = (index + 1) % count
                return queue, batch
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return None if earliest is None else max(0.0, earliest - now)

    def _work(self) -> None:
        while True:
            with self.cond:
                while True:
                    if self._stopped:
                        return
                    taken = self._take()
                    if isinstance(taken, tuple):
                        break
                    self.cond.wait(taken)
                # Another batch ready too: wake a thread for it rather than leave it waiting
                # for this one (or for the next request) while threads sit idle.
                now = time.monotonic()
                if any(q._has_ready_batch(now) for q in self._queues):
                    self.cond.notify()
            queue, batch = taken
            try:
                queue.process(batch)
            except BaseException as exc:  # the processor failed as a whole
                log.exception("Processing a batch of %s failed", queue.name)
                error = (
                    exc
                    if isinstance(exc, ServoError)
                    else ServoError(
                        Code.INTERNAL, f"Batch processing failed: {type(exc).__name__}: {exc}"
                    )
                )
                for piece in batch.pieces:
                    piece.request.fail(error)
