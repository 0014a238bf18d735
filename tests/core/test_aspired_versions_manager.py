"""The manager's invariants, one test (or more) each; see the module docstring of
servo.core.aspired_versions_manager."""

from __future__ import annotations

import threading

import pytest

from servo.core.aspired_version_policy import ResourcePreservingPolicy
from servo.core.loader import ResourceAllocation
from servo.core.loader_harness import LoaderState
from servo.core.resource_tracker import ResourceTracker
from servo.core.servable_id import ServableId
from servo.core.servable_request import ServableRequest
from servo.core.servable_state import ManagerState
from servo.core.source import ServableData
from servo.core.status import OK, Code, ServoError, Status
from tests.support.fakes import FakeLoader, Journal
from tests.support.lifecycle import WAIT, running_manager, states_of, wait_state
from tests.support.waiting import wait_until

A = ManagerState.AVAILABLE
END = ManagerState.END


def item(loader: FakeLoader) -> ServableData:
    return ServableData(loader.id, loader)


def sid(version: int, name: str = "m") -> ServableId:
    return ServableId(name, version)


def test_new_version_loads_before_old_unloads_and_requests_never_miss() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        with manager.get_servable_handle(ServableRequest.latest("m")) as handle:
            assert handle.id == sid(1)

        misses: list[ServoError] = []
        seen: set[int] = set()
        stop = threading.Event()

        def ask_latest() -> None:
            while not stop.is_set():
                try:
                    with manager.get_servable_handle(ServableRequest.latest("m")) as h:
                        seen.add(h.servable.id.version)
                except ServoError as exc:
                    misses.append(exc)

        asker = threading.Thread(target=ask_latest)
        asker.start()
        try:
            manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
            wait_state(monitor, sid(2), A)
            wait_state(monitor, sid(1), END)
        finally:
            stop.set()
            asker.join()
        assert misses == []
        assert seen <= {1, 2}
        assert states_of(monitor, sid(1)) == [
            ManagerState.START,
            ManagerState.LOADING,
            A,
            ManagerState.UNLOADING,
            END,
        ]
        log = [(e.state.id.version, e.state.manager_state) for e in monitor.get_log()]
        assert log.index((2, A)) < log.index((1, ManagerState.UNLOADING))
        with manager.get_servable_handle(ServableRequest.latest("m")) as handle:
            assert handle.id == sid(2)
    assert journal.violations == []


def test_resource_preserving_unloads_old_before_loading_new() -> None:
    journal = Journal()
    with running_manager(aspired_version_policy=ResourcePreservingPolicy()) as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
        wait_state(monitor, sid(2), A)
        log = [(e.state.id.version, e.state.manager_state) for e in monitor.get_log()]
        assert log.index((1, END)) < log.index((2, ManagerState.LOADING))
        assert journal.events.index(("unload", sid(1))) < journal.events.index(("load", sid(2)))
    assert journal.violations == []


def test_held_handle_keeps_its_version_loaded_until_released() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        handle = manager.get_servable_handle(ServableRequest.specific("m", 1))
        journal.held[sid(1)] = 1
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
        wait_state(monitor, sid(2), A)
        wait_state(monitor, sid(1), ManagerState.UNLOADING)
        # Version 1 stops taking new requests but keeps its servable for the held handle.
        with pytest.raises(ServoError, match=r"Servable not found for request: Specific\(m, 1\)"):
            manager.get_servable_handle(ServableRequest.specific("m", 1))
        assert handle.servable.id == sid(1)
        assert journal.count("unload", sid(1)) == 0
        assert [s.state for s in manager.managed_versions("m") if s.id == sid(1)] == [
            LoaderState.QUIESCING
        ]
        journal.held[sid(1)] = 0
        handle.release()
        wait_state(monitor, sid(1), END)
        assert journal.count("unload", sid(1)) == 1
    assert journal.violations == []


def test_a_shared_reference_alone_keeps_its_version_loaded() -> None:
    """The data plane's case: a request's handle is released (its deadline answered) while
    the model call it started still runs on a thread holding a shared reference."""
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        with manager.get_servable_handle(ServableRequest.latest("m")) as handle:
            shared = handle.share()
        journal.held[sid(1)] = 1  # the fake loader reports an unload while it is set
        assert shared.id == sid(1) and shared.servable.id == sid(1)
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
        wait_state(monitor, sid(2), A)
        wait_state(monitor, sid(1), ManagerState.UNLOADING)
        # Quiescing: no new handles, but the holder of a reference may still share it.
        with pytest.raises(ServoError):
            manager.get_servable_handle(ServableRequest.specific("m", 1))
        again = shared.share()
        shared.release()
        assert journal.count("unload", sid(1)) == 0
        assert [s.state for s in manager.managed_versions("m") if s.id == sid(1)] == [
            LoaderState.QUIESCING
        ]
        journal.held[sid(1)] = 0
        again.release()
        wait_state(monitor, sid(1), END)
        assert journal.count("unload", sid(1)) == 1
        with pytest.raises(RuntimeError, match="cannot share a released handle"):
            again.share()
    assert journal.violations == []


def test_failing_load_is_retried_then_ends_with_its_error_while_old_version_serves() -> None:
    journal = Journal()
    with running_manager(max_num_load_retries=3) as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        bad = FakeLoader(sid(2), journal, fail=True)
        manager.set_aspired_versions("m", [item(bad)])
        wait_state(monitor, sid(2), END)
        assert bad.load_calls == 4  # the first attempt and 3 retries
        health = monitor.get_state(sid(2)).health
        assert health == Status(Code.INTERNAL, "fake load failure of {name: m version: 2}")
        assert monitor.get_state(sid(1)).manager_state == A
        with manager.get_servable_handle(ServableRequest.latest("m")) as handle:
            assert handle.id == sid(1)
        # Aspiring the failed version again does not retry it.
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
        manager.set_aspired_versions(
            "m", [item(FakeLoader(sid(2), journal)), item(FakeLoader(sid(3), journal))]
        )
        wait_state(monitor, sid(3), A)
        assert journal.count("load", sid(2)) == 4
    assert journal.violations == []


def test_load_that_succeeds_on_a_retry_becomes_available() -> None:
    journal = Journal()
    with running_manager(max_num_load_retries=2) as (manager, monitor):
        flaky = FakeLoader(sid(1), journal, fail_times=2)
        manager.set_aspired_versions("m", [item(flaky)])
        wait_state(monitor, sid(1), A)
        assert flaky.load_calls == 3


class _FailsTwiceThenWaits(FakeLoader):
    """Fails its first two loads; its third waits for `release`, then succeeds."""

    def __init__(self, id: ServableId, journal: Journal, release: threading.Event) -> None:
        super().__init__(id, journal, fail_times=2)
        self.release = release

    def load(self) -> None:
        if self.load_calls == 2:
            self.release.wait(WAIT)
        super().load()


def test_a_version_being_retried_shows_its_last_failure_and_the_retry_count() -> None:
    journal = Journal()
    release = threading.Event()
    with running_manager(max_num_load_retries=5) as (manager, monitor):
        flaky = _FailsTwiceThenWaits(sid(1), journal, release)
        manager.set_aspired_versions("m", [item(flaky)])
        failure = "fake load failure of {name: m version: 1}"
        retrying = Status(Code.INTERNAL, f"{failure} (retry 2 of 5 in 0 s)")
        # Its third attempt runs: the status is still LOADING, with the second failure.
        assert monitor.wait_until(
            lambda: getattr(monitor.get_state(sid(1)), "health", None) == retrying,
            timeout=WAIT,
        )
        assert monitor.get_state(sid(1)).manager_state == ManagerState.LOADING
        release.set()
        wait_state(monitor, sid(1), A)
        assert monitor.get_state(sid(1)).health == OK  # AVAILABLE clears the failure
        log = [(e.state.manager_state, e.state.health) for e in monitor.get_log()]
        assert log == [
            (ManagerState.START, OK),
            (ManagerState.LOADING, OK),
            (ManagerState.LOADING, Status(Code.INTERNAL, f"{failure} (retry 1 of 5 in 0 s)")),
            (ManagerState.LOADING, retrying),
            (A, OK),
        ]
    assert journal.violations == []


def test_a_version_out_of_retries_ends_with_its_last_failure_alone() -> None:
    journal = Journal()
    with running_manager(max_num_load_retries=2) as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal, fail=True))])
        wait_state(monitor, sid(1), END)
        failure = "fake load failure of {name: m version: 1}"
        log = [(e.state.manager_state, e.state.health) for e in monitor.get_log()]
        assert log == [
            (ManagerState.START, OK),
            (ManagerState.LOADING, OK),
            (ManagerState.LOADING, Status(Code.INTERNAL, f"{failure} (retry 1 of 2 in 0 s)")),
            (ManagerState.LOADING, Status(Code.INTERNAL, f"{failure} (retry 2 of 2 in 0 s)")),
            (END, Status(Code.INTERNAL, failure)),  # the final error, no retry count
        ]


def test_a_load_queued_behind_another_stays_start_until_its_load_starts() -> None:
    journal = Journal()
    gate = threading.Event()
    with running_manager() as (manager, monitor):  # one load thread
        manager.set_aspired_versions("a", [item(FakeLoader(sid(1, "a"), journal, gate=gate))])
        wait_state(monitor, sid(1, "a"), ManagerState.LOADING)
        manager.set_aspired_versions("b", [item(FakeLoader(sid(1, "b"), journal))])
        wait_until(
            lambda: [s.state for s in manager.managed_versions("b")] == [LoaderState.LOADING],
            what="b's load is queued",
        )
        assert states_of(monitor, sid(1, "b")) == [ManagerState.START]  # as in TFS
        gate.set()
        wait_state(monitor, sid(1, "b"), A)
        assert states_of(monitor, sid(1, "b")) == [ManagerState.START, ManagerState.LOADING, A]
    assert journal.violations == []


def test_version_over_the_ram_budget_is_refused_and_the_rest_keep_serving() -> None:
    journal = Journal()
    tracker = ResourceTracker(ResourceAllocation(ram_bytes=1000))
    with running_manager(resource_tracker=tracker) as (manager, monitor):
        manager.set_aspired_versions("small", [item(FakeLoader(sid(1, "small"), journal, ram=400))])
        wait_state(monitor, sid(1, "small"), A)
        big = FakeLoader(sid(1, "big"), journal, ram=700)
        manager.set_aspired_versions("big", [item(big)])
        wait_state(monitor, sid(1, "big"), END)
        health = monitor.get_state(sid(1, "big")).health
        assert health.code == Code.RESOURCE_EXHAUSTED
        assert "Insufficient resources to load servable {name: big version: 1}" in health.message
        assert big.load_calls == 0
        assert tracker.used == ResourceAllocation(400)
        with manager.get_servable_handle(ServableRequest.latest("small")) as handle:
            assert handle.id == sid(1, "small")
        # Room is given back when a version unloads.
        manager.set_aspired_versions("small", [])
        wait_state(monitor, sid(1, "small"), END)
        assert tracker.used == ResourceAllocation(0)


def test_a_refused_load_waits_for_loads_in_flight_that_may_give_room_back() -> None:
    journal = Journal()
    tracker = ResourceTracker(ResourceAllocation(ram_bytes=1000))
    gate = threading.Event()
    with running_manager(resource_tracker=tracker) as (manager, monitor):
        doomed = FakeLoader(sid(1, "a"), journal, ram=800, gate=gate, fail=True)
        manager.set_aspired_versions("a", [item(doomed)])
        wait_state(monitor, sid(1, "a"), ManagerState.LOADING)
        # b does not fit beside a's reservation; a's load is still running, so b waits (its
        # START is published by the very pass that first tried to reserve for it).
        manager.set_aspired_versions("b", [item(FakeLoader(sid(1, "b"), journal, ram=500))])
        wait_state(monitor, sid(1, "b"), ManagerState.START)
        gate.set()  # a fails and gives its 800 bytes back: b fits
        wait_state(monitor, sid(1, "a"), END)
        wait_state(monitor, sid(1, "b"), A)
        assert tracker.used == ResourceAllocation(500)
    assert journal.violations == []


def test_a_loader_with_a_bad_estimate_fails_alone() -> None:
    class BadEstimate(FakeLoader):
        def estimate_resources(self) -> ResourceAllocation:
            return 5  # type: ignore[return-value]  # not a ResourceAllocation

    journal = Journal()
    tracker = ResourceTracker(ResourceAllocation(ram_bytes=1000))
    with running_manager(resource_tracker=tracker) as (manager, monitor):
        manager.set_aspired_versions("b", [item(BadEstimate(sid(1, "b"), journal))])
        manager.set_aspired_versions("a", [item(FakeLoader(sid(1, "a"), journal, ram=100))])
        wait_state(monitor, sid(1, "b"), END)
        assert "AttributeError" in monitor.get_state(sid(1, "b")).health.message
        wait_state(monitor, sid(1, "a"), A)
    assert journal.violations == []


def test_error_item_from_a_source_ends_the_version_with_that_error() -> None:
    with running_manager() as (manager, monitor):
        status = Status(Code.NOT_FOUND, "no such model")
        manager.set_aspired_versions("m", [ServableData.error(sid(1), status)])
        wait_state(monitor, sid(1), END)
        assert monitor.get_state(sid(1)).health == status
        assert states_of(monitor, sid(1)) == [ManagerState.START, END]


def test_only_the_newest_pending_list_is_kept() -> None:
    journal = Journal()
    gate = threading.Event()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal, gate=gate))])
        monitor.wait_for_state(sid(1), ManagerState.LOADING, timeout=WAIT)
        # While version 1 loads, two lists arrive; only the second may ever be acted on. The
        # first names version 2, which must never even start.
        with manager._publish_lock:  # holds the manage loop: both lists are pending at once
            manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
            manager.set_aspired_versions("m", [item(FakeLoader(sid(3), journal))])
        gate.set()
        wait_state(monitor, sid(3), A)
        wait_state(monitor, sid(1), END)
        assert monitor.get_state(sid(2)) is None
    assert journal.violations == []


def test_get_servable_handle_latest_earliest_specific_and_not_found() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(v), journal)) for v in (3, 5, 7)])
        for v in (3, 5, 7):
            wait_state(monitor, sid(v), A)
        with manager.get_servable_handle(ServableRequest.latest("m")) as h:
            assert h.id == sid(7)
        with manager.get_servable_handle(ServableRequest.earliest("m")) as h:
            assert h.id == sid(3)
        with manager.get_servable_handle(ServableRequest.specific("m", 5)) as h:
            assert h.servable.id == sid(5)
        assert manager.available_servable_ids() == [sid(3), sid(5), sid(7)]
        with pytest.raises(ServoError) as err:
            manager.get_servable_handle(ServableRequest.specific("m", 4))
        assert err.value.code == Code.NOT_FOUND
        assert err.value.message == "Servable not found for request: Specific(m, 4)"
        with pytest.raises(ServoError, match=r"^Servable not found for request: Latest\(x\)$"):
            manager.get_servable_handle(ServableRequest.latest("x"))


def test_empty_list_unloads_the_stream_and_stop_unloads_everything() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("a", [item(FakeLoader(sid(1, "a"), journal))])
        manager.set_aspired_versions("b", [item(FakeLoader(sid(1, "b"), journal))])
        wait_state(monitor, sid(1, "a"), A)
        wait_state(monitor, sid(1, "b"), A)
        manager.set_aspired_versions("a", [])
        wait_state(monitor, sid(1, "a"), END)
        assert manager.available_servable_ids() == [sid(1, "b")]
    assert monitor.get_state(sid(1, "b")).manager_state == END
    assert journal.count("unload", sid(1, "b")) == 1
    assert journal.violations == []


def test_version_dropped_before_it_loads_ends_without_loading() -> None:
    journal = Journal()
    with running_manager(aspired_version_policy=ResourcePreservingPolicy()) as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        handle = manager.get_servable_handle(ServableRequest.latest("m"))
        # Version 1 cannot finish unloading while the handle is held, so version 2 waits NEW.
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal))])
        wait_state(monitor, sid(1), ManagerState.UNLOADING)
        wait_state(monitor, sid(2), ManagerState.START)
        manager.set_aspired_versions("m", [item(FakeLoader(sid(3), journal))])
        wait_state(monitor, sid(2), END)
        assert monitor.get_state(sid(2)).health.ok
        assert journal.count("load", sid(2)) == 0
        handle.release()
        wait_state(monitor, sid(3), A)
        assert states_of(monitor, sid(2)) == [ManagerState.START, END]
    assert journal.violations == []


def test_aspired_versions_for_another_name_are_rejected() -> None:
    with running_manager() as (manager, _), pytest.raises(ValueError, match="does not belong"):
        manager.set_aspired_versions("m", [ServableData(sid(1, "other"), None)])


def test_stop_waits_for_a_held_handle_then_unloads() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        handle = manager.get_servable_handle(ServableRequest.latest("m"))
        journal.held[sid(1)] = 1
        stopper = threading.Thread(target=manager.stop, kwargs={"drain_timeout": WAIT})
        stopper.start()
        wait_state(monitor, sid(1), ManagerState.UNLOADING)  # stop now waits for the handle
        assert journal.count("unload", sid(1)) == 0
        journal.held[sid(1)] = 0
        handle.release()
        stopper.join(timeout=WAIT)
        assert not stopper.is_alive()
        assert states_of(monitor, sid(1))[-1] == END
        assert journal.count("unload", sid(1)) == 1
    assert journal.violations == []


def test_stop_unloads_after_its_drain_timeout_with_a_handle_still_held() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        handle = manager.get_servable_handle(ServableRequest.latest("m"))
        manager.stop(drain_timeout=0.0)
        assert states_of(monitor, sid(1))[-2:] == [ManagerState.UNLOADING, END]
        assert journal.count("unload", sid(1)) == 1
        handle.release()  # late, and harmless
    assert journal.violations == []


def test_stop_gives_up_on_a_load_that_never_returns_at_its_drain_timeout() -> None:
    journal = Journal()
    gate = threading.Event()  # never set while the manager stops: the load hangs
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        manager.set_aspired_versions("m", [item(FakeLoader(sid(2), journal, gate=gate))])
        wait_state(monitor, sid(2), ManagerState.LOADING)
        # LOADING is published when the load starts (a queued load is START).
        wait_until(lambda: journal.count("load", sid(2)) == 1, what="the load runs")
        assert manager.stop(drain_timeout=2.0) is False  # returns: the load is left behind
        assert states_of(monitor, sid(1))[-1] == END  # the serving version still unloads
        gate.set()


def test_stop_drains_versions_side_by_side_within_one_drain_timeout() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        for name in ("a", "b", "c"):
            manager.set_aspired_versions(name, [item(FakeLoader(sid(1, name), journal))])
            wait_state(monitor, sid(1, name), A)
        handles = [manager.get_servable_handle(ServableRequest.latest(n)) for n in "abc"]
        for name in "abc":
            journal.held[sid(1, name)] = 1
        stopper = threading.Thread(target=manager.stop, kwargs={"drain_timeout": WAIT})
        stopper.start()
        for name in "abc":  # every version is UNLOADING at once, not one after another
            wait_state(monitor, sid(1, name), ManagerState.UNLOADING)
        for name, handle in zip("abc", handles, strict=True):
            journal.held[sid(1, name)] = 0
            handle.release()
        stopper.join(timeout=WAIT)
        assert not stopper.is_alive()
        assert [states_of(monitor, sid(1, n))[-1] for n in "abc"] == [END, END, END]
    assert journal.violations == []


def test_stop_is_complete_when_everything_ended_in_time() -> None:
    journal = Journal()
    with running_manager() as (manager, monitor):
        manager.set_aspired_versions("m", [item(FakeLoader(sid(1), journal))])
        wait_state(monitor, sid(1), A)
        assert manager.stop(drain_timeout=WAIT) is True
