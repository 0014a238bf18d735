from __future__ import annotations

import pytest

from servo.core.loader import ResourceAllocation
from servo.core.resource_tracker import ResourceTracker
from servo.core.servable_id import ServableId


def test_unlimited_by_default() -> None:
    tracker = ResourceTracker()
    assert tracker.reserve(ServableId("m", 1), ResourceAllocation(10**15))
    assert tracker.total is None


def test_budget_refuses_what_does_not_fit_and_release_gives_room_back() -> None:
    tracker = ResourceTracker(ResourceAllocation(100))
    assert tracker.reserve(ServableId("a", 1), ResourceAllocation(60))
    assert not tracker.reserve(ServableId("b", 1), ResourceAllocation(41))
    assert tracker.reserve(ServableId("b", 1), ResourceAllocation(40))
    assert tracker.used == ResourceAllocation(100)
    tracker.release(ServableId("a", 1))
    assert tracker.used == ResourceAllocation(40)
    with pytest.raises(ValueError):
        tracker.reserve(ServableId("b", 1), ResourceAllocation(1))
