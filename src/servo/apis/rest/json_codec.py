"""TFS's REST JSON: request bodies to numpy arrays and tf.Examples, answers to JSON bytes.

This module owns the JSON of servo's REST API, as pure functions (HTTP is `app.py`'s):

    loads(body)                        the request document
    signature_name(doc)                the signature it names
    parse_predict(doc, get_signature, budget)  a predict body's inputs, as arrays of the
                                       signature's dtypes
    parse_examples(doc, limits)        a classify/regress body's serialized tf.Examples
    dumps_predict, dumps_classify, dumps_regress, dumps_error    answers
    http_status(code)                  the HTTP status TFS gives an error code

TFS's rules and error messages (`util/json_tensor.cc`) are the spec: clients match on them.

Parsing runs on orjson. Python's json parser is the fallback for bodies orjson refuses, as
TFS's parser (rapidjson) also takes `NaN`, `Infinity` and `-Infinity` as numbers, skips a
byte-order mark and ignores text after the document. Input dtypes come from the signature.
The common case, numbers of the right kind in a rectangular nested list, becomes an array in
one numpy call after one pass over the leaves' Python types; anything else takes the
validating path, which walks the value the way TFS does and raises TFS's error.

Decoded sizes (servo.decoded_size) are taken from the request's budget before a tensor
is built, from the shape TFS's rules give it (the first element's length at each level: every
tensor that decodes has it); a string tensor's bytes are added once they are encoded (they
cannot outgrow the body they came in), and examples are checked before their context is
copied into each.

Writing runs on orjson with numpy support, which writes float32 in its shortest round-trip
form (`2.05`, where a float64 detour would write 2.049999952316284). orjson writes NaN and
infinities as `null`: only when a `null` shows up are the float tensors checked and written
again with TFS's bare `NaN`, `Infinity` and `-Infinity`.

Where servo differs from TFS, on purpose:
- Integers out of range for int8, int16 and uint8 are refused (TFS wraps them silently).
- uint16 is read and written (TFS refuses it both ways).
- A string answer that is not valid UTF-8 has its bad bytes replaced by U+FFFD; TFS copies
  them, which makes the whole answer invalid JSON. (`*_bytes` outputs are base64, as in TFS.)
- Floats are written shortest (`1e-7`, `123456.7`) where TFS writes `%g` or `%.9g` (`1e-07`,
  `123456.703`): the same float32 values. Answers are compact; TFS pretty-prints them.
- A body must be UTF-8 and nested less than ~1000 deep; a duplicated key keeps its last value
  (rapidjson does not check the encoding, has no depth limit, and finds the first).
- Reference dtypes (`DT_FLOAT_REF`) are read as the type they refer to; a tensor of more
  than 64 dimensions (numpy's limit) is refused.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from servo.apis.rest import _base64, _rapidjson
from servo.apis.rest._rapidjson import debug_string as _debug
from servo.apis.rest._rapidjson import json_type as _json_type
from servo.core.status import Code, ServoError
from servo.decoded_size import (
    DEFAULT_LIMITS,
    REFERENCE_BYTES,
    STRING_ELEMENT_BYTES,
    DecodeBudget,
    DecodeLimits,
)
from servo.decoded_size import check_examples as _check_examples
from servo.dtypes import STRING_DTYPE, DataType, base, from_numpy, to_numpy
from servo.platforms.servable import DEFAULT_SIGNATURE, Classification, Signature, TensorSpec
from servo.protos import example_pb2

# A number beyond float32's range becomes inf, as TFS's parser makes it; numpy's warning about
# that cast says nothing a server operator can act on. (A filter, not np.errstate: errstate
# costs as much per request as the cast itself.) The casts happen in this module.
warnings.filterwarnings(
    "ignore", "overflow encountered in cast", RuntimeWarning, r"servo\.apis\.rest\.json_codec"
)

_INSTANCES = "instances"
_INPUTS = "inputs"
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
_MAX_RANK = 64  # numpy's limit on dimensions


# -- errors and HTTP statuses ----------------------------------------------------------------

_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """The HTTP status TFS answers an error code with (`http_server.cc`); 500 for others."""
    return _HTTP_STATUS.get(code, 500)


def dumps_error(message: str) -> bytes:
    """`{"error": message}`."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # a lone surrogate: not UTF-8, so not JSON text
        return orjson.dumps({"error": message.encode("utf-8", "replace").decode()})


def _invalid(message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, message)


def _format_error(doc: Any, text: str) -> ServoError:
    """TFS's FormatError: the document quoted, then what is wrong with it."""
    return _invalid(f"JSON Value: {_debug(doc)} {text}")


# -- the body --------------------------------------------------------------------------------


def loads(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; TFS's messages for what is not one."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _loads_like_rapidjson(body)
    if type(doc) is not dict:
        raise _not_object(doc)
    return doc


class _NumberTooBig(Exception):
    pass


def _double(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberTooBig(text)
    return value


def _integer(text: str) -> int | float:
    # rapidjson (and orjson) hold an integer beyond 64 bits as a double.
    if len(text) <= 20:  # the longest 64-bit integers: -9223372036854775808, 2**64 - 1
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _double(text)


_DECODER = json.JSONDecoder(parse_float=_double, parse_int=_integer)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _loads_like_rapidjson(body: bytes | str) -> Any:
    """Parses what orjson refused, accepting what rapidjson accepts beyond it."""
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _parse_error(_rapidjson.INVALID_ENCODING, exc.start) from None
    start = 1 if text.startswith("\ufeff") else 0
    start = len(text) - len(text[start:].lstrip(" \t\n\r"))
    if start == len(text):
        raise _parse_error(_rapidjson.EMPTY_DOCUMENT, _byte_offset(text, start))
    try:
        # raw_decode stops at the document's end: rapidjson ignores whatever follows it.
        doc, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        message = _rapidjson.parse_error(exc.msg, text, exc.pos)
        raise _parse_error(message, _byte_offset(text, exc.pos)) from None
    except _NumberTooBig as exc:
        offset = _byte_offset(text, max(text.find(str(exc), start), start))
        raise _parse_error(_rapidjson.NUMBER_TOO_BIG, offset) from None
    except RecursionError:
        raise _parse_error(_rapidjson.TOO_DEEP, _byte_offset(text, start)) from None
    # Python's parser keeps a lone surrogate escape (`"\ud800"`); rapidjson refuses it.
    found = _SURROGATE_ESCAPE.search(text)
    if found is not None and _has_lone_surrogate(doc):
        raise _parse_error(_rapidjson.BAD_SURROGATE, _byte_offset(text, found.start()))
    return doc


def _byte_offset(text: str, position: int) -> int:
    return len(text[:position].encode("utf-8", "surrogatepass"))


def _parse_error(message: str, offset: int) -> ServoError:
    return _invalid(f"JSON Parse error: {message} at offset: {offset}")


def _has_lone_surrogate(doc: Any) -> bool:
    pending = [doc]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
    return False


def _not_object(doc: Any) -> ServoError:
    return _format_error(doc, "Is not object")


def signature_name(doc: dict[str, Any]) -> str:
    """The body's "signature_name" ("" when it names none); TFS's message when not a string."""
    name = doc.get("signature_name", "")
    if type(name) is not str:
        raise _format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


# -- dtypes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reader:
    """How JSON values become one dtype's values (TFS's `AddValueToTensor`)."""

    dtype: DataType  # named in messages
    numpy: np.dtype
    types: frozenset[type]  # the Python types of the JSON values it takes
    low: int | None = None  # the range of integers it takes
    high: int | None = None


def _integers(dtype: DataType, numpy_type: type) -> _Reader:
    info = np.iinfo(numpy_type)
    return _Reader(dtype, np.dtype(numpy_type), frozenset({int}), int(info.min), int(info.max))


_NUMBERS = frozenset({float, int})  # JSON numbers, whole or not (a bool is neither)
_READERS: dict[DataType, _Reader] = {
    DataType.DT_FLOAT: _Reader(DataType.DT_FLOAT, np.dtype(np.float32), _NUMBERS),
    DataType.DT_DOUBLE: _Reader(DataType.DT_DOUBLE, np.dtype(np.float64), _NUMBERS),
    DataType.DT_INT8: _integers(DataType.DT_INT8, np.int8),
    DataType.DT_INT16: _integers(DataType.DT_INT16, np.int16),
    DataType.DT_INT32: _integers(DataType.DT_INT32, np.int32),
    DataType.DT_INT64: _integers(DataType.DT_INT64, np.int64),
    DataType.DT_UINT8: _integers(DataType.DT_UINT8, np.uint8),
    DataType.DT_UINT16: _integers(DataType.DT_UINT16, np.uint16),
    DataType.DT_UINT32: _integers(DataType.DT_UINT32, np.uint32),
    DataType.DT_UINT64: _integers(DataType.DT_UINT64, np.uint64),
    DataType.DT_BOOL: _Reader(DataType.DT_BOOL, np.dtype(np.bool_), frozenset({bool})),
    DataType.DT_STRING: _Reader(DataType.DT_STRING, STRING_DTYPE, frozenset({str})),
}
_READERS.update({t: _READERS[base(t)] for t in DataType if base(t) in _READERS})


def _holds(dtype: DataType) -> bool:
    try:
        to_numpy(dtype)
    except ServoError:
        return False
    return True


# The dtypes servo has arrays for. JSON spells only the ones in _READERS; for the others
# (half, complex, ...) TFS's message is UNIMPLEMENTED "Conversion of JSON Value ...".
_HELD = frozenset(t for t in DataType if _holds(t))
# What an element of each takes, decoded (a string's reference; its bytes are added after).
_ITEMSIZE = {t: to_numpy(t).itemsize for t in _HELD}


def _check_dtypes(signature_name: str, specs: Mapping[str, TensorSpec]) -> bool:
    """Refuses dtypes servo cannot hold; whether any input is a string tensor."""
    strings = False
    for name, spec in specs.items():
        dtype = spec.dtype
        reader = _READERS.get(dtype)
        if reader is not None:
            strings = strings or reader.numpy is STRING_DTYPE
        elif dtype not in _HELD:
            try:
                label: object = DataType(dtype).name
            except ValueError:
                label = dtype
            raise ServoError(
                Code.UNIMPLEMENTED,
                f"Input '{name}' of signature '{signature_name}' has dtype {label}, which "
                "servo cannot hold in a tensor",
            )
    return strings


def _type_name(dtype: DataType) -> str:
    """TensorFlow's DataTypeString: `float`, `int64`, `string`, ..."""
    return base(dtype).name.removeprefix("DT_").lower()


# -- predict requests ------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond to build
class PredictBody:
    """A parsed predict request. `row_format` is True for the "instances" form, whose answer
    is `{"predictions": ...}`, and False for "inputs", answered with `{"outputs": ...}`."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    row_format: bool
    # The signature `get_signature` returned, so that callers need not look it up again.
    signature: Signature | None = field(default=None, repr=False, compare=False)


def parse_predict(
    doc: dict[str, Any],
    get_signature: Callable[[str], Signature],
    budget: DecodeBudget | None = None,
) -> PredictBody:
    """A predict body (row or columnar form) as arrays of the signature's input dtypes.

    `get_signature(name)` is called once, with "serving_default" when the body names none,
    before the values are read (their dtypes come from it); it raises for unknown names.
    Every tensor is taken from `budget` (the request's; by default one of the default limits)
    before it is built."""
    if type(doc) is not dict:
        raise _not_object(doc)
    requested = signature_name(doc)
    name = requested or DEFAULT_SIGNATURE
    signature = get_signature(name)
    specs = signature.inputs
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {requested or 'DEFAULT'}")
    strings = _check_dtypes(name, specs)
    if budget is None:
        budget = DecodeBudget()
    if _INSTANCES in doc:
        if _INPUTS in doc:
            raise _format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                "to exist ",
            )
        instances = doc[_INSTANCES]
        if type(instances) is not list:
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        inputs = _from_instances(instances, specs, budget)
        if strings:
            _take_strings(inputs, budget)
        return PredictBody(name, inputs, True, signature)
    if _INPUTS in doc:
        inputs = _from_inputs(doc[_INPUTS], specs, budget)
        if strings:
            _take_strings(inputs, budget)
        return PredictBody(name, inputs, False, signature)
    raise _invalid("Missing 'inputs' or 'instances' key")


def _shape_of(value: Any) -> list[int]:
    """The shape TFS's rules give a JSON tensor: the first element's length at each level."""
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _reserve(budget: DecodeBudget, name: str, dtype: DataType, shape: list[int]) -> int:
    """Takes a tensor of `shape` from the budget, before it is built (a string tensor: its
    references; `_take_strings` adds its bytes); its rank."""
    budget.take(math.prod(shape) * _ITEMSIZE[dtype], lambda: _describe(name, dtype, shape))
    return len(shape)


def _describe(name: str, dtype: DataType, shape: Sequence[int]) -> str:
    return f"Input '{name}' of shape {list(shape)} and type {DataType(dtype).name}"


def _take_strings(inputs: dict[str, np.ndarray], budget: DecodeBudget) -> None:
    """Adds the bytes of the string tensors to what `_reserve` took for them."""
    for name, array in inputs.items():
        if array.dtype.kind == "O" and array.size:
            _take_string_bytes(budget, name, array)


def _take_string_bytes(budget: DecodeBudget, name: str, array: np.ndarray) -> None:
    budget.take(
        sum(map(len, array.flat)) + array.size * (STRING_ELEMENT_BYTES - REFERENCE_BYTES),
        lambda: _describe(name, DataType.DT_STRING, array.shape),
        array.size * REFERENCE_BYTES,
    )


def _is_b64(value: Any) -> bool:
    """`{"b64": "..."}`: one key, a string."""
    return type(value) is dict and len(value) == 1 and type(value.get(_B64)) is str


def _is_named(value: Any) -> bool:
    """An object of named tensors (any object but a b64 one)."""
    return type(value) is dict and not _is_b64(value)


def _from_instances(
    instances: list[Any], specs: Mapping[str, TensorSpec], budget: DecodeBudget
) -> dict[str, np.ndarray]:
    """The row form: each instance one row of every input, stacked along a new dim 0."""
    first = instances[0]
    if type(first) is dict and not _is_b64(first):
        for name, spec in specs.items():
            if name in first:  # a name missing from the first row fails to decode
                _reserve(budget, name, spec.dtype, [len(instances), *_shape_of(first[name])])
        return _from_objects(instances, specs)
    if len(specs) == 1:
        name = next(iter(specs))
    elif type(first) is not dict:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    else:  # a b64 object first: TFS fills the map's first input, and only that one
        name = min(specs)
    dtype = specs[name].dtype
    rank = _reserve(budget, name, dtype, _shape_of(instances))
    reader = _READERS.get(dtype)
    # Rows of one shape stacked are the whole list read as one tensor.
    fast = _fast(instances, reader, rank) if reader is not None else None
    return {name: fast if fast is not None else _stack_values(instances, dtype)}


def _from_objects(instances: list[Any], specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Rows of named inputs: the fast way when every row has exactly the input names."""
    names = specs.keys()
    if all(_is_named(item) and item.keys() == names for item in instances):
        columns = {}
        for name, spec in specs.items():
            reader = _READERS.get(spec.dtype)
            fast = _fast([item[name] for item in instances], reader) if reader else None
            if fast is None:
                break
            columns[name] = fast
        else:
            return columns
    return _stack_objects(instances, specs)


def _stack_values(instances: list[Any], dtype: DataType) -> np.ndarray:
    rows: list[np.ndarray] = []
    for index, item in enumerate(instances):
        if _is_named(item):
            raise _invalid(f"Expecting value/list but got object at item {index} of input list")
        try:
            rows.append(_row(item, dtype, rows))
        except ServoError as exc:
            raise _invalid(
                f"Failed to process element: {index} of 'instances' list. Error: "
                f"{exc.code.name}: {exc.message}"
            ) from None
    return _stack(rows)


def _stack_objects(instances: list[Any], specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    names = sorted(specs)
    expected = set(names)
    columns: dict[str, list[np.ndarray]] = {}
    for index, item in enumerate(instances):
        if not _is_named(item):
            raise _invalid(f"Expecting object but got list at item {index} of input list")
        for key, value in item.items():
            try:
                if key not in specs:
                    raise _invalid(f"JSON object: does not have named input: {key}")
                rows = columns.setdefault(key, [])
                rows.append(_row(value, specs[key].dtype, rows))
            except ServoError as exc:
                raise _invalid(
                    f"Failed to process element: {index} key: {key} of 'instances' list. "
                    f"Error: {exc.code.name}: {exc.message}"
                ) from None
        if item.keys() != expected:
            raise _invalid(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_debug(item)} keys must be equal to: {','.join(names)}"
            )
    return {key: _stack(rows) for key, rows in columns.items()}


def _row(value: Any, dtype: DataType, earlier: list[np.ndarray]) -> np.ndarray:
    """One instance's tensor; it must have the size and shape of the first one."""
    array = _tensor(value, dtype)
    if earlier:
        first = earlier[0]
        if first.size != array.size:
            raise _invalid(f"Expecting tensor size: {first.size} but got: {array.size}")
        if first.shape != array.shape:
            raise _invalid(f"Expecting shape {_shape(first.shape)} but got: {_shape(array.shape)}")
    return array


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    if rows[0].ndim >= _MAX_RANK:
        raise _too_many_dims(rows[0].ndim + 1)
    return np.stack(rows)


def _too_many_dims(rank: int) -> ServoError:
    return _invalid(f"A tensor of rank {rank} has more than the {_MAX_RANK} dimensions servo holds")


def _from_inputs(
    value: Any, specs: Mapping[str, TensorSpec], budget: DecodeBudget
) -> dict[str, np.ndarray]:
    """The columnar form: one tensor, or an object of named tensors (extra names ignored)."""
    if type(value) is not dict or _is_b64(value):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name, spec = next(iter(specs.items()))
        rank = _reserve(budget, name, spec.dtype, _shape_of(value))
        return {name: _tensor(value, spec.dtype, rank)}
    tensors = {}
    for name in sorted(specs) if len(specs) > 1 else specs:
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        dtype = specs[name].dtype
        rank = _reserve(budget, name, dtype, _shape_of(value[name]))
        tensors[name] = _tensor(value[name], dtype, rank)
    return tensors


def _tensor(value: Any, dtype: DataType, rank: int | None = None) -> np.ndarray:
    """One JSON tensor (a value or nested lists) as an array of `dtype`, by TFS's rules."""
    reader = _READERS.get(dtype)
    if reader is not None:
        fast = _fast(value, reader, rank)
        if fast is not None:
            return fast
    return _validated(value, dtype, reader)


def _fast(value: Any, reader: _Reader, rank: int | None = None) -> np.ndarray | None:
    """`value` in one numpy call when every leaf has a type `reader` takes and the lists are
    rectangular; None when the validating path must decide (and word the error). `rank` is
    `len(_shape_of(value))`, when the caller has it."""
    if rank is None:
        rank = len(_shape_of(value))
    try:
        if reader.numpy is STRING_DTYPE:
            return _fast_strings(value, rank)
        if not reader.types.issuperset(map(type, _leaves(value, rank))):
            return None
        # Raises ValueError on ragged lists, OverflowError on integers out of range.
        return np.array(value, dtype=reader.numpy)
    except (TypeError, ValueError, OverflowError):
        return None


def _leaves(value: Any, rank: int) -> Iterable[Any]:
    """The values `rank` lists deep in `value` (TypeError on a value found higher up)."""
    if rank == 2:  # the usual case, often with one instance: skip chain's cost then
        return value[0] if len(value) == 1 else chain.from_iterable(value)
    if rank < 2:
        return value if rank else (value,)
    leaves = chain.from_iterable(value)
    for _ in range(rank - 2):
        leaves = chain.from_iterable(leaves)
    return leaves


def _fast_strings(value: Any, rank: int) -> np.ndarray | None:
    cells = np.array(value, dtype=object)
    if cells.ndim != rank:  # ragged, or lists where strings should be
        return None
    flat = cells.ravel()
    if not _STRINGS.issuperset(map(type, flat)):
        return None
    out = np.empty(flat.shape, dtype=object)
    out[:] = [text.encode() for text in flat]  # UnicodeEncodeError is a ValueError
    return out.reshape(cells.shape)


_STRINGS = frozenset({str})


def _validated(value: Any, dtype: DataType, reader: _Reader | None) -> np.ndarray:
    """TFS's FillTensorProto: the shape from the first element at each level, then every
    value checked against it, depth first; TFS's error for the first fault."""
    dtype = reader.dtype if reader is not None else base(dtype)
    shape: list[int] = []
    probe = value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    rank = len(shape)
    values: list[Any] = []
    pending = [iter((value,))]  # one iterator per open list; len(pending) - 1 is the level
    while pending:
        level = len(pending) - 1
        for item in pending[-1]:
            if type(item) is list:
                if level >= rank:
                    raise _invalid(
                        f"Encountered list at unexpected level: {level} expected < {rank}"
                    )
                if len(item) != shape[level]:
                    raise _invalid(
                        f"Encountered list at unexpected size: {len(item)} at level: {level} "
                        f"expected size: {shape[level]}"
                    )
                pending.append(iter(item))
                break
            if level != rank:
                raise _invalid(
                    f"JSON Value: {_debug(item)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {rank}"
                )
            values.append(_value(item, dtype, reader))
        else:
            pending.pop()
    if rank > _MAX_RANK:
        raise _too_many_dims(rank)
    if reader is None:  # a dtype JSON cannot spell, and no value (each would have raised)
        return np.zeros(shape, dtype=to_numpy(dtype))
    if reader.numpy is STRING_DTYPE:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=reader.numpy).reshape(shape)


def _value(value: Any, dtype: DataType, reader: _Reader | None) -> Any:
    """One JSON value as a value of `dtype`, or TFS's error."""
    if type(value) is dict:
        if dtype == DataType.DT_STRING:
            return _b64decode(value)
        raise _type_error(value, dtype)
    if reader is None:
        raise ServoError(
            Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {_debug(value)} to type: {_type_name(dtype)}",
        )
    kind = type(value)
    if kind not in reader.types:
        raise _type_error(value, dtype)
    if reader.low is not None and not reader.low <= value <= reader.high:
        raise _type_error(value, dtype)
    if kind is str:
        try:
            return value.encode()
        except UnicodeEncodeError:
            raise _invalid(f"JSON Value: {_debug(value)} is not valid UTF-8") from None
    if kind is int and reader.numpy.kind == "f":  # a whole number for a float tensor
        try:
            return float(value)
        except OverflowError:  # only a caller's own document can hold one this big
            raise _type_error(value, dtype) from None
    return value


def _type_error(value: Any, dtype: DataType) -> ServoError:
    return _invalid(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_type_name(dtype)}"
    )


def _b64decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    decoded = _base64.decode(value[_B64])
    if decoded is None:
        raise _invalid("Unable to base64 decode")
    return decoded


# -- classify and regress requests -----------------------------------------------------------


def parse_examples(
    doc: dict[str, Any], limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[str, list[bytes]]:
    """A classify or regress body as (signature name, one serialized tf.Example per example).

    With a "context", each example is the context's bytes followed by its own, exactly as TFS
    feeds an ExampleListWithContext to the model: parsing that is a protobuf merge, so the
    context's features are in every example and the example's own feature wins a clash.
    What the examples take with their context is checked against `limits` before the context
    is copied into each."""
    if type(doc) is not dict:
        raise _not_object(doc)
    name = signature_name(doc) or DEFAULT_SIGNATURE
    context = _example(doc["context"]) if "context" in doc else b""
    if "examples" not in doc:
        # TFS says "classify" for regress requests too.
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if type(examples) is not list:
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    own = [_example(example) for example in examples]
    _check_examples(len(context), own, limits)
    return name, [context + example for example in own] if context else own


def _example(value: Any) -> bytes:
    """A JSON object of features as a serialized Example."""
    if type(value) is not dict:
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        kind, values = _feature(name, content)
        try:
            feature = features[name]
        except (UnicodeError, ValueError, TypeError):
            raise _invalid(f"Feature name {_debug(name)} is not valid UTF-8") from None
        if kind is not None:
            getattr(feature, kind).value.extend(values)
    return example.SerializeToString()


_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _feature(name: str, content: Any) -> tuple[str | None, list[Any]]:
    """A feature's list kind and values: a value or a list of values of one kind."""
    kind: str | None = None
    values: list[Any] = []
    for item in content if type(content) is list else (content,):
        item_type = type(item)
        if item_type is bool:
            item_kind = "int64_list"
        elif item_type is int:
            # rapidjson holds an integer beyond 64 bits as a double
            item_kind = "int64_list" if _INT64_MIN <= item <= _UINT64_MAX else "float_list"
        elif item_type is float:
            item_kind = "float_list"
        elif item_type is str or _is_b64(item):
            item_kind = "bytes_list"
        else:
            raise _invalid(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}"
            )
        if kind is not None and item_kind != kind:
            raise _invalid(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
            )
        kind = item_kind
        if item_type is str:
            try:
                values.append(item.encode())
            except UnicodeEncodeError:
                raise _invalid(f"Feature: {name} has a value that is not valid UTF-8") from None
        elif item_type is dict:
            values.append(_b64decode(item))
        elif item_type is bool:
            values.append(int(item))
        elif item_type is int and kind == "float_list":
            values.append(_to_double(item))
        elif item_type is int and item > _INT64_MAX:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        else:
            values.append(item)  # protobuf rounds a float to float32, as rapidjson's GetFloat
    return kind, values


def _to_double(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


# -- answers ---------------------------------------------------------------------------------

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# The dtypes orjson writes as TFS does (native byte order, as orjson needs).
_WRITTEN = frozenset(
    np.dtype(t)
    for t in (
        np.float32,
        np.float64,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.bool_,
    )
)
_NAN = orjson.Fragment(b"NaN")
_INFINITY = orjson.Fragment(b"Infinity")
_NEGATIVE_INFINITY = orjson.Fragment(b"-Infinity")


def dumps_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """`{"predictions": [row, ...]}` (row form: one output's rows, or one object per row of
    several outputs, which must share dim 0) or `{"outputs": ...}` (columnar form: one
    output's tensor, or an object of them)."""
    if len(outputs) == 1:  # the usual answer: one contiguous numeric tensor, all finite
        (array,) = outputs.values()
        if (
            type(array) is np.ndarray
            and array.dtype in _WRITTEN
            and array.ndim
            and array.flags.c_contiguous
        ):
            text = orjson.dumps(
                {"predictions": array} if row_format else {"outputs": array}, option=_NUMPY
            )
            if text.find(b"null") == -1:
                return text
    elif not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    batch = _batch_size(outputs) if row_format else 0
    values = {name: _writable(name, array) for name, array in outputs.items()}
    text = _write_predict(values, row_format, batch)
    # orjson writes a non-finite float as null, and writes null for nothing else here.
    # (find, not `in`: `in` costs a buffer export, three times find's cost on small answers.)
    if text.find(b"null") != -1:
        tokens = {name: _with_tokens(v) for name, v in values.items() if _has_non_finite(v)}
        if tokens:
            values.update(tokens)
            text = _write_predict(values, row_format, batch)
    return text


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    batch = -1
    for name, array in outputs.items():
        shape = array.shape if type(array) is np.ndarray else np.shape(array)
        if not shape:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and shape[0] != batch:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    return batch


def _write_predict(values: dict[str, Any], row_format: bool, batch: int) -> bytes:
    if len(values) == 1:
        (value,) = values.values()
        return _dumps({"predictions": value} if row_format else {"outputs": value})
    if not row_format:
        return _dumps({"outputs": values})
    return _dumps({"predictions": [{n: v[i] for n, v in values.items()} for i in range(batch)]})


def _dumps(document: Any) -> bytes:
    try:
        return orjson.dumps(document, option=_NUMPY)
    except orjson.JSONEncodeError as exc:  # a caller's output orjson cannot write
        raise ServoError(Code.INTERNAL, f"Failed to write JSON answer: {exc}") from None


def _writable(name: str, array: Any) -> Any:
    """A tensor as something orjson writes the way TFS writes it."""
    if type(array) is not np.ndarray:
        array = np.asarray(array)
    dtype = array.dtype
    if dtype in _WRITTEN:
        if array.ndim == 0:
            return array[()]  # orjson writes numpy scalars, not 0-d arrays
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    if dtype.kind in "OSU":
        return _strings(array, name.endswith(_BYTES_SUFFIX))
    if not dtype.isnative and dtype.newbyteorder("=") in _WRITTEN:
        return _writable(name, array.astype(dtype.newbyteorder("=")))
    if array.size == 0:  # TFS fails on the first value it cannot write; there is none
        return array.tolist()
    raise _invalid(f"Failed to write JSON value for tensor type: {_numpy_type_name(dtype)}")


def _numpy_type_name(dtype: np.dtype) -> str:
    try:
        return _type_name(from_numpy(dtype))
    except ServoError:
        return str(dtype)


def _strings(array: np.ndarray, as_b64: bool) -> Any:
    if array.ndim == 0:
        return _string(array[()], as_b64)
    cells = np.empty(array.size, dtype=object)
    cells[:] = [_string(v, as_b64) for v in array.ravel().tolist()]
    return cells.reshape(array.shape).tolist()


def _string(value: Any, as_b64: bool) -> Any:
    if type(value) is not bytes:
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        elif isinstance(value, bytearray | memoryview):
            value = bytes(value)
        else:
            value = str(value).encode("utf-8", "replace")
    if as_b64:
        return {_B64: _base64.encode(value)}
    return value.decode("utf-8", "replace")


def _has_non_finite(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and dtype.kind == "f" and not np.isfinite(value).all()


def _with_tokens(value: np.ndarray | np.floating) -> Any:
    """A float tensor as nested lists of numpy scalars (so that float32 stays shortest) and,
    for non-finite values, TFS's bare tokens."""
    if value.ndim == 0:
        return _token(value)
    cells = np.empty(value.size, dtype=object)
    cells[:] = [_token(x) for x in value.ravel()]  # iterating an array yields numpy scalars
    return cells.reshape(value.shape).tolist()


def _token(value: Any) -> Any:
    """A numpy float as itself, or TFS's token when it is not finite."""
    number = float(value)  # math's tests on a float cost a tenth of numpy's on a scalar
    if math.isfinite(number):
        return value
    if math.isnan(number):
        return _NAN
    return _INFINITY if number > 0 else _NEGATIVE_INFINITY


def dumps_classify(results: Sequence[Sequence[Classification]]) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`: one list of classes per example."""
    if not results:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    return _dumps(
        {
            "results": [
                [[_string(c.label, False), _token(np.float32(c.score))] for c in row]
                for row in results
            ]
        }
    )


def dumps_regress(values: Sequence[float]) -> bytes:
    """`{"results": [v0, v1, ...]}`: one value per example."""
    if not len(values):
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    array = np.asarray(values, dtype=np.float32)
    text = _dumps({"results": array})
    if text.find(b"null") != -1:
        text = _dumps({"results": _with_tokens(array)})
    return text
