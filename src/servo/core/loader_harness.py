"""LoaderHarness: one managed servable version, its loader, its state and its handle count.

Internal to the manager; version policies read its states. The harness owns its state
machine: each transition is a method that checks it is legal, and each transition that the
manager publishes returns the `ServableState` to publish, checked against the published table
(`servable_state.check_transition`) from the last state this harness returned. An illegal
transition raises `TransitionError` (a bug in the manager) and changes nothing.

    method              internal state            published
    start()             NEW                       START
    load_approved()     NEW -> LOADING            -           (reserved; queued for a thread)
    load_started()      LOADING                   LOADING     (on the load thread, as TFS)
    load()              LOADING (loader.load, with retries; returns the outcome)
    retrying(...)       LOADING                   LOADING     (a failed load to be retried:
                                                               the failure as health)
    ready()             LOADING -> READY          AVAILABLE   (starts handing out handles)
    error(status)       NEW | LOADING -> ERROR    END, with the error as health
    drop()              NEW -> DISABLED           END         (no longer aspired; never loaded)
    start_quiescing()   READY -> QUIESCING        UNLOADING   (stops handing out handles)
    done_quiescing()    QUIESCING -> UNLOADING    -           (once no handle is held)
    unload()            UNLOADING (loader.unload)
    unloaded()          UNLOADING -> DISABLED     END

    NEW -> LOADING -> READY -> QUIESCING -> UNLOADING -> DISABLED
     | \\       \\
     |  +-------+--> ERROR
     +--> DISABLED

QUIESCING: no new handles are given out; the version waits until every held handle has been
released. UNLOADING: no handle is held; the loader unloads. DISABLED and ERROR are final.
(TFS's harness also has LOAD_REQUESTED, LOAD_APPROVED, UNLOAD_REQUESTED and QUIESCED; servo's
manager decides and reserves in one step under its lock, so NEW stands for the first two and
QUIESCING / UNLOADING for the last two.)

A version in LOADING has published START until its load starts (it waits for a load thread),
then LOADING; each failed load that is retried publishes LOADING again, its health the failure
with the retry count (`retrying`), so that a version's status shows why it is still loading.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from servo.core.loader import Loader
from servo.core.servable_id import ServableId
from servo.core.servable_state import ManagerState, ServableState, check_transition
from servo.core.status import OK, Status

log = logging.getLogger(__name__)


class LoaderState(enum.Enum):
    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    QUIESCING = "quiescing"
    UNLOADING = "unloading"
    DISABLED = "disabled"
    ERROR = "error"


FINAL_STATES = frozenset({LoaderState.DISABLED, LoaderState.ERROR})
IN_TRANSITION = frozenset({LoaderState.LOADING, LoaderState.QUIESCING, LoaderState.UNLOADING})

_NEW = frozenset({LoaderState.NEW})
_LOADING = frozenset({LoaderState.LOADING})
_READY = frozenset({LoaderState.READY})
_QUIESCING = frozenset({LoaderState.QUIESCING})
_UNLOADING = frozenset({LoaderState.UNLOADING})
_NEW_OR_LOADING = _NEW | _LOADING


class TransitionError(RuntimeError):
    """An illegal transition of a harness: a bug in whoever asked for it."""


class LoaderHarness:
    """Holds one version's loader and its state machine.

    Thread-safety: the transition methods are called by the manager under its own lock (the
    manager publishes the states they return, in order, under its publish lock); `load` and
    `unload` run on the manager's worker threads with no lock held, one at a time; `acquire`,
    `add_reference`, `release` and `wait_drained` may be called from any thread.
    """

    __slots__ = (
        "_aspired",
        "_cancel_retries",
        "_drained",
        "_load_retries",
        "_lock",
        "_on_drained",
        "_published",
        "_refs",
        "_serving",
        "_state",
        "_status",
        "id",
        "loader",
        "servable",
    )

    def __init__(
        self,
        id: ServableId,
        loader: Loader | None,
        on_drained: Callable[[LoaderHarness], None],
    ) -> None:
        self.id = id
        self.loader = loader  # None for a version a source could not provide
        self.servable: Any = None
        self._state = LoaderState.NEW
        self._published: ManagerState | None = None
        self._status: Status = OK
        self._load_retries = 0  # retries of the load run so far
        self._aspired = True
        self._cancel_retries = threading.Event()
        self._lock = threading.Lock()
        self._refs = 0
        self._serving = False
        self._drained = threading.Event()  # set once it stopped serving and no handle is held
        self._on_drained = on_drained

    @property
    def state(self) -> LoaderState:
        return self._state

    @property
    def published_state(self) -> ManagerState | None:
        """The state of the last `ServableState` a transition returned (None before START)."""
        return self._published

    @property
    def status(self) -> Status:
        """OK, or the error the version ended with."""
        return self._status

    @property
    def aspired(self) -> bool:
        return self._aspired

    def set_aspired(self, aspired: bool) -> None:
        """Whether a source still aspires this version; one that is not gives up retrying its
        load (for good: retries stay off should it be aspired again)."""
        self._aspired = aspired
        if not aspired:
            self._cancel_retries.set()

    # -- transitions -----------------------------------------------------------------------

    def start(self) -> ServableState:
        """The manager manages this version from now on: START, still NEW."""
        return self._publish("start", _NEW, LoaderState.NEW, ManagerState.START)

    def load_approved(self) -> None:
        """The manager decided to load and reserved the resources: NEW -> LOADING. Not
        published: the version stays START until its load starts (`load_started`)."""
        self._require("load_approved", _NEW)
        if self._published is not ManagerState.START:
            raise TransitionError(f"load_approved: {self!r} has published {self._published!r}")
        self._state = LoaderState.LOADING

    def load_started(self) -> ServableState:
        """A load thread takes the version: LOADING is published (as TFS publishes it when
        the load starts, not when it is queued)."""
        self._require("load_started", _LOADING)
        if self._published is not ManagerState.START:
            raise TransitionError(f"load_started: {self!r} has published {self._published!r}")
        return self._publish("load_started", _LOADING, LoaderState.LOADING, ManagerState.LOADING)

    def retrying(
        self, failure: Status, retry: int, max_num_load_retries: int, load_retry_interval: float
    ) -> ServableState:
        """A load failed and retry number `retry` follows: LOADING published again, its
        health the failure, its message ending with the retry count (servo's addition; TFS
        shows OK until the version ends)."""
        self._require("retrying", _LOADING)
        if self._published is not ManagerState.LOADING:
            raise TransitionError(f"retrying: {self!r} has published {self._published!r}")
        if failure.ok:
            raise ValueError(f"retrying() on {self.id} needs a status that is not OK")
        health = Status(
            failure.code,
            f"{failure.message} ({retry_text(retry, max_num_load_retries, load_retry_interval)})",
        )
        return self._publish(
            "retrying", _LOADING, LoaderState.LOADING, ManagerState.LOADING, health
        )

    @property
    def load_retries(self) -> int:
        """How many retries the load has run (or is waiting for) so far."""
        return self._load_retries

    def load(
        self,
        max_num_load_retries: int,
        load_retry_interval: float,
        on_retry: Callable[[Status, int], None] | None = None,
    ) -> Status:
        """Runs the loader's `load`, retrying a failure `max_num_load_retries` times,
        `load_retry_interval` seconds apart, until it succeeds or retries are cancelled (the
        version is no longer aspired). Before waiting for each retry, `on_retry(failure,
        retry)` is called (the manager publishes `retrying`). Returns OK or the last failure;
        changes no state (the manager then calls `ready` or `error` under its lock)."""
        self._require("load", _LOADING)
        assert self.loader is not None
        attempt = 0
        log.info("Loading %s", self.id)
        started = time.monotonic()
        while True:
            try:
                self.loader.load()
                self.servable = self.loader.servable
            except Exception as exc:  # any failure of user or platform code
                status = Status.from_exception(exc)
                if attempt >= max_num_load_retries or self._cancel_retries.is_set():
                    break
                attempt += 1
                self._load_retries = attempt
                log.warning(
                    "Loading %s failed (%s); %s",
                    self.id,
                    status,
                    retry_text(attempt, max_num_load_retries, load_retry_interval),
                )
                if on_retry is not None:
                    on_retry(status, attempt)
                if self._cancel_retries.wait(load_retry_interval):
                    break
                log.info(
                    "Retrying load of %s: retry %d of %d", self.id, attempt, max_num_load_retries
                )
            else:
                log.info("Successfully loaded %s in %.3f s", self.id, time.monotonic() - started)
                return OK
        elapsed = time.monotonic() - started
        if self._cancel_retries.is_set() and attempt < max_num_load_retries:
            log.error(
                "Failed to load %s after %d of %d retries in %.3f s (retries cancelled: no "
                "longer aspired, or the server stops): %s",
                self.id,
                attempt,
                max_num_load_retries,
                elapsed,
                status,
            )
        else:
            log.error(
                "Failed to load %s after %d retries in %.3f s: %s",
                self.id,
                attempt,
                elapsed,
                status,
            )
        return status

    def ready(self) -> ServableState:
        """The load succeeded: LOADING -> READY, and handles are given out from now on."""
        event = self._publish("ready", _LOADING, LoaderState.READY, ManagerState.AVAILABLE)
        with self._lock:
            self._serving = True
        return event

    def error(self, status: Status) -> ServableState:
        """The version cannot be loaded (a source's error, no room, a failed load):
        NEW or LOADING -> ERROR, published as END with `status` as its health."""
        if status.ok:
            raise ValueError(f"error() on {self.id} needs a status that is not OK")
        event = self._publish("error", _NEW_OR_LOADING, LoaderState.ERROR, ManagerState.END, status)
        self._status = status
        self.servable = None
        return event

    def drop(self) -> ServableState:
        """No longer aspired before it was loaded: NEW -> DISABLED, END with OK health."""
        return self._publish("drop", _NEW, LoaderState.DISABLED, ManagerState.END)

    def start_quiescing(self) -> ServableState:
        """The manager decided to unload: READY -> QUIESCING, published as UNLOADING, and no
        new handles from now on (those held keep the version loaded)."""
        event = self._publish(
            "start_quiescing", _READY, LoaderState.QUIESCING, ManagerState.UNLOADING
        )
        with self._lock:
            self._serving = False
            if self._refs == 0:
                self._drained.set()
        return event

    def done_quiescing(self, *, force: bool = False) -> None:
        """No handle is held any more: QUIESCING -> UNLOADING (not published: UNLOADING
        already was). `force` goes on with handles still held (the manager stopping after
        its drain timeout)."""
        self._require("done_quiescing", _QUIESCING)
        if not force and not self.drained:
            raise TransitionError(f"done_quiescing: {self!r} still has handles held")
        self._state = LoaderState.UNLOADING

    def unload(self) -> None:
        """Runs the loader's `unload`; what it raises is logged (the version goes all the
        same). Changes no state (the manager then calls `unloaded` under its lock)."""
        self._require("unload", _UNLOADING)
        assert self.loader is not None
        log.info("Unloading %s", self.id)
        try:
            self.loader.unload()
        except Exception:
            log.exception("Unloading %s raised; it is dropped all the same", self.id)

    def unloaded(self) -> ServableState:
        """The loader has unloaded: UNLOADING -> DISABLED, END."""
        event = self._publish("unloaded", _UNLOADING, LoaderState.DISABLED, ManagerState.END)
        self.servable = None
        return event

    def _require(self, method: str, sources: frozenset[LoaderState]) -> None:
        if self._state not in sources:
            expected = " or ".join(sorted(s.name for s in sources))
            raise TransitionError(f"{method}: {self!r} is {self._state.name}, not {expected}")

    def _publish(
        self,
        method: str,
        sources: frozenset[LoaderState],
        to: LoaderState,
        published: ManagerState,
        health: Status = OK,
    ) -> ServableState:
        """Checks both tables, then moves to `to` and returns the state to publish."""
        self._require(method, sources)
        try:
            check_transition(self._published, published)
        except ValueError as exc:
            raise TransitionError(f"{method}: {self!r}: {exc}") from None
        self._state = to
        self._published = published
        return ServableState(self.id, published, health)

    # -- handles ---------------------------------------------------------------------------

    @property
    def drained(self) -> bool:
        """Whether it stopped handing out handles and none is held (for good, once true)."""
        return self._drained.is_set()

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Waits until `drained`, at most `timeout` seconds; returns `drained`."""
        return self._drained.wait(timeout)

    @property
    def refs(self) -> int:
        return self._refs

    def acquire(self) -> bool:
        """Takes a reference for a new handle; False when it does not serve."""
        with self._lock:
            if not self._serving:
                return False
            self._refs += 1
            return True

    def add_reference(self) -> None:
        """Takes one more reference for a caller that holds one, serving or not (a held
        reference keeps the version from draining, so it is still loaded)."""
        with self._lock:
            if self._refs == 0:
                raise TransitionError(f"add_reference: {self!r} has no reference held")
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            if self._refs == 0:
                raise TransitionError(f"release: {self!r} has no reference held")
            self._refs -= 1
            drained = self._refs == 0 and not self._serving
            if drained:
                self._drained.set()
        if drained:
            self._on_drained(self)

    def __repr__(self) -> str:
        return (
            f"LoaderHarness({self.id}, {self._state.name}, aspired={self._aspired}, "
            f"refs={self._refs})"
        )


def retry_text(retry: int, max_num_load_retries: int, load_retry_interval: float) -> str:
    """`retry 2 of 5 in 60 s`: which retry of a failed load follows, and when."""
    return f"retry {retry} of {max_num_load_retries} in {load_retry_interval:.3g} s"
