"""How servo shows JSON values in messages (as TFS's rapidjson writes them), and base64 as TFS
(Abseil) reads it."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from servo.apis.rest import _base64
from servo.apis.rest._rapidjson import debug_string, format_double, json_type


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (100.0, "100.0"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e16, "10000000000000000.0"),
        (1.2345678901234568e20, "123456789012345680000.0"),
        (1e21, "1e21"),
        (1.5e300, "1.5e300"),
        (5e-324, "5e-324"),
        (2.0**64, "18446744073709552000.0"),
        (123456.7, "123456.7"),
    ],
)
def test_doubles_as_rapidjson_writes_them(value: float, text: str) -> None:
    assert format_double(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_doubles_read_back_exactly(value: float) -> None:
    text = format_double(value)
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    assert "." in text or "e" in text  # never a bare integer: the value stays a double


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([1, 2.5, "a", True, None], '[1, 2.5, "a", true, null]'),
        ({"a": 1}, '{\n    "a": 1\n}'),
        (
            {"a": {"b": [1, {"c": 2}]}},
            '{\n    "a": {\n        "b": [1, {\n                "c": 2\n            }]\n    }\n}',
        ),
        ([{}, [], {"k": []}], '[{}, [], {\n        "k": []\n    }]'),
        ('tab\t"q" \\ \x01 \x1f é /', '"tab\\t\\"q\\" \\\\ \\u0001 \\u001F é /"'),
        (2**64, "18446744073709552000.0"),  # beyond 64 bits: a double
        (-(2**63), "-9223372036854775808"),
        # rapidjson's writer refuses NaN and infinities: the text stops before them.
        ([1, math.nan, 2], "[1, "),
        ({"a": math.inf}, '{\n    "a": '),
        (math.nan, ""),
    ],
)
def test_values_as_tfs_messages_show_them(value: Any, text: str) -> None:
    assert debug_string(value) == text


def test_long_values_are_cut_after_the_token_that_crosses_256_bytes() -> None:
    assert debug_string(["x" * 300, "y"]) == '["' + "x" * 300 + '"'
    cut = debug_string(list(range(1000)))
    assert len(cut) >= 256 and len(cut) - len(", 999") < 256
    assert json.loads(cut + "]") == list(range(len(json.loads(cut + "]"))))
    assert debug_string("é" * 200).count("é") == 200  # bytes, not characters, are counted
    assert debug_string(["é" * 200, "z"]) == '["' + "é" * 200 + '"'


FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | FINITE | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


@given(JSON)
def test_short_values_are_json_that_reads_back(value: Any) -> None:
    text = debug_string(value, limit=10**6)
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "Null"),
        (True, "True"),
        (False, "False"),
        ({}, "Object"),
        ([], "Array"),
        ("", "String"),
        (0, "Number"),
        (1.5, "Number"),
        (2**70, "Number"),
    ],
)
def test_json_type_names(value: Any, name: str) -> None:
    assert json_type(value) == name


# -- base64 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),
        ("aGVsbG8.", b"hello"),
        ("aGk=", b"hi"),
        ("aGk", b"hi"),
        ("aA==", b"h"),
        ("aA", b"h"),
        ("aA..", b"h"),
        ("aA=.", b"h"),
        (" a G\tk\n= ", b"hi"),
        ("", b""),
        ("   ", b""),
        ("+/8=", b"\xfb\xff"),
        ("aGl=", b"hi"),  # unused low bits are ignored
        # Refused: URL-safe letters, a lone character, wrong padding, anything after it.
        ("-_8=", None),
        ("a", None),
        ("aGVsbG8==", None),
        ("aA=", None),
        ("aGVs=", None),
        ("aGk=a", None),
        ("=", None),
        ("aGk=\x00", None),
        ("aGé=", None),
        ("!", None),
    ],
)
def test_base64_as_abseil_reads_it(text: str, expected: bytes | None) -> None:
    assert _base64.decode(text) == expected


@given(st.binary(max_size=40))
def test_base64_round_trip_padded_or_not(data: bytes) -> None:
    text = _base64.encode(data)
    assert text == base64.b64encode(data).decode()
    assert _base64.decode(text) == data
    assert _base64.decode(text.rstrip("=")) == data
    assert _base64.decode("\n".join(text[i : i + 4] for i in range(0, len(text), 4))) == data
