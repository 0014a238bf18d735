"""LoaderHarness: one managed servable version, its loader, its state and its handle count.

Internal to the manager; version policies read its states.

    NEW -> LOADING -> READY -> QUIESCING -> UNLOADING -> DISABLED
      \\        \\
       +-------+--> ERROR

QUIESCING: no new handles are given out; the version waits until every held handle has been
released. DISABLED and ERROR are final.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from servo.core.loader import Loader, ResourceAllocation
from servo.core.servable_id import ServableId
from servo.core.status import OK, Status


class LoaderState(enum.Enum):
    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    QUIESCING = "quiescing"
    UNLOADING = "unloading"
    DISABLED = "disabled"
    ERROR = "error"


FINAL_STATES = frozenset({LoaderState.DISABLED, LoaderState.ERROR})
IN_TRANSITION = frozenset({LoaderState.LOADING, LoaderState.QUIESCING, LoaderState.UNLOADING})


class LoaderHarness:
    """Holds one version's loader. The manager changes `state` under its own lock; handles
    change `refs` under the harness's lock.

    Thread-safety: `acquire` / `release` may be called from any thread; everything else is
    called by the manager.
    """

    __slots__ = (
        "_lock",
        "_on_drained",
        "_refs",
        "_serving",
        "aspired",
        "cancel_retries",
        "id",
        "loader",
        "reserved",
        "servable",
        "state",
        "status",
    )

    def __init__(
        self,
        id: ServableId,
        loader: Loader | None,
        on_drained: Callable[[LoaderHarness], None],
    ) -> None:
        self.id = id
        self.loader = loader
        self.state = LoaderState.NEW
        self.status: Status = OK
        self.aspired = True
        self.reserved: ResourceAllocation | None = None
        self.servable: Any = None
        self.cancel_retries = threading.Event()
        self._lock = threading.Lock()
        self._refs = 0
        self._serving = False
        self._on_drained = on_drained

    # -- handles ---------------------------------------------------------------------------

    def start_serving(self, servable: Any) -> None:
        with self._lock:
            self.servable = servable
            self._serving = True

    def stop_serving(self) -> bool:
        """No new handles from now on; returns whether no handle is held."""
        with self._lock:
            self._serving = False
            return self._refs == 0

    @property
    def drained(self) -> bool:
        with self._lock:
            return not self._serving and self._refs == 0

    @property
    def refs(self) -> int:
        return self._refs

    def acquire(self) -> bool:
        with self._lock:
            if not self._serving:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            drained = self._refs == 0 and not self._serving
        if drained:
            self._on_drained(self)

    def __repr__(self) -> str:
        return (
            f"LoaderHarness({self.id}, {self.state.name}, aspired={self.aspired}, "
            f"refs={self._refs})"
        )
