"""Base64 as TFS reads `{"b64": ...}` values (Abseil's `Base64Unescape`), and as it writes them.

Abseil is more lenient than RFC 4648 in some ways and stricter in others, and a client that
works against TFS must work against servo:

- the standard alphabet only (`+` and `/`; the URL-safe `-` and `_` are refused);
- ASCII whitespace anywhere is skipped;
- padding may be left out; if present it must be complete, and `.` counts as a pad too;
- a lone last character (4n+1 data characters) is refused; unused low bits are ignored.
"""

from __future__ import annotations

import base64
import binascii

_WHITESPACE = {ord(c): None for c in " \t\n\v\f\r"}  # absl::ascii_isspace
_PADS = "=."
# How many pad characters complete a last group of 0, 2 or 3 data characters.
_PADDING = {0: 0, 2: 2, 3: 1}


def decode(text: str) -> bytes | None:
    """The bytes `text` encodes, or None when TFS would refuse it."""
    data = text.translate(_WHITESPACE)
    cut = min((i for i in (data.find("="), data.find(".")) if i >= 0), default=len(data))
    head, pads = data[:cut], data[cut:]
    if pads.strip(_PADS):
        return None  # something other than padding after the first pad
    expected = _PADDING.get(len(head) % 4)
    if expected is None or (pads and len(pads) != expected):
        return None
    try:
        return base64.b64decode(head + "=" * expected, validate=True)
    except (binascii.Error, ValueError):  # a character outside the alphabet
        return None


def encode(data: bytes) -> str:
    """Standard base64 with padding, as TFS writes `{"b64": ...}` answers."""
    return base64.b64encode(data).decode("ascii")
