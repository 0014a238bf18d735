"""ServableRequest: which version of a stream a client asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RequestKind = Literal["specific", "latest", "earliest"]


@dataclass(frozen=True, slots=True)
class ServableRequest:
    """`Specific(name, version)`, `Latest(name)` or `Earliest(name)`; build with the class
    methods. Its string form is TFS's, which appears in NOT_FOUND messages."""

    name: str
    kind: RequestKind
    version: int | None = None

    @classmethod
    def specific(cls, name: str, version: int) -> ServableRequest:
        return cls(name, "specific", version)

    @classmethod
    def latest(cls, name: str) -> ServableRequest:
        return cls(name, "latest")

    @classmethod
    def earliest(cls, name: str) -> ServableRequest:
        return cls(name, "earliest")

    def __str__(self) -> str:
        if self.kind == "specific":
            return f"Specific({self.name}, {self.version})"
        return f"{self.kind.capitalize()}({self.name})"
