from __future__ import annotations

import threading

from servo.core.event_bus import EventBus
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState, ServableState
from servo.core.servable_state_monitor import ServableStateMonitor
from servo.core.status import OK, Code, Status


def test_bus_delivers_in_order_and_survives_a_failing_subscriber() -> None:
    bus: EventBus[int] = EventBus()
    got: list[int] = []

    def broken(_: int) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    sub = bus.subscribe(got.append)
    bus.publish(1)
    bus.publish(2)
    sub.cancel()
    bus.publish(3)
    assert got == [1, 2]


def _publish(
    bus: EventBus[ServableState], v: int, state: ManagerState, health: Status = OK
) -> None:
    bus.publish(ServableState(ServableId("m", v), state, health))


def test_monitor_keeps_states_and_end_versions() -> None:
    bus: EventBus[ServableState] = EventBus()
    monitor = ServableStateMonitor(bus, max_log_events=3)
    _publish(bus, 1, ManagerState.START)
    _publish(bus, 1, ManagerState.AVAILABLE)
    _publish(bus, 2, ManagerState.END, Status(Code.UNKNOWN, "broken"))
    assert monitor.get_state(ServableId("m", 1)).manager_state == ManagerState.AVAILABLE
    assert monitor.get_state(ServableId("m", 2)).health.message == "broken"
    assert set(monitor.get_version_states("m")) == {1, 2}
    assert len(monitor.get_log()) == 3


def test_wait_until_states_reached_with_timeout_and_end_counts_as_reached() -> None:
    bus: EventBus[ServableState] = EventBus()
    monitor = ServableStateMonitor(bus)
    one, two = ServableRequest.specific("m", 1), ServableRequest.specific("m", 2)
    ok, states = monitor.wait_until_servables_reach_state([one], ManagerState.AVAILABLE, 0.01)
    assert not ok and states == {}

    started = threading.Event()

    def later() -> None:
        started.wait()
        _publish(bus, 1, ManagerState.AVAILABLE)
        _publish(bus, 2, ManagerState.END, Status(Code.UNKNOWN, "x"))

    thread = threading.Thread(target=later)
    thread.start()
    started.set()
    ok, states = monitor.wait_until_servables_reach_state([one, two], ManagerState.AVAILABLE, 10)
    thread.join()
    assert not ok  # version 2 ended instead
    assert states == {
        ServableId("m", 1): ManagerState.AVAILABLE,
        ServableId("m", 2): ManagerState.END,
    }
    ok, _ = monitor.wait_until_servables_reach_state(
        [ServableRequest.earliest("m")], ManagerState.AVAILABLE, 1
    )
    assert ok
