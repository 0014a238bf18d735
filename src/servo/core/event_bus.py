"""EventBus: synchronous publish-subscribe, used to publish servable state changes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E")

log = logging.getLogger(__name__)


class Subscription:
    """Returned by `EventBus.subscribe`; `cancel()` (or leaving its `with` block) unsubscribes."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel: Callable[[], None] | None = cancel

    def cancel(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class EventBus(Generic[E]):
    """Delivers each published event to every subscriber, in the publisher's thread, in
    subscription order, before `publish` returns.

    A subscriber that raises is logged and does not stop delivery to the others. Subscribers
    must be quick and must not publish on the same bus from inside their callback.

    Thread-safety: every method may be called from any thread; events published from one
    thread reach each subscriber in the order they were published.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Callable[[E], None], ...] = ()

    def subscribe(self, callback: Callable[[E], None]) -> Subscription:
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def cancel() -> None:
            with self._lock:
                subscribers = list(self._subscribers)
                subscribers.remove(callback)
                self._subscribers = tuple(subscribers)

        return Subscription(cancel)

    def publish(self, event: E) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("An event-bus subscriber failed on %s", event)
