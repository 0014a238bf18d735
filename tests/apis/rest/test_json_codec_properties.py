"""Properties of the JSON codec: what servo writes it reads back unchanged, for every dtype and
both forms; and no input, however malformed, gets anything out but a result or a ServoError."""

from __future__ import annotations

import json
import math
from typing import Any

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from servo.apis.rest import json_codec as jc
from servo.core.status import Code, ServoError
from servo.decoded_size import DecodeLimits
from servo.dtypes import DataType, to_numpy
from servo.platforms.servable import Signature, TensorSpec

D = DataType


def sig(**inputs: DataType) -> Signature:
    return Signature(
        "serving_default",
        {alias: TensorSpec(dtype, None, alias) for alias, dtype in inputs.items()},
        {},
    )


def parse(body: bytes, signature: Signature) -> jc.PredictBody:
    return jc.parse_predict(jc.loads(body), lambda name: signature)


def as_request(answer: bytes, row: bool) -> bytes:
    """An answer turned into the request that sends the same tensors back."""
    key = b'"predictions"' if row else b'"outputs"'
    return answer.replace(key, b'"instances"' if row else b'"inputs"', 1)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    if expected.dtype.kind == "f":
        np.testing.assert_array_equal(got, expected)  # NaNs in the same places count as equal
    else:
        assert got.tolist() == expected.tolist()


NUMERIC = [
    D.DT_FLOAT,
    D.DT_DOUBLE,
    D.DT_INT8,
    D.DT_INT16,
    D.DT_INT32,
    D.DT_INT64,
    D.DT_UINT8,
    D.DT_UINT16,
    D.DT_UINT32,
    D.DT_UINT64,
    D.DT_BOOL,
]


@st.composite
def tensors(draw: st.DrawFn, min_dims: int = 0) -> tuple[DataType, np.ndarray]:
    """A dtype and an array of it, NaN and infinities included. Dims are at least 1 long:
    JSON cannot say how wide an empty list's elements would have been."""
    dtype = draw(st.sampled_from(NUMERIC))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    return dtype, draw(hnp.arrays(to_numpy(dtype), shape))


@given(tensors())
@settings(max_examples=300, deadline=None)
def test_columnar_round_trip(case: tuple[DataType, np.ndarray]) -> None:
    dtype, array = case
    answer = jc.dumps_predict({"x": array}, row_format=False)
    assert_same(parse(as_request(answer, False), sig(x=dtype)).inputs["x"], array)


@given(tensors(min_dims=1))
@settings(max_examples=300, deadline=None)
def test_row_round_trip(case: tuple[DataType, np.ndarray]) -> None:
    dtype, array = case
    answer = jc.dumps_predict({"x": array}, row_format=True)
    assert_same(parse(as_request(answer, True), sig(x=dtype)).inputs["x"], array)


@given(tensors(min_dims=1), tensors(min_dims=1), st.booleans())
@settings(max_examples=200, deadline=None)
def test_two_tensor_round_trip(
    first: tuple[DataType, np.ndarray], second: tuple[DataType, np.ndarray], row: bool
) -> None:
    (a_type, a), (b_type, b) = first, second
    b = np.resize(b, (a.shape[0], *b.shape[1:]))  # the row form needs one batch size
    answer = jc.dumps_predict({"a": a, "b": b}, row_format=row)
    parsed = parse(as_request(answer, row), sig(a=a_type, b=b_type)).inputs
    assert_same(parsed["a"], a)
    assert_same(parsed["b"], b)


def object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@given(st.lists(st.binary(max_size=12), min_size=1, max_size=5), st.booleans())
@settings(deadline=None)
def test_bytes_round_trip_through_b64(items: list[bytes], row: bool) -> None:
    answer = jc.dumps_predict({"x_bytes": object_array(items)}, row_format=row)
    key = "predictions" if row else "outputs"
    assert json.loads(answer)[key] == [{"b64": jc._base64.encode(item)} for item in items]
    parsed = parse(as_request(answer, row), sig(x_bytes=D.DT_STRING)).inputs["x_bytes"]
    assert parsed.tolist() == items


@given(st.lists(st.text(max_size=8), min_size=1, max_size=5), st.booleans())
@settings(deadline=None)
def test_text_round_trip(items: list[str], row: bool) -> None:
    encoded = [item.encode() for item in items]
    answer = jc.dumps_predict({"x": object_array(encoded)}, row_format=row)
    parsed = parse(as_request(answer, row), sig(x=D.DT_STRING)).inputs["x"]
    assert parsed.tolist() == encoded


@given(st.lists(st.floats(width=32), min_size=1, max_size=8))
@settings(deadline=None)
def test_float32_answers_are_shortest(items: list[float]) -> None:
    array = np.array(items, np.float32)
    written = json.loads(jc.dumps_predict({"y": array}, row_format=False))["outputs"]
    for value, text in zip(array, written, strict=True):
        if math.isfinite(value):
            # The shortest decimal that reads back as this float32: numpy's repr finds it.
            assert text == float(np.format_float_positional(value, unique=True))
            assert np.float32(text) == value
        else:
            assert (math.isnan(text) and math.isnan(value)) or text == value


# -- fuzz ------------------------------------------------------------------------------------

KEYS = st.sampled_from(["instances", "inputs", "signature_name", "a", "b", "x", "b64", "context"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["aGk=", "!", "a", ""])
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=3)
        | st.builds(lambda v: {"b64": v}, st.text(max_size=6))
    ),
    max_leaves=16,
)
# Documents that went through no parser: integers of any size, lone surrogates.
ODD_TEXT = st.sampled_from(["a", "é", "\ud800", "\udfff", "😀", "\x00"]) | st.characters()
RAW = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ODD_TEXT, max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.text(ODD_TEXT, max_size=3), children, max_size=3)
    ),
    max_leaves=16,
)
SIGNATURES = [
    sig(x=D.DT_FLOAT),
    sig(x=D.DT_STRING),
    sig(x=D.DT_UINT64),
    sig(a=D.DT_INT8, b=D.DT_BOOL),
    sig(a=D.DT_STRING, b=D.DT_DOUBLE),
    sig(x=D.DT_HALF),
    sig(x=D.DT_VARIANT),
]


def check_predict(doc: Any, signature: Signature) -> None:
    try:
        parsed = jc.parse_predict(doc, lambda name: signature)
    except ServoError as exc:
        assert exc.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED)
        assert exc.message
        return
    assert parsed.inputs and set(parsed.inputs) <= set(signature.inputs)
    for name, array in parsed.inputs.items():
        assert array.dtype == to_numpy(signature.inputs[name].dtype)


@given(JSON, st.sampled_from(SIGNATURES))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_predict_bodies(doc: Any, signature: Signature) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    try:
        doc = jc.loads(body)
    except ServoError as exc:
        assert exc.code == Code.INVALID_ARGUMENT
        return
    check_predict(doc, signature)


@given(
    st.dictionaries(st.sampled_from(["instances", "inputs"]), JSON, min_size=1, max_size=1),
    st.sampled_from(SIGNATURES),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_predict_tensors(doc: dict[str, Any], signature: Signature) -> None:
    check_predict(jc.loads(json.dumps(doc, allow_nan=True).encode()), signature)


@given(RAW, st.sampled_from(SIGNATURES))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_documents_no_parser_made(doc: Any, signature: Signature) -> None:
    check_predict(doc, signature)
    check_predict({"instances": doc}, signature)
    check_predict({"inputs": doc}, signature)


def check_examples(doc: Any) -> None:
    try:
        name, examples = jc.parse_examples(doc)
    except ServoError as exc:
        assert exc.code == Code.INVALID_ARGUMENT
        return
    assert name and examples


@given(JSON | RAW)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_examples(doc: Any) -> None:
    check_examples(doc)
    check_examples({"examples": doc})
    check_examples({"context": doc, "examples": [doc]})


@given(st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v, allow_nan=True).encode()))
@settings(max_examples=500, deadline=None)
def test_fuzz_bodies(body: bytes) -> None:
    for candidate in (body, body[: len(body) // 2], b"\xef\xbb\xbf" + body):
        try:
            assert type(jc.loads(candidate)) is dict
        except ServoError as exc:
            assert exc.code == Code.INVALID_ARGUMENT
            assert exc.message.startswith("JSON ")


ANSWER_DTYPES = [*(to_numpy(t) for t in NUMERIC), np.dtype(np.float16), np.dtype(np.complex64)]


@given(
    st.dictionaries(
        st.sampled_from(["y", "z", "y_bytes"]),
        hnp.arrays(
            st.sampled_from(ANSWER_DTYPES),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
        )
        | st.lists(st.binary(max_size=4), max_size=3).map(object_array),
        max_size=3,
    ),
    st.booleans(),
)
@settings(max_examples=500, deadline=None)
def test_fuzz_answers_are_json_or_a_servo_error(outputs: dict[str, Any], row: bool) -> None:
    try:
        answer = jc.dumps_predict(outputs, row_format=row)
    except ServoError as exc:
        assert exc.code == Code.INVALID_ARGUMENT
        return
    written = json.loads(answer)  # Python's parser takes the bare NaN and Infinity
    assert set(written) == {"predictions" if row else "outputs"}


def _decoded_size(array: np.ndarray) -> int:
    return array.size * array.dtype.itemsize


@given(tensors(min_dims=1), tensors(min_dims=1), st.booleans())
@settings(max_examples=100, deadline=None)
def test_tensors_under_the_limits_decode_as_without_them_and_over_are_refused(
    first: tuple[DataType, np.ndarray], second: tuple[DataType, np.ndarray], row: bool
) -> None:
    """Whatever the form: exactly at the limits, the same arrays as with no limit; a byte
    under either, INVALID_ARGUMENT naming its flag."""
    (a_type, a), (b_type, b) = first, second
    b = np.resize(b, (a.shape[0], *b.shape[1:]))
    body = as_request(jc.dumps_predict({"a": a, "b": b}, row_format=row), row)
    signature = sig(a=a_type, b=b_type)
    per_tensor = max(_decoded_size(a), _decoded_size(b))
    per_request = _decoded_size(a) + _decoded_size(b)

    def decode(tensor: int, request: int) -> dict[str, np.ndarray]:
        budget = DecodeLimits(tensor, request).budget()
        return jc.parse_predict(jc.loads(body), lambda name: signature, budget).inputs

    exact = decode(per_tensor, per_request)
    assert_same(exact["a"], a)
    assert_same(exact["b"], b)
    for tensor, request, flag in [
        (per_tensor - 1, per_request, "--max_decoded_bytes_per_tensor"),
        (per_tensor, per_request - 1, "--max_decoded_bytes_per_request"),
    ]:
        try:
            decode(tensor, request)
        except ServoError as exc:
            assert exc.code == Code.INVALID_ARGUMENT
            assert exc.message.endswith(f"({flag})")
        else:
            raise AssertionError(f"decoded within {tensor}, {request}")
