"""The loader harness's state machine: every transition method from every state, the states
it returns to publish, its load retries and its handle count."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import given

from servo.core.loader_harness import LoaderHarness, LoaderState, TransitionError
from servo.core.servable_id import ServableId
from servo.core.servable_state import ManagerState, ServableState, check_transition
from servo.core.status import OK, Code, Status
from tests.support.fakes import FakeLoader, Journal
from tests.support.lifecycle import PUBLISHED_AS

ID = ServableId("m", 1)
BROKEN = Status(Code.INTERNAL, "broken")

Step = Callable[[LoaderHarness], object]

# Every transition method, called the way the manager calls it.
METHODS: dict[str, Step] = {
    "start": lambda h: h.start(),
    "load_approved": lambda h: h.load_approved(),
    "load_started": lambda h: h.load_started(),
    "retrying": lambda h: h.retrying(BROKEN, 1, 5, 60.0),
    "ready": lambda h: h.ready(),
    "error": lambda h: h.error(BROKEN),
    "drop": lambda h: h.drop(),
    "start_quiescing": lambda h: h.start_quiescing(),
    "done_quiescing": lambda h: h.done_quiescing(),
    "unloaded": lambda h: h.unloaded(),
}

# Where each method is legal, where it goes and what it publishes ("unstarted" is NEW before
# START was published).
LEGAL: dict[tuple[str, str], tuple[LoaderState, ManagerState | None]] = {
    ("start", "unstarted"): (LoaderState.NEW, ManagerState.START),
    ("load_approved", "new"): (LoaderState.LOADING, None),
    ("load_started", "loading"): (LoaderState.LOADING, ManagerState.LOADING),
    ("retrying", "started"): (LoaderState.LOADING, ManagerState.LOADING),
    ("retrying", "retrying"): (LoaderState.LOADING, ManagerState.LOADING),
    ("ready", "started"): (LoaderState.READY, ManagerState.AVAILABLE),
    ("ready", "retrying"): (LoaderState.READY, ManagerState.AVAILABLE),
    ("error", "new"): (LoaderState.ERROR, ManagerState.END),
    ("error", "loading"): (LoaderState.ERROR, ManagerState.END),
    ("error", "started"): (LoaderState.ERROR, ManagerState.END),
    ("error", "retrying"): (LoaderState.ERROR, ManagerState.END),
    ("drop", "new"): (LoaderState.DISABLED, ManagerState.END),
    ("start_quiescing", "ready"): (LoaderState.QUIESCING, ManagerState.UNLOADING),
    ("done_quiescing", "quiescing"): (LoaderState.UNLOADING, None),
    ("unloaded", "unloading"): (LoaderState.DISABLED, ManagerState.END),
}

# How to reach each state the legal way.
PATHS: dict[str, list[str]] = {
    "unstarted": [],
    "new": ["start"],
    "loading": ["start", "load_approved"],
    "started": ["start", "load_approved", "load_started"],
    "retrying": ["start", "load_approved", "load_started", "retrying"],
    "ready": ["start", "load_approved", "load_started", "ready"],
    "quiescing": ["start", "load_approved", "load_started", "ready", "start_quiescing"],
    "unloading": [
        "start",
        "load_approved",
        "load_started",
        "ready",
        "start_quiescing",
        "done_quiescing",
    ],
    "disabled": ["start", "drop"],
    "unloaded": [
        "start",
        "load_approved",
        "load_started",
        "ready",
        "start_quiescing",
        "done_quiescing",
        "unloaded",
    ],
    "error": ["start", "error"],
    "failed_load": ["start", "load_approved", "load_started", "error"],
}


def harness(loader: FakeLoader | None = None) -> LoaderHarness:
    return LoaderHarness(ID, loader or FakeLoader(ID, Journal()), lambda _: None)


def harness_in(state: str) -> LoaderHarness:
    h = harness()
    for method in PATHS[state]:
        METHODS[method](h)
    return h


@pytest.mark.parametrize(
    ("method", "state"), list(itertools.product(METHODS, PATHS)), ids=lambda x: str(x)
)
def test_each_transition_is_legal_only_where_the_tables_say(method: str, state: str) -> None:
    h = harness_in(state)
    before = (h.state, h.published_state)
    legal = LEGAL.get((method, state))
    if legal is None:
        with pytest.raises(TransitionError):
            METHODS[method](h)
        assert (h.state, h.published_state) == before  # an illegal transition changes nothing
        return
    to, published = legal
    event = METHODS[method](h)
    assert h.state == to
    if published is None:
        assert event is None
        assert h.published_state == before[1]
    else:
        assert isinstance(event, ServableState)
        assert (event.id, event.manager_state) == (ID, published)
        assert h.published_state == published
        check_transition(before[1], published)
    assert h.published_state in PUBLISHED_AS[h.state]


def test_the_published_path_of_a_version_that_loads_serves_and_unloads() -> None:
    loader = FakeLoader(ID, Journal())
    h = harness(loader)
    events = [h.start()]
    h.load_approved()
    events.append(h.load_started())
    assert h.load(0, 0.0) == OK
    events.append(h.ready())
    assert h.servable is loader.servable
    events.append(h.start_quiescing())
    h.done_quiescing()
    h.unload()
    events.append(h.unloaded())
    assert [e.manager_state for e in events] == [
        ManagerState.START,
        ManagerState.LOADING,
        ManagerState.AVAILABLE,
        ManagerState.UNLOADING,
        ManagerState.END,
    ]
    assert all(e.health == OK for e in events)
    assert h.servable is None
    assert loader.journal.events == [("load", ID), ("unload", ID)]


def test_an_error_ends_with_its_status_as_health() -> None:
    h = harness_in("loading")
    event = h.error(BROKEN)
    assert (event.manager_state, event.health) == (ManagerState.END, BROKEN)
    assert h.status == BROKEN
    with pytest.raises(ValueError, match="not OK"):
        harness_in("new").error(OK)


def test_load_and_unload_run_only_in_their_states() -> None:
    with pytest.raises(TransitionError):
        harness_in("new").load(0, 0.0)
    with pytest.raises(TransitionError):
        harness_in("quiescing").unload()


def test_load_retries_then_succeeds_or_returns_the_last_failure() -> None:
    flaky = FakeLoader(ID, Journal(), fail_times=2)
    h = harness(flaky)
    h.start()
    h.load_approved()
    assert h.load(2, 0.0) == OK
    assert flaky.load_calls == 3
    assert h.state == LoaderState.LOADING  # the manager makes it READY

    broken = FakeLoader(ID, Journal(), fail=True)
    h = harness(broken)
    h.start()
    h.load_approved()
    status = h.load(1, 0.0)
    assert status == Status(Code.INTERNAL, "fake load failure of {name: m version: 1}")
    assert broken.load_calls == 2


def test_a_version_no_longer_aspired_stops_retrying_its_load() -> None:
    broken = FakeLoader(ID, Journal(), fail=True)
    h = harness(broken)
    h.start()
    h.load_approved()
    h.set_aspired(False)
    assert not h.load(5, 60.0).ok
    assert broken.load_calls == 1

    # Cancelled while it runs or waits to retry: it gives up without waiting out the interval.
    broken = FakeLoader(ID, Journal(), fail=True)
    h = harness(broken)
    h.start()
    h.load_approved()
    results: list[Status] = []
    loading = threading.Thread(target=lambda: results.append(h.load(5, 60.0)))
    loading.start()
    h.set_aspired(False)
    loading.join(timeout=10.0)
    assert not loading.is_alive()
    assert not results[0].ok
    assert broken.load_calls <= 2


def test_handles_only_while_serving_and_drained_once_quiesced_and_released() -> None:
    drained: list[LoaderHarness] = []
    loader = FakeLoader(ID, Journal())
    h = LoaderHarness(ID, loader, drained.append)
    h.start()
    h.load_approved()
    h.load_started()
    h.load(0, 0.0)
    assert not h.acquire()  # LOADING: no handles
    with pytest.raises(TransitionError):
        h.add_reference()  # no reference held to add to
    h.ready()
    assert h.acquire()
    h.add_reference()
    assert h.refs == 2
    h.start_quiescing()
    assert not h.acquire()  # QUIESCING: no new handles
    h.add_reference()  # but a holder may still take another reference
    assert not h.drained
    assert not h.wait_drained(0)
    with pytest.raises(TransitionError, match="still has handles held"):
        h.done_quiescing()
    h.release()
    h.release()
    assert drained == []
    h.release()
    assert drained == [h]
    assert h.drained and h.wait_drained(0)
    with pytest.raises(TransitionError):
        h.release()
    h.done_quiescing()
    assert h.state == LoaderState.UNLOADING


def test_quiescing_with_no_handle_held_is_drained_at_once() -> None:
    h = harness_in("quiescing")
    assert h.drained


def test_done_quiescing_may_be_forced_with_handles_held() -> None:
    h = harness_in("ready")
    assert h.acquire()
    h.start_quiescing()
    h.done_quiescing(force=True)
    assert h.state == LoaderState.UNLOADING


@given(st.lists(st.sampled_from(sorted(METHODS)), max_size=12))
def test_any_sequence_of_calls_publishes_a_legal_path(calls: list[str]) -> None:
    """Whatever the manager asks, in whatever order, what the harness returns to publish is a
    legal path from START, and its state always agrees with what it last published."""
    h = harness()
    published: list[ManagerState] = []
    for method in calls:
        before = (h.state, h.published_state)
        try:
            event = METHODS[method](h)
        except TransitionError:
            assert (h.state, h.published_state) == before
            continue
        if isinstance(event, ServableState):
            published.append(event.manager_state)
        assert h.published_state in PUBLISHED_AS[h.state]
    for old, new in itertools.pairwise([None, *published]):
        check_transition(old, new)


def test_a_retried_load_publishes_loading_with_each_failure_and_its_retry_count() -> None:
    flaky = FakeLoader(ID, Journal(), fail_times=2)
    h = harness(flaky)
    h.start()
    h.load_approved()
    assert h.published_state is ManagerState.START  # queued: not LOADING yet
    events = [h.load_started()]
    assert events[0].health == OK
    retries: list[int] = []

    def on_retry(failure: Status, retry: int) -> None:
        retries.append(h.load_retries)
        events.append(h.retrying(failure, retry, 5, 60.0))

    assert h.load(5, 0.0, on_retry) == OK
    events.append(h.ready())
    failure = "fake load failure of {name: m version: 1}"
    assert [(e.manager_state, e.health) for e in events] == [
        (ManagerState.LOADING, OK),
        (ManagerState.LOADING, Status(Code.INTERNAL, f"{failure} (retry 1 of 5 in 60 s)")),
        (ManagerState.LOADING, Status(Code.INTERNAL, f"{failure} (retry 2 of 5 in 60 s)")),
        (ManagerState.AVAILABLE, OK),  # the failures are cleared
    ]
    assert retries == [1, 2]
    assert h.status == OK
    for old, new in itertools.pairwise([ManagerState.START, *(e.manager_state for e in events)]):
        check_transition(old, new)
    with pytest.raises(ValueError, match="not OK"):
        harness_in("started").retrying(OK, 1, 5, 60.0)


def test_the_log_says_each_failure_its_retry_and_the_final_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="servo.core.loader_harness")
    h = harness_in("started")
    h.loader = FakeLoader(ID, Journal(), fail=True)
    status = h.load(2, 0.0)
    assert status == Status(Code.INTERNAL, "fake load failure of {name: m version: 1}")
    messages = [r.getMessage() for r in caplog.records]
    failure = "INTERNAL: fake load failure of {name: m version: 1}"
    assert f"Loading {{name: m version: 1}} failed ({failure}); retry 1 of 2 in 0 s" in messages
    assert f"Loading {{name: m version: 1}} failed ({failure}); retry 2 of 2 in 0 s" in messages
    assert "Retrying load of {name: m version: 1}: retry 2 of 2" in messages
    final = [m for m in messages if m.startswith("Failed to load")]
    assert len(final) == 1
    assert final[0].startswith("Failed to load {name: m version: 1} after 2 retries in ")
    assert final[0].endswith(f" s: {failure}")
    assert [r.levelname for r in caplog.records if r.getMessage() == final[0]] == ["ERROR"]


def test_the_log_says_when_retries_were_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    h = harness_in("started")
    h.loader = FakeLoader(ID, Journal(), fail=True)
    h.set_aspired(False)
    assert not h.load(5, 60.0).ok
    assert any(
        "after 0 of 5 retries" in r.getMessage() and "retries cancelled" in r.getMessage()
        for r in caplog.records
    )
