"""TensorFlow's DataType numbers and names, and the numpy dtypes servo uses for them.

Strings are numpy object arrays of `bytes`; bfloat16 uses `ml_dtypes.bfloat16`.
"""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

from servo.core.status import Code, ServoError


class DataType(enum.IntEnum):
    """`tensorflow.DataType`: the numbers are wire facts."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23
    # A value read by reference (a TF1 variable): the referenced type + 100. Signatures of old
    # SavedModels carry these; a request's tensors have the base type.
    DT_FLOAT_REF = 101
    DT_DOUBLE_REF = 102
    DT_INT32_REF = 103
    DT_UINT8_REF = 104
    DT_INT16_REF = 105
    DT_INT8_REF = 106
    DT_STRING_REF = 107
    DT_COMPLEX64_REF = 108
    DT_INT64_REF = 109
    DT_BOOL_REF = 110
    DT_BFLOAT16_REF = 114
    DT_UINT16_REF = 117
    DT_COMPLEX128_REF = 118
    DT_HALF_REF = 119
    DT_UINT32_REF = 122
    DT_UINT64_REF = 123


REF_OFFSET = 100


def base(dtype: DataType) -> DataType:
    """The type a reference type refers to; other types unchanged."""
    return DataType(dtype - REF_OFFSET) if dtype > REF_OFFSET else dtype


STRING_DTYPE = np.dtype(object)

_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.DT_FLOAT: np.dtype(np.float32),
    DataType.DT_DOUBLE: np.dtype(np.float64),
    DataType.DT_INT32: np.dtype(np.int32),
    DataType.DT_UINT8: np.dtype(np.uint8),
    DataType.DT_INT16: np.dtype(np.int16),
    DataType.DT_INT8: np.dtype(np.int8),
    DataType.DT_STRING: STRING_DTYPE,
    DataType.DT_COMPLEX64: np.dtype(np.complex64),
    DataType.DT_INT64: np.dtype(np.int64),
    DataType.DT_BOOL: np.dtype(np.bool_),
    DataType.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.DT_UINT16: np.dtype(np.uint16),
    DataType.DT_COMPLEX128: np.dtype(np.complex128),
    DataType.DT_HALF: np.dtype(np.float16),
    DataType.DT_UINT32: np.dtype(np.uint32),
    DataType.DT_UINT64: np.dtype(np.uint64),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {dt: t for t, dt in _TO_NUMPY.items()}
# numpy's fixed-width byte and unicode strings are strings too.


def to_numpy(dtype: DataType) -> np.dtype:
    """The numpy dtype for a TensorFlow dtype; UNIMPLEMENTED for the ones servo cannot hold."""
    try:
        return _TO_NUMPY[base(dtype)]
    except KeyError:
        raise ServoError(
            Code.UNIMPLEMENTED, f"Tensors of type {DataType(dtype).name} are not supported"
        ) from None


def from_numpy(dtype: np.dtype) -> DataType:
    """The TensorFlow dtype of a numpy dtype (byte and unicode strings are DT_STRING)."""
    dtype = np.dtype(dtype)
    found = _FROM_NUMPY.get(dtype)
    if found is not None:
        return found
    if dtype.kind in ("S", "U", "O"):
        return DataType.DT_STRING
    raise ServoError(Code.UNIMPLEMENTED, f"numpy dtype {dtype} has no TensorFlow dtype")


def parse(name: str | int | DataType) -> DataType:
    """A DataType from its enum name (`DT_FLOAT`), its short name (`float32`, `float`) or number."""
    if isinstance(name, int):
        return DataType(name)
    upper = name.upper()
    if upper in DataType.__members__:
        return DataType[upper]
    if "DT_" + upper in DataType.__members__:
        return DataType["DT_" + upper]
    aliases = {
        "STR": "STRING",
        "BYTES": "STRING",
        "FLOAT32": "FLOAT",
        "FLOAT64": "DOUBLE",
        "FLOAT16": "HALF",
    }
    if upper in aliases:
        return DataType["DT_" + aliases[upper]]
    try:
        return from_numpy(np.dtype(name))
    except TypeError:
        raise ValueError(f"unknown dtype {name!r}") from None
