"""Aspired-version policies: which one action a manager takes next on a servable stream.

A policy is a pure function from a snapshot of a stream (every managed version, its loader
state and whether it is aspired) to at most one action. (Not to be confused with the
file-system source's servable version policy, which picks the versions to aspire.)
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from servo.core.loader_harness import FINAL_STATES, LoaderState
from servo.core.servable_id import ServableId


class Action(enum.Enum):
    LOAD = "load"
    UNLOAD = "unload"


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    id: ServableId
    state: LoaderState
    is_aspired: bool


@dataclass(frozen=True, slots=True)
class ServableAction:
    action: Action
    id: ServableId


class AspiredVersionPolicy(abc.ABC):
    """Decides the next action for one stream.

    Implementers guarantee: the answer depends only on the snapshot; an UNLOAD names a READY
    version that is not aspired; a LOAD names a NEW version that is aspired.

    Thread-safety: policies hold no state, so any thread may call them.
    """

    @abc.abstractmethod
    def next_action(self, versions: Sequence[VersionSnapshot]) -> ServableAction | None:
        """The next action for the stream `versions` describe, or None."""


def _highest_new_aspired(versions: Sequence[VersionSnapshot]) -> ServableId | None:
    candidates = [v.id for v in versions if v.is_aspired and v.state == LoaderState.NEW]
    return max(candidates, key=lambda i: i.version, default=None)


class AvailabilityPreservingPolicy(AspiredVersionPolicy):
    """Never leaves a stream without a ready version while it has aspired versions.

    Unloads the lowest un-aspired ready version, unless it is the only ready version while
    aspired versions exist and none of them is ready yet; otherwise loads the highest aspired
    new version. A new version therefore loads before the old one goes: no moment without a
    servable, twice the memory for a while. The TFS server's only policy, and servo's default.
    """

    def next_action(self, versions: Sequence[VersionSnapshot]) -> ServableAction | None:
        unaspired_ready = sorted(
            (v.id for v in versions if not v.is_aspired and v.state == LoaderState.READY),
            key=lambda i: i.version,
        )
        aspired_ready = any(v.is_aspired and v.state == LoaderState.READY for v in versions)
        any_aspired = any(v.is_aspired for v in versions)
        if unaspired_ready and (aspired_ready or len(unaspired_ready) > 1 or not any_aspired):
            return ServableAction(Action.UNLOAD, unaspired_ready[0])
        to_load = _highest_new_aspired(versions)
        return ServableAction(Action.LOAD, to_load) if to_load else None


class ResourcePreservingPolicy(AspiredVersionPolicy):
    """Never holds two generations at once: unloads un-aspired versions first and loads only
    once they are gone, newest first. Less memory, a short gap without a servable."""

    def next_action(self, versions: Sequence[VersionSnapshot]) -> ServableAction | None:
        for v in versions:
            if not v.is_aspired and v.state == LoaderState.READY:
                return ServableAction(Action.UNLOAD, v.id)
        if any(
            not v.is_aspired and v.state not in FINAL_STATES and v.state != LoaderState.NEW
            for v in versions
        ):
            return None  # an un-aspired version is still on its way out
        to_load = _highest_new_aspired(versions)
        return ServableAction(Action.LOAD, to_load) if to_load else None
