"""TensorProto <-> numpy conversion, with TensorFlow's decoding rules and checks done up front.

Decoding follows what TensorFlow Serving does with a request tensor (C++ `Tensor::FromProto`),
since that is what clients meet:

* a non-empty `tensor_content` holds the elements as raw little-endian bytes and wins over the
  typed repeated fields; its length must be exactly what the shape needs;
* otherwise the typed field of the dtype is read: no values means zeros (empty strings), fewer
  values than the shape needs are padded with the last one (so one value fills the whole
  shape), and values beyond the shape's size are ignored;
* a shape must have a known rank and no negative dimension.

Every size is checked against the shape before anything is allocated, and what the tensor
takes once decoded against the request's `DecodeBudget` (servo.decoded_size), so a small
request cannot make the server allocate a huge array. Encoding uses `tensor_content` for numbers
(one memory copy) and `string_val` for strings, like `tf.make_tensor_proto`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servo import dtypes
from servo.core.status import Code, ServoError
from servo.decoded_size import STRING_ELEMENT_BYTES, DecodeBudget
from servo.dtypes import DataType
from servo.protos import types_pb2
from servo.protos.tensor_pb2 import TensorProto
from servo.protos.tensor_shape_pb2 import TensorShapeProto

# numpy cannot hold more dimensions than this (TensorFlow allows 254).
_MAX_RANK = 64
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Codec:
    """How one dtype travels: its numpy type, byte layout and typed repeated field."""

    dtype: DataType
    array: np.dtype  # what servo hands out
    wire: np.dtype  # element layout inside tensor_content (little-endian)
    field: str  # the typed repeated field
    field_array: np.dtype  # the repeated field's element type, as numpy reads it

    @property
    def name(self) -> str:
        return self.dtype.name


def _codec(dtype: DataType, field: str, field_array: Any) -> _Codec:
    array = dtypes.to_numpy(dtype)
    return _Codec(dtype, array, array.newbyteorder("<"), field, np.dtype(field_array))


_CODECS: dict[int, _Codec] = {
    c.dtype: c
    for c in (
        _codec(DataType.DT_FLOAT, "float_val", np.float32),
        _codec(DataType.DT_DOUBLE, "double_val", np.float64),
        _codec(DataType.DT_INT32, "int_val", np.int32),
        _codec(DataType.DT_UINT8, "int_val", np.int32),
        _codec(DataType.DT_INT16, "int_val", np.int32),
        _codec(DataType.DT_INT8, "int_val", np.int32),
        _codec(DataType.DT_UINT16, "int_val", np.int32),
        _codec(DataType.DT_INT64, "int64_val", np.int64),
        _codec(DataType.DT_UINT32, "uint32_val", np.uint32),
        _codec(DataType.DT_UINT64, "uint64_val", np.uint64),
        _codec(DataType.DT_BOOL, "bool_val", np.bool_),
        # Complex numbers travel as (real, imaginary) pairs of their component type.
        _codec(DataType.DT_COMPLEX64, "scomplex_val", np.float32),
        _codec(DataType.DT_COMPLEX128, "dcomplex_val", np.float64),
        # Both 16-bit floats travel as their bit patterns, widened to int32.
        _codec(DataType.DT_HALF, "half_val", np.int32),
        _codec(DataType.DT_BFLOAT16, "half_val", np.int32),
        _codec(DataType.DT_STRING, "string_val", object),
    )
}
_STRING = _CODECS[DataType.DT_STRING]
_BOOL = _CODECS[DataType.DT_BOOL]
_HALF_TYPES = (DataType.DT_HALF, DataType.DT_BFLOAT16)
_COMPLEX_TYPES = (DataType.DT_COMPLEX64, DataType.DT_COMPLEX128)
_LITTLE_ENDIAN = sys.byteorder == "little"


def _invalid(message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, message)


def _codec_for(dtype: int, *, decoding: bool = False) -> _Codec:
    codec = _CODECS.get(dtype)
    if codec is not None:
        return codec
    if dtype == DataType.DT_INVALID:
        raise _invalid("Tensor has no dtype (DT_INVALID)")
    try:
        name = types_pb2.DataType.Name(dtype)
    except ValueError:
        raise _invalid(f"Tensor has an unknown dtype number {dtype}") from None
    # A real TensorFlow type that servo does not hold (quantized, *_REF, resource, variant,
    # float8...). In a request no signature can take it: the client's mistake, as TFS answers
    # a dtype its signature does not have. In an answer it is servo's limit.
    if decoding:
        raise _invalid(
            f"Tensor of type {name} cannot be a model input in servo (no platform takes that "
            "type); send the dtype the signature declares"
        )
    raise ServoError(Code.UNIMPLEMENTED, f"Tensors of type {name} are not supported")


def _checked_shape(shape: TensorShapeProto, itemsize: int) -> tuple[tuple[int, ...], int]:
    """The dims and element count of a value's shape, refusing what no real tensor can have."""
    if shape.unknown_rank:
        raise _invalid("A tensor's shape must have a known rank (unknown_rank is set)")
    dims = tuple(d.size for d in shape.dim)
    if not dims:
        return dims, 1
    if len(dims) > _MAX_RANK:
        raise _invalid(f"Tensor has {len(dims)} dimensions; at most {_MAX_RANK} are supported")
    if min(dims) < 0:
        raise _invalid(f"Tensor shape {list(dims)} has a negative dimension")
    # numpy refuses shapes whose nonzero dims multiply past its address space, even when another
    # dim is 0; products are Python ints, so nothing here can overflow.
    bound = math.prod(d or 1 for d in dims)
    if bound > _INT64_MAX // itemsize:
        raise _invalid(f"Tensor shape {list(dims)} has too many elements")
    return dims, (bound if 0 not in dims else 0)


def to_ndarray(proto: TensorProto, budget: DecodeBudget | None = None) -> np.ndarray:
    """The numpy array a request's TensorProto stands for.

    Works with any message shaped like TensorProto (servo's or TensorFlow's class). Arrays
    decoded from `tensor_content` are read-only views of the message's bytes (no copy). Strings
    come back as an object array of `bytes`. The tensor's decoded size is taken from `budget`
    (the request's; by default one with the default limits) before anything is allocated.
    Raises ServoError: INVALID_ARGUMENT for a malformed tensor or one over a limit,
    UNIMPLEMENTED for a dtype servo does not support.
    """
    codec = _codec_for(proto.dtype, decoding=True)
    dims, count = _checked_shape(proto.tensor_shape, codec.array.itemsize)
    if budget is None:
        budget = DecodeBudget()
    content = proto.tensor_content
    if content:
        if codec is _STRING:
            return _decode_string_content(content, dims, count, budget).reshape(dims)
        expected = count * codec.wire.itemsize
        if len(content) != expected:
            raise _content_size_error(len(content), codec, dims, count)
        budget.take(count * codec.array.itemsize, lambda: _describe(codec, dims))
        flat = np.frombuffer(content, dtype=codec.wire)
        if codec is _BOOL:
            # TensorFlow refuses other bytes; numpy would keep them as odd, unequal "trues".
            if count and flat.view(np.uint8).max() > 1:
                raise _invalid("tensor_content of a DT_BOOL tensor holds a byte other than 0 or 1")
        elif not _LITTLE_ENDIAN:
            flat = flat.astype(codec.array)
        return flat.reshape(dims)
    return _decode_field(proto, codec, dims, count, budget)


def _describe(codec: _Codec, dims: tuple[int, ...]) -> str:
    return f"Tensor of shape {list(dims)} and type {codec.name}"


def _content_size_error(size: int, codec: _Codec, dims: tuple[int, ...], count: int) -> ServoError:
    itemsize = codec.wire.itemsize
    if size % itemsize:
        return _invalid(
            f"tensor_content has {size} bytes, not a whole number of {codec.name} elements "
            f"({itemsize} bytes each); shape {list(dims)} needs {count * itemsize} bytes"
        )
    # The wording TensorFlow uses when a flat buffer does not fit a shape.
    return _invalid(
        f"Input to reshape is a tensor with {size // itemsize} values, "
        f"but the requested shape has {count}"
    )


def _decode_field(
    proto: TensorProto, codec: _Codec, dims: tuple[int, ...], count: int, budget: DecodeBudget
) -> np.ndarray:
    field = getattr(proto, codec.field)
    present = len(field)
    if codec is _STRING:
        return _decode_strings(field, present, dims, count, budget).reshape(dims)
    budget.take(count * codec.array.itemsize, lambda: _describe(codec, dims))
    if codec.dtype in _COMPLEX_TYPES:
        present //= 2  # a trailing lone real part is not an element
    # The protobuf container converts to numpy in C, far faster than iterating in Python.
    values = np.asarray(field, dtype=codec.field_array)
    if codec.dtype in _COMPLEX_TYPES:
        values = values[: 2 * min(present, count)].view(codec.array)
    else:
        values = values[:count]
        if codec.dtype in _HALF_TYPES:
            values = values.astype(np.uint16).view(codec.array)
        elif codec.field_array != codec.array:
            # Narrow integers wrap like the C++ cast TensorFlow does.
            values = values.astype(codec.array)
    if present >= count:
        return values.reshape(dims)
    if present == 0:
        return np.zeros(dims, dtype=codec.array)
    flat = np.empty(count, dtype=codec.array)
    flat[:present] = values
    flat[present:] = values[-1]
    return flat.reshape(dims)


def _decode_strings(
    field: Sequence[bytes], present: int, dims: tuple[int, ...], count: int, budget: DecodeBudget
) -> np.ndarray:
    # The values the tensor uses are in the message already; a fill repeats the last one.
    values = list(field[:count]) if present > count else list(field)
    size = count * STRING_ELEMENT_BYTES + sum(map(len, values))
    if values and count > present:
        size += (count - present) * len(values[-1])
    budget.take(size, lambda: _describe(_STRING, dims))
    flat = np.empty(count, dtype=object)
    if present >= count:
        flat[:] = values
    elif present == 0:
        flat[:] = b""
    else:
        flat[:present] = values
        flat[present:] = values[-1]
    return flat


def _decode_string_content(
    content: bytes, dims: tuple[int, ...], count: int, budget: DecodeBudget
) -> np.ndarray:
    """TensorFlow's string encoding in tensor_content: every length as a varint, then the bytes."""
    if count > len(content):  # every length takes at least one byte
        raise _invalid(f"tensor_content of {len(content)} bytes cannot hold {count} strings")
    lengths = np.empty(count, dtype=np.int64)  # 8 bytes each, where a list would take 36
    pos = 0
    for i in range(count):
        length = shift = 0
        while True:
            if pos >= len(content) or shift > 28:
                raise _invalid("tensor_content has a malformed string length")
            byte = content[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        lengths[i] = length
    if pos + int(lengths.sum()) != len(content):
        raise _invalid(f"tensor_content's string lengths do not add up to its {len(content)} bytes")
    budget.take(count * STRING_ELEMENT_BYTES + len(content) - pos, lambda: _describe(_STRING, dims))
    flat = np.empty(count, dtype=object)
    for i in range(count):
        length = int(lengths[i])
        flat[i] = content[pos : pos + length]
        pos += length
    return flat


def from_ndarray(
    array: Any,
    dtype: DataType | int | None = None,
    *,
    use_tensor_content: bool = True,
    strings_as_content: bool = False,
    into: TensorProto | None = None,
) -> TensorProto:
    """A TensorProto holding `array` (anything `np.asarray` takes).

    `dtype` forces the tensor's type (values are converted by numpy's rules); by default it comes
    from the array, with numpy byte and unicode strings becoming DT_STRING (unicode as UTF-8).
    Numbers go into `tensor_content` unless `use_tensor_content` is false; strings go into
    `string_val` (as `tf.make_tensor_proto` puts them), or with `strings_as_content` into
    `tensor_content` in TensorFlow's encoding (as `Tensor::AsProtoTensorContent` does: every
    length as a varint, then the bytes). `into` is filled in place instead of a new message,
    for map entries such as `response.outputs["y"]`.
    """
    arr, codec = _as_array(array, dtype)
    proto = TensorProto() if into is None else into
    if into is not None:
        proto.Clear()
    # protoc's stubs type an enum field as its enum class; protobuf takes the number.
    proto.dtype = int(codec.dtype)  # type: ignore[assignment]
    dim = proto.tensor_shape.dim
    for size in arr.shape:
        dim.add().size = size
    if codec is _STRING:
        if strings_as_content:
            proto.tensor_content = _encode_string_content(_as_bytes(arr))
        else:
            proto.string_val.extend(_as_bytes(arr))
    elif use_tensor_content:
        proto.tensor_content = arr.astype(codec.wire, copy=False).tobytes()
    else:
        flat = np.ascontiguousarray(arr).reshape(-1)
        if codec.dtype in _COMPLEX_TYPES:
            flat = flat.view(codec.field_array)
        elif codec.dtype in _HALF_TYPES:
            flat = flat.view(np.uint16)
        getattr(proto, codec.field).extend(flat.tolist())
    return proto


def _encode_string_content(values: list[bytes]) -> bytes:
    """TensorFlow's EncodeStringList: every length as a varint, then every string's bytes."""
    out = bytearray()
    for value in values:
        length = len(value)
        while length >= 0x80:
            out.append((length & 0x7F) | 0x80)
            length >>= 7
        out.append(length)
    for value in values:
        out += value
    return bytes(out)


def _as_array(array: Any, dtype: DataType | int | None) -> tuple[np.ndarray, _Codec]:
    if dtype is None:
        arr = np.asarray(array)
        return arr, _codec_for(dtypes.from_numpy(arr.dtype))
    codec = _codec_for(dtype)
    if codec is _STRING:
        arr = np.asarray(array)
        if arr.dtype.kind not in "SUO":
            raise _invalid(f"Cannot encode an array of {arr.dtype} as DT_STRING")
        return arr, codec
    try:
        return np.asarray(array, dtype=codec.array), codec
    except (TypeError, ValueError, OverflowError) as exc:
        raise _invalid(f"Cannot encode the values as {codec.name}: {exc}") from None


def _as_bytes(arr: np.ndarray) -> list[bytes]:
    values = arr.reshape(-1).tolist()
    if arr.dtype.kind == "S":
        return values
    if arr.dtype.kind == "U":
        return [s.encode() for s in values]
    if all(type(v) is bytes for v in values):
        return values
    out = []
    for v in values:
        if isinstance(v, bytes):
            out.append(bytes(v))
        elif isinstance(v, str):
            out.append(v.encode())
        else:
            raise _invalid(f"A string tensor holds a {type(v).__name__}, not bytes or str")
    return out
