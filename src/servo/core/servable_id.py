"""ServableId: the name of a servable stream and one version of it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ServableId:
    """`(name, version)`; a version is an int64 >= 0. Ordered by name, then version."""

    name: str
    version: int

    def __post_init__(self) -> None:
        if not 0 <= self.version < 2**63:
            raise ValueError(f"servable version must be an int64 >= 0, got {self.version}")

    def __str__(self) -> str:
        # TFS's ServableId::DebugString, which appears in its log lines and error messages.
        return f"{{name: {self.name} version: {self.version}}}"
