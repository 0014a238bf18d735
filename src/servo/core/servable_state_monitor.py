"""ServableStateMonitor: the latest published state of every servable version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from servo.core.event_bus import EventBus, Subscription
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState, ServableState


@dataclass(frozen=True, slots=True)
class ServableStateAndTime:
    state: ServableState
    time: float  # seconds since the epoch, when the state was published


class ServableStateMonitor:
    """Listens to an event bus and keeps `name -> version -> state`, END versions included.

    `wait_until_servables_reach_state` blocks until each requested servable has reached a goal
    state or END (END counts as reached: a version that ended never reaches anything else).

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, bus: EventBus[ServableState], max_log_events: int = 0) -> None:
        self._cond = threading.Condition()
        self._states: dict[str, dict[int, ServableStateAndTime]] = {}
        self._log: list[ServableStateAndTime] = []
        self._max_log_events = max_log_events
        self._subscription: Subscription = bus.subscribe(self._handle_event)

    def close(self) -> None:
        self._subscription.cancel()

    def _handle_event(self, state: ServableState) -> None:
        entry = ServableStateAndTime(state, time.time())
        with self._cond:
            self._states.setdefault(state.id.name, {})[state.id.version] = entry
            if self._max_log_events:
                self._log.append(entry)
                del self._log[: -self._max_log_events]
            self._cond.notify_all()

    # -- queries ---------------------------------------------------------------------------

    def get_state(self, id: ServableId) -> ServableState | None:
        with self._cond:
            entry = self._states.get(id.name, {}).get(id.version)
            return entry.state if entry else None

    def get_version_states(self, name: str) -> dict[int, ServableStateAndTime]:
        with self._cond:
            return dict(self._states.get(name, {}))

    def get_log(self) -> list[ServableStateAndTime]:
        """The last `max_log_events` events, oldest first."""
        with self._cond:
            return list(self._log)

    # -- waiting ---------------------------------------------------------------------------

    def _reached(
        self, request: ServableRequest, goal: ManagerState
    ) -> tuple[bool, ServableId | None, ManagerState | None]:
        versions = self._states.get(request.name, {})
        if not versions:
            return False, None, None
        if request.version is not None:
            version: int | None = request.version
        elif request.kind == "earliest":
            version = min(versions)
        else:
            version = max(versions)
        entry = versions.get(version) if version is not None else None
        if entry is None:
            return False, None, None
        state = entry.state.manager_state
        return state in (goal, ManagerState.END), entry.state.id, state

    def wait_until_servables_reach_state(
        self,
        requests: Iterable[ServableRequest],
        goal: ManagerState,
        timeout: float | None = None,
    ) -> tuple[bool, dict[ServableId, ManagerState]]:
        """Waits until each request's servable is in `goal` or END, or until `timeout` seconds.

        A `Latest` / `Earliest` request is judged on the highest / lowest version the monitor
        has seen for that name. Returns whether every servable reached `goal` itself (END does
        not count as success) and the states they are in.
        """
        requests = list(requests)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                results = [self._reached(r, goal) for r in requests]
                if all(done for done, _, _ in results):
                    states = {
                        sid: st for _, sid, st in results if sid is not None and st is not None
                    }
                    return all(st == goal for st in states.values()), states
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    states = {
                        sid: st for _, sid, st in results if sid is not None and st is not None
                    }
                    return False, states
                self._cond.wait(remaining)

    def wait_for_state(
        self, id: ServableId, goal: ManagerState, timeout: float | None = None
    ) -> ManagerState | None:
        """Waits until version `id` is in `goal` or END; returns the state it is in (None when
        the monitor never saw the version before the timeout)."""
        request = ServableRequest.specific(id.name, id.version)
        _, states = self.wait_until_servables_reach_state([request], goal, timeout)
        return states.get(id)

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Waits, re-checking after each published event, until `predicate()` holds.

        `predicate` runs under the monitor's lock: it may read the monitor but must not take
        other locks (the manager publishes while holding none of its own).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
