"""TFS's REST JSON, table by table: both predict forms, every dtype, b64, NaN/Infinity, the
answers, classify/regress examples with context, and TFS's error messages word for word.

Expected messages are TFS's (`tensorflow_serving/util/json_tensor.cc`), with values quoted
as rapidjson's pretty writer quotes them."""

from __future__ import annotations

import json
import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from servo.apis.rest import json_codec as jc
from servo.core.status import Code, ServoError
from servo.decoded_size import DecodeLimits
from servo.dtypes import DataType
from servo.platforms.servable import Classification, Signature, TensorSpec

D = DataType


def sig(name: str = "serving_default", **inputs: DataType) -> Signature:
    return Signature(
        name,
        {alias: TensorSpec(dtype, None, f"{alias}:0") for alias, dtype in inputs.items()},
        {"y": TensorSpec(D.DT_FLOAT, None, "y:0")},
    )


FLOAT_X = sig(x=D.DT_FLOAT)
TWO = sig(a=D.DT_FLOAT, b=D.DT_FLOAT)


def parse(body: str | bytes, signature: Signature = FLOAT_X) -> jc.PredictBody:
    raw = body.encode() if isinstance(body, str) else body
    return jc.parse_predict(jc.loads(raw), lambda name: signature)


def error_of(call: Any, *args: Any) -> ServoError:
    with pytest.raises(ServoError) as caught:
        call(*args)
    return caught.value


def values(array: np.ndarray) -> Any:
    return array.tolist()


# -- predict requests that parse -------------------------------------------------------------


def test_tfs_readme_example() -> None:
    body = parse('{"instances": [1.0, 2.0, 5.0]}')
    assert body.row_format
    assert body.signature_name == "serving_default"
    assert body.signature is FLOAT_X
    assert body.inputs["x"].dtype == np.float32
    assert values(body.inputs["x"]) == [1.0, 2.0, 5.0]


def test_signature_names_reach_get_signature() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Signature:
        asked.append(name)
        return FLOAT_X

    for text in (
        b'{"inputs": [1]}',
        b'{"signature_name": "", "inputs": [1]}',
        b'{"signature_name": "s", "inputs": [1]}',
    ):
        body = jc.parse_predict(jc.loads(text), lookup)
        assert body.signature_name == asked[-1]
    assert asked == ["serving_default", "serving_default", "s"]


def test_unknown_signature_errors_pass_through() -> None:
    def lookup(name: str) -> Signature:
        raise ServoError(
            Code.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def'
        )

    err = error_of(jc.parse_predict, jc.loads(b'{"signature_name": "x"}'), lookup)
    assert err.message == 'Serving signature name: "x" not found in signature def'


@pytest.mark.parametrize(
    ("body", "signature", "expected", "row"),
    [
        # The row form: instances stacked along a new dim 0.
        (
            '{"instances": [[1, 2], [3, 4], [5, 6]]}',
            sig(d=D.DT_INT32),
            {"d": [[1, 2], [3, 4], [5, 6]]},
            True,
        ),
        ('{"instances": [[[1, 2]], [[3, 4]]]}', FLOAT_X, {"x": [[[1, 2]], [[3, 4]]]}, True),
        ('{"instances": [[], []]}', FLOAT_X, {"x": [[], []]}, True),
        ('{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}', FLOAT_X, {"x": [[1, 2], [3, 4]]}, True),
        # TFS's MixedInputForFloatTensor: whole and decimal numbers mix freely.
        (
            '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
            FLOAT_X,
            {"x": np.float32([1, 2, 3, 4, 5.003, 0.007, 0]).tolist()},
            True,
        ),
        (
            '{"instances": [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}]}',
            TWO,
            {"a": [1, 2], "b": [[1, 2], [3, 4]]},
            True,
        ),
        (
            '{"instances": [{"i": [[1, 2], [3, 4]], "s": ["foo", "bar"], "b": {"b64": "aGk="}},'
            ' {"i": [[5, 6], [7, 8]], "s": ["baz", "bat"], "b": {"b64": "eW8="}}]}',
            sig(i=D.DT_INT32, s=D.DT_STRING, b=D.DT_STRING),
            {
                "i": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
                "s": [[b"foo", b"bar"], [b"baz", b"bat"]],
                "b": [b"hi", b"yo"],
            },
            True,
        ),
        # TFS's SingleUnnamedTensorBase64Lists and SingleNamedTensorBase64.
        (
            '{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}',
            sig(s=D.DT_STRING),
            {"s": [[b"hello"], [b"world"]]},
            True,
        ),
        (
            '{"instances": [{"s": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}',
            sig(s=D.DT_STRING),
            {"s": [[[b"hello"], [b"world"]]]},
            True,
        ),
        # The columnar form: one tensor, or an object of them (extra names ignored).
        ('{"inputs": [[1, 2], [3, 4]]}', FLOAT_X, {"x": [[1, 2], [3, 4]]}, False),
        ('{"inputs": {"x": [[[1, 2], [3, 4]]]}}', FLOAT_X, {"x": [[[1, 2], [3, 4]]]}, False),
        ('{"inputs": 1.5}', FLOAT_X, {"x": 1.5}, False),
        ('{"inputs": []}', FLOAT_X, {"x": []}, False),
        ('{"inputs": {"a": [1], "b": 2, "extra": "ignored"}}', TWO, {"a": [1], "b": 2}, False),
        ('{"inputs": {"b64": "aGVsbG8="}}', sig(s=D.DT_STRING), {"s": b"hello"}, False),
        (
            '{"inputs": {"i": [[[1, 2], [3, 4]]], "s": ["foo", "bar"], "b": {"b64": "aGVsbG8="}}}',
            sig(i=D.DT_INT32, s=D.DT_STRING, b=D.DT_STRING),
            {"i": [[[1, 2], [3, 4]]], "s": [b"foo", b"bar"], "b": b"hello"},
            False,
        ),
        # Strings: UTF-8 text, b64 anywhere, both mixed.
        (
            '{"inputs": ["caf\\u00e9", "\\ud83d\\ude00", ""]}',
            sig(s=D.DT_STRING),
            {"s": ["café".encode(), "😀".encode(), b""]},
            False,
        ),
        (
            '{"inputs": [["a", {"b64": "AAE="}], [{"b64": ""}, "d"]]}',
            sig(s=D.DT_STRING),
            {"s": [[b"a", b"\x00\x01"], [b"", b"d"]]},
            False,
        ),
        # A half input with no values parses (TFS fails only on a value it cannot read).
        ('{"inputs": [[], []]}', sig(h=D.DT_HALF), {"h": [[], []]}, False),
        # A reference dtype reads as the type it refers to.
        ('{"inputs": [1, 2]}', sig(r=D.DT_INT32_REF), {"r": [1, 2]}, False),
    ],
)
def test_predict_bodies(
    body: str, signature: Signature, expected: dict[str, Any], row: bool
) -> None:
    parsed = parse(body, signature)
    assert parsed.row_format is row
    assert {k: values(v) for k, v in parsed.inputs.items()} == expected


@pytest.mark.parametrize(
    ("dtype", "text", "expected"),
    [
        (
            D.DT_FLOAT,
            "[1, 2.5, -0.0, 3.4028234663852886e38]",
            [1.0, 2.5, -0.0, 3.4028234663852886e38],
        ),
        (D.DT_DOUBLE, "[1e300, 5e-324, 2]", [1e300, 5e-324, 2.0]),
        (D.DT_INT8, "[-128, 127]", [-128, 127]),
        (D.DT_INT16, "[-32768, 32767]", [-32768, 32767]),
        (D.DT_INT32, "[-2147483648, 2147483647, -0]", [-2147483648, 2147483647, 0]),
        (D.DT_INT64, "[-9223372036854775808, 9223372036854775807]", [-(2**63), 2**63 - 1]),
        (D.DT_UINT8, "[0, 255]", [0, 255]),
        (D.DT_UINT16, "[0, 65535]", [0, 65535]),
        (D.DT_UINT32, "[0, 4294967295]", [0, 2**32 - 1]),
        (D.DT_UINT64, "[0, 18446744073709551615]", [0, 2**64 - 1]),
        (D.DT_BOOL, "[true, false]", [True, False]),
        (D.DT_STRING, '["a", {"b64": "AAE="}]', [b"a", b"\x00\x01"]),
    ],
)
@pytest.mark.parametrize("form", ["inputs", "instances"])
def test_every_dtype(dtype: DataType, text: str, expected: list[Any], form: str) -> None:
    array = parse(f'{{"{form}": {text}}}', sig(x=dtype)).inputs["x"]
    assert values(array) == expected
    assert array.dtype == (object if dtype == D.DT_STRING else jc._READERS[dtype].numpy)


@pytest.mark.parametrize("dtype", [D.DT_FLOAT, D.DT_DOUBLE])
def test_nan_and_infinity_are_numbers(dtype: DataType) -> None:
    for form in ("inputs", "instances"):
        x = parse(f'{{"{form}": [NaN, Infinity, -Infinity, 1.5]}}', sig(x=dtype)).inputs["x"]
        assert math.isnan(x[0]) and x[1] == math.inf and x[2] == -math.inf and x[3] == 1.5
    # Several named inputs, as in TFS's MultipleNamedTensor test.
    body = parse(
        '{"instances": [{"a": [1.0, NaN], "b": [NaN]}, {"a": [2.0, Infinity], "b": [2]}]}', TWO
    )
    a, b = body.inputs["a"], body.inputs["b"]
    assert a[0, 0] == 1 and math.isnan(a[0, 1]) and a[1, 1] == math.inf
    assert math.isnan(b[0, 0]) and b[1, 0] == 2


def test_float_precision_and_range_as_tfs() -> None:
    # TFS's FloatTensorWithPrecisionLoss: a whole number rounds to float32 like a decimal one.
    whole = parse('{"instances": [1435774380]}').inputs["x"]
    decimal = parse('{"instances": [1435774380.0]}').inputs["x"]
    assert whole.tolist() == decimal.tolist() == [np.float32(1435774380)]
    # FloatTensorThatExceedsMaxReturnsInf / ExceedsMinReturnsZero.
    big = parse('{"instances": [1.7976931348623157e308, -1.7976931348623157e308]}')
    assert big.inputs["x"].tolist() == [math.inf, -math.inf]
    tiny = parse('{"instances": [2.2250738585072014e-308, -2.2250738585072014e-308]}')
    assert tiny.inputs["x"].tolist() == [0.0, -0.0]
    # An integer beyond 64 bits is a double, as rapidjson (and orjson) read it.
    huge = parse('{"inputs": [18446744073709551616]}', sig(x=D.DT_DOUBLE)).inputs["x"]
    assert huge.tolist() == [2.0**64]


@pytest.mark.parametrize(
    ("b64", "expected"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),  # padding may be left out
        ("aGVsbG8.", b"hello"),  # '.' pads too
        (" aGV\nsbG8 = ", b"hello"),  # whitespace is skipped
        ("", b""),
        ("+/+/", b"\xfb\xff\xbf"),
    ],
)
def test_b64_values_as_abseil_reads_them(b64: str, expected: bytes) -> None:
    body = parse(json.dumps({"inputs": {"b64": b64}}), sig(s=D.DT_STRING))
    assert body.inputs["s"].tolist() == expected


def test_row_objects_that_need_the_careful_path_still_parse() -> None:
    # Rows whose values are fine but not all of one kind (b64 among text) take the validating
    # path; the answer is the same.
    body = parse(
        '{"instances": [{"a": 1, "b": ["x", {"b64": "eQ=="}]}, {"a": 2, "b": ["z", "w"]}]}',
        sig(a=D.DT_UINT8, b=D.DT_STRING),
    )
    assert body.inputs["a"].tolist() == [1, 2] and body.inputs["a"].dtype == np.uint8
    assert body.inputs["b"].tolist() == [[b"x", b"y"], [b"z", b"w"]]


# -- predict requests that fail --------------------------------------------------------------

INT = sig(x=D.DT_INT32)
STR = sig(x=D.DT_STRING)
HALF = sig(x=D.DT_HALF)


def failed(index: int, error: str, key: str = "", code: str = "INVALID_ARGUMENT") -> str:
    """TFS's wrapping of an error in one instance of the row form."""
    where = f"{index} key: {key}" if key else f"{index}"
    return f"Failed to process element: {where} of 'instances' list. Error: {code}: {error}"


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        ("{}", FLOAT_X, "Missing 'inputs' or 'instances' key"),
        ('{"signature_name": "s"}', FLOAT_X, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": [1], "inputs": [1]}',
            FLOAT_X,
            'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly '
            "expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (
            '{"instances": 1}',
            FLOAT_X,
            "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array",
        ),
        (
            '{"instances": null}',
            FLOAT_X,
            "JSON Value: {\n    \"instances\": null\n} Expecting 'instances' to be an list/array",
        ),
        (
            '{"instances": []}',
            FLOAT_X,
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}',
            FLOAT_X,
            'JSON Value: {\n    "signature_name": 5,\n'
            '    "instances": [[1, 2], [3, 4], [5, 6, 7]]\n}'
            " not formatted correctly. 'signature_name' key must be a string value.",
        ),
        # Values of the wrong JSON type.
        (
            '{"instances": ["a"]}',
            FLOAT_X,
            failed(0, 'JSON Value: "a" Type: String is not of expected type: float'),
        ),
        (
            '{"instances": [1.0, true]}',
            FLOAT_X,
            failed(1, "JSON Value: true Type: True is not of expected type: float"),
        ),
        (
            '{"inputs": [1, 2, false]}',
            INT,
            "JSON Value: false Type: False is not of expected type: int32",
        ),
        (
            '{"inputs": [1, null]}',
            FLOAT_X,
            "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            '{"inputs": [1.5]}',
            sig(x=D.DT_INT64),
            "JSON Value: 1.5 Type: Number is not of expected type: int64",
        ),
        ('{"inputs": [1.0]}', INT, "JSON Value: 1.0 Type: Number is not of expected type: int32"),
        ('{"inputs": [1e2]}', INT, "JSON Value: 100.0 Type: Number is not of expected type: int32"),
        (
            '{"inputs": [1]}',
            sig(x=D.DT_BOOL),
            "JSON Value: 1 Type: Number is not of expected type: bool",
        ),
        ('{"inputs": [1]}', STR, "JSON Value: 1 Type: Number is not of expected type: string"),
        ('{"inputs": [[1, 2]]}', STR, "JSON Value: 1 Type: Number is not of expected type: string"),
        (
            '{"inputs": [{"a": [1, 2]}]}',
            FLOAT_X,
            'JSON Value: {\n    "a": [1, 2]\n} Type: Object is not of expected type: float',
        ),
        (
            '{"inputs": {"b64": "AA=="}}',
            FLOAT_X,
            'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float',
        ),
        ('{"inputs": [1e-7]}', INT, "JSON Value: 1e-7 Type: Number is not of expected type: int32"),
        (
            '{"inputs": [18446744073709551616]}',
            sig(x=D.DT_UINT64),
            "JSON Value: 18446744073709552000.0 Type: Number is not of expected type: uint64",
        ),
        # Integers out of range for the dtype.
        (
            '{"inputs": [2147483648]}',
            INT,
            "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [-2147483649]}',
            INT,
            "JSON Value: -2147483649 Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [128]}',
            sig(x=D.DT_INT8),
            "JSON Value: 128 Type: Number is not of expected type: int8",
        ),
        (
            '{"inputs": [-32769]}',
            sig(x=D.DT_INT16),
            "JSON Value: -32769 Type: Number is not of expected type: int16",
        ),
        (
            '{"inputs": [-1]}',
            sig(x=D.DT_UINT8),
            "JSON Value: -1 Type: Number is not of expected type: uint8",
        ),
        (
            '{"inputs": [65536]}',
            sig(x=D.DT_UINT16),
            "JSON Value: 65536 Type: Number is not of expected type: uint16",
        ),
        (
            '{"inputs": [4294967296]}',
            sig(x=D.DT_UINT32),
            "JSON Value: 4294967296 Type: Number is not of expected type: uint32",
        ),
        (
            '{"inputs": [9223372036854775808]}',
            sig(x=D.DT_INT64),
            "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64",
        ),
        (
            '{"inputs": [-1]}',
            sig(x=D.DT_UINT64),
            "JSON Value: -1 Type: Number is not of expected type: uint64",
        ),
        # Ragged and mis-nested lists.
        (
            '{"inputs": [[1], [1, 2]]}',
            FLOAT_X,
            "Encountered list at unexpected size: 2 at level: 1 expected size: 1",
        ),
        (
            '{"inputs": [[1, 2], []]}',
            FLOAT_X,
            "Encountered list at unexpected size: 0 at level: 1 expected size: 2",
        ),
        (
            '{"inputs": [[1], 2]}',
            FLOAT_X,
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"inputs": [[], 1]}',
            FLOAT_X,
            "JSON Value: 1 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        ('{"inputs": [1, [2]]}', FLOAT_X, "Encountered list at unexpected level: 1 expected < 1"),
        (
            '{"inputs": [[[1]], [[1, 2]]]}',
            FLOAT_X,
            "Encountered list at unexpected size: 2 at level: 2 expected size: 1",
        ),
        (
            '{"instances": [[1], [1, 2]]}',
            FLOAT_X,
            failed(1, "Expecting tensor size: 1 but got: 2"),
        ),
        (
            '{"instances": [[[1, 2]], [[1], [2]]]}',
            FLOAT_X,
            failed(1, "Expecting shape [1,2] but got: [2,1]"),
        ),
        (
            '{"instances": [1, [2]]}',
            FLOAT_X,
            failed(1, "Expecting shape [] but got: [1]"),
        ),
        (
            '{"instances": [[1, [2]]]}',
            FLOAT_X,
            failed(0, "Encountered list at unexpected level: 1 expected < 1"),
        ),
        # Named inputs.
        ('{"inputs": {"a": [1]}}', TWO, "Missing named input: b in 'inputs' object."),
        ('{"inputs": {"y": [1]}}', FLOAT_X, "Missing named input: x in 'inputs' object."),
        (
            '{"inputs": [1, 2]}',
            TWO,
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"instances": [1, 2]}',
            TWO,
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"instances": [{"a": 1}]}',
            TWO,
            "Failed to process element: 0 of 'instances' list. JSON object: "
            '{\n    "a": 1\n} keys must be equal to: a,b',
        ),
        (
            '{"instances": [{"a": 1, "b": 2, "c": 3}]}',
            TWO,
            failed(0, "JSON object: does not have named input: c", key="c"),
        ),
        (
            '{"instances": [{"a": 1, "b": 2}, [1]]}',
            TWO,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [{"a": 1, "b": 2}, {"b64": "AA=="}]}',
            TWO,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [1, {"x": 1}]}',
            FLOAT_X,
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            '{"instances": [{"a": 1, "b": [1]}, {"a": 2, "b": [1, 2]}]}',
            TWO,
            failed(1, "Expecting tensor size: 1 but got: 2", key="b"),
        ),
        (
            '{"instances": [{"a": "x", "b": 1}]}',
            TWO,
            failed(0, 'JSON Value: "x" Type: String is not of expected type: float', key="a"),
        ),
        # b64.
        ('{"inputs": [{"b64": "!!!!"}]}', STR, "Unable to base64 decode"),
        ('{"inputs": [{"b64": "aGk-"}]}', STR, "Unable to base64 decode"),  # URL-safe alphabet
        ('{"inputs": [{"b64": "aGk=="}]}', STR, "Unable to base64 decode"),  # too much padding
        ('{"inputs": [{"b64": "a"}]}', STR, "Unable to base64 decode"),  # a lone character
        (
            '{"inputs": [{"b64": "AA==", "x": 1}]}',
            STR,
            'JSON Value: {\n    "b64": "AA==",\n    "x": 1\n}'
            " not formatted correctly for base64 data",
        ),
        (
            '{"inputs": [{"b64": 1}]}',
            STR,
            'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data',
        ),
        (
            '{"instances": [{"b64": "!"}]}',
            STR,
            failed(0, "Unable to base64 decode"),
        ),
        # Dtypes JSON cannot spell: TFS wraps the columnar form's 501 in the row form's 400.
        (
            '{"instances": [1.0]}',
            HALF,
            failed(0, "Conversion of JSON Value: 1.0 to type: half", code="UNIMPLEMENTED"),
        ),
        (
            '{"inputs": [{"b64": "AA=="}]}',
            HALF,
            'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: half',
        ),
        # A signature without inputs.
        (
            '{"inputs": [1]}',
            Signature("s", {}, {}),
            "Failed to get input map for signature: DEFAULT",
        ),
        (
            '{"signature_name": "s", "inputs": [1]}',
            Signature("s", {}, {}),
            "Failed to get input map for signature: s",
        ),
    ],
)
def test_request_errors(body: str, signature: Signature, message: str) -> None:
    err = error_of(parse, body, signature)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == message


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        ('{"inputs": [1.0]}', HALF, "Conversion of JSON Value: 1.0 to type: half"),
        (
            '{"inputs": {"x": [[true]]}}',
            sig(x=D.DT_BFLOAT16),
            "Conversion of JSON Value: true to type: bfloat16",
        ),
        (
            '{"inputs": ["a"]}',
            sig(x=D.DT_COMPLEX64),
            'Conversion of JSON Value: "a" to type: complex64',
        ),
        (
            '{"inputs": [1]}',
            sig(x=D.DT_VARIANT),
            "Input 'x' of signature 'serving_default' has dtype DT_VARIANT, which servo cannot "
            "hold in a tensor",
        ),
        (
            '{"instances": [1]}',
            sig(x=D.DT_RESOURCE),
            "Input 'x' of signature 'serving_default' has dtype DT_RESOURCE, which servo cannot "
            "hold in a tensor",
        ),
    ],
)
def test_unimplemented_dtypes(body: str, signature: Signature, message: str) -> None:
    err = error_of(parse, body, signature)
    assert err.code == Code.UNIMPLEMENTED
    assert err.message == message


def test_a_signature_dtype_servo_does_not_know_is_unimplemented() -> None:
    odd = Signature("s", {"x": TensorSpec(999, None)}, {})  # type: ignore[arg-type]
    err = error_of(jc.parse_predict, {"inputs": [1]}, lambda name: odd)
    assert err.code == Code.UNIMPLEMENTED
    assert (
        err.message
        == "Input 'x' of signature 'serving_default' has dtype 999, which servo cannot hold in "
        "a tensor"
    )


def test_too_many_dimensions() -> None:
    deep = "[" * 65 + "1" + "]" * 65
    err = error_of(parse, f'{{"inputs": {deep}}}')
    assert err.message == "A tensor of rank 65 has more than the 64 dimensions servo holds"
    err = error_of(parse, f'{{"instances": {"[" * 65 + "1" + "]" * 65}}}')
    assert err.message == "A tensor of rank 65 has more than the 64 dimensions servo holds"


def test_parse_predict_wants_an_object() -> None:
    err = error_of(jc.parse_predict, [1, 2], lambda name: FLOAT_X)
    assert err.message == "JSON Value: [1, 2] Is not object"


def test_long_values_are_cut_in_messages_as_tfs_cuts_them() -> None:
    row = ", ".join(["1"] * 200)
    err = error_of(parse, f'{{"instances": 5, "pad": [{row}]}}')
    quoted = err.message.removeprefix("JSON Value: ").removesuffix(
        " Expecting 'instances' to be an list/array"
    )
    # Tokens stop once 256 bytes are out; the token that crosses the line is written whole.
    assert quoted.startswith('{\n    "instances": 5,\n    "pad": [1, 1, 1')
    assert len(quoted.encode()) - len(", 1") < 256 <= len(quoted.encode())
    assert not quoted.endswith("]")


# -- the body --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b" \n", "JSON Parse error: The document is empty. at offset: 2"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b'"a"', 'JSON Value: "a" Is not object'),
        (b"null", "JSON Value: null Is not object"),
        (b"[1, NaN, 2]", "JSON Value: [1,  Is not object"),  # rapidjson's writer stops at NaN
        (b'{"instances": [1,', "JSON Parse error: Invalid value. at offset: 17"),
        (b"{'a': 1}", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (
            b'{"a" 1}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
        ),
        (
            b'{"a": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9",
        ),
        (
            b'{"a": 1 "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8",
        ),
        (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 6"),
        (b'{"a": "\\x"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (
            b'{"a": "\\u12G4"}',
            "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 8",
        ),
        (
            b'{"a": "\\ud800"}',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 7",
        ),
        (b'{"a": "\x01"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
        (b'{"a": "\xff"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
        (b'{"a": 1e400}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
        (b'{"a": -1e400}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
        (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 7"),
        (b'{"a": 1e}', "JSON Parse error: Miss exponent in number. at offset: 7"),
        (
            b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "JSON Parse error: Nesting too deep. at offset: 0",
        ),
    ],
)
def test_bodies_that_are_not_objects(body: bytes, message: str) -> None:
    err = error_of(jc.loads, body)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"a": NaN, "b": Infinity, "c": -Infinity}',
            {"a": math.nan, "b": math.inf, "c": -math.inf},
        ),
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a byte-order mark is skipped
        (b'{"a": 1} trailing text', {"a": 1}),  # rapidjson stops at the document's end
        (b'  {"a": [NaN]}  ]', {"a": [math.nan]}),
        (
            b'{"a": 18446744073709551616, "b": -9223372036854775809}',
            {"a": 2.0**64, "b": -(2.0**63)},
        ),
        (b'{"a": 1, "b": NaN, "c": 18446744073709551616}', {"a": 1, "b": math.nan, "c": 2.0**64}),
        (b'{"a": "\\ud83d\\ude00"}', {"a": "😀"}),
    ],
)
def test_bodies_rapidjson_accepts(body: bytes, expected: dict[str, Any]) -> None:
    doc = jc.loads(body)
    assert json.dumps(doc, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert all(type(doc[k]) is type(v) for k, v in expected.items())


# -- predict answers -------------------------------------------------------------------------


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


@pytest.mark.parametrize(
    ("outputs", "row", "expected"),
    [
        # half_plus_two's answer, and float32 in its shortest round-trip form.
        ({"y": f32(2.5, 3.0, 4.5)}, True, b'{"predictions":[2.5,3.0,4.5]}'),
        (
            {"y": f32(2.05, 0.1, 1e-07, 123456.7, 3.4028235e38)},
            False,
            b'{"outputs":[2.05,0.1,1e-7,123456.7,3.4028235e+38]}',
        ),
        ({"y": np.array([[0.1, 0.2]], np.float64)}, True, b'{"predictions":[[0.1,0.2]]}'),
        # Non-finite floats as TFS writes them: bare tokens.
        (
            {"y": f32(math.nan, math.inf, -math.inf, 2.05)},
            False,
            b'{"outputs":[NaN,Infinity,-Infinity,2.05]}',
        ),
        ({"y": np.array([[1.5, math.nan]])}, True, b'{"predictions":[[1.5,NaN]]}'),
        ({"y": np.float32(math.nan)}, False, b'{"outputs":NaN}'),
        ({"y": np.array(-math.inf, np.float32)}, False, b'{"outputs":-Infinity}'),
        # Integers and bools.
        (
            {"y": np.array([-(2**63), 2**63 - 1])},
            False,
            b'{"outputs":[-9223372036854775808,9223372036854775807]}',
        ),
        ({"y": np.array([2**64 - 1], np.uint64)}, False, b'{"outputs":[18446744073709551615]}'),
        ({"y": np.array([[-128, 127]], np.int8)}, True, b'{"predictions":[[-128,127]]}'),
        ({"y": np.array([65535], np.uint16)}, False, b'{"outputs":[65535]}'),
        ({"y": np.array([True, False])}, True, b'{"predictions":[true,false]}'),
        # Strings: UTF-8 text (bad bytes replaced), and base64 for an alias ending in _bytes.
        (
            {"y": np.array([b"caf\xc3\xa9", b"a\xffb"], dtype=object)},
            True,
            '{"predictions":["café","a\ufffdb"]}'.encode(),
        ),
        (
            {"y_bytes": np.array([b"\x00\xff", b""], dtype=object)},
            True,
            b'{"predictions":[{"b64":"AP8="},{"b64":""}]}',
        ),
        ({"y_bytes": np.array(b"hi", dtype=object)}, False, b'{"outputs":{"b64":"aGk="}}'),
        ({"y_bytes": np.array([1, 2])}, False, b'{"outputs":[1,2]}'),  # b64 is for strings only
        ({"y": np.array([b"x", b"yz"], dtype="S")}, False, b'{"outputs":["x","yz"]}'),
        ({"y": np.array(["x", "é"])}, False, '{"outputs":["x","é"]}'.encode()),
        ({"y": np.array('say "hi"\n', dtype=object)}, False, b'{"outputs":"say \\"hi\\"\\n"}'),
        # Scalars in the columnar form.
        ({"y": np.float32(2.05)}, False, b'{"outputs":2.05}'),
        ({"y": np.array(7, np.int64)}, False, b'{"outputs":7}'),
        # Several outputs: one object per row, or an object of tensors.
        (
            {
                "s": f32(0.25, math.nan),
                "n": np.array([[1, 2], [3, 4]]),
                "t_bytes": np.array([b"a", b"b"], dtype=object),
            },
            True,
            b'{"predictions":[{"s":0.25,"n":[1,2],"t_bytes":{"b64":"YQ=="}},{"s":NaN,"n":[3,4],"t_bytes":{"b64":"Yg=="}}]}',
        ),
        (
            {"a": f32(2.05), "b": np.array(["x"], dtype=object)},
            False,
            b'{"outputs":{"a":[2.05],"b":["x"]}}',
        ),
        # An empty batch, and tensors with no values.
        ({"y": np.zeros((0, 3), np.float32)}, True, b'{"predictions":[]}'),
        ({"a": np.zeros(0), "b": np.zeros((0, 2))}, True, b'{"predictions":[]}'),
        ({"y": np.zeros((2, 0), np.float16)}, False, b'{"outputs":[[],[]]}'),
    ],
)
def test_predict_answers(outputs: dict[str, np.ndarray], row: bool, expected: bytes) -> None:
    assert jc.dumps_predict(outputs, row) == expected


def test_answers_from_non_contiguous_and_foreign_byte_order_arrays() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    assert jc.dumps_predict({"y": base.T}, False) == jc.dumps_predict(
        {"y": np.ascontiguousarray(base.T)}, False
    )
    assert jc.dumps_predict({"y": base[:, 1]}, True) == b'{"predictions":[0.1,0.5,0.9]}'
    assert jc.dumps_predict({"y": base[::2, ::2], "z": base[::2, 0]}, True) == (
        b'{"predictions":[{"y":[0.0,0.2],"z":0.0},{"y":[0.8,1.0],"z":0.8}]}'
    )
    assert jc.dumps_predict({"y": np.array([1, 2], ">i4")}, False) == b'{"outputs":[1,2]}'
    assert jc.dumps_predict({"y": np.array([0.1], ">f4")}, False) == b'{"outputs":[0.1]}'
    strings = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object).T
    assert jc.dumps_predict({"y": strings}, False) == b'{"outputs":[["a","c"],["b","d"]]}'


@pytest.mark.parametrize(
    ("outputs", "row", "message"),
    [
        ({}, True, "Cannot convert empty tensor map to JSON"),
        ({}, False, "Cannot convert empty tensor map to JSON"),
        (
            {"a": np.zeros(2), "b": np.zeros(1)},
            True,
            "Tensor name: b has inconsistent batch size: 1 expecting: 2",
        ),
        ({"s": np.float32(1)}, True, "Tensor name: s has no shape information "),
        ({"a": np.zeros(2), "s": np.array(1)}, True, "Tensor name: s has no shape information "),
        ({"h": np.ones(2, np.float16)}, False, "Failed to write JSON value for tensor type: half"),
        (
            {"h": np.ones(2, ml_dtypes.bfloat16)},
            True,
            "Failed to write JSON value for tensor type: bfloat16",
        ),
        (
            {"c": np.ones(2, np.complex64)},
            False,
            "Failed to write JSON value for tensor type: complex64",
        ),
        (
            {"t": np.ones(2, "datetime64[s]")},
            False,
            "Failed to write JSON value for tensor type: datetime64[s]",
        ),
    ],
)
def test_predict_answer_errors(outputs: dict[str, np.ndarray], row: bool, message: str) -> None:
    err = error_of(jc.dumps_predict, outputs, row)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == message


def test_batch_is_checked_before_values_are_written() -> None:
    # TFS checks every tensor's dim 0 before it writes a value.
    err = error_of(jc.dumps_predict, {"h": np.ones(2, np.float16), "b": np.zeros(3)}, True)
    assert err.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


# -- classify and regress --------------------------------------------------------------------


def features(serialized: bytes) -> dict[str, tuple[str | None, list[Any]]]:
    """A serialized tf.Example, read by TensorFlow, as {name: (kind, values)}."""
    example = tf.train.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def examples(body: bytes) -> tuple[str, list[dict[str, tuple[str | None, list[Any]]]]]:
    name, serialized = jc.parse_examples(jc.loads(body))
    return name, [features(s) for s in serialized]


def test_example_values_become_features() -> None:
    name, parsed = examples(
        b'{"signature_name": "regress_x_to_y", "examples": [{'
        b'"f": 1.5, "fs": [1.5, -2.25, NaN], "i": 7, "is": [1, -2, 9223372036854775807],'
        b' "b": true, "bs": [true, false], "s": "text", "ss": ["a", {"b64": "AAE="}],'
        b' "big": 18446744073709551616, "e": []}]}'
    )
    assert name == "regress_x_to_y"
    (only,) = parsed
    assert only["f"] == ("float_list", [1.5])
    kind, floats = only["fs"]
    assert kind == "float_list" and floats[:2] == [1.5, -2.25] and math.isnan(floats[2])
    assert only["i"] == ("int64_list", [7])
    assert only["is"] == ("int64_list", [1, -2, 2**63 - 1])
    assert only["b"] == ("int64_list", [1])
    assert only["bs"] == ("int64_list", [1, 0])
    assert only["s"] == ("bytes_list", [b"text"])
    assert only["ss"] == ("bytes_list", [b"a", b"\x00\x01"])
    assert only["big"] == ("float_list", [2.0**64])  # beyond 64 bits: a double, as rapidjson
    assert only["e"] == (None, [])  # an empty list: a feature with no kind


def test_decimals_round_to_float32_as_in_tfs() -> None:
    _, [only] = examples(b'{"examples": [{"x": 0.1}]}')
    assert only["x"] == ("float_list", [np.float32(0.1)])


def test_context_is_merged_into_every_example_and_loses_clashes() -> None:
    name, parsed = examples(
        b'{"context": {"c": "ctx", "x": 9.0, "n": [1, 2]},'
        b' "examples": [{"x": 1.5}, {"x": [2, 3], "n": []}, {}]}'
    )
    assert name == "serving_default"
    assert parsed == [
        {"c": ("bytes_list", [b"ctx"]), "x": ("float_list", [1.5]), "n": ("int64_list", [1, 2])},
        {"c": ("bytes_list", [b"ctx"]), "x": ("int64_list", [2, 3]), "n": (None, [])},
        {"c": ("bytes_list", [b"ctx"]), "x": ("float_list", [9.0]), "n": ("int64_list", [1, 2])},
    ]


def test_examples_are_serialized_as_tfs_serializes_them() -> None:
    # With a context, TFS feeds the context's bytes followed by the example's.
    _, with_context = jc.parse_examples(jc.loads(b'{"context": {"c": 1}, "examples": [{"x": 2}]}'))
    _, [context] = jc.parse_examples(jc.loads(b'{"examples": [{"c": 1}]}'))
    _, [example] = jc.parse_examples(jc.loads(b'{"examples": [{"x": 2}]}'))
    assert with_context == [context + example]
    assert jc.parse_examples(jc.loads(b'{"examples": [{}]}')) == ("serving_default", [b""])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"instances": []}',
            "JSON Value: {\n    \"instances\": []\n} When method is classify, key 'examples' is "
            "expected and was not found",
        ),
        (
            b'{"examples": {}}',
            "JSON Value: {\n    \"examples\": {}\n} Expecting 'examples' value to be an list/array",
        ),
        (
            b'{"examples": []}',
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
        (
            b'{"signature_name": 1, "examples": [{}]}',
            'JSON Value: {\n    "signature_name": 1,\n    "examples": [{}]\n} not formatted '
            "correctly. 'signature_name' key must be a string value.",
        ),
        (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (b'{"examples": [{}, [1]]}', "Example must be JSON object but got JSON Array"),
        (b'{"context": "c", "examples": [{}]}', "Example must be JSON object but got JSON String"),
        (b'{"context": {"x": null}}', "Feature: x has element with unexpected JSON type: Null"),
        (
            b'{"examples": [{"x": [1, "a"]}]}',
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            b'{"examples": [{"x": [1.5, 1]}]}',
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            b'{"examples": [{"x": ["a", true]}]}',
            "Unexpected element type in feature: x expecting type: bytes",
        ),
        (
            b'{"examples": [{"x": [1, {"b64": "!"}]}]}',
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (b'{"examples": [{"x": [{"b64": "!"}]}]}', "Unable to base64 decode"),
        (b'{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        (
            b'{"examples": [{"x": [[1]]}]}',
            "Feature: x has element with unexpected JSON type: Array",
        ),
        (
            b'{"examples": [{"x": {"a": 1}}]}',
            "Feature: x has element with unexpected JSON type: Object",
        ),
        (
            b'{"examples": [{"x": 18446744073709551615}]}',
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (
            b'{"examples": [{"x": [1.5, 9223372036854775808]}]}',
            "Unexpected element type in feature: x expecting type: float",
        ),
    ],
)
def test_example_errors(body: bytes, message: str) -> None:
    err = error_of(jc.parse_examples, jc.loads(body))
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == message


def test_classify_and_regress_answers() -> None:
    results = [
        [Classification(b"a", 0.25), Classification(b"", 2.05)],
        [Classification("caf\u00e9".encode(), float("nan")), Classification(b"\xff", 1e-07)],
        [],
    ]
    assert jc.dumps_classify(results) == (
        '{"results":[[["a",0.25],["",2.05]],[["café",NaN],["\ufffd",1e-7]],[]]}'.encode()
    )
    assert jc.dumps_regress([2.5, 3.05, 0.1]) == b'{"results":[2.5,3.05,0.1]}'
    assert jc.dumps_regress([math.inf, -math.inf, math.nan]) == (
        b'{"results":[Infinity,-Infinity,NaN]}'
    )
    assert jc.dumps_regress(np.array([2.05], np.float32)) == b'{"results":[2.05]}'
    err = error_of(jc.dumps_classify, [])
    assert err.message == "Cannot convert empty ClassificationResults to JSON"
    err = error_of(jc.dumps_regress, [])
    assert err.message == "Cannot convert empty RegressionResults to JSON"


# -- errors ----------------------------------------------------------------------------------


def test_error_bodies_are_json() -> None:
    for message in ('say "hi"\n', "tab\there \\ back", "café 😀", "\x00"):
        assert json.loads(jc.dumps_error(message)) == {"error": message}
    assert json.loads(jc.dumps_error("lone \ud800 surrogate")) == {"error": "lone ? surrogate"}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Code.OK, 200),
        (Code.CANCELLED, 499),
        (Code.UNKNOWN, 500),
        (Code.INVALID_ARGUMENT, 400),
        (Code.DEADLINE_EXCEEDED, 504),
        (Code.NOT_FOUND, 404),
        (Code.ALREADY_EXISTS, 409),
        (Code.PERMISSION_DENIED, 403),
        (Code.RESOURCE_EXHAUSTED, 429),
        (Code.FAILED_PRECONDITION, 400),
        (Code.ABORTED, 409),
        (Code.OUT_OF_RANGE, 400),
        (Code.UNIMPLEMENTED, 501),
        (Code.INTERNAL, 500),
        (Code.UNAVAILABLE, 503),
        (Code.DATA_LOSS, 500),
        (Code.UNAUTHENTICATED, 401),
    ],
)
def test_http_status(code: Code, status: int) -> None:
    assert jc.http_status(code) == status


def test_every_code_has_a_status() -> None:
    assert {jc.http_status(code) for code in Code} <= {
        200,
        400,
        401,
        403,
        404,
        409,
        429,
        499,
        500,
        501,
        503,
        504,
    }


# -- decoded size limits ---------------------------------------------------------------------


def limited(body: str, signature: Signature, tensor: int, request: int = 2**62) -> jc.PredictBody:
    limits = DecodeLimits(max_tensor_bytes=tensor, max_request_bytes=request)
    return jc.parse_predict(jc.loads(body.encode()), lambda name: signature, limits.budget())


@pytest.mark.parametrize(
    ("body", "signature", "name", "shape"),
    [
        ('{"instances": [[1, 2], [3, 4], [5, 6]]}', FLOAT_X, "x", [3, 2]),
        ('{"instances": [{"a": [1, 2, 3], "b": 1}, {"a": [4, 5, 6], "b": 2}]}', TWO, "a", [2, 3]),
        ('{"inputs": [[1, 2, 3], [4, 5, 6]]}', FLOAT_X, "x", [2, 3]),
        ('{"inputs": {"a": [[1, 2, 3], [4, 5, 6]], "b": [1, 2]}}', TWO, "a", [2, 3]),
        ('{"inputs": {"a": 1.0, "b": [1, 2, 3, 4, 5, 6]}}', TWO, "b", [6]),
    ],
)
def test_every_form_is_refused_over_the_limit_per_tensor(
    body: str, signature: Signature, name: str, shape: list[int]
) -> None:
    """A tensor of 6 floats, 24 bytes: taken from its shape before it is built."""
    parsed = limited(body, signature, 24)
    assert parsed.inputs[name].shape == tuple(shape)
    assert error_of(limited, body, signature, 23).message == (
        f"Input '{name}' of shape {shape} and type DT_FLOAT would take 24 bytes decoded, over "
        "the limit of 23 bytes per tensor (--max_decoded_bytes_per_tensor)"
    )


def test_the_limit_per_request_counts_every_input() -> None:
    body = '{"inputs": {"a": [1, 2, 3], "b": [4, 5, 6]}}'
    assert values(limited(body, TWO, 12, 24).inputs["b"]) == [4, 5, 6]
    assert error_of(limited, body, TWO, 12, 23).message == (
        "Input 'b' of shape [3] and type DT_FLOAT would take the request's decoded tensors to 24 "
        "bytes, over the limit of 23 bytes per request (--max_decoded_bytes_per_request)"
    )


def test_strings_count_a_reference_a_header_and_their_bytes() -> None:
    strings = sig(s=D.DT_STRING)
    for body in ['{"instances": ["abc", "de"]}', '{"inputs": [{"b64": "YWJj"}, {"b64": "ZGU="}]}']:
        assert values(limited(body, strings, 2 * 41 + 5).inputs["s"]) == [b"abc", b"de"]
        assert error_of(limited, body, strings, 2 * 41 + 4).message == (
            "Input 's' of shape [2] and type DT_STRING would take 87 bytes decoded, over the "
            "limit of 86 bytes per tensor (--max_decoded_bytes_per_tensor)"
        )


def test_a_refused_tensor_is_not_built() -> None:
    """A ragged list or a bad value after the first row does not matter: the first row's
    shape is refused before any value is read."""
    body = '{"instances": [[1, 2, 3, 4], "not a row"]}'
    assert "would take 32 bytes decoded" in error_of(limited, body, FLOAT_X, 31).message
    assert "Failed to process element: 1" in error_of(limited, body, FLOAT_X, 32).message


def test_examples_with_a_context_are_counted_before_the_context_is_copied() -> None:
    doc = {"context": {"pad": "p" * 1000}, "examples": [{"x": 1.0}] * 100}
    context = len(jc.parse_examples({"examples": [doc["context"]]})[1][0])
    own = len(jc.parse_examples({"examples": [{"x": 1.0}]})[1][0])
    size = 100 * (context + own + 41)
    limits = DecodeLimits(max_tensor_bytes=size)
    assert len(jc.parse_examples(doc, limits)[1]) == 100
    with pytest.raises(ServoError) as caught:
        jc.parse_examples(doc, DecodeLimits(max_tensor_bytes=size - 1))
    assert caught.value.message == (
        f"The request's 100 examples would take {size} bytes decoded, over the limit of "
        f"{size - 1} bytes per tensor (--max_decoded_bytes_per_tensor)"
    )
