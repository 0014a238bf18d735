"""Aspired-version policies as tables of snapshots and expected actions."""

from __future__ import annotations

import pytest

from servo.core.aspired_version_policy import (
    Action,
    AvailabilityPreservingPolicy,
    ResourcePreservingPolicy,
    ServableAction,
    VersionSnapshot,
)
from servo.core.loader_harness import LoaderState
from servo.core.servable_id import ServableId

NEW, LOADING, READY = LoaderState.NEW, LoaderState.LOADING, LoaderState.READY
QUIESCING, UNLOADING = LoaderState.QUIESCING, LoaderState.UNLOADING
DISABLED, ERROR = LoaderState.DISABLED, LoaderState.ERROR


def snap(*versions: tuple[int, LoaderState, bool]) -> list[VersionSnapshot]:
    return [VersionSnapshot(ServableId("m", v), s, a) for v, s, a in versions]


def load(v: int) -> ServableAction:
    return ServableAction(Action.LOAD, ServableId("m", v))


def unload(v: int) -> ServableAction:
    return ServableAction(Action.UNLOAD, ServableId("m", v))


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        # Nothing to do.
        ([], None),
        ([(1, READY, True)], None),
        # New version aspired, old one serving: load the new one first.
        ([(1, READY, False), (2, NEW, True)], load(2)),
        # The new one is loading: the old one must stay.
        ([(1, READY, False), (2, LOADING, True)], None),
        # The new one is ready: now the old one goes.
        ([(1, READY, False), (2, READY, True)], unload(1)),
        # The new one failed: the old one keeps serving.
        ([(1, READY, False), (2, ERROR, True)], None),
        # Two un-aspired ready versions: the lowest may go even before the new one is ready.
        ([(1, READY, False), (2, READY, False), (3, NEW, True)], unload(1)),
        # Nothing aspired: unload, lowest first.
        ([(1, READY, False), (2, READY, False)], unload(1)),
        ([(2, READY, False)], unload(2)),
        # Several new: the highest first.
        ([(1, NEW, True), (3, NEW, True), (2, NEW, True)], load(3)),
        ([(1, NEW, True), (3, LOADING, True)], load(1)),
        # Un-aspired versions in transition are left alone.
        ([(1, QUIESCING, False), (2, READY, True)], None),
        ([(1, UNLOADING, False), (2, NEW, True)], load(2)),
    ],
)
def test_availability_preserving(versions: list, expected: ServableAction | None) -> None:
    assert AvailabilityPreservingPolicy().next_action(snap(*versions)) == expected


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ([], None),
        ([(1, READY, True)], None),
        # Unload first, even with nothing else ready.
        ([(1, READY, False), (2, NEW, True)], unload(1)),
        ([(1, READY, False)], unload(1)),
        # Wait while an un-aspired version is still on its way out.
        ([(1, QUIESCING, False), (2, NEW, True)], None),
        ([(1, UNLOADING, False), (2, NEW, True)], None),
        ([(1, LOADING, False), (2, NEW, True)], None),
        # Gone (or never loaded, or failed): load the highest aspired new version.
        ([(1, DISABLED, False), (2, NEW, True)], load(2)),
        ([(1, ERROR, False), (2, NEW, True)], load(2)),
        ([(1, NEW, False), (2, NEW, True), (3, NEW, True)], load(3)),
        ([(2, READY, True), (3, LOADING, True), (1, NEW, True)], load(1)),
    ],
)
def test_resource_preserving(versions: list, expected: ServableAction | None) -> None:
    assert ResourcePreservingPolicy().next_action(snap(*versions)) == expected
