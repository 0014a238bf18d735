"""Decoded size limits: how many bytes a request's tensors may take once decoded, per tensor and
per request, checked from declared shapes and dtypes before anything is allocated.

A small message can stand for a huge tensor. TFS's fill rule lets one `float_val` fill a shape
of 2^28 elements (a 36-byte request for a 1 GiB array), a string value fills its shape as
often, and an ExampleListWithContext repeats its context in every example. So every decoder
(TensorProto, TFS's JSON, tf.Examples) asks its request's `DecodeBudget` before it builds a
tensor, and the budget refuses what would go over either limit:

    limits = DecodeLimits(max_tensor_bytes=..., max_request_bytes=...)   # from the flags
    budget = limits.budget()                                              # one per request
    budget.take(count * itemsize, lambda: "Tensor of shape [...] and type DT_FLOAT")

A tensor's decoded size is what the model is handed:

* numbers: elements x element size (DT_FLOAT 4 bytes, DT_INT64 8, ...), whatever the form they
  came in (`tensor_content`, typed fields, JSON);
* strings: 41 bytes per element (the array's 8-byte reference and the 33 bytes every Python
  bytes object takes beside its contents) plus every element's bytes, a value that fills
  several elements counted once for each (a runtime copies them apart);
* the examples of classify, regress and multi-inference: the serialized examples the model is
  given (each with its context's bytes, when there is one), plus 41 bytes per example.

A refusal is INVALID_ARGUMENT; its message names the size asked for, the limit and the flag
that sets it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from servo.core.status import Code, ServoError

PER_TENSOR_FLAG = "--max_decoded_bytes_per_tensor"
PER_REQUEST_FLAG = "--max_decoded_bytes_per_request"
# A request costs several times its decoded size in the copies made after decoding (the
# runtime's input, intermediates, outputs, the answer): the README argues these defaults.
DEFAULT_MAX_TENSOR_BYTES = 128 * 2**20
DEFAULT_MAX_REQUEST_BYTES = 256 * 2**20
REFERENCE_BYTES = 8
"""What an element of an object array costs in the array: its reference."""
STRING_ELEMENT_BYTES = REFERENCE_BYTES + sys.getsizeof(b"")
"""What a string element (or an example) costs beside its contents: the array's reference to it
and the header of the bytes object (an empty one takes 33 bytes in CPython 3.11)."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """The server's limits (--max_decoded_bytes_per_tensor, --max_decoded_bytes_per_request)."""

    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def budget(self) -> DecodeBudget:
        """A budget for one request."""
        return DecodeBudget(self)


DEFAULT_LIMITS = DecodeLimits()


class DecodeBudget:
    """What one request's decoding has taken so far, against its limits.

    Thread-safety: one request's, used by the thread that decodes it.
    """

    __slots__ = ("limits", "used")

    def __init__(self, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.used = 0  # bytes taken by the request's tensors so far

    def take(self, nbytes: int, what: Callable[[], str], taken: int = 0) -> None:
        """Takes `nbytes` more for one tensor, of which `taken` bytes were taken before (a
        tensor charged in parts, as strings whose bytes are known once encoded); raises
        INVALID_ARGUMENT when the tensor or the request would go over its limit. `what()`
        describes the tensor, and is called only to word the refusal."""
        used = self.used + nbytes
        limits = self.limits
        if taken + nbytes > limits.max_tensor_bytes or used > limits.max_request_bytes:
            raise self._refusal(nbytes, what(), taken)
        self.used = used

    def _refusal(self, nbytes: int, what: str, taken: int) -> ServoError:
        limits, tensor = self.limits, taken + nbytes
        if tensor > limits.max_tensor_bytes:
            return ServoError(
                Code.INVALID_ARGUMENT,
                f"{what} would take {tensor} bytes decoded, over the limit of "
                f"{limits.max_tensor_bytes} bytes per tensor ({PER_TENSOR_FLAG})",
            )
        return ServoError(
            Code.INVALID_ARGUMENT,
            f"{what} would take the request's decoded tensors to {self.used + nbytes} bytes, "
            f"over the limit of {limits.max_request_bytes} bytes per request "
            f"({PER_REQUEST_FLAG})",
        )


def check_examples(context: int, examples: Sequence[bytes], limits: DecodeLimits) -> None:
    """Refuses serialized examples whose tensor, each example after a context of `context`
    bytes, would go over `limits` (the request's only tensor)."""
    size = len(examples) * (context + STRING_ELEMENT_BYTES) + sum(map(len, examples))
    limits.budget().take(size, lambda: f"The request's {len(examples)} examples")
