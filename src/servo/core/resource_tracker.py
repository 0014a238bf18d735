"""ResourceTracker: reserves each load's estimated resources against a total budget."""

from __future__ import annotations

import threading

from servo.core.loader import ResourceAllocation
from servo.core.servable_id import ServableId


class ResourceTracker:
    """Keeps what each loading or loaded version reserved; refuses a reservation that would go
    over the total. `total=None` means unlimited (the default).

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, total: ResourceAllocation | None = None) -> None:
        self._total = total
        self._lock = threading.Lock()
        self._reserved: dict[ServableId, ResourceAllocation] = {}

    @property
    def total(self) -> ResourceAllocation | None:
        return self._total

    @property
    def used(self) -> ResourceAllocation:
        with self._lock:
            return self._used_locked()

    def _used_locked(self) -> ResourceAllocation:
        used = ResourceAllocation()
        for allocation in self._reserved.values():
            used = used + allocation
        return used

    def reserve(self, id: ServableId, estimate: ResourceAllocation) -> bool:
        """Reserves `estimate` for `id` if it fits; returns whether it did."""
        with self._lock:
            if id in self._reserved:
                raise ValueError(f"resources for {id} are already reserved")
            total = self._total
            if (
                total is not None
                and self._used_locked().ram_bytes + estimate.ram_bytes > total.ram_bytes
            ):
                return False
            self._reserved[id] = estimate
            return True

    def release(self, id: ServableId) -> None:
        with self._lock:
            self._reserved.pop(id, None)

    def describe(self) -> str:
        with self._lock:
            used = self._used_locked().ram_bytes
        total = "unlimited" if self._total is None else f"{self._total.ram_bytes} bytes"
        return f"ram in use {used} bytes of {total}"
