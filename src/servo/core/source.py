"""Sources, targets and the aspired-versions callback that connects them."""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from servo.core.servable_id import ServableId
from servo.core.status import OK, Status

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServableData(Generic[T]):
    """One item of an aspired-versions list: a version and either its data or an error."""

    id: ServableId
    data: T | None = None
    status: Status = OK

    @classmethod
    def error(cls, id: ServableId, status: Status) -> ServableData[T]:
        if status.ok:
            raise ValueError("an error item needs a status that is not OK")
        return cls(id, None, status)

    @property
    def ok(self) -> bool:
        return self.status.ok


AspiredVersionsCallback = Callable[[str, Sequence[ServableData[T]]], None]
"""`callback(name, versions)`: the complete list of versions of `name` that should be loaded.

Each call replaces the previous one for that name: a version left out should be unloaded, an
empty list unloads the whole stream. Every item's `id.name` equals `name`.
"""


class Source(abc.ABC, Generic[T]):
    """Finds servables and tells a target, per stream, which versions should be loaded.

    A source emits through one aspired-versions callback, set once with
    `set_aspired_versions_callback`; it emits nothing before that. It may emit an error item for
    a version it cannot provide; that version becomes a failed version.

    Thread-safety: `set_aspired_versions_callback` may be called from any thread; the source
    may call the callback from any thread, but not concurrently for the same name.
    """

    @abc.abstractmethod
    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[T]) -> None:
        """Sets the callback; a second call raises `RuntimeError`."""


class Target(abc.ABC, Generic[T]):
    """Receives aspired-versions lists from a source.

    Thread-safety: the callback it returns may be called from any thread.
    """

    @abc.abstractmethod
    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[T]:
        """The callback a source should call."""


def connect_source_to_target(source: Source[T], target: Target[T]) -> None:
    """Makes `source` emit its aspired versions to `target`."""
    source.set_aspired_versions_callback(target.get_aspired_versions_callback())


class CallbackHolder(Generic[T]):
    """The set-once callback slot every source needs.

    `call()` blocks until a callback is set, so that a source started before it is connected
    loses nothing (as TFS's sources and adapters do).
    """

    def __init__(self) -> None:
        self._callback: AspiredVersionsCallback[T] | None = None
        self._set = threading.Event()
        self._lock = threading.Lock()

    def set(self, callback: AspiredVersionsCallback[T]) -> None:
        with self._lock:
            if self._callback is not None:
                raise RuntimeError("the aspired-versions callback can be set only once")
            self._callback = callback
            self._set.set()

    @property
    def is_set(self) -> bool:
        return self._set.is_set()

    def call(self, name: str, versions: Sequence[ServableData[T]]) -> None:
        self._set.wait()
        assert self._callback is not None
        self._callback(name, versions)
