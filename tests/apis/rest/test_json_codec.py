"""TFS's REST JSON rules: both request forms, every dtype, b64, NaN/Infinity, examples, and
TFS's error messages; hypothesis round trips and a fuzz that only ServoError may come out."""

from __future__ import annotations

import base64
import json
import math

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings

from servo.apis.rest import json_codec as jc
from servo.core.status import Code, ServoError
from servo.dtypes import DataType, to_numpy
from servo.platforms.servable import Classification, Signature, TensorSpec


def sig(**inputs: DataType) -> Signature:
    return Signature(
        "serving_default",
        {name: TensorSpec(dtype, None, name) for name, dtype in inputs.items()},
        {"y": TensorSpec(DataType.DT_FLOAT, None, "y")},
    )


def parse(body: str | bytes, signature: Signature) -> jc.PredictBody:
    raw = body.encode() if isinstance(body, str) else body
    return jc.parse_predict(jc.loads(raw), lambda name: signature)


def error(body: str, signature: Signature) -> ServoError:
    with pytest.raises(ServoError) as err:
        parse(body, signature)
    return err.value


FLOAT_X = sig(x=DataType.DT_FLOAT)


def test_tfs_readme_example_row_form() -> None:
    body = parse('{"instances": [1.0, 2.0, 5.0]}', FLOAT_X)
    assert body.row_format and body.signature is FLOAT_X
    np.testing.assert_array_equal(body.inputs["x"], np.array([1, 2, 5], np.float32))
    assert body.inputs["x"].dtype == np.float32
    out = jc.dumps_predict({"y": np.array([2.5, 3.0, 4.5], np.float32)}, True)
    assert out == b'{"predictions":[2.5,3.0,4.5]}'


def test_columnar_form_and_signature_name() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Signature:
        asked.append(name)
        return FLOAT_X

    body = jc.parse_predict(
        jc.loads(b'{"signature_name": "s", "inputs": [[1, 2], [3, 4]]}'), lookup
    )
    assert not body.row_format and asked == ["s"]
    assert body.inputs["x"].shape == (2, 2)
    out = jc.dumps_predict({"y": np.array([[1.5]], np.float32)}, False)
    assert out == b'{"outputs":[[1.5]]}'


def test_several_inputs_row_and_columnar() -> None:
    two = sig(a=DataType.DT_INT64, b=DataType.DT_STRING)
    body = parse(
        '{"instances": [{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": {"b64": "eQ=="}}]}', two
    )
    np.testing.assert_array_equal(body.inputs["a"], [[1, 2], [3, 4]])
    assert body.inputs["b"].tolist() == [b"x", b"y"]
    body = parse('{"inputs": {"a": [5], "b": ["z"], "extra": 1}}', two)
    assert body.inputs["a"].tolist() == [5] and body.inputs["b"].tolist() == [b"z"]


def test_several_outputs_row_and_columnar() -> None:
    outputs = {
        "scores": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        "label_bytes": np.array([b"\x00\xff", b"ok"], dtype=object),
        "name": np.array([b"caf\xc3\xa9", b"x"], dtype=object),
    }
    rows = json.loads(jc.dumps_predict(outputs, True))["predictions"]
    assert rows[0] == {"scores": [0.25, 0.75], "label_bytes": {"b64": "AP8="}, "name": "café"}
    cols = json.loads(jc.dumps_predict(outputs, False))["outputs"]
    assert cols["label_bytes"] == [{"b64": "AP8="}, {"b64": "b2s="}]
    with pytest.raises(ServoError, match="has inconsistent batch size: 1 expecting: 2"):
        jc.dumps_predict({"a": np.zeros(2), "b": np.zeros(1)}, True)
    with pytest.raises(ServoError, match="Tensor name: s has no shape information"):
        jc.dumps_predict({"s": np.float32(1)}, True)


def test_float32_written_shortest_and_non_finite_as_bare_tokens() -> None:
    values = np.array([2.05, 0.1, 1e-07, 3.0, 123456.7], np.float32)
    assert jc.dumps_predict({"y": values}, False) == b'{"outputs":[2.05,0.1,1e-7,3.0,123456.7]}'
    special = np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)
    assert jc.dumps_predict({"y": special}, False) == b'{"outputs":[NaN,Infinity,-Infinity,1.5]}'
    body = parse('{"instances": [NaN, Infinity, -Infinity]}', FLOAT_X)
    x = body.inputs["x"]
    assert math.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf


@pytest.mark.parametrize(
    ("dtype", "text", "expected"),
    [
        (DataType.DT_FLOAT, "[1, 2.5]", [1.0, 2.5]),
        (DataType.DT_DOUBLE, "[1e300]", [1e300]),
        (DataType.DT_INT8, "[-3]", [-3]),
        (DataType.DT_INT16, "[300]", [300]),
        (DataType.DT_INT32, "[2147483647]", [2147483647]),
        (DataType.DT_INT64, "[9223372036854775807]", [9223372036854775807]),
        (DataType.DT_UINT8, "[255]", [255]),
        (DataType.DT_UINT32, "[4294967295]", [4294967295]),
        (DataType.DT_UINT64, "[18446744073709551615]", [18446744073709551615]),
        (DataType.DT_BOOL, "[true, false]", [True, False]),
        (DataType.DT_STRING, '["a", {"b64": "AAE="}]', [b"a", b"\x00\x01"]),
    ],
)
def test_every_request_dtype(dtype: DataType, text: str, expected: list) -> None:
    body = parse(f'{{"inputs": {text}}}', sig(x=dtype))
    assert body.inputs["x"].tolist() == expected
    if dtype != DataType.DT_STRING:
        assert body.inputs["x"].dtype == to_numpy(dtype)


@pytest.mark.parametrize(
    ("body", "signature", "code", "message"),
    [
        ("", FLOAT_X, Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty"),
        ("[1]", FLOAT_X, Code.INVALID_ARGUMENT, "JSON Value: [1] Is not object"),
        ("{}", FLOAT_X, Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": [1], "inputs": [1]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            '{"instances": 1}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "Expecting 'instances' to be an list/array",
        ),
        ('{"instances": []}', FLOAT_X, Code.INVALID_ARGUMENT, "No values in 'instances' array"),
        (
            '{"signature_name": 3, "instances": [1]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "'signature_name' key must be a string value.",
        ),
        (
            '{"instances": ["a"]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON "
            'Value: "a" Type: String is not of expected type: float',
        ),
        (
            '{"inputs": [1.5]}',
            sig(x=DataType.DT_INT64),
            Code.INVALID_ARGUMENT,
            "JSON Value: 1.5 Type: Number is not of expected type: int64",
        ),
        (
            '{"inputs": [true]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            '{"inputs": [256000000000]}',
            sig(x=DataType.DT_INT32),
            Code.INVALID_ARGUMENT,
            "is not of expected type: int32",
        ),
        (
            '{"inputs": [[1], [1, 2]]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "Encountered list at unexpected size: 2 at level: 1 expected size: 1",
        ),
        (
            '{"inputs": [[1], 2]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"instances": [[1], [1, 2]]}',
            FLOAT_X,
            Code.INVALID_ARGUMENT,
            "Expecting tensor size: 1 but got: 2",
        ),
        (
            '{"inputs": {"a": [1]}}',
            sig(a=DataType.DT_FLOAT, b=DataType.DT_FLOAT),
            Code.INVALID_ARGUMENT,
            "Missing named input: b in 'inputs' object.",
        ),
        (
            '{"instances": [1, 2]}',
            sig(a=DataType.DT_FLOAT, b=DataType.DT_FLOAT),
            Code.INVALID_ARGUMENT,
            "instances is a plain list, but expecting list of objects",
        ),
        (
            '{"instances": [{"a": 1}]}',
            sig(a=DataType.DT_FLOAT, b=DataType.DT_FLOAT),
            Code.INVALID_ARGUMENT,
            "keys must be equal to: a,b",
        ),
        (
            '{"instances": [{"a": 1, "b": 1}, [1]]}',
            sig(a=DataType.DT_FLOAT, b=DataType.DT_FLOAT),
            Code.INVALID_ARGUMENT,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"inputs": [{"b64": "!!"}]}',
            sig(x=DataType.DT_STRING),
            Code.INVALID_ARGUMENT,
            "Unable to base64 decode",
        ),
        (
            '{"inputs": [{"b64": "AA==", "x": 1}]}',
            sig(x=DataType.DT_STRING),
            Code.INVALID_ARGUMENT,
            "not formatted correctly for base64 data",
        ),
        (
            '{"inputs": [1.0]}',
            sig(x=DataType.DT_HALF),
            Code.UNIMPLEMENTED,
            "Conversion of JSON Value: 1.0 to type: half",
        ),
        (
            '{"inputs": [1]}',
            Signature("s", {}, {}),
            Code.INVALID_ARGUMENT,
            "Failed to get input map for signature: DEFAULT",
        ),
    ],
)
def test_request_errors(body: str, signature: Signature, code: Code, message: str) -> None:
    err = error(body, signature)
    assert err.code == code
    assert message in err.message


def test_bad_json_reports_the_offset() -> None:
    err = error('{"instances": [1,', FLOAT_X)
    assert err.message.startswith("JSON Parse error: ") and "at offset: " in err.message


def test_examples_become_tf_examples_with_context_merged() -> None:
    name, examples = jc.parse_examples(
        jc.loads(
            b'{"signature_name": "regress_x_to_y", "context": {"c": "ctx", "x": 9.0},'
            b' "examples": [{"x": 1.5, "n": [1, 2], "f": true, "b": {"b64": "AAE="}}, {"x": 2}]}'
        )
    )
    assert name == "regress_x_to_y"
    first = tf.train.Example.FromString(examples[0]).features.feature
    assert first["x"].float_list.value == [1.5]  # the example's own value wins over context's
    assert first["n"].int64_list.value == [1, 2]
    assert first["f"].int64_list.value == [1]
    assert first["b"].bytes_list.value == [b"\x00\x01"]
    assert first["c"].bytes_list.value == [b"ctx"]
    second = tf.train.Example.FromString(examples[1]).features.feature
    assert second["x"].int64_list.value == [2] and second["c"].bytes_list.value == [b"ctx"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": []}', "When method is classify, key 'examples' is expected"),
        ('{"examples": {}}', "Expecting 'examples' value to be an list/array"),
        ('{"examples": []}', "'examples' value is an empty array"),
        ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (
            '{"examples": [{"x": [1, "a"]}]}',
            "Unexpected element type in feature: x expecting type: int64",
        ),
        ('{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        ('{"examples": [{"x": [[1]]}]}', "Feature: x has element with unexpected JSON type: Array"),
        (
            '{"examples": [{"x": 18446744073709551615}]}',
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
    ],
)
def test_example_errors(body: str, message: str) -> None:
    with pytest.raises(ServoError) as err:
        jc.parse_examples(jc.loads(body.encode()))
    assert err.value.code == Code.INVALID_ARGUMENT
    assert message in err.value.message


def test_classify_and_regress_answers() -> None:
    out = jc.dumps_classify([[Classification(b"a", 0.25), Classification(b"", 2.05)]])
    assert out == b'{"results":[[["a",0.25],["",2.05]]]}'
    assert jc.dumps_regress([2.5, 3.05]) == b'{"results":[2.5,3.05]}'


def test_http_status_of_each_code() -> None:
    assert [jc.http_status(c) for c in Code] == [
        200,
        499,
        500,
        400,
        504,
        404,
        409,
        403,
        429,
        400,
        409,
        400,
        501,
        500,
        503,
        500,
        401,
    ]
    assert json.loads(jc.dumps_error('say "hi"')) == {"error": 'say "hi"'}


# -- properties ------------------------------------------------------------------------------

NUMERIC = {
    DataType.DT_FLOAT: np.float32,
    DataType.DT_DOUBLE: np.float64,
    DataType.DT_INT8: np.int8,
    DataType.DT_INT16: np.int16,
    DataType.DT_INT32: np.int32,
    DataType.DT_INT64: np.int64,
    DataType.DT_UINT8: np.uint8,
    DataType.DT_UINT32: np.uint32,
    DataType.DT_UINT64: np.uint64,
    DataType.DT_BOOL: np.bool_,
}


@st.composite
def arrays(draw: st.DrawFn) -> tuple[DataType, np.ndarray]:
    dtype = draw(st.sampled_from(sorted(NUMERIC)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    elements = None
    if dtype in (DataType.DT_FLOAT, DataType.DT_DOUBLE):
        elements = st.floats(width=32 if dtype == DataType.DT_FLOAT else 64, allow_nan=False)
    array = draw(hnp.arrays(NUMERIC[dtype], shape, elements=elements))
    return dtype, array


@given(arrays())
@settings(max_examples=200, deadline=None)
def test_columnar_round_trip(case: tuple[DataType, np.ndarray]) -> None:
    dtype, array = case
    text = jc.dumps_predict({"x": array}, False).replace(b'"outputs"', b'"inputs"')
    body = parse(text, sig(x=dtype))
    np.testing.assert_array_equal(body.inputs["x"], array)
    assert body.inputs["x"].dtype == array.dtype


@given(arrays())
@settings(max_examples=100, deadline=None)
def test_row_round_trip(case: tuple[DataType, np.ndarray]) -> None:
    dtype, array = case
    text = jc.dumps_predict({"x": array}, True).replace(b'"predictions"', b'"instances"')
    np.testing.assert_array_equal(parse(text, sig(x=dtype)).inputs["x"], array)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=5))
def test_bytes_round_trip_through_b64(values: list[bytes]) -> None:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    text = jc.dumps_predict({"x_bytes": array}, False).replace(b'"outputs"', b'"inputs"')
    assert parse(text, sig(x=DataType.DT_STRING)).inputs["x"].tolist() == values
    assert json.loads(text)["inputs"][0] == {"b64": base64.b64encode(values[0]).decode()}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["instances", "inputs", "a", "b", "b64", "x"]), children, max_size=3
        )
    ),
    max_leaves=12,
)
SIGNATURES = [FLOAT_X, sig(x=DataType.DT_STRING), sig(a=DataType.DT_INT64, b=DataType.DT_BOOL)]


@given(JSON, st.sampled_from(SIGNATURES))
@settings(max_examples=400, deadline=None)
def test_fuzz_any_json_gives_arrays_or_a_servo_error(doc: object, signature: Signature) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    try:
        parsed = parse(body, signature)
    except ServoError as exc:
        assert exc.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED)
        return
    assert set(parsed.inputs) == set(signature.inputs)
    for name, array in parsed.inputs.items():
        assert array.dtype == to_numpy(signature.inputs[name].dtype)


@given(JSON)
@settings(max_examples=200, deadline=None)
def test_fuzz_examples(doc: object) -> None:
    try:
        jc.parse_examples(jc.loads(json.dumps(doc, allow_nan=True).encode()))
    except ServoError as exc:
        assert exc.code == Code.INVALID_ARGUMENT
