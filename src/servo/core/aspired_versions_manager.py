"""AspiredVersionsManager: loads, serves and unloads the versions that sources aspire to.

Invariants (each has a test in tests/core):
1. Omission means unload: each aspired-versions call replaces the last one for its name; a
   version left out is unloaded (when the version policy says so).
2. Only the newest pending aspired-versions call per name is kept; older ones that the manage
   loop has not yet taken are dropped.
3. At most one policy action per stream per pass of the manage loop.
4. A version that is aspired and ready is never unloaded.
5. Load and unload of one loader never overlap, and unload follows only a successful load.
6. A version is unloaded only after every handle to it has been released.
7. A failed load is retried `max_num_load_retries` times, `load_retry_interval` seconds apart,
   then the version ends (END) with the error in its health. A version that ended in error is
   not retried while it stays aspired. While it waits for a retry, it is LOADING with the
   last failure and the retry count in its health (published again at each failure).
8. A load whose resource estimate does not fit the tracker's budget is refused: the version
   ends with RESOURCE_EXHAUSTED (unless unloads in flight may free room: then it waits).

Example call sequence, availability-preserving policy, version 1 serving:
    callback("m", [v2])   -> START(v2); v1 stays serving (the only ready version)
    manage pass           -> load queued; a load thread: LOADING(v2), load -> AVAILABLE(v2)
    manage pass           -> UNLOADING(v1); handles on v1 finish; unload thread -> END(v1)
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from servo.core.aspired_version_policy import (
    Action,
    AspiredVersionPolicy,
    AvailabilityPreservingPolicy,
    VersionSnapshot,
)
from servo.core.event_bus import EventBus
from servo.core.loader import Loader
from servo.core.loader_harness import FINAL_STATES, IN_TRANSITION, LoaderHarness, LoaderState
from servo.core.resource_tracker import ResourceTracker
from servo.core.servable_handle import ServableHandle
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ServableState
from servo.core.source import AspiredVersionsCallback, ServableData, Target
from servo.core.status import OK, Code, ServoError, Status

log = logging.getLogger(__name__)


@dataclass
class AspiredVersionsManagerOptions:
    """Options of the manager. Times are in seconds."""

    # How often the manage loop runs when nothing wakes it (TFS: 100 ms).
    manage_state_interval: float = 0.1
    # Threads that load / unload. 0 means one: loads (unloads) run one at a time, as in TFS,
    # but on a thread of their own so that the manage loop stays responsive.
    num_load_threads: int = 0
    num_unload_threads: int = 0
    # Retries after a failed load, and the wait between them (TFS: 5 and 60 s).
    max_num_load_retries: int = 5
    load_retry_interval: float = 60.0
    aspired_version_policy: AspiredVersionPolicy = field(
        default_factory=AvailabilityPreservingPolicy
    )
    # The budget loads reserve against; None means unlimited.
    resource_tracker: ResourceTracker | None = None
    # Where state changes are published; the manager makes one when None.
    event_bus: EventBus[ServableState] | None = None

    def __post_init__(self) -> None:
        if self.manage_state_interval <= 0:
            raise ValueError("manage_state_interval must be > 0")
        if self.num_load_threads < 0 or self.num_unload_threads < 0:
            raise ValueError("thread counts must be >= 0")
        if self.max_num_load_retries < 0:
            raise ValueError("max_num_load_retries must be >= 0")
        if self.load_retry_interval < 0:
            raise ValueError("load_retry_interval must be >= 0")


class _ServingStream:
    """The versions of one stream that hand out handles; replaced whole, never mutated."""

    __slots__ = ("by_version", "earliest", "latest")

    def __init__(self, harnesses: Sequence[LoaderHarness]) -> None:
        ordered = sorted(harnesses, key=lambda h: h.id.version)
        self.by_version = {h.id.version: h for h in ordered}
        self.earliest = ordered[0]
        self.latest = ordered[-1]


class AspiredVersionsManager(Target[Loader]):
    """The manager: a target for loaders, and the place requests get servable handles from.

    Thread-safety: every public method may be called from any thread. State changes are
    published with no manager lock held.
    """

    def __init__(self, options: AspiredVersionsManagerOptions | None = None) -> None:
        self._options = options = options or AspiredVersionsManagerOptions()
        self._policy = options.aspired_version_policy
        self._tracker = options.resource_tracker or ResourceTracker()
        self.event_bus: EventBus[ServableState] = options.event_bus or EventBus()
        # Lock order: _publish_lock, then _lock. _publish_lock makes each state change and its
        # publication one step, so that every subscriber sees a version's states in order.
        self._publish_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._pending: dict[str, list[ServableData[Loader]]] = {}
        self._streams: dict[str, dict[int, LoaderHarness]] = {}
        self._serving: dict[str, _ServingStream] = {}
        self._load_pool = ThreadPoolExecutor(
            max(1, options.num_load_threads), thread_name_prefix="servo-load"
        )
        self._unload_pool = ThreadPoolExecutor(
            max(1, options.num_unload_threads), thread_name_prefix="servo-unload"
        )
        self._work: set[Future[None]] = set()  # loads and unloads submitted, not yet ended
        self._work_lock = threading.Lock()
        self._thread = threading.Thread(target=self._manage_loop, name="servo-manager", daemon=True)
        self._thread.start()

    @property
    def resource_tracker(self) -> ResourceTracker:
        return self._tracker

    # -- the target side -------------------------------------------------------------------

    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[Loader]:
        return self.set_aspired_versions

    def set_aspired_versions(self, name: str, versions: Sequence[ServableData[Loader]]) -> None:
        """Replaces the aspired versions of `name`; the manage loop acts on it soon after."""
        for item in versions:
            if item.id.name != name:
                raise ValueError(f"aspired version {item.id} does not belong to stream {name!r}")
        with self._lock:
            self._pending[name] = list(versions)
        self._wake.set()

    # -- the request side ------------------------------------------------------------------

    def get_servable_handle(self, request: ServableRequest) -> ServableHandle:
        """A handle to the requested version; NOT_FOUND when it is not available."""
        for _ in range(4):  # a version may stop serving between lookup and acquire: look again
            stream = self._serving.get(request.name)
            if stream is None:
                break
            harness: LoaderHarness | None
            if request.kind == "latest":
                harness = stream.latest
            elif request.kind == "earliest":
                harness = stream.earliest
            else:
                assert request.version is not None  # a specific request names its version
                harness = stream.by_version.get(request.version)
            if harness is None:
                break
            if harness.acquire():
                return ServableHandle(harness)
        raise ServoError(Code.NOT_FOUND, f"Servable not found for request: {request}")

    def available_servable_ids(self) -> list[ServableId]:
        """Every version that hands out handles now, ordered by name and version."""
        serving = self._serving
        return sorted(h.id for stream in serving.values() for h in stream.by_version.values())

    def managed_versions(self, name: str) -> list[VersionSnapshot]:
        """Every version of `name` the manager holds, with its internal state."""
        with self._lock:
            harnesses = list(self._streams.get(name, {}).values())
        return [VersionSnapshot(h.id, h.state, h.aspired) for h in harnesses]

    # -- shutting down ---------------------------------------------------------------------

    def stop(self, drain_timeout: float | None = 30.0) -> bool:
        """Stops the manage loop and unloads every version, each after its handles are
        released.

        `drain_timeout` bounds the waiting of the whole stop, not of each version (None: no
        bound): loads still running are waited for until then, and left to their threads
        after it (the pools' threads are not joined, so a load that never returns does not
        hold the caller); a version whose handles are still held then is unloaded all the
        same. Returns True when nothing was given up on: every load and unload ended and
        every handle was released within the bound."""
        if self._stopped.is_set():
            return True
        deadline = None if drain_timeout is None else time.monotonic() + drain_timeout
        self._stopped.set()
        self._wake.set()
        self._thread.join()
        with self._lock:
            harnesses = [h for stream in self._streams.values() for h in stream.values()]
            for h in harnesses:
                h.set_aspired(False)  # a load being retried gives up
        self._load_pool.shutdown(wait=False, cancel_futures=True)  # queued loads never start
        complete = self._wait_work(deadline, "loads")  # a running load may finish
        for h in harnesses:
            with self._publish_lock:
                with self._lock:
                    event = None
                    if h.state == LoaderState.READY:
                        event = self._begin_unload(h)
                    elif h.state == LoaderState.NEW:
                        event = h.drop()
                if event is not None:
                    self._publish(event)
        for h in harnesses:  # one deadline for all: the versions drain side by side
            if h.state == LoaderState.QUIESCING:
                if not h.wait_drained(_left(deadline)):
                    complete = False
                    log.warning("Unloading %s with %d handles still held", h.id, h.refs)
                with self._lock:
                    h.done_quiescing(force=True)
                self._unload(h)
        self._unload_pool.shutdown(wait=False)
        complete = self._wait_work(deadline, "unloads") and complete
        with self._lock:
            self._streams.clear()
            self._serving = {}
        return complete

    def _wait_work(self, deadline: float | None, what: str) -> bool:
        """Waits until the loads and unloads submitted have ended, at most until `deadline`;
        False (and a warning naming them) when some still run."""
        with self._work_lock:
            work = list(self._work)
        _, running = concurrent.futures.wait(work, timeout=_left(deadline))
        if running:
            log.warning(
                "Stopping with %d %s still running; they are left to end", len(running), what
            )
        return not running

    # -- the manage loop -------------------------------------------------------------------

    def _manage_loop(self) -> None:
        interval = self._options.manage_state_interval
        while not self._stopped.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped.is_set():
                break
            try:
                self._manage_once()
            except Exception:
                log.exception("The manage loop failed; it goes on")

    def _manage_once(self) -> None:
        events: list[ServableState] = []
        loads: list[LoaderHarness] = []
        unloads: list[LoaderHarness] = []
        with self._publish_lock:
            with self._lock:
                self._flush(events)
                self._take_pending(events)
                for name in list(self._streams):
                    try:
                        self._act_on_stream(name, events, loads, unloads)
                    except Exception:  # a bug around one stream must not stall the others
                        log.exception("Managing the versions of %s failed", name)
                for stream in self._streams.values():
                    for h in stream.values():
                        if h.state == LoaderState.QUIESCING and h.drained:
                            h.done_quiescing()
                            unloads.append(h)
            for event in events:
                self._publish(event)
        for h in loads:
            self._submit(self._load_pool, self._load, h)
        for h in unloads:
            self._submit(self._unload_pool, self._unload, h)

    def _flush(self, events: list[ServableState]) -> None:
        """Forgets versions that are done with: unloaded, failed and no longer aspired, or new
        and no longer aspired (those end without loading)."""
        for name, stream in list(self._streams.items()):
            for version, h in list(stream.items()):
                if h.aspired:
                    continue
                if h.state == LoaderState.NEW:
                    events.append(h.drop())
                    log.info("Dropping %s: no longer aspired before it loaded", h.id)
                if h.state in FINAL_STATES:
                    del stream[version]
            if not stream:
                del self._streams[name]

    def _take_pending(self, events: list[ServableState]) -> None:
        for name, versions in list(self._pending.items()):
            stream = self._streams.get(name, {})
            wanted = {item.id.version: item for item in versions}
            if any(
                stream[v].state in (LoaderState.QUIESCING, LoaderState.UNLOADING)
                for v in wanted
                if v in stream
            ):
                continue  # re-aspires a version on its way out: wait until it is gone
            del self._pending[name]
            for version, h in stream.items():
                h.set_aspired(version in wanted)  # one no longer aspired stops its retries
            for version, item in sorted(wanted.items()):
                if version in stream:
                    continue
                h = LoaderHarness(item.id, item.data, self._on_drained)
                stream[version] = h
                events.append(h.start())
                if not item.ok:
                    events.append(h.error(item.status))
                    log.error("%s cannot be loaded: %s", h.id, item.status)
            if stream:
                self._streams[name] = stream

    def _act_on_stream(
        self,
        name: str,
        events: list[ServableState],
        loads: list[LoaderHarness],
        unloads: list[LoaderHarness],
    ) -> None:
        stream = self._streams[name]
        snapshot = [VersionSnapshot(h.id, h.state, h.aspired) for h in stream.values()]
        decision = self._policy.next_action(snapshot)
        if decision is None:
            return
        h = stream[decision.id.version]
        if decision.action is Action.UNLOAD:
            if h.state != LoaderState.READY or h.aspired:
                raise RuntimeError(f"policy asked to unload {h!r}")
            events.append(self._begin_unload(h))
            if h.drained:
                h.done_quiescing()
                unloads.append(h)
            return
        if h.state != LoaderState.NEW or not h.aspired:
            raise RuntimeError(f"policy asked to load {h!r}")
        status = self._reserve(h)
        if status is None:
            return  # waits for unloads in flight to free resources
        if not status.ok:
            events.append(h.error(status))
            log.error("Refusing to load %s: %s", h.id, status.message)
            return
        h.load_approved()  # START until a load thread takes it (LOADING, published there)
        loads.append(h)

    def _reserve(self, h: LoaderHarness) -> Status | None:
        """OK when resources are reserved; an error when they never will be; None to wait."""
        assert h.loader is not None
        try:
            estimate = h.loader.estimate_resources()
            reserved = self._tracker.reserve(h.id, estimate)
        except Exception as exc:  # a loader's bad estimate fails its own version only
            return Status.from_exception(exc)
        if reserved:
            return OK
        # Loads and unloads in flight may give resources back (a failed load, an unload):
        # wait for them before refusing, as TFS does.
        busy = any(
            other.state in IN_TRANSITION
            for stream in self._streams.values()
            for other in stream.values()
            if other is not h
        )
        if busy:
            return None
        return Status(
            Code.RESOURCE_EXHAUSTED,
            f"Insufficient resources to load servable {h.id}: it needs "
            f"{estimate.ram_bytes} bytes of ram; {self._tracker.describe()}",
        )

    def _begin_unload(self, h: LoaderHarness) -> ServableState:
        """Takes `h` out of the serving map, then stops it handing out handles (under the
        manager's lock): a request that found it a moment before looks again and finds the
        versions that stay. Returns the UNLOADING to publish."""
        stream = self._serving.get(h.id.name)
        if stream is not None and h.id.version in stream.by_version:
            self._set_serving(h.id.name, [x for x in stream.by_version.values() if x is not h])
        event = h.start_quiescing()
        log.info("Quiescing %s: no new requests; %d in flight", h.id, h.refs)
        return event

    def _set_serving(self, name: str, harnesses: list[LoaderHarness]) -> None:
        serving = dict(self._serving)
        if harnesses:
            serving[name] = _ServingStream(harnesses)
        else:
            serving.pop(name, None)
        self._serving = serving

    def _on_drained(self, h: LoaderHarness) -> None:
        self._wake.set()

    # -- the worker threads ----------------------------------------------------------------

    def _submit(
        self, pool: ThreadPoolExecutor, work: Callable[[LoaderHarness], None], h: LoaderHarness
    ) -> None:
        """Runs `work(h)` on `pool`; what it raises (a bug) is logged, not lost in a future."""

        def log_failure(future: Future[None]) -> None:
            if not future.cancelled() and (exc := future.exception()) is not None:
                log.error("Managing %s failed", h.id, exc_info=exc)

        future = pool.submit(work, h)
        with self._work_lock:
            self._work.add(future)

        def ended(future: Future[None]) -> None:
            with self._work_lock:
                self._work.discard(future)

        future.add_done_callback(ended)
        future.add_done_callback(log_failure)

    def _load(self, h: LoaderHarness) -> None:
        options = self._options
        with self._publish_lock:
            with self._lock:
                started = h.load_started()
            self._publish(started)

        def retrying(failure: Status, retry: int) -> None:
            with self._publish_lock:
                with self._lock:
                    event = h.retrying(
                        failure, retry, options.max_num_load_retries, options.load_retry_interval
                    )
                self._publish(event)

        status = h.load(options.max_num_load_retries, options.load_retry_interval, retrying)
        with self._publish_lock:
            with self._lock:
                # One step: READY, in the serving map, AVAILABLE published; no policy sees it
                # ready before it serves.
                if status.ok:
                    event = h.ready()  # hands out handles before it enters the serving map
                    stream = self._serving.get(h.id.name)
                    current = list(stream.by_version.values()) if stream else []
                    self._set_serving(h.id.name, [*current, h])
                else:
                    event = h.error(status)
                    self._tracker.release(h.id)
            self._publish(event)
        self._wake.set()

    def _unload(self, h: LoaderHarness) -> None:
        h.unload()
        with self._publish_lock:
            with self._lock:
                event = h.unloaded()
                self._tracker.release(h.id)
            log.info("Done unloading %s", h.id)
            self._publish(event)
        self._wake.set()

    def _publish(self, event: ServableState) -> None:
        self.event_bus.publish(event)


def _left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (monotonic; None: no bound), never below 0."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
