"""A property-based state-machine test of the manager.

Random sequences of aspired-versions updates (with failing and slow loads) and of handles
taken and released. Invariants checked all along:
- load and unload of one loader never overlap, unload only after a successful load, nothing
  after unload (the fake loaders check this);
- no unload while the test holds a handle to that version;
- every published transition is legal; LOADING is published again only for a retry, with
  the failure and the retry count as health, and AVAILABLE and END never carry a retry's;
- every managed version's internal state agrees with the state it last published, and it is
  in the serving map exactly while READY (so no policy sees it ready before it serves);
- with the availability-preserving policy, a stream that has an available version keeps one
  until its aspired list is empty.
Once the sequence stops, every aspired version ends AVAILABLE or END.
"""

from __future__ import annotations

import threading
import time

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
)

from servo.core.aspired_version_policy import AvailabilityPreservingPolicy
from servo.core.aspired_versions_manager import (
    AspiredVersionsManager,
    AspiredVersionsManagerOptions,
)
from servo.core.loader_harness import LoaderState
from servo.core.servable_handle import ServableHandle
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState, ServableState, check_transition
from servo.core.servable_state_monitor import ServableStateMonitor
from servo.core.source import ServableData
from servo.core.status import ServoError
from tests.support.fakes import FakeLoader, Journal
from tests.support.lifecycle import PUBLISHED_AS

NAMES = ("a", "b")
VERSIONS = st.integers(min_value=1, max_value=4)
SETTLE_TIMEOUT = 30.0


class ManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.journal = Journal()
        self.gate = threading.Event()
        self.gate.set()
        self.manager = AspiredVersionsManager(
            AspiredVersionsManagerOptions(
                manage_state_interval=0.01,
                num_load_threads=2,
                max_num_load_retries=1,
                load_retry_interval=0.0,
            )
        )
        self.monitor = ServableStateMonitor(self.manager.event_bus)
        self.aspired: dict[str, set[int]] = {}
        self.handles: list[ServableHandle] = []
        self.problems: list[str] = []
        self._last: dict[ServableId, ManagerState] = {}
        self._available: dict[str, set[int]] = {name: set() for name in NAMES}
        self.manager.event_bus.subscribe(self._check_event)

    # -- the checks made on every published state ------------------------------------------

    def _check_event(self, event: ServableState) -> None:
        id, state = event.id, event.manager_state
        last = self._last.get(id)
        if last == ManagerState.END and state == ManagerState.START:
            last = None  # the version was dropped and is aspired anew
        try:
            check_transition(last, state)
        except ValueError as exc:
            self.problems.append(str(exc))
        self._last[id] = state
        health = event.health
        if state == ManagerState.LOADING and last == ManagerState.LOADING:
            # A retry: the failure, with the retry count (max_num_load_retries=1).
            if health.ok or not health.message.endswith("(retry 1 of 1 in 0 s)"):
                self.problems.append(f"{id} republished LOADING without its failure: {health}")
        elif state in (ManagerState.START, ManagerState.LOADING, ManagerState.AVAILABLE):
            if not health.ok:
                self.problems.append(f"{id} {state.name} with health {health}")
        elif state == ManagerState.END and "(retry" in health.message:
            self.problems.append(f"{id} ended with a retry's health: {health}")
        if state == ManagerState.AVAILABLE:
            self._available[id.name].add(id.version)
        elif state == ManagerState.UNLOADING:
            self._available[id.name].discard(id.version)
            # Runs while the manager publishes, so its aspired flags are the ones it acts on.
            snapshot = self.manager.managed_versions(id.name)
            if any(v.is_aspired for v in snapshot) and not self._available[id.name]:
                self.problems.append(
                    f"{id} unloaded while aspired versions exist and none other is available: "
                    f"{snapshot}"
                )

    # -- rules -----------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(NAMES),
        versions=st.sets(VERSIONS, max_size=3),
        failing=st.sets(VERSIONS, max_size=2),
        slow=st.sets(VERSIONS, max_size=2),
    )
    def aspire(self, name: str, versions: set[int], failing: set[int], slow: set[int]) -> None:
        items = []
        for v in sorted(versions):
            loader = FakeLoader(
                ServableId(name, v),
                self.journal,
                fail=v in failing,
                gate=self.gate if v in slow else None,
            )
            items.append(ServableData(loader.id, loader))
        self.aspired[name] = set(versions)
        self.manager.set_aspired_versions(name, items)

    @rule(
        name=st.sampled_from(NAMES),
        versions=st.sets(VERSIONS, max_size=3),
        failing=st.sets(VERSIONS, max_size=2),
    )
    def aspire_while_serving(self, name: str, versions: set[int], failing: set[int]) -> None:
        """A request holds the latest version while the versions change under it."""
        self.take_handle(name, "latest", 0)
        self.aspire(name, versions, failing, set())

    @rule(
        name=st.sampled_from(NAMES),
        kind=st.sampled_from(["latest", "earliest", "specific"]),
        version=VERSIONS,
    )
    def take_handle(self, name: str, kind: str, version: int) -> None:
        request = (
            ServableRequest.specific(name, version)
            if kind == "specific"
            else ServableRequest(name, kind)  # type: ignore[arg-type]
        )
        try:
            handle = self.manager.get_servable_handle(request)
        except ServoError:
            return
        with self.journal.lock:
            self.journal.held[handle.id] = self.journal.held.get(handle.id, 0) + 1
        assert handle.servable is not None and handle.servable.id == handle.id
        self.handles.append(handle)

    # No precondition on held handles: whether a handle was granted depends on timing, and
    # hypothesis needs the same rules enabled when it replays a sequence.
    @rule(index=st.integers(min_value=0, max_value=100))
    def release_handle(self, index: int) -> None:
        if not self.handles:
            return
        handle = self.handles.pop(index % len(self.handles))
        with self.journal.lock:
            self.journal.held[handle.id] -= 1
        handle.release()

    @rule(index=st.integers(min_value=0, max_value=100))
    def share_handle(self, index: int) -> None:
        """A runner takes its own reference to a version a request holds (it may be
        quiescing by now)."""
        if not self.handles:
            return
        shared = self.handles[index % len(self.handles)].share()
        with self.journal.lock:
            self.journal.held[shared.id] += 1
        self.handles.append(shared)

    @rule()
    def hold_slow_loads(self) -> None:
        self.gate.clear()

    @rule()
    def let_slow_loads_finish(self) -> None:
        self.gate.set()

    @rule()
    def let_the_manager_catch_up(self) -> None:
        """Waits until every aspired version has loaded or failed, handles still held; the
        manager meanwhile decides unloads of versions the test may hold handles to."""
        self.gate.set()
        self._wait_until_settled()

    @invariant()
    def no_contract_breach(self) -> None:
        assert self.journal.violations == []
        assert self.problems == []

    @invariant()
    def harnesses_agree_with_what_they_published(self) -> None:
        manager = self.manager
        # Under both locks no transition is half done: each one and its publication are one
        # step under the publish lock, and the serving map changes under the other.
        with manager._publish_lock, manager._lock:
            serving = {h for s in manager._serving.values() for h in s.by_version.values()}
            for stream in manager._streams.values():
                for h in stream.values():
                    last = self.monitor.get_state(h.id)
                    assert h.published_state == (last.manager_state if last else None), h
                    assert h.published_state in PUBLISHED_AS[h.state], h
                    assert (h in serving) == (h.state == LoaderState.READY), h

    # -- the end of a sequence -------------------------------------------------------------

    def _settled(self) -> bool:
        """True when the manager has nothing left to do but wait for the test's handles."""
        with self.manager._lock:  # a peek at the lists it has not yet taken
            pending = {name: [i.id for i in items] for name, items in self.manager._pending.items()}
        policy = AvailabilityPreservingPolicy()
        for name in NAMES:
            snapshot = self.manager.managed_versions(name)
            if name in pending:
                # A list that re-aspires a version on its way out waits until that version is
                # gone; only handles the test holds may keep it waiting.
                quiescing = {s.id for s in snapshot if s.state == LoaderState.QUIESCING}
                if not any(self.journal.held.get(i) for i in quiescing.intersection(pending[name])):
                    return False
                continue
            if policy.next_action(snapshot) is not None:
                return False
            states = {s.id.version: s for s in snapshot}
            for s in snapshot:
                if s.state in (LoaderState.LOADING, LoaderState.UNLOADING):
                    return False
                if s.state == LoaderState.QUIESCING and not self.journal.held.get(s.id):
                    return False
            for v in self.aspired.get(name, ()):
                s = states.get(v)
                if s is None or s.state not in (LoaderState.READY, LoaderState.ERROR):
                    return False
        return True

    def _wait_until_settled(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not self._settled():
            assert time.monotonic() < deadline, "the manager did not settle"
            self.monitor.wait_until(lambda: False, timeout=0.01)  # wakes on the next event

    def teardown(self) -> None:
        try:
            self.gate.set()
            for handle in self.handles:
                with self.journal.lock:
                    self.journal.held[handle.id] -= 1
                handle.release()
            self.handles.clear()
            self._wait_until_settled()
            for name, versions in self.aspired.items():
                for v in versions:
                    # The manager's own record changes a moment before it publishes.
                    reached = self.monitor.wait_for_state(
                        ServableId(name, v), ManagerState.AVAILABLE, timeout=SETTLE_TIMEOUT
                    )
                    assert reached in (ManagerState.AVAILABLE, ManagerState.END)
            assert self.journal.violations == []
            assert self.problems == []
        finally:
            self.manager.stop(drain_timeout=5.0)
            self.monitor.close()
        assert self.journal.violations == []


TestManagerStateMachine = ManagerMachine.TestCase
TestManagerStateMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
