"""Source adapters: both a target and a source, turning items of one kind into another."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import Generic, TypeVar

from servo.core.servable_id import ServableId
from servo.core.source import (
    AspiredVersionsCallback,
    CallbackHolder,
    ServableData,
    Source,
    Target,
)
from servo.core.status import Status

In = TypeVar("In")
Out = TypeVar("Out")

log = logging.getLogger(__name__)


class SourceAdapter(Source[Out], Target[In], Generic[In, Out]):
    """Converts each aspired-versions list it receives and passes it on.

    Implementers write `adapt(name, versions)`; the list it returns must hold one item per item
    received, with the same ids (errors stay errors). Calls received before the outgoing
    callback is set wait for it.

    Thread-safety: as for `Source` and `Target`.
    """

    def __init__(self) -> None:
        self._outgoing: CallbackHolder[Out] = CallbackHolder()

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[Out]) -> None:
        self._outgoing.set(callback)

    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[In]:
        return self._receive

    def _receive(self, name: str, versions: Sequence[ServableData[In]]) -> None:
        self._outgoing.call(name, self.adapt(name, versions))

    @abc.abstractmethod
    def adapt(self, name: str, versions: Sequence[ServableData[In]]) -> list[ServableData[Out]]:
        """Converts one aspired-versions list."""


class UnarySourceAdapter(SourceAdapter[In, Out]):
    """A source adapter that converts item by item; a conversion that raises becomes an error
    item for that version, and error items pass through unchanged."""

    def adapt(self, name: str, versions: Sequence[ServableData[In]]) -> list[ServableData[Out]]:
        adapted: list[ServableData[Out]] = []
        for item in versions:
            if not item.ok:
                adapted.append(ServableData.error(item.id, item.status))
                continue
            try:
                adapted.append(ServableData(item.id, self.convert(item.id, item.data)))  # type: ignore[arg-type]
            except Exception as exc:
                status = Status.from_exception(exc)
                log.error("Cannot create a loader for %s: %s", item.id, status)
                adapted.append(ServableData.error(item.id, status))
        return adapted

    @abc.abstractmethod
    def convert(self, id: ServableId, data: In) -> Out:
        """Converts one item; raises to turn the version into an error."""
