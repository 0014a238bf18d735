"""The Open Inference Protocol's tensors, datatypes, model specs, metadata and infer call
(servo.apis.open_inference), apart from either transport: round trips through every form a
tensor travels in (raw bytes, JSON data, gRPC's typed contents), the refusals of malformed
data with their messages, and the decode limits each form is held to."""

from __future__ import annotations

import math
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from servo.apis.data_plane import ModelSpec, Prediction
from servo.apis.open_inference import (
    CONTENTS_FIELDS,
    DATATYPES,
    NUMPY_TYPES,
    InferCall,
    InferInput,
    ModelMetadata,
    TensorMetadata,
    datatype,
    datatype_of,
    from_contents,
    from_json,
    from_raw,
    model_metadata,
    model_spec,
    output_arrays,
    platform_name,
    to_json_data,
    to_raw,
)
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.decoded_size import STRING_ELEMENT_BYTES, DecodeBudget, DecodeLimits
from servo.dtypes import DataType
from servo.platforms.servable import Signature, TensorSpec
from servo.protos.open_inference_pb2 import InferTensorContents

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
FAST = settings(max_examples=20, deadline=None)
ALL_DATATYPES = list(NUMPY_TYPES)
NUMERIC = [t for t in ALL_DATATYPES if t != "BYTES"]
PROTOCOL_DATATYPES = (
    "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES, BF16"
)
UNLIMITED = DecodeLimits(max_tensor_bytes=2**62, max_request_bytes=2**62)


def budget(tensor: int = 2**62, request: int = 2**62) -> DecodeBudget:
    return DecodeLimits(max_tensor_bytes=tensor, max_request_bytes=request).budget()


@contextmanager
def refused(message: str, code: Code = Code.INVALID_ARGUMENT) -> Iterator[None]:
    """Asserts a ServoError of `code` whose message is exactly `message`."""
    with pytest.raises(ServoError) as info:
        yield
    assert info.value.code is code, info.value
    assert info.value.message == message


def peak_bytes(work: Callable[[], object]) -> int:
    """The most memory Python allocated while `work` ran (tracemalloc sees numpy's arrays)."""
    tracemalloc.start()
    try:
        work()
    except ServoError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def arrays(
    datatype: str, shape: st.SearchStrategy = SHAPES, *, finite: bool = False
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of a v2 datatype: any values (NaN, infinities, every bit pattern hypothesis
    reaches), or only finite ones."""
    if datatype == "BYTES":
        return hnp.arrays(object, shape, elements=st.binary(max_size=6))
    floats = {"allow_nan": False, "allow_infinity": False} if finite else {}
    if datatype == "BF16":
        # hypothesis has no bfloat16; every bfloat16 is some float32 rounded (within its range
        # when finite: a float32 past bfloat16's largest rounds to infinity).
        bound = {"min_value": -(2.0**126), "max_value": 2.0**126} if finite else {}
        return hnp.arrays(np.float32, shape, elements=st.floats(width=32, **floats, **bound)).map(
            lambda a: a.astype(ml_dtypes.bfloat16)
        )
    dtype = NUMPY_TYPES[datatype]
    if dtype.kind == "f":
        return hnp.arrays(dtype, shape, elements=st.floats(width=dtype.itemsize * 8, **floats))
    return hnp.arrays(dtype, shape)


def text_arrays(shape: st.SearchStrategy = SHAPES) -> st.SearchStrategy[np.ndarray]:
    """BYTES arrays of UTF-8 text, which JSON carries (no lone surrogates: JSON parsers
    refuse them)."""
    text = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
    return hnp.arrays(object, shape, elements=text.map(str.encode))


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    elif expected.dtype == ml_dtypes.bfloat16:
        # numpy's NaN-aware comparison does not know bfloat16; float32 holds it exactly.
        np.testing.assert_array_equal(actual.astype(np.float32), expected.astype(np.float32))
    else:
        np.testing.assert_array_equal(actual, expected)  # NaN matches NaN


def decoded_size(array: np.ndarray) -> int:
    """What decoded_size's rule charges for `array`: elements x itemsize for numbers; for
    strings 41 bytes per element (a reference and a bytes object's header) and their bytes."""
    if array.dtype == object:
        return array.size * STRING_ELEMENT_BYTES + sum(map(len, array.reshape(-1).tolist()))
    return array.size * array.dtype.itemsize


def contents_of(datatype: str, values: Any) -> InferTensorContents:
    """An InferTensorContents holding `values` in `datatype`'s field, as a client's bytes."""
    contents = InferTensorContents()
    getattr(contents, CONTENTS_FIELDS[datatype]).extend(values)
    return InferTensorContents.FromString(contents.SerializeToString())


def json_data(array: np.ndarray) -> list[Any]:
    """`to_json_data` as a JSON parser would hand it back: plain Python values."""
    data = to_json_data("y", array)
    return data.tolist() if isinstance(data, np.ndarray) else data


def framed(*elements: bytes) -> bytes:
    """Raw BYTES: each element after its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# Round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@FAST
@given(data=st.data())
def test_raw_round_trip(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    size = decoded_size(array)
    charged = budget(tensor=size)  # the exact decoded size: not a byte more is charged
    decoded = from_raw("x", datatype, array.shape, to_raw(array), charged)
    assert_same(decoded, array)
    assert charged.used == size
    if datatype != "BYTES":
        assert decoded.tobytes() == array.tobytes()  # bit for bit, NaN payloads included


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_numbers_are_a_read_only_view_of_the_request(datatype: str) -> None:
    raw = to_raw(np.ones((2, 3), NUMPY_TYPES[datatype]))
    for sent in (raw, memoryview(raw)):  # gRPC's bytes; REST's view of its body
        decoded = from_raw("x", datatype, (2, 3), sent, budget())
        assert not decoded.flags.writeable
        assert np.shares_memory(decoded, np.frombuffer(raw, np.uint8))


def test_raw_bytes_elements_are_any_bytes() -> None:
    elements = [b"", b"\xff\xfe\x00", "é".encode(), b"\x00", b"x" * 70_000]
    raw = to_raw(np.array(elements, object))
    assert raw == framed(*elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:8] == b"\x03\x00\x00\x00"
    decoded = from_raw("x", "BYTES", (5,), raw, budget())
    assert decoded.dtype == object
    assert decoded.tolist() == elements
    assert all(type(v) is bytes for v in decoded.tolist())


def test_to_raw_writes_little_endian_row_major_whatever_the_arrays_layout() -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    assert to_raw(big_endian) == np.arange(6, dtype="<i4").tobytes()
    transposed = np.arange(6, dtype="<u2").reshape(3, 2).T
    assert to_raw(transposed) == np.array([[0, 2, 4], [1, 3, 5]], "<u2").tobytes()
    assert to_raw(np.array([True, False])) == b"\x01\x00"
    # Strings: numpy's bytes and text, and objects holding either.
    for strings in (np.array([b"ab", b"c"]), np.array(["ab", "c"]), np.array(["ab", b"c"], object)):
        assert to_raw(strings) == framed(b"ab", b"c")
    assert to_raw(np.array(["é"])) == framed("é".encode())


JSON_DATATYPES = ALL_DATATYPES  # every datatype's values travel as JSON numbers, booleans, text


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
@FAST
@given(data=st.data())
def test_json_round_trip(datatype: str, data: st.DataObject) -> None:
    """to_json_data's values, as a JSON parser hands them back, decode to the same tensor
    (NaN and infinities too: as Python floats; JSON text cannot carry them, see below)."""
    array = data.draw(text_arrays() if datatype == "BYTES" else arrays(datatype))
    size = decoded_size(array)
    charged = budget(tensor=size)
    decoded = from_json("x", datatype, array.shape, json_data(array), charged)
    assert_same(decoded, array)
    assert charged.used == size


@pytest.mark.parametrize("datatype", NUMERIC)
@FAST
@given(data=st.data())
def test_finite_numbers_round_trip_exactly_through_json_text(
    datatype: str, data: st.DataObject
) -> None:
    """What the REST answer writes (orjson, numpy arrays as numbers; FP16 and BF16 as float32,
    in float32's shortest text) and a client sends back decodes to the same bits: a float32's
    shortest text is nearer it than any other float16 or bfloat16 is."""
    array = data.draw(arrays(datatype, finite=True))
    text = orjson.dumps(to_json_data("y", array), option=orjson.OPT_SERIALIZE_NUMPY)
    decoded = from_json("x", datatype, array.shape, orjson.loads(text), budget())
    assert_same(decoded, array)
    assert decoded.tobytes() == array.tobytes()


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
def test_nan_and_infinities_are_null_in_json_text_and_refused_back(datatype: str) -> None:
    array = np.array([1.5, np.nan, np.inf, -np.inf], np.float32).astype(NUMPY_TYPES[datatype])
    text = orjson.dumps(to_json_data("y", array), option=orjson.OPT_SERIALIZE_NUMPY)
    assert text == b"[1.5,null,null,null]"
    with refused(
        f"Input 'x' of datatype {datatype} holds a value of another type "
        "(an integer out of range, or null)"
    ):
        from_json("x", datatype, (4,), orjson.loads(text), budget())


def _nested(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """`flat` nested in row-major order to `shape` (a 0-d shape's one value alone)."""
    holder = np.empty(len(flat), object)
    holder[:] = flat
    return holder.reshape(shape).tolist()


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
@FAST
@given(data=st.data())
def test_nested_json_data_equals_flat(datatype: str, data: st.DataObject) -> None:
    array = data.draw(text_arrays() if datatype == "BYTES" else arrays(datatype))
    flat = json_data(array)
    nested = _nested(flat, array.shape)
    from_flat = from_json("x", datatype, array.shape, flat, budget())
    from_nested = from_json("x", datatype, array.shape, nested, budget())
    assert_same(from_nested, from_flat)
    assert_same(from_nested, array)


def test_json_data_may_nest_to_another_shape_of_the_same_count() -> None:
    """Only the count and the row-major order matter, as Triton reads nested data."""
    data = [[1, 2], [3, 4], [5, 6]]
    assert from_json("x", "INT32", (2, 3), data, budget()).tolist() == [[1, 2, 3], [4, 5, 6]]
    strings = [["a", "b"], ["c", "d"], ["e", "f"]]
    decoded = from_json("x", "BYTES", (6,), strings, budget())
    assert decoded.tolist() == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_json_scalar_data_is_one_element() -> None:
    assert_same(from_json("x", "INT64", (), 7, budget()), np.array(7, np.int64))
    assert_same(from_json("x", "FP32", (1,), 2.5, budget()), np.array([2.5], np.float32))
    assert_same(from_json("x", "BOOL", (1, 1), True, budget()), np.array([[True]]))
    assert from_json("x", "BYTES", (), "é", budget()).tolist() == "é".encode()


def test_json_bytes_are_utf8_of_the_text() -> None:
    decoded = from_json("x", "BYTES", (3,), ["", "é", "\x00"], budget())
    assert decoded.tolist() == [b"", b"\xc3\xa9", b"\x00"]


def test_json_zero_sized_tensors() -> None:
    assert_same(from_json("x", "FP32", (0,), [], budget()), np.empty((0,), np.float32))
    assert_same(from_json("x", "INT8", (2, 0), [[], []], budget()), np.empty((2, 0), np.int8))
    assert_same(from_json("x", "BYTES", (0, 3), [], budget()), np.empty((0, 3), object))
    assert_same(from_json("x", "BOOL", (3, 0), [[], [], []], budget()), np.empty((3, 0), bool))


@pytest.mark.parametrize(
    "data", [[0, 2**63], [2**64 - 1, 1], [[0], [2**63 + 1]]], ids=["halves", "max", "nested"]
)
def test_json_uint64_values_from_both_halves_of_its_range(data: list[Any]) -> None:
    """numpy reads such a list as float64: it was refused as 'a number with a fraction'."""
    decoded = from_json("x", "UINT64", np.shape(data), data, budget())
    assert decoded.dtype == np.dtype("<u8")
    assert decoded.tolist() == data


def test_contents_uint64_values_from_both_halves_of_its_range_whatever_the_runtime() -> None:
    """upb hands numpy its repeated field's buffer; another protobuf runtime hands it Python
    ints, which numpy read as float64, losing their low bits."""
    values = [1, 2**64 - 1, 2**63 + 1]
    for contents in (contents_of("UINT64", values), SimpleNamespace(uint64_contents=values)):
        decoded = from_contents("x", "UINT64", (3,), contents, budget())
        assert decoded.dtype == np.dtype("<u8")
        assert decoded.tolist() == values


def test_every_datatype_has_a_contents_field_but_fp16_and_bf16() -> None:
    assert set(NUMPY_TYPES) - set(CONTENTS_FIELDS) == {"FP16", "BF16"}
    fields = {f.name for f in InferTensorContents.DESCRIPTOR.fields}
    assert set(CONTENTS_FIELDS.values()) == fields


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELDS))
@FAST
@given(data=st.data())
def test_contents_round_trip(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    contents = contents_of(datatype, array.reshape(-1).tolist())
    size = decoded_size(array)
    charged = budget(tensor=size)
    decoded = from_contents("x", datatype, array.shape, contents, charged)
    assert_same(decoded, array)
    assert charged.used == size
    if datatype not in ("BYTES", "FP32", "FP64"):  # a NaN's payload may not survive a float
        assert decoded.tobytes() == array.tobytes()


def test_contents_hold_the_extremes_of_each_integer_type() -> None:
    for name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"):
        info = np.iinfo(NUMPY_TYPES[name])
        decoded = from_contents("x", name, (2,), contents_of(name, [info.min, info.max]), budget())
        assert decoded.dtype == NUMPY_TYPES[name]
        assert decoded.tolist() == [info.min, info.max]


# Refusals of malformed tensors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "shape", "size", "expected"),
    [
        ("FP32", (2, 3), 20, 24),
        ("FP32", (2, 3), 28, 24),
        ("INT64", (), 4, 8),
        ("FP16", (0, 5), 2, 0),
        ("BOOL", (3,), 0, 3),
        ("BF16", (1,), 1, 2),
    ],
)
def test_raw_byte_count_must_be_shape_times_itemsize(
    datatype: str, shape: tuple[int, ...], size: int, expected: int
) -> None:
    with refused(
        f"Input 'x' has shape {list(shape)} and datatype {datatype}: "
        f"{expected} bytes expected, {size} given"
    ):
        from_raw("x", datatype, shape, b"\0" * size, budget())


@pytest.mark.parametrize("raw", [b"\x00\x02", b"\x01\xff", b"\x80\x00"])
def test_raw_bool_bytes_must_be_zero_or_one(raw: bytes) -> None:
    with refused("Input 'x' of datatype BOOL holds a byte other than 0 or 1"):
        from_raw("x", "BOOL", (2,), raw, budget())
    assert from_raw("x", "BOOL", (2,), b"\x01\x00", budget()).tolist() == [True, False]


@pytest.mark.parametrize(
    ("shape", "raw", "message"),
    [
        (
            (2,),
            framed(b"abcde") + b"\x01\x00",
            "Input 'x': its data ends inside element 1's length",
        ),
        (
            (1,),
            b"\x05\x00\x00\x00ab",
            "Input 'x': element 0 is 5 bytes long, past the end of the data",
        ),
        (
            (2,),
            framed(b"a") + b"\xff\xff\xff\xffb",
            "Input 'x': element 1 is 4294967295 bytes long, past the end of the data",
        ),
        (
            (1,),
            framed(b"a") + b"b",
            "Input 'x' has shape [1], 1 element(s), but its data holds 1 byte(s) more",
        ),
        (
            (0,),
            b"\x00",
            "Input 'x' has shape [0], 0 element(s), but its data holds 1 byte(s) more",
        ),
        (
            (2, 2),
            framed(b"", b"", b""),
            "Input 'x' has shape [2, 2], 4 element(s), but its data (too short) holds 3",
        ),
    ],
    ids=["truncated length", "past the end", "huge length", "trailing", "zero-sized", "short"],
)
def test_raw_bytes_framing_is_checked(shape: tuple[int, ...], raw: bytes, message: str) -> None:
    with refused(message):
        from_raw("x", "BYTES", shape, raw, budget())


def test_raw_bytes_count_the_data_cannot_hold_is_refused_before_allocating() -> None:
    """Every element takes at least its 4-byte length: 2^40 elements in 8 bytes are refused
    before anything is made, however large the limits."""
    raw = b"\0" * 8
    with refused(
        "Input 'x' has shape [1099511627776], 1099511627776 element(s), but its data "
        "(too short) holds 2"
    ):
        from_raw("x", "BYTES", (2**40,), raw, UNLIMITED.budget())
    assert peak_bytes(lambda: from_raw("x", "BYTES", (2**40,), raw, UNLIMITED.budget())) < 4096
    # Nor does a count just past what the bytes hold build a list of elements first.
    many = b"\0" * (4 * 2**18)
    assert peak_bytes(lambda: from_raw("x", "BYTES", (2**18 + 1,), many, UNLIMITED.budget())) < (
        4096
    )


@pytest.mark.parametrize("decode", ["raw", "json", "contents"])
def test_negative_dimensions_are_refused(decode: str) -> None:
    with refused("Input 'x' has shape [2, -1]: a dimension is negative"):
        if decode == "raw":
            from_raw("x", "FP32", (2, -1), b"", budget())
        elif decode == "json":
            from_json("x", "FP32", (2, -1), [], budget())
        else:
            from_contents("x", "FP32", (2, -1), InferTensorContents(), budget())
    with refused("Input 's' has shape [-3]: a dimension is negative"):
        from_raw("s", "BYTES", (-3,), b"", budget())


@pytest.mark.parametrize("decode", [from_raw, from_json, from_contents])
@pytest.mark.parametrize("name", ["FLOAT32", "fp32", "STRING", ""])
def test_unknown_datatypes_are_refused(decode: Callable[..., np.ndarray], name: str) -> None:
    with refused(
        f"Input 'x' has datatype '{name}', which is not one of the protocol's: {PROTOCOL_DATATYPES}"
    ):
        decode("x", name, (1,), b"\0\0\0\0" if decode is from_raw else [1.0], budget())


@pytest.mark.parametrize("decode", ["raw", "json", "contents"])
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((0, 2**63), "Input 'x' has shape [0, 9223372036854775808]: too many elements"),
        ((0, 2**40, 2**40), "Input 'x' has shape [0, 1099511627776, 1099511627776]: too many"),
        ((2**62, 2**62), "Input 'x' has shape [4611686018427387904, 4611686018427387904]: too"),
        ((1,) * 65, "Input 'x' has 65 dimensions; at most 64 are supported"),
        ((0,) * 65, "Input 'x' has 65 dimensions; at most 64 are supported"),
    ],
)
def test_shapes_no_array_can_have_are_refused(
    decode: str, shape: tuple[int, ...], message: str
) -> None:
    """numpy refuses them even with a zero dim, so no array of them can be built; they were a
    ValueError (an INTERNAL answer) from the reshape."""
    with pytest.raises(ServoError) as info:
        if decode == "raw":
            from_raw("x", "FP32", shape, b"", UNLIMITED.budget())
        elif decode == "json":
            from_json("x", "FP32", shape, [], UNLIMITED.budget())
        else:
            from_contents("x", "FP32", shape, InferTensorContents(), UNLIMITED.budget())
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message.startswith(message)
    # The largest zero-sized shape numpy holds is fine, and 64 dimensions are.
    limit = (2**63 - 1) // 4
    assert from_raw("x", "FP32", (0, limit), b"", budget()).shape == (0, limit)
    assert from_json("x", "FP32", (1,) * 64, [1.0], budget()).shape == (1,) * 64


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "count", "got"),
    [
        ("INT32", (2, 2), [1, 2, 3], 4, 3),
        ("FP32", (), [1.0, 2.0], 1, 2),
        ("BOOL", (3,), [[True], [False]], 3, 2),
        ("BYTES", (2,), ["a", "b", "c"], 2, 3),
        ("BYTES", (1, 2), [["a"]], 2, 1),
        ("FP64", (0,), [1.0], 0, 1),
    ],
)
def test_json_element_count_must_match_the_shape(
    datatype: str, shape: tuple[int, ...], data: list[Any], count: int, got: int
) -> None:
    with refused(
        f"Input 'x' has shape {list(shape)}, {count} element(s), but its data holds {got}"
    ):
        from_json("x", datatype, shape, data, budget())


@pytest.mark.parametrize(
    "data",
    [
        [[1], [2, 3]],
        [1, [2, 3]],
        [[1, 2], 3, 4],
        [[1, 2], [3, [4]]],
        [[[1], [2]], [[3]]],
        [[], [1, 2, 3]],
        [[1, 2, 3], []],
    ],
    ids=repr,
)
@pytest.mark.parametrize("datatype", ["INT32", "FP32", "BYTES"])
def test_ragged_json_data_is_refused(datatype: str, data: list[Any]) -> None:
    """For every datatype alike (BYTES took any nesting, and counted its leaves)."""
    if datatype == "BYTES":

        def text(value: Any) -> Any:
            return [text(v) for v in value] if isinstance(value, list) else str(value)

        data, what = text(data), "strings"
    else:
        what = "numbers"
    with refused(
        f"Input 'x': its data is not a list of {what} nested to one depth "
        "(its lists differ in length, or it mixes lists and values)"
    ):
        from_json("x", datatype, (3,), data, budget())


def test_json_bytes_nested_past_64_deep_is_refused() -> None:
    data: Any = "a"
    for _ in range(64):
        data = [data]
    assert from_json("x", "BYTES", (1,), data, budget()).tolist() == [b"a"]
    with refused("Input 'x': its data nests lists more than 64 deep"):
        from_json("x", "BYTES", (1,), [data], budget())


@pytest.mark.parametrize(
    ("datatype", "data", "holds"),
    [
        ("FP32", ["1.5"], "a string"),
        ("INT64", [1, "2"], "a string"),
        ("BOOL", ["true"], "a string"),
        ("INT32", [1.5], "a number with a fraction"),
        ("INT32", [1.0, 2.0], "a number with a fraction"),  # JSON's 1.0 is a float
        ("UINT8", [[1], [2.5]], "a number with a fraction"),
        ("INT32", [True, False], "true or false"),
        ("FP32", [False], "true or false"),
        ("BOOL", [1, 0], "an integer"),
        ("FP32", [None], "a value of another type (an integer out of range, or null)"),
        ("INT32", [{}], "a value of another type (an integer out of range, or null)"),
        ("FP64", [-(2**64)], "a value of another type (an integer out of range, or null)"),
    ],
)
def test_json_values_must_be_of_the_datatypes_kind(
    datatype: str, data: list[Any], holds: str
) -> None:
    with refused(f"Input 'x' of datatype {datatype} holds {holds}"):
        from_json("x", datatype, np.shape(data), data, budget())


@pytest.mark.parametrize(
    ("datatype", "data", "value"),
    [
        ("INT8", [127, 128], 128),
        ("INT8", [-129, 0], -129),
        ("UINT8", [255, 256], 256),
        ("UINT8", [-1], -1),
        ("INT16", [2**15], 2**15),
        ("UINT16", [2**16], 2**16),
        ("INT32", [2**31], 2**31),
        ("INT32", [-(2**31) - 1], -(2**31) - 1),
        ("UINT32", [2**32], 2**32),
        ("INT64", [2**63], 2**63),
        ("INT64", [-1, 2**63], 2**63),  # numpy reads these as float64
        ("INT8", [0, 2**63], 2**63),
        ("UINT64", [-1], -1),
        ("UINT64", [2**64], 2**64),  # numpy reads these as objects
        ("UINT64", [1, 2**64], 2**64),
    ],
)
def test_json_integers_out_of_range_are_refused(datatype: str, data: list[int], value: int) -> None:
    info = np.iinfo(NUMPY_TYPES[datatype])
    with refused(
        f"Input 'x' of datatype {datatype} holds {value}, out of its range [{info.min}, {info.max}]"
    ):
        from_json("x", datatype, (len(data),), data, budget())
    edges = from_json("x", datatype, (2,), [info.min, info.max], budget())
    assert edges.tolist() == [info.min, info.max]


@pytest.mark.parametrize(
    ("datatype", "values", "value"),
    [
        ("INT8", [127, 128], 128),
        ("INT8", [-129], -129),
        ("INT16", [-(2**15) - 1], -(2**15) - 1),
        ("UINT8", [256, 0], 256),
        ("UINT16", [2**16], 2**16),
    ],
)
def test_contents_integers_out_of_range_are_refused(
    datatype: str, values: list[int], value: int
) -> None:
    info = np.iinfo(NUMPY_TYPES[datatype])
    with refused(
        f"Input 'x' of datatype {datatype} holds {value}, out of its range [{info.min}, {info.max}]"
    ):
        from_contents("x", datatype, (len(values),), contents_of(datatype, values), budget())


def test_contents_fields_of_32_bits_cannot_hold_out_of_range_int32_or_uint32() -> None:
    """INT32 and UINT32 travel in int32 and uint32 fields: protobuf itself refuses what is
    out of their range, so from_contents never sees it."""
    with pytest.raises(ValueError, match="out of range"):
        InferTensorContents(int_contents=[2**31])
    with pytest.raises(ValueError, match="out of range"):
        InferTensorContents(uint_contents=[2**32])


@pytest.mark.parametrize(
    ("data", "held"),
    [([1], "1"), (["a", None], "None"), ([["a"], [True]], "True"), (["a", 2.5], "2.5")],
)
def test_json_bytes_must_be_strings(data: list[Any], held: str) -> None:
    with refused(f"Input 'x' of datatype BYTES holds {held}, not a string"):
        from_json("x", "BYTES", (len(data),), data, budget())


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_fp16_and_bf16_have_no_contents_field(datatype: str) -> None:
    with refused(
        f"Input 'x': datatype {datatype} has no contents field; send it in raw_input_contents"
    ):
        from_contents("x", datatype, (1,), InferTensorContents(fp32_contents=[1.0]), budget())


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("FP32", "fp32_contents", [1.0, 2.0]),
        ("INT8", "int_contents", [1, 2, 3, 4]),
        ("BYTES", "bytes_contents", [b"a"]),
        ("BOOL", "bool_contents", []),
    ],
)
def test_contents_count_must_match_the_shape(datatype: str, field: str, values: list[Any]) -> None:
    with refused(f"Input 'x' has shape [3], 3 element(s), but its {field} holds {len(values)}"):
        from_contents("x", datatype, (3,), contents_of(datatype, values), budget())


def test_contents_of_another_field_are_not_read() -> None:
    """Only the datatype's own field counts: values in another are no values."""
    contents = InferTensorContents(fp64_contents=[1.0, 2.0])
    with refused("Input 'x' has shape [2], 2 element(s), but its fp32_contents holds 0"):
        from_contents("x", "FP32", (2,), contents, budget())


# Decode limits --------------------------------------------------------------------------------


def _decode(form: str, datatype: str, array: np.ndarray, into: DecodeBudget) -> np.ndarray:
    """`array` decoded from one of the forms a v2 tensor travels in."""
    if form == "raw":
        return from_raw("x", datatype, array.shape, to_raw(array), into)
    if form == "json":
        return from_json("x", datatype, array.shape, json_data(array), into)
    return from_contents(
        "x", datatype, array.shape, contents_of(datatype, array.ravel().tolist()), into
    )


FORMS = ["raw", "json", "contents"]


@pytest.mark.parametrize("form", FORMS)
def test_the_limit_per_tensor_refuses_numbers_over_it(form: str) -> None:
    array = np.arange(1000, dtype=np.float32)
    assert_same(_decode(form, "FP32", array, budget(tensor=4000)), array)
    with refused(
        "Input 'x' of shape [1000] and datatype FP32 would take 4000 bytes decoded, over the "
        "limit of 3999 bytes per tensor (--max_decoded_bytes_per_tensor)"
    ):
        _decode(form, "FP32", array, budget(tensor=3999))


@pytest.mark.parametrize("form", FORMS)
def test_the_limit_per_tensor_counts_strings_as_every_form_does(form: str) -> None:
    """41 bytes per element and their bytes, however they came: raw data's 4-byte lengths are
    not the tensor's (raw was charged 45 per element)."""
    array = np.array([b"ab", b"", b"cde"], object)
    size = 3 * STRING_ELEMENT_BYTES + 5
    assert _decode(form, "BYTES", array, budget(tensor=size)).tolist() == array.tolist()
    with refused(
        f"Input 'x' of shape [3] and datatype BYTES would take {size} bytes decoded, over the "
        f"limit of {size - 1} bytes per tensor (--max_decoded_bytes_per_tensor)"
    ):
        _decode(form, "BYTES", array, budget(tensor=size - 1))


@pytest.mark.parametrize("second", FORMS)
@pytest.mark.parametrize("first", FORMS)
def test_the_limit_per_request_counts_all_its_tensors_in_any_form(first: str, second: str) -> None:
    shared = budget(tensor=1000, request=1500)
    array = np.zeros(200, np.float32)
    _decode(first, "FP32", array, shared)
    assert shared.used == 800
    with refused(
        "Input 'x' of shape [200] and datatype FP32 would take the request's decoded tensors "
        "to 1600 bytes, over the limit of 1500 bytes per request "
        "(--max_decoded_bytes_per_request)"
    ):
        _decode(second, "FP32", array, shared)
    assert shared.used == 800  # a refused tensor takes nothing
    _decode(second, "FP32", np.zeros(175, np.float32), shared)
    assert shared.used == 1500


@pytest.mark.parametrize("form", FORMS)
def test_a_tensor_over_the_limit_is_refused_before_its_array_is_built(form: str) -> None:
    """The data is in the request already; decoding it would build an array (for JSON and
    contents an int64 or float64 copy as well) of 128 KiB: the refusal builds nothing."""
    array = np.arange(16_384, dtype=np.float64)
    if form == "raw":
        raw = to_raw(array)

        def decode() -> object:
            return from_raw("x", "FP64", (16_384,), raw, budget(tensor=2**17 - 1))
    elif form == "json":
        data = array.tolist()

        def decode() -> object:
            return from_json("x", "FP64", (16_384,), data, budget(tensor=2**17 - 1))
    else:
        contents = contents_of("FP64", array.tolist())

        def decode() -> object:
            return from_contents("x", "FP64", (16_384,), contents, budget(tensor=2**17 - 1))

    with refused(
        "Input 'x' of shape [16384] and datatype FP64 would take 131072 bytes decoded, over the "
        "limit of 131071 bytes per tensor (--max_decoded_bytes_per_tensor)"
    ):
        decode()
    assert peak_bytes(decode) < 16_384


def test_strings_over_the_limit_are_refused_before_their_elements_are_made() -> None:
    """2^18 empty strings in 1 MiB of raw data would be 10 MiB of bytes objects."""
    raw = b"\0" * (4 * 2**18)
    size = 2**18 * STRING_ELEMENT_BYTES
    with refused(
        f"Input 'x' of shape [262144] and datatype BYTES would take {size} bytes decoded, over "
        f"the limit of {size - 1} bytes per tensor (--max_decoded_bytes_per_tensor)"
    ):
        from_raw("x", "BYTES", (2**18,), raw, budget(tensor=size - 1))
    assert peak_bytes(lambda: from_raw("x", "BYTES", (2**18,), raw, budget(tensor=size - 1))) < (
        4096
    )


@FAST
@given(
    datatype=st.sampled_from(NUMERIC),
    dims=st.lists(st.integers(1, 2**14), min_size=1, max_size=4),
    limit=st.integers(0, 2**16),
)
def test_any_declared_shape_over_the_limit_is_refused_without_allocating(
    datatype: str, dims: list[int], limit: int
) -> None:
    """A raw or JSON tensor's declared size is charged before its data is looked at: a small
    request declaring a large shape is refused for its size, not read."""
    size = math.prod(dims) * NUMPY_TYPES[datatype].itemsize
    assume(size > limit)
    message = f"would take {size} bytes decoded, over the limit of {limit} bytes per tensor"
    for decode, data in ((from_raw, b"\0" * 8), (from_json, [0])):

        def work(decode: Callable[..., np.ndarray] = decode, data: Any = data) -> object:
            return decode("x", datatype, dims, data, budget(tensor=limit))

        with pytest.raises(ServoError, match=message):
            work()
        assert peak_bytes(work) < 4096


# Model specs, datatypes, platforms, metadata --------------------------------------------------


@pytest.mark.parametrize(
    ("version", "spec"),
    [
        ("", ModelSpec("m")),
        ("3", ModelSpec("m", 3)),
        ("0", ModelSpec("m", 0)),
        ("007", ModelSpec("m", 7)),
        ("0" * 5000 + "12", ModelSpec("m", 12)),
        (str(2**63 - 1), ModelSpec("m", 2**63 - 1)),
        ("stable", ModelSpec("m", label="stable")),
        ("v3", ModelSpec("m", label="v3")),
        ("-1", ModelSpec("m", label="-1")),
        (" 3", ModelSpec("m", label=" 3")),
        ("٣", ModelSpec("m", label="٣")),  # Arabic-Indic digit three: a digit, not ASCII
        ("²", ModelSpec("m", label="²")),
        ("\uff11", ModelSpec("m", label="\uff11")),  # fullwidth digit one
    ],
    ids=lambda value: repr(value)[:24] if isinstance(value, str) else "spec",
)
def test_model_spec(version: str, spec: ModelSpec) -> None:
    assert model_spec("m", version) == spec


@pytest.mark.parametrize(
    "version", [str(2**63), "99999999999999999999", "1" * 5000], ids=lambda v: v[:24]
)
def test_model_spec_refuses_a_version_past_int64(version: str) -> None:
    """Past 4300 digits int() raised ValueError (an INTERNAL answer)."""
    with refused(f"Model version {version} is out of range"):
        model_spec("m", version)


@pytest.mark.parametrize(("dtype", "name"), list(DATATYPES.items()), ids=lambda v: str(v))
def test_datatype_names_every_tensorflow_type_the_protocol_has(dtype: DataType, name: str) -> None:
    assert datatype(dtype) == name
    assert datatype(DataType(dtype + 100)) == name  # a reference type is its base type's


def test_datatype_of_a_type_the_protocol_lacks_is_tensorflows_name() -> None:
    assert datatype(DataType.DT_COMPLEX64) == "DT_COMPLEX64"
    assert datatype(DataType.DT_COMPLEX128_REF) == "DT_COMPLEX128"


@pytest.mark.parametrize("name", ALL_DATATYPES)
def test_datatype_of_each_numpy_type(name: str) -> None:
    assert datatype_of(np.empty(2, NUMPY_TYPES[name])) == name


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        ("S3", "BYTES"),
        ("U2", "BYTES"),
        (np.intc, "INT32"),
        (np.longlong, "INT64"),
        (np.ulonglong, "UINT64"),
        ("=f4", "FP32"),
        (">f4", "FP32"),
        (">i8", "INT64"),
        (">u2", "UINT16"),
        (">f2", "FP16"),
    ],
    ids=str,
)
def test_datatype_of_other_numpy_spellings(dtype: Any, name: str) -> None:
    """Big-endian arrays too, which to_raw and to_json_data write little-endian (they were
    refused as UNIMPLEMENTED)."""
    array = np.arange(3).astype(dtype)
    assert datatype_of(array) == name
    if name != "BYTES":
        little = array.astype(NUMPY_TYPES[name])
        assert to_raw(array) == little.tobytes()
        assert np.asarray(to_json_data("y", array)).tolist() == little.tolist()


@pytest.mark.parametrize("dtype", [np.complex64, "datetime64[D]", np.float128, "V4"], ids=str)
def test_datatype_of_an_array_the_protocol_cannot_carry(dtype: Any) -> None:
    array = np.zeros(1, dtype)
    with refused(f"Output of numpy dtype {array.dtype} has no v2 datatype", Code.UNIMPLEMENTED):
        datatype_of(array)


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        ("tensorflow", "tensorflow_savedmodel"),
        ("onnx", "onnxruntime_onnx"),
        ("tflite", "tensorflow_lite"),
        ("python", "python"),
        ("lookup", "servo_lookup"),
        ("something_else", "something_else"),
    ],
)
def test_platform_name(platform: str, name: str) -> None:
    assert platform_name(platform) == name


def test_model_metadata_of_the_default_signature() -> None:
    signatures = {
        "other": Signature("other", {"z": TensorSpec(DataType.DT_INT8, (1,))}, {}),
        "serving_default": Signature(
            "serving_default",
            {
                "x": TensorSpec(DataType.DT_FLOAT, (-1, 3)),
                "words": TensorSpec(DataType.DT_STRING, None),  # unknown rank
                "flag": TensorSpec(DataType.DT_BOOL_REF, ()),
            },
            {"y": TensorSpec(DataType.DT_BFLOAT16, (-1,))},
        ),
    }
    metadata = model_metadata("m", [2, 1], "onnx", signatures)
    assert metadata == ModelMetadata(
        "m",
        ("2", "1"),
        "onnxruntime_onnx",
        (
            TensorMetadata("x", "FP32", (-1, 3)),
            TensorMetadata("words", "BYTES", (-1,)),
            TensorMetadata("flag", "BOOL", ()),
        ),
        (TensorMetadata("y", "BF16", (-1,)),),
    )
    assert metadata.to_json() == {
        "name": "m",
        "versions": ["2", "1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "words", "datatype": "BYTES", "shape": [-1]},
            {"name": "flag", "datatype": "BOOL", "shape": []},
        ],
        "outputs": [{"name": "y", "datatype": "BF16", "shape": [-1]}],
    }


def test_model_metadata_without_a_default_signature_has_no_tensors() -> None:
    signatures = {"classify": Signature("classify", {"a": TensorSpec(DataType.DT_FLOAT, (1,))}, {})}
    metadata = model_metadata("m", [], "custom", signatures)
    assert metadata == ModelMetadata("m", (), "custom", (), ())
    assert metadata.to_json() == {
        "name": "m",
        "versions": [],
        "platform": "custom",
        "inputs": [],
        "outputs": [],
    }


def test_to_json_data_writes_numbers_flat_and_strings_as_text() -> None:
    data = to_json_data("y", np.arange(6, dtype=">i4").reshape(2, 3))
    assert isinstance(data, np.ndarray)
    assert data.dtype == np.dtype("<i4") and data.shape == (6,)
    assert data.tolist() == [0, 1, 2, 3, 4, 5]
    for half in (np.float16, ml_dtypes.bfloat16):
        widened = to_json_data("y", np.array([[0.5], [1.5]], half))
        assert isinstance(widened, np.ndarray) and widened.dtype == np.float32
        assert widened.tolist() == [0.5, 1.5]
    assert to_json_data("y", np.array([[b"a"], ["é".encode()]], object)) == ["a", "é"]
    assert to_json_data("y", np.array(["é", "b"])) == ["é", "b"]
    assert to_json_data("y", np.array([b"", b"x"])) == ["", "x"]


@pytest.mark.parametrize(
    "array",
    [np.array([b"ok", b"\xff"], object), np.array([b"\xc3"]), np.array([[b"a"], [b"\x80"]])],
    ids=["object", "numpy bytes", "2-d"],
)
def test_to_json_data_refuses_bytes_that_are_not_utf8(array: np.ndarray) -> None:
    with refused(
        "Output 'y' holds bytes that are not UTF-8 text, which JSON cannot carry: ask for it "
        'as binary data (its "parameters": {"binary_data": true})'
    ):
        to_json_data("y", array)


# The infer call -------------------------------------------------------------------------------

SIGNATURE = Signature(
    "serving_default",
    {
        "a": TensorSpec(DataType.DT_FLOAT, (-1,)),
        "b": TensorSpec(DataType.DT_STRING, (-1,)),
        "c": TensorSpec(DataType.DT_INT64_REF, ()),
    },
    {"y": TensorSpec(DataType.DT_FLOAT, (-1,)), "z": TensorSpec(DataType.DT_INT32, ())},
)


def _unreachable(budget: DecodeBudget) -> np.ndarray:
    raise AssertionError("decoded before inputs()")


def infer_input(
    name: str, datatype: str, decode: Callable[[DecodeBudget], np.ndarray] = _unreachable
) -> InferInput:
    return InferInput(name, datatype, (1,), decode)


def call(
    inputs: list[InferInput],
    outputs: tuple[str, ...] = (),
    respond: Callable[[Prediction], Any] = lambda prediction: prediction,
    into: DecodeBudget | None = None,
) -> InferCall[Any]:
    return InferCall(inputs, outputs, "serving_default", into or budget(), respond)


def test_an_input_given_twice_is_refused() -> None:
    with refused("Input 'a' is given twice"):
        call([infer_input("a", "FP32"), infer_input("b", "BYTES"), infer_input("a", "FP32")])


def test_an_output_requested_twice_is_refused() -> None:
    with refused("Output 'y' is requested twice"):
        call([infer_input("a", "FP32")], ("y", "z", "y"))


def test_input_names_are_in_the_requests_order_and_nothing_is_decoded() -> None:
    infer = call(
        [infer_input("c", "INT64"), infer_input("a", "FP32"), infer_input("b", "BYTES")], ("z",)
    )
    assert list(infer.input_names(SIGNATURE)) == ["c", "a", "b"]
    assert infer.output_filter == ("z",)
    assert infer.signature_name == "serving_default"


def test_an_input_the_signature_lacks_is_left_to_the_data_planes_name_check() -> None:
    infer = call([infer_input("a", "FP32"), infer_input("nope", "FP64")])
    assert list(infer.input_names(SIGNATURE)) == ["a", "nope"]


@pytest.mark.parametrize(
    ("name", "given", "wanted"),
    [
        ("a", "FP64", "FP32"),
        ("b", "UINT8", "BYTES"),
        ("c", "INT32", "INT64"),
    ],
)
def test_a_datatype_other_than_the_signatures_is_refused(
    name: str, given: str, wanted: str
) -> None:
    infer = call([infer_input(name, given)])
    with refused(f"Input '{name}' has datatype {given}; the model takes {wanted}"):
        infer.input_names(SIGNATURE)


def test_inputs_are_decoded_by_inputs_alone_within_the_calls_budget() -> None:
    shared = budget(request=4 * 3 + 8)
    seen: list[DecodeBudget] = []

    def decoder(name: str, datatype: str, data: list[Any]) -> Callable[[DecodeBudget], np.ndarray]:
        def decode(into: DecodeBudget) -> np.ndarray:
            seen.append(into)
            return from_json(name, datatype, (len(data),), data, into)

        return decode

    infer = call(
        [
            InferInput("a", "FP32", (3,), decoder("a", "FP32", [1.0, 2.0, 3.0])),
            InferInput("c", "INT64", (1,), decoder("c", "INT64", [7])),
        ],
        into=shared,
    )
    infer.input_names(SIGNATURE)
    assert seen == [] and shared.used == 0
    inputs = infer.inputs()
    assert list(inputs) == ["a", "c"]
    assert_same(inputs["a"], np.array([1.0, 2.0, 3.0], np.float32))
    assert_same(inputs["c"], np.array([7], np.int64))
    assert seen == [shared, shared]
    assert shared.used == 20


def test_a_decoding_error_is_raised_by_inputs() -> None:
    def bad(into: DecodeBudget) -> np.ndarray:
        return from_raw("a", "FP32", (2,), b"\0" * 5, into)

    infer = call([InferInput("a", "FP32", (2,), bad)])
    assert list(infer.input_names(SIGNATURE)) == ["a"]
    with refused("Input 'a' has shape [2] and datatype FP32: 8 bytes expected, 5 given"):
        infer.inputs()


def test_answer_responds_and_output_arrays_are_in_the_requested_order() -> None:
    outputs = {"y": np.zeros(2, np.float32), "z": np.array(3, np.int32)}

    def prediction(names: tuple[str, ...] | None) -> Prediction:
        return Prediction(ServableId("m", 1), SIGNATURE, {}, outputs, names)

    assert [n for n, _ in output_arrays(prediction(("z", "y")))] == ["z", "y"]
    assert [n for n, _ in output_arrays(prediction(None))] == ["y", "z"]
    assert output_arrays(prediction(("z",)))[0][1] is outputs["z"]
    infer = call([infer_input("a", "FP32")], respond=lambda p: ("answer", p.id.version))
    assert infer.answer(prediction(None)) == ("answer", 1)


def test_missing_signature_names_the_parameter() -> None:
    error = call([infer_input("a", "FP32")]).missing_signature("serving_default")
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message == (
        "The model has no signature 'serving_default'; name one of its signatures in the "
        "request's 'signature_name' parameter"
    )
