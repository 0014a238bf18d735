"""ServableHandle: a counted reference to one loaded servable version, held for one request."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from servo.core.servable_id import ServableId

if TYPE_CHECKING:
    from servo.core.loader_harness import LoaderHarness


class ServableHandle:
    """While a handle is held, its version stays loaded: the manager unloads a version only
    after every handle to it has been released. Use it as a context manager:

        with manager.get_servable_handle(ServableRequest.latest("m")) as handle:
            handle.servable.run(...)

    `share()` takes a second reference, for work that may outlive the request (a model call
    still running on a thread after the request's deadline answered):

        with manager.get_servable_handle(request) as handle:
            with handle.share() as own:  # moved to the thread that runs the call
                ...

    Thread-safety: a handle belongs to one request; `release` is idempotent; `share` is
    called by the holder, before it releases its handle; the new handle may then be moved to
    and released on another thread.
    """

    __slots__ = ("_harness", "id", "servable")

    def __init__(self, harness: LoaderHarness) -> None:
        self._harness: LoaderHarness | None = harness
        self.id: ServableId = harness.id
        self.servable: Any = harness.servable

    def share(self) -> ServableHandle:
        """Another handle to the same version, counted like any handle: the version stays
        loaded until both are released. Works while the version is quiescing (this handle
        keeps it from unloading); raises `RuntimeError` on a released handle."""
        harness = self._harness
        if harness is None:
            raise RuntimeError(f"cannot share a released handle to {self.id}")
        harness.add_reference()
        return ServableHandle(harness)

    def release(self) -> None:
        harness, self._harness = self._harness, None
        if harness is not None:
            self.servable = None
            harness.release()

    def __enter__(self) -> ServableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._harness is not None:
            warnings.warn(
                f"a handle to {self.id} was never released; releasing it now",
                ResourceWarning,
                stacklevel=1,
            )
            self.release()
