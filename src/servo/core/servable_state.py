"""The published lifecycle of a servable version, and its health.

    START(10) -> LOADING(20) -> AVAILABLE(30) -> UNLOADING(40) -> END(50)
         \\            \\_____________________________________/^
          \\_____________________________________________________/

A version may also reach END before it is AVAILABLE, from START or LOADING: a failed load ends
there with an error in its health, a version dropped before it loaded ends there with OK; an
AVAILABLE version always goes through UNLOADING. The loader harness returns each of these
states for the manager to publish, checked with `check_transition`.

LOADING is published when the load starts (the loader's first `load` call, on a load thread),
as TFS publishes it; a version waiting for a load thread or for resources is still START.
LOADING may be published again while the version loads: each failed load that is to be
retried publishes LOADING with that failure in its health, its message ending with the retry
count (`... (retry 2 of 5 in 60 s)`); AVAILABLE then comes with OK health, END with the last
failure. (servo's addition: TFS's health stays OK until END.)

AVAILABLE is published only once the servable can serve; UNLOADING is published once it has
stopped taking new requests (those in flight finish before it unloads). (TFS publishes
UNLOADING a moment earlier, just before the version leaves its serving map; either way a
request that named that version alone gets NOT_FOUND from then on.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from servo.core.servable_id import ServableId
from servo.core.status import OK, Status


class ManagerState(enum.IntEnum):
    """TFS's `ServableState::ManagerState`, with its numbers."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


# The checked table of transitions: the state a version is in -> the states it may go to.
TRANSITIONS: dict[ManagerState | None, frozenset[ManagerState]] = {
    None: frozenset({ManagerState.START}),
    ManagerState.START: frozenset({ManagerState.LOADING, ManagerState.END}),
    ManagerState.LOADING: frozenset(
        {ManagerState.LOADING, ManagerState.AVAILABLE, ManagerState.END}
    ),
    ManagerState.AVAILABLE: frozenset({ManagerState.UNLOADING}),
    ManagerState.UNLOADING: frozenset({ManagerState.END}),
    ManagerState.END: frozenset(),
}


def check_transition(old: ManagerState | None, new: ManagerState) -> None:
    """Raises `ValueError` unless `old -> new` is a legal transition."""
    if new not in TRANSITIONS[old]:
        raise ValueError(f"illegal servable state transition {old!r} -> {new!r}")


@dataclass(frozen=True, slots=True)
class ServableState:
    """What the manager publishes on the event bus each time a version changes state."""

    id: ServableId
    manager_state: ManagerState
    health: Status = OK

    def __str__(self) -> str:
        return f"{self.id} {self.manager_state.name} ({self.health})"
