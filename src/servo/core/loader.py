"""Loader: the object that loads, serves and unloads one servable version."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ResourceAllocation:
    """Resources a servable uses. Only main memory is tracked: `ram_bytes`."""

    ram_bytes: int = 0

    def __post_init__(self) -> None:
        if self.ram_bytes < 0:
            raise ValueError(f"a resource quantity cannot be negative: {self.ram_bytes}")

    def __add__(self, other: ResourceAllocation) -> ResourceAllocation:
        return ResourceAllocation(self.ram_bytes + other.ram_bytes)

    def __sub__(self, other: ResourceAllocation) -> ResourceAllocation:
        return ResourceAllocation(max(0, self.ram_bytes - other.ram_bytes))


class Loader(abc.ABC):
    """Loads one servable version, hands out the servable while loaded, and unloads it.

    Lifecycle: `estimate_resources()` may be called at any time; then `load()` (possibly several
    times, when earlier attempts failed and the manager retries); after a successful load,
    `servable` is usable until `unload()`.

    Callers (the manager) guarantee: `load` and `unload` never run at the same time; `unload`
    is called only after a successful `load`; nothing is called after `unload`; `servable` is
    read only between a successful `load` and `unload`.

    Implementers guarantee: `estimate_resources()` is an upper bound that never grows, and is
    valid before `load()`; a `load()` that raises leaves nothing behind, so that it can be
    retried; `load()` raises `ServoError` with a meaningful code where it can (any other
    exception counts as UNKNOWN).

    Thread-safety: `estimate_resources()` and `servable` may be called from any thread; `load`
    and `unload` are called from one thread at a time.
    """

    @abc.abstractmethod
    def estimate_resources(self) -> ResourceAllocation:
        """An upper bound on the resources the loaded servable will use."""

    @abc.abstractmethod
    def load(self) -> None:
        """Makes the servable available; raises on failure."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Frees what `load()` acquired. Must not raise."""

    @property
    @abc.abstractmethod
    def servable(self) -> Any:
        """The loaded servable: the object that requests compute with."""
