"""How TFS's JSON library (rapidjson) shows values, so that servo's error messages read the same.

TFS quotes the offending JSON value in most of its REST error messages, written by rapidjson's
pretty writer with arrays on one line and cut once 256 bytes are out; clients and tests match
on those messages, so servo writes values the same way:

    {"a": [1, 2.5, "x"]}  ->  '{\\n    "a": [1, 2.5, "x"]\\n}'

Also here: rapidjson's JSON type names ("Number", "True", ...), its way of writing a double
(`1e-7`, `100.0`, `1e21`), and its parse error messages, which servo's parser errors borrow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from itertools import repeat
from typing import Any

DEBUG_LIMIT = 256  # TFS's kMaxJsonDebugStringBytes
_INDENT = 4  # rapidjson's default indent: four spaces per level

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def json_type(value: Any) -> str:
    """rapidjson's name for a value's JSON type, as TFS's messages print it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def format_double(value: float) -> str:
    """A finite double as rapidjson writes it: the shortest digits that read back the same
    (Python's repr finds them), laid out by rapidjson's rules: plain notation while the
    decimal exponent is in (-6, 21], with `.0` on whole numbers; else `1.5e-7` style."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    exponent = (int(exp_text) if exp_text else 0) - len(fraction)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    # value = digits * 10**exponent; `point` is where the decimal point falls in `digits`.
    length = len(digits)
    point = length + exponent
    if exponent >= 0 and point <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    elif length == 1:
        text = f"{digits}e{point - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{point - 1}"
    return sign + text


# rapidjson escapes '"', '\\' and control characters (short forms where JSON has them, else
# \u00XX with upper-case hex); everything else, '/' and non-ASCII included, is written as is.
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def _quote(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _scalar(value: Any) -> str | None:
    """A scalar's text; None for a non-finite double, which rapidjson's writer refuses."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return str(value)
        try:
            value = float(value)  # rapidjson holds integers beyond 64 bits as doubles
        except OverflowError:  # beyond a double too: rapidjson's parser refuses it
            return None
    if isinstance(value, float):
        return format_double(value) if math.isfinite(value) else None
    return _quote(str(value))  # not a JSON value (a caller's own object): show its text


def _size(token: str) -> int:
    """Bytes in the UTF-8 text (a lone surrogate, from a document no parser made, counts 3)."""
    return len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))


def debug_string(value: Any, limit: int = DEBUG_LIMIT) -> str:
    """`value` as TFS's error messages show it (`JsonValueToDebugString`).

    rapidjson's pretty writer with single-line arrays, fed token by token; once `limit` bytes
    are out, the next token is not written (so the text may end mid-document, and may run
    past `limit` by the token that crossed it). A NaN or infinity stops the writer after the
    separator before it, as rapidjson's writer refuses them."""
    out: list[str] = []
    size = 0
    # One entry per open container: [is_array, tokens written in it]. Objects count keys and
    # values alike, so an even count means a key comes next.
    levels: list[list[Any]] = []
    members: list[Iterator[tuple[Any, Any]]] = [iter([(None, value)])]

    def prefix() -> str:
        if not levels:
            return ""
        level = levels[-1]
        count = level[1]
        level[1] += 1
        if level[0]:
            return ", " if count else ""
        if count % 2:
            return ": "
        return ("," if count else "") + "\n" + " " * (_INDENT * len(levels))

    while members:
        if size >= limit:
            break
        try:
            key, item = next(members[-1])
        except StopIteration:
            members.pop()
            if not levels:
                break
            is_array, count = levels.pop()
            if is_array:
                token = "]"
            else:
                token = ("\n" + " " * (_INDENT * len(levels)) if count else "") + "}"
            out.append(token)
            size += _size(token)
            continue
        if key is not None:
            token = prefix() + _quote(key if isinstance(key, str) else str(key))
            out.append(token)
            size += _size(token)
            if size >= limit:
                break
        if isinstance(item, list):
            token = prefix() + "["
            levels.append([True, 0])
            members.append(zip(repeat(None), item))
        elif isinstance(item, dict):
            token = prefix() + "{"
            levels.append([False, 0])
            members.append(iter(item.items()))
        else:
            lead = prefix()
            text = _scalar(item)
            if text is None:
                out.append(lead)
                break
            token = lead + text
        out.append(token)
        size += _size(token)
    return "".join(out)


# -- parse errors ----------------------------------------------------------------------------

# Python's json messages and the rapidjson messages (`GetParseError_En`) for the same fault.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
EMPTY_DOCUMENT = "The document is empty."
NUMBER_TOO_BIG = "Number too big to be stored in double."
INVALID_ENCODING = "Invalid encoding in string."
BAD_SURROGATE = "The surrogate pair in string is invalid."
TOO_DEEP = "Nesting too deep."  # rapidjson has no limit; Python's parser has one

_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def parse_error(python_message: str, text: str, position: int) -> str:
    """rapidjson's message for the fault Python's parser reported at `position` in `text`."""
    if python_message == "Expecting ',' delimiter":
        # Python's parser takes `1.` and `1e` for the number 1 followed by junk.
        after_digit = 0 < position < len(text) and text[position - 1].isdigit()
        if after_digit and text[position] == ".":
            return "Miss fraction part in number."
        if after_digit and text[position] in "eE":
            return "Miss exponent in number."
        return (
            "Missing a comma or ']' after an array element."
            if _innermost_container(text, position) == "["
            else "Missing a comma or '}' after an object member."
        )
    if python_message.startswith("Invalid \\escape"):
        return "Invalid escape character in string."
    return _PARSE_ERRORS.get(python_message, python_message + ".")


def _innermost_container(text: str, position: int) -> str:
    """'[' or '{': the bracket left open at `position` (strings skipped)."""
    opened: list[str] = []
    for match in _STRING_OR_BRACKET.finditer(text, 0, position):
        token = match.group()
        if token in "[{":
            opened.append(token)
        elif token in "]}" and opened:
            opened.pop()
    return opened[-1] if opened else "{"
