"""The tensor codec: round trips, agreement with TensorFlow, and the checks on hostile shapes.

TensorFlow is the oracle twice over: `tf.make_tensor_proto` / `tf.make_ndarray` (its Python
codec) and `tf.io.parse_tensor`, which runs the C++ `Tensor::FromProto` that TensorFlow Serving
applies to request tensors.
"""

from __future__ import annotations

import math
import re
import sys
import tracemalloc
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from servo import dtypes
from servo.core.status import Code, ServoError
from servo.decoded_size import (
    DEFAULT_MAX_TENSOR_BYTES,
    STRING_ELEMENT_BYTES,
    DecodeBudget,
    DecodeLimits,
)
from servo.dtypes import DataType
from servo.protos.predict_pb2 import PredictResponse
from servo.protos.tensor_pb2 import TensorProto
from servo.protos.tensor_shape_pb2 import TensorShapeProto
from servo.tensor_codec import from_ndarray, to_ndarray

SUPPORTED = [
    DataType.DT_FLOAT,
    DataType.DT_DOUBLE,
    DataType.DT_INT8,
    DataType.DT_INT16,
    DataType.DT_INT32,
    DataType.DT_INT64,
    DataType.DT_UINT8,
    DataType.DT_UINT16,
    DataType.DT_UINT32,
    DataType.DT_UINT64,
    DataType.DT_BOOL,
    DataType.DT_STRING,
    DataType.DT_COMPLEX64,
    DataType.DT_COMPLEX128,
    DataType.DT_HALF,
    DataType.DT_BFLOAT16,
]
TYPED_FIELD = {
    DataType.DT_FLOAT: "float_val",
    DataType.DT_DOUBLE: "double_val",
    DataType.DT_INT8: "int_val",
    DataType.DT_INT16: "int_val",
    DataType.DT_INT32: "int_val",
    DataType.DT_INT64: "int64_val",
    DataType.DT_UINT8: "int_val",
    DataType.DT_UINT16: "int_val",
    DataType.DT_UINT32: "uint32_val",
    DataType.DT_UINT64: "uint64_val",
    DataType.DT_BOOL: "bool_val",
    DataType.DT_STRING: "string_val",
    DataType.DT_COMPLEX64: "scomplex_val",
    DataType.DT_COMPLEX128: "dcomplex_val",
    DataType.DT_HALF: "half_val",
    DataType.DT_BFLOAT16: "half_val",
}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
FAST = settings(max_examples=30, deadline=None)


def shape_to_proto(
    shape: tuple[int, ...], *, into: TensorShapeProto | None = None
) -> TensorShapeProto:
    """`into` (or a new TensorShapeProto) holding `shape`."""
    proto = TensorShapeProto() if into is None else into
    proto.Clear()
    for size in shape:
        proto.dim.add().size = size
    return proto


def arrays(dtype: DataType, shape: st.SearchStrategy = SHAPES) -> st.SearchStrategy[np.ndarray]:
    if dtype == DataType.DT_STRING:
        return hnp.arrays(object, shape, elements=st.binary(max_size=6))
    if dtype == DataType.DT_BFLOAT16:
        # hypothesis has no bfloat16; every bfloat16 is some float32 rounded.
        return hnp.arrays(np.float32, shape).map(lambda a: a.astype(ml_dtypes.bfloat16))
    return hnp.arrays(dtypes.to_numpy(dtype), shape)


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


def reparse(proto: TensorProto) -> TensorProto:
    return TensorProto.FromString(proto.SerializeToString())


def typed_proto(dtype: DataType, dims: tuple[int, ...], values: np.ndarray) -> TensorProto:
    """A proto whose typed field holds `values` (any count) under the shape `dims`."""
    proto = from_ndarray(values, dtype, use_tensor_content=False)
    del proto.tensor_shape.dim[:]
    shape_to_proto(dims, into=proto.tensor_shape)
    return proto


class raises_servo:
    """`with raises_servo(code, match):` asserts a ServoError of that code and message."""

    def __init__(self, code: Code, match: str) -> None:
        self.code = code
        self.raises = pytest.raises(ServoError, match=match or None)

    def __enter__(self) -> pytest.ExceptionInfo[ServoError]:
        return self.raises.__enter__()

    def __exit__(self, *exc_info: object) -> bool:
        swallowed = self.raises.__exit__(*exc_info)
        assert self.raises.excinfo is not None
        assert self.raises.excinfo.value.code is self.code, self.raises.excinfo.value
        return swallowed


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def tf_tensor_pb2(tf):
    from tensorflow.core.framework import tensor_pb2

    return tensor_pb2


def parse_in_cpp(tf, proto: TensorProto) -> np.ndarray:
    """What TensorFlow's C++ Tensor::FromProto makes of the bytes of `proto`."""
    value = tf.io.parse_tensor(proto.SerializeToString(), tf.as_dtype(proto.dtype)).numpy()
    # Scalars come back as numpy scalars, or as plain bytes for strings.
    return np.asarray(value, dtype=object if proto.dtype == DataType.DT_STRING else None)


# Round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_tensor_content", [True, False], ids=["content", "typed"])
@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: d.name)
@FAST
@given(data=st.data())
def test_round_trip(dtype: DataType, use_tensor_content: bool, data: st.DataObject) -> None:
    array = data.draw(arrays(dtype))
    proto = reparse(from_ndarray(array, use_tensor_content=use_tensor_content))
    assert proto.dtype == dtype
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    numeric_content = use_tensor_content and dtype != DataType.DT_STRING
    assert bool(proto.tensor_content) == (numeric_content and array.size > 0)
    if numeric_content:
        assert not len(getattr(proto, TYPED_FIELD[dtype]))
    decoded = to_ndarray(proto)
    assert_same(decoded, array)
    if numeric_content:
        assert decoded.tobytes() == array.tobytes()  # bit for bit, NaN payloads included


@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: d.name)
def test_scalars_and_zero_size(dtype: DataType) -> None:
    numpy_dtype = dtypes.to_numpy(dtype)
    for array in (
        np.zeros((), numpy_dtype) if dtype != DataType.DT_STRING else np.array(b"s", object),
        np.empty((0,), numpy_dtype),
        np.empty((3, 0, 2), numpy_dtype),
    ):
        for use_tensor_content in (True, False):
            decoded = to_ndarray(
                reparse(from_ndarray(array, use_tensor_content=use_tensor_content))
            )
            assert_same(decoded, array)


# Agreement with TensorFlow --------------------------------------------------------------------


def _tf_input(array: np.ndarray):
    # tf.make_tensor_proto cannot take a 0-d object array, but takes its one value.
    return array.item() if array.dtype == object and array.ndim == 0 else array


@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: d.name)
@FAST
@given(data=st.data())
def test_decodes_what_tensorflow_encodes(tf, dtype: DataType, data: st.DataObject) -> None:
    array = data.draw(arrays(dtype))
    theirs = tf.make_tensor_proto(_tf_input(array), dtype=tf.as_dtype(int(dtype)))
    decoded = to_ndarray(TensorProto.FromString(theirs.SerializeToString()))
    assert_same(decoded, tf.make_ndarray(theirs))
    assert_same(decoded, array)


@pytest.mark.parametrize("use_tensor_content", [True, False], ids=["content", "typed"])
@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: d.name)
@FAST
@given(data=st.data())
def test_tensorflow_decodes_what_servo_encodes(
    tf, tf_tensor_pb2, dtype: DataType, use_tensor_content: bool, data: st.DataObject
) -> None:
    array = data.draw(arrays(dtype))
    ours = from_ndarray(array, use_tensor_content=use_tensor_content)
    theirs = tf_tensor_pb2.TensorProto.FromString(ours.SerializeToString())
    assert_same(tf.make_ndarray(theirs), array)
    assert_same(parse_in_cpp(tf, ours), array)


@pytest.mark.parametrize("dtype", SUPPORTED, ids=lambda d: d.name)
@FAST
@given(data=st.data())
def test_typed_field_fill_rule_matches_tensorflow_cpp(
    tf, tf_tensor_pb2, dtype: DataType, data: st.DataObject
) -> None:
    # Any number of values against any shape: none -> zeros, too few -> the last one repeats,
    # too many -> the rest is ignored, as TensorFlow Serving's C++ decoding does.
    dims = data.draw(SHAPES)
    count = int(np.prod(dims))
    values = data.draw(arrays(dtype, st.tuples(st.integers(0, count + 2))))
    proto = typed_proto(dtype, dims, values)
    decoded = to_ndarray(reparse(proto))
    assert_same(decoded, parse_in_cpp(tf, proto))
    # tf.make_ndarray refuses surplus values, and pads missing strings with str "", not b"".
    if len(values) <= count and not (dtype == DataType.DT_STRING and not len(values)):
        theirs = tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())
        assert_same(decoded, tf.make_ndarray(theirs))


def test_one_value_fills_the_shape(tf) -> None:
    theirs = tf.make_tensor_proto(7, dtype=tf.int64, shape=[2, 3])
    assert list(theirs.int64_val) == [7]
    decoded = to_ndarray(TensorProto.FromString(theirs.SerializeToString()))
    assert_same(decoded, np.full((2, 3), 7, np.int64))
    strings = typed_proto(DataType.DT_STRING, (2, 2), np.array([b"x"], object))
    assert_same(to_ndarray(strings), np.full((2, 2), b"x", object))
    half = typed_proto(DataType.DT_HALF, (3,), np.array([1.5], np.float16))
    assert_same(to_ndarray(half), np.full(3, 1.5, np.float16))


def test_empty_typed_field_means_zeros() -> None:
    proto = TensorProto(dtype=DataType.DT_FLOAT)
    shape_to_proto((2, 2), into=proto.tensor_shape)
    assert_same(to_ndarray(proto), np.zeros((2, 2), np.float32))
    proto.dtype = DataType.DT_STRING
    assert_same(to_ndarray(proto), np.full((2, 2), b"", object))


def test_narrow_integers_wrap_like_tensorflow(tf) -> None:
    proto = TensorProto(dtype=DataType.DT_INT8)
    shape_to_proto((3,), into=proto.tensor_shape)
    proto.int_val.extend([300, -129, 5])
    assert_same(to_ndarray(proto), parse_in_cpp(tf, proto))


def _string_content(items: list[bytes]) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return b"".join(varint(len(s)) for s in items) + b"".join(items)


@FAST
@given(items=st.lists(st.binary(max_size=200), max_size=6))
def test_string_tensor_content_matches_tensorflow_cpp(tf, items: list[bytes]) -> None:
    proto = TensorProto(dtype=DataType.DT_STRING, tensor_content=_string_content(items))
    shape_to_proto((len(items),), into=proto.tensor_shape)
    decoded = to_ndarray(proto)
    assert decoded.tolist() == items
    if items and proto.tensor_content:
        assert_same(decoded, parse_in_cpp(tf, proto))


@FAST
@given(items=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_strings_as_content_are_tensorflows_encoding(tf, items: list[bytes]) -> None:
    proto = from_ndarray(np.array(items, dtype=object), strings_as_content=True)
    assert not proto.string_val
    assert proto.tensor_content == _string_content(items)
    assert_same(to_ndarray(proto), parse_in_cpp(tf, proto))


@pytest.mark.parametrize("content", [b"\x02\x00\x03abxy", b"\x02\x00\x03abxyzz", b"\xff\xff"])
def test_malformed_string_tensor_content_is_invalid(content: bytes) -> None:
    proto = TensorProto(dtype=DataType.DT_STRING, tensor_content=content)
    shape_to_proto((3,), into=proto.tensor_shape)
    with raises_servo(Code.INVALID_ARGUMENT, "tensor_content"):
        to_ndarray(proto)


# Hostile and malformed shapes -----------------------------------------------------------------


def _float_proto(dims: tuple[int, ...], content: bytes = b"") -> TensorProto:
    proto = TensorProto(dtype=DataType.DT_FLOAT, tensor_content=content)
    shape_to_proto(dims, into=proto.tensor_shape)
    return proto


def test_huge_shape_with_small_content_is_refused_without_allocating() -> None:
    proto = _float_proto((2**40,), b"\0\0\0\0")
    tracemalloc.start()
    try:
        with raises_servo(
            Code.INVALID_ARGUMENT, "1 values, but the requested shape has 1099511627776"
        ):
            to_ndarray(proto)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("values", [[], [1.0]], ids=["no values", "one value"])
def test_huge_shape_with_typed_values_is_refused_without_allocating(values: list[float]) -> None:
    proto = _float_proto((2**20, 2**20))
    proto.float_val.extend(values)
    tracemalloc.start()
    try:
        with raises_servo(Code.INVALID_ARGUMENT, "bytes per tensor"):
            to_ndarray(proto)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# Decoded size limits (servo.decoded_size) ---------------------------------------------


def budget(tensor: int, request: int = 2**62) -> DecodeBudget:
    return DecodeLimits(max_tensor_bytes=tensor, max_request_bytes=request).budget()


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


def test_the_35_byte_request_of_issue_11_is_refused_without_allocating() -> None:
    """DT_FLOAT, shape [67108864], one float_val: 256 MiB by TFS's fill rule, over the default
    limit per tensor. (servo's main allocated it: 2 GiB was its only cap.)"""
    proto = _float_proto((67108864,))
    proto.float_val.append(1.0)
    assert len(proto.SerializeToString()) < 20
    with raises_servo(
        Code.INVALID_ARGUMENT,
        re.escape(
            "Tensor of shape [67108864] and type DT_FLOAT would take 268435456 bytes decoded, "
            f"over the limit of {DEFAULT_MAX_TENSOR_BYTES} bytes per tensor "
            "(--max_decoded_bytes_per_tensor)"
        ),
    ):
        to_ndarray(proto)
    assert peak_bytes(lambda: to_ndarray(proto)) < 1 << 16


def test_the_limit_per_tensor_counts_every_form() -> None:
    fill = _float_proto((1000,))
    fill.float_val.append(1.0)
    listed = _float_proto((1000,))
    listed.float_val.extend([1.0] * 1000)
    content = _float_proto((1000,), b"\0" * 4000)
    for proto in (fill, listed, content, _float_proto((1000,))):
        assert to_ndarray(proto, budget(4000)).shape == (1000,)
        with raises_servo(
            Code.INVALID_ARGUMENT, "would take 4000 bytes decoded, over the limit of 3999"
        ):
            to_ndarray(proto, budget(3999))


def test_strings_count_a_reference_a_header_and_their_bytes_per_element() -> None:
    """A filled string is counted once for each element it fills, each element 41 bytes
    beside its contents (its reference and a bytes object's header)."""
    proto = TensorProto(dtype=DataType.DT_STRING)
    shape_to_proto((1000,), into=proto.tensor_shape)
    proto.string_val.append(b"x" * 100)
    size = 1000 * (STRING_ELEMENT_BYTES + 100)
    assert 8 + sys.getsizeof(b"") == STRING_ELEMENT_BYTES
    assert to_ndarray(proto, budget(size)).tolist() == [b"x" * 100] * 1000
    with raises_servo(Code.INVALID_ARGUMENT, f"DT_STRING would take {size} bytes decoded"):
        to_ndarray(proto, budget(size - 1))
    huge = TensorProto(dtype=DataType.DT_STRING)
    shape_to_proto((2**26,), into=huge.tensor_shape)
    huge.string_val.append(b"x" * 1000)
    assert peak_bytes(lambda: to_ndarray(huge)) < 1 << 16
    packed = from_ndarray(np.array([b"ab", b"", b"cde"], object), strings_as_content=True)
    packed_size = 3 * STRING_ELEMENT_BYTES + 5
    assert to_ndarray(packed, budget(packed_size)).tolist() == [b"ab", b"", b"cde"]
    with raises_servo(Code.INVALID_ARGUMENT, f"would take {packed_size} bytes decoded"):
        to_ndarray(packed, budget(packed_size - 1))


@pytest.mark.parametrize("content", [False, True])
def test_what_strings_are_counted_is_what_their_decoded_tensor_holds(content: bool) -> None:
    """Many short strings cost far more than their bytes: the count must not fall short of
    the memory their tensor holds (it was a sixth of it when only references and bytes
    counted)."""
    items = [b"%d" % i for i in range(20_000)]
    proto = from_ndarray(np.array(items, object), strings_as_content=content)
    counted = 20_000 * STRING_ELEMENT_BYTES + sum(map(len, items))
    tracemalloc.start()
    try:
        decoded = to_ndarray(proto, budget(counted))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert decoded.tolist() == items
    assert counted * 0.9 <= held <= counted * 1.1, (held, counted)


def test_the_limit_per_request_counts_all_its_tensors() -> None:
    shared = budget(tensor=1000, request=1500)
    proto = _float_proto((200,), b"\0" * 800)
    to_ndarray(proto, shared)
    assert shared.used == 800
    with raises_servo(
        Code.INVALID_ARGUMENT,
        re.escape(
            "Tensor of shape [200] and type DT_FLOAT would take the request's decoded tensors to "
            "1600 bytes, over the limit of 1500 bytes per request "
            "(--max_decoded_bytes_per_request)"
        ),
    ):
        to_ndarray(proto, shared)
    assert shared.used == 800  # a refused tensor takes nothing


LIMITED = [t for t in SUPPORTED if t != DataType.DT_STRING]


@FAST
@given(
    dtype=st.sampled_from(LIMITED),
    dims=st.lists(st.integers(1, 2**14), min_size=1, max_size=4),
    values=st.integers(0, 1),
    limit=st.integers(0, 2**16),
)
def test_any_declared_shape_over_the_limit_is_refused_without_allocating(
    dtype: DataType, dims: list[int], values: int, limit: int
) -> None:
    itemsize = dtypes.to_numpy(dtype).itemsize
    size = math.prod(dims) * itemsize
    assume(size > limit)
    proto = typed_proto(dtype, tuple(dims), np.zeros(values, dtypes.to_numpy(dtype)))
    with raises_servo(Code.INVALID_ARGUMENT, f"would take {size} bytes decoded, over the limit"):
        to_ndarray(proto, budget(limit))
    assert peak_bytes(lambda: to_ndarray(proto, budget(limit))) < 1 << 16


@FAST
@given(dtype=st.sampled_from(SUPPORTED), data=st.data())
def test_any_tensor_under_the_limit_decodes_as_without_one(
    dtype: DataType, data: st.DataObject
) -> None:
    array = data.draw(arrays(dtype))
    proto = from_ndarray(array, dtype, use_tensor_content=data.draw(st.booleans()))
    unlimited = to_ndarray(proto, budget(2**62))
    if dtype == DataType.DT_STRING:
        size = array.size * STRING_ELEMENT_BYTES + sum(map(len, array.ravel().tolist()))
    else:
        size = array.size * dtypes.to_numpy(dtype).itemsize
    assert_same(to_ndarray(proto, budget(size)), unlimited)
    assert_same(unlimited, array)
    if size:
        with raises_servo(Code.INVALID_ARGUMENT, "bytes per tensor"):
            to_ndarray(proto, budget(size - 1))


def test_element_count_overflow_is_invalid() -> None:
    with raises_servo(Code.INVALID_ARGUMENT, "too many elements"):
        to_ndarray(_float_proto((2**62, 2**62), b"\0" * 4))
    with raises_servo(Code.INVALID_ARGUMENT, "too many elements"):
        to_ndarray(_float_proto((0, 2**62)))


def test_zero_size_with_large_dims_is_fine() -> None:
    assert to_ndarray(_float_proto((0, 2**40))).shape == (0, 2**40)


@pytest.mark.parametrize(
    ("dims", "size", "message"),
    [
        ((4,), 12, "Input to reshape is a tensor with 3 values, but the requested shape has 4"),
        ((2, 2), 20, "Input to reshape is a tensor with 5 values, but the requested shape has 4"),
        ((4,), 6, "not a whole number of DT_FLOAT elements"),
        ((0,), 4, "Input to reshape is a tensor with 1 values, but the requested shape has 0"),
        ((), 8, "Input to reshape is a tensor with 2 values, but the requested shape has 1"),
    ],
)
def test_content_length_must_match_shape(dims: tuple[int, ...], size: int, message: str) -> None:
    with raises_servo(Code.INVALID_ARGUMENT, message):
        to_ndarray(_float_proto(dims, b"\0" * size))


def test_negative_dimension_is_invalid() -> None:
    with raises_servo(Code.INVALID_ARGUMENT, "negative dimension"):
        to_ndarray(_float_proto((2, -1), b"\0" * 8))


def test_unknown_rank_is_invalid() -> None:
    proto = TensorProto(dtype=DataType.DT_FLOAT)
    proto.tensor_shape.unknown_rank = True
    with raises_servo(Code.INVALID_ARGUMENT, "unknown_rank"):
        to_ndarray(proto)


def test_too_many_dimensions_is_invalid() -> None:
    with raises_servo(Code.INVALID_ARGUMENT, "dimensions"):
        to_ndarray(_float_proto((1,) * 65, b"\0" * 4))


def test_bool_content_must_be_zero_or_one(tf) -> None:
    proto = TensorProto(dtype=DataType.DT_BOOL, tensor_content=b"\x00\x05")
    shape_to_proto((2,), into=proto.tensor_shape)
    with raises_servo(Code.INVALID_ARGUMENT, "0 or 1"):
        to_ndarray(proto)
    with pytest.raises(tf.errors.InvalidArgumentError):
        parse_in_cpp(tf, proto)


# Dtypes servo does not hold -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (0, r"Tensor has no dtype \(DT_INVALID\)"),
        (999, "Tensor has an unknown dtype number 999"),  # not a TensorFlow type at all
        # TensorFlow types no servo platform takes as an input: a request that no signature
        # can accept, so the client's mistake (it was UNIMPLEMENTED, a server error).
        (11, "Tensor of type DT_QINT8 cannot be a model input in servo"),
        (12, "Tensor of type DT_QUINT8 cannot"),
        (13, "Tensor of type DT_QINT32 cannot"),
        (15, "Tensor of type DT_QINT16 cannot"),
        (16, "Tensor of type DT_QUINT16 cannot"),
        (20, "Tensor of type DT_RESOURCE cannot"),
        (21, "Tensor of type DT_VARIANT cannot"),
        (24, "Tensor of type DT_FLOAT8_E5M2 cannot"),
        (29, "Tensor of type DT_INT4 cannot"),
    ],
)
def test_unsupported_dtypes_are_refused(number: int, message: str) -> None:
    proto = TensorProto(dtype=number, tensor_content=b"\0\0\0\0")  # type: ignore[arg-type]
    shape_to_proto((1,), into=proto.tensor_shape)
    with raises_servo(Code.INVALID_ARGUMENT, message):
        to_ndarray(proto)


def test_encoding_unsupported_types_is_unimplemented() -> None:
    with raises_servo(Code.UNIMPLEMENTED, ""):
        from_ndarray(np.array(["2020-01-01"], "datetime64[D]"))
    with raises_servo(Code.UNIMPLEMENTED, "DT_RESOURCE"):
        from_ndarray(np.zeros(2), DataType.DT_RESOURCE)


# Encoding details -----------------------------------------------------------------------------


def test_strings_encode_from_bytes_unicode_and_objects() -> None:
    expected = [b"ab", "é".encode()]
    for array in (
        np.array([b"ab", "é".encode()]),  # 'S'
        np.array(["ab", "é"]),  # 'U'
        np.array([b"ab", "é"], object),  # mixed objects
        ["ab", "é"],  # a list
    ):
        proto = from_ndarray(array)
        assert proto.dtype == DataType.DT_STRING
        assert list(proto.string_val) == expected
    assert to_ndarray(from_ndarray(np.array(b"x\x00y", object))).item() == b"x\x00y"


def test_strings_refuse_other_objects() -> None:
    with raises_servo(Code.INVALID_ARGUMENT, "int"):
        from_ndarray(np.array([b"a", 3], object))
    with raises_servo(Code.INVALID_ARGUMENT, "DT_STRING"):
        from_ndarray(np.arange(3), DataType.DT_STRING)


def test_explicit_dtype_converts() -> None:
    proto = from_ndarray([1, 2], DataType.DT_FLOAT)
    assert proto.dtype == DataType.DT_FLOAT
    assert_same(to_ndarray(proto), np.array([1, 2], np.float32))
    assert from_ndarray(3.5).dtype == DataType.DT_DOUBLE
    with raises_servo(Code.INVALID_ARGUMENT, "DT_INT32"):
        from_ndarray(["x"], DataType.DT_INT32)


def test_fills_a_map_entry_in_place() -> None:
    response = PredictResponse()
    response.outputs["y"].float_val.append(9.0)  # stale content is replaced, not merged
    from_ndarray(np.array([1.0, 2.0], np.float32), into=response.outputs["y"])
    assert not response.outputs["y"].float_val
    assert_same(to_ndarray(response.outputs["y"]), np.array([1.0, 2.0], np.float32))


def test_accepts_tensorflow_message_class(tf) -> None:
    theirs = tf.make_tensor_proto(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert_same(to_ndarray(theirs), np.arange(6, dtype=np.int32).reshape(2, 3))
