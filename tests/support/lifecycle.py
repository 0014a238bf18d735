"""A manager with a state monitor that keeps a log, for lifecycle tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from servo.core.aspired_versions_manager import (
    AspiredVersionsManager,
    AspiredVersionsManagerOptions,
)
from servo.core.loader_harness import LoaderState
from servo.core.servable_id import ServableId
from servo.core.servable_state import ManagerState
from servo.core.servable_state_monitor import ServableStateMonitor

WAIT = 30.0  # seconds; a bound on waits for states, never reached when things work

# The published state each internal state of a harness goes with (None: not yet started).
PUBLISHED_AS: dict[LoaderState, frozenset[ManagerState | None]] = {
    LoaderState.NEW: frozenset({None, ManagerState.START}),
    # START while it waits for a load thread, LOADING once its load started.
    LoaderState.LOADING: frozenset({ManagerState.START, ManagerState.LOADING}),
    LoaderState.READY: frozenset({ManagerState.AVAILABLE}),
    LoaderState.QUIESCING: frozenset({ManagerState.UNLOADING}),
    LoaderState.UNLOADING: frozenset({ManagerState.UNLOADING}),
    LoaderState.DISABLED: frozenset({ManagerState.END}),
    LoaderState.ERROR: frozenset({ManagerState.END}),
}


@contextmanager
def running_manager(
    **options: object,
) -> Iterator[tuple[AspiredVersionsManager, ServableStateMonitor]]:
    opts = AspiredVersionsManagerOptions(
        **{"max_num_load_retries": 0, "load_retry_interval": 0.0, **options}  # type: ignore[arg-type]
    )
    manager = AspiredVersionsManager(opts)
    monitor = ServableStateMonitor(manager.event_bus, max_log_events=10_000)
    try:
        yield manager, monitor
    finally:
        manager.stop(drain_timeout=5.0)
        monitor.close()


def wait_state(monitor: ServableStateMonitor, id: ServableId, goal: ManagerState) -> None:
    """Waits until `id` reaches `goal` exactly; fails the test if it ends elsewhere."""
    reached = monitor.wait_for_state(id, goal, timeout=WAIT)
    assert reached == goal, f"{id} reached {reached}, expected {goal}: {monitor.get_state(id)}"


def states_of(monitor: ServableStateMonitor, id: ServableId) -> list[ManagerState]:
    return [e.state.manager_state for e in monitor.get_log() if e.state.id == id]
