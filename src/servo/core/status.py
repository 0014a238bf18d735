"""Error codes and statuses, with TensorFlow's canonical code numbers.

Every failure that reaches a client or a servable's health carries one of these codes, so that
the REST layer can map it to an HTTP status and the gRPC layer to a gRPC status unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.IntEnum):
    """`tensorflow.error.Code`: the numbers are wire facts shared with gRPC's status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class Status:
    """An error code and a message; `status.OK` when nothing is wrong."""

    code: Code = Code.OK
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.OK

    def __str__(self) -> str:
        return "OK" if self.ok else f"{self.code.name}: {self.message}"

    @classmethod
    def from_exception(cls, exc: BaseException) -> Status:
        """The status an exception stands for: its own for a `ServoError`, UNKNOWN otherwise."""
        if isinstance(exc, ServoError):
            return exc.status
        text = str(exc) or type(exc).__name__
        return cls(Code.UNKNOWN, f"{type(exc).__name__}: {text}" if str(exc) else text)


OK = Status()
"""The status of success."""


class ServoError(Exception):
    """An error with a TensorFlow error code; raised anywhere, answered with its code."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> Status:
        return Status(self.code, self.message)

    def __str__(self) -> str:
        return self.message
