"""Fake loaders and servables for the lifecycle tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from servo.core.loader import Loader, ResourceAllocation
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError


@dataclass
class Journal:
    """What every fake loader did, and every contract breach it saw."""

    events: list[tuple[str, ServableId]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    held: dict[ServableId, int] = field(default_factory=dict)  # handles the test holds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, id: ServableId) -> None:
        with self.lock:
            self.events.append((what, id))

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def count(self, what: str, id: ServableId) -> int:
        with self.lock:
            return sum(1 for w, i in self.events if w == what and i == id)


@dataclass(frozen=True)
class FakeServable:
    id: ServableId


class FakeLoader(Loader):
    """A loader whose load can fail, wait on a gate, or need a given amount of RAM; it checks
    the loader contract (no overlap of load and unload, unload only after a successful load,
    nothing after unload, no unload while the test holds a handle)."""

    def __init__(
        self,
        id: ServableId,
        journal: Journal,
        *,
        fail: bool = False,
        fail_times: int = 0,
        ram: int = 0,
        gate: threading.Event | None = None,
    ) -> None:
        self.id = id
        self.journal = journal
        self.fail = fail
        self.fail_times = fail_times
        self.ram = ram
        self.gate = gate
        self.load_calls = 0
        self._busy = threading.Lock()
        self._loaded = False
        self._unloaded = False
        self._servable: FakeServable | None = None

    def estimate_resources(self) -> ResourceAllocation:
        return ResourceAllocation(self.ram)

    def load(self) -> None:
        if not self._busy.acquire(blocking=False):
            self.journal.violation(f"load of {self.id} overlaps another call")
            return
        try:
            if self._unloaded:
                self.journal.violation(f"load of {self.id} after unload")
            self.load_calls += 1
            self.journal.record("load", self.id)
            if self.gate is not None:
                self.gate.wait()
            if self.fail or self.load_calls <= self.fail_times:
                raise ServoError(Code.INTERNAL, f"fake load failure of {self.id}")
            self._loaded = True
            self._servable = FakeServable(self.id)
        finally:
            self._busy.release()

    def unload(self) -> None:
        if not self._busy.acquire(blocking=False):
            self.journal.violation(f"unload of {self.id} overlaps another call")
            return
        try:
            if not self._loaded:
                self.journal.violation(f"unload of {self.id} without a successful load")
            if self._unloaded:
                self.journal.violation(f"second unload of {self.id}")
            with self.journal.lock:
                held = self.journal.held.get(self.id, 0)
            if held:
                self.journal.violation(f"unload of {self.id} while {held} handles are held")
            self.journal.record("unload", self.id)
            self._unloaded = True
            self._servable = None
        finally:
            self._busy.release()

    @property
    def servable(self) -> Any:
        return self._servable
