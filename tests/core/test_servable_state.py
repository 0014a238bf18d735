from __future__ import annotations

import itertools

import pytest

from servo.core.servable_id import ServableId
from servo.core.servable_state import TRANSITIONS, ManagerState, check_transition


def test_states_carry_tfs_numbers() -> None:
    assert [(s.name, int(s)) for s in ManagerState] == [
        ("START", 10),
        ("LOADING", 20),
        ("AVAILABLE", 30),
        ("UNLOADING", 40),
        ("END", 50),
    ]


def test_transition_table() -> None:
    path = [
        None,
        ManagerState.START,
        ManagerState.LOADING,
        ManagerState.AVAILABLE,
        ManagerState.UNLOADING,
        ManagerState.END,
    ]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)
    check_transition(ManagerState.START, ManagerState.END)
    check_transition(ManagerState.LOADING, ManagerState.END)
    with pytest.raises(ValueError):
        check_transition(ManagerState.AVAILABLE, ManagerState.END)  # UNLOADING comes first
    with pytest.raises(ValueError):
        check_transition(ManagerState.END, ManagerState.START)
    assert TRANSITIONS[ManagerState.END] == frozenset()


def test_servable_id() -> None:
    assert str(ServableId("m", 3)) == "{name: m version: 3}"
    assert ServableId("a", 2) < ServableId("a", 10) < ServableId("b", 1)
    with pytest.raises(ValueError):
        ServableId("m", -1)
