"""TFS's REST JSON: request bodies to numpy arrays and serialized Examples, answers to JSON.

The rules and error messages are TFS's (`util/json_tensor.cc`), so clients that match on them
keep working. Parsing runs on orjson; the standard library's parser is the fallback only for
bodies orjson refuses, since TFS accepts `NaN`, `Infinity` and `-Infinity` as numbers. Input
dtypes come from the signature. The common case (numbers of one dtype in a rectangular nested
list) becomes an array in one numpy call; anything else takes the validating path, which walks
the values the way TFS does and produces TFS's messages.

Writing: float32 values in their shortest round-trip form (`2.05`, not `2.049999952316284`,
as TFS writes them), non-finite floats as bare `NaN` / `Infinity` / `-Infinity`, strings as
UTF-8 text (invalid UTF-8 replaced) or `{"b64": ...}` for outputs whose alias ends in `_bytes`.
Unlike TFS, float16 and bfloat16 outputs are written as numbers rather than refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, base, to_numpy
from servo.platforms.servable import Classification, Signature
from servo.protos import example_pb2, feature_pb2

_NUMPY = orjson.OPT_SERIALIZE_NUMPY

# A number beyond float32's range becomes inf, as TFS's parser makes it; numpy's warning about
# that cast says nothing a server operator can act on. (A filter, not np.errstate: errstate
# costs as much per request as the cast itself.)
warnings.filterwarnings(
    "ignore", "overflow encountered in cast", RuntimeWarning, r"servo\.apis\.rest\.json_codec"
)
_B64 = "b64"
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_BYTES_SUFFIX = "_bytes"
_DEBUG_LIMIT = 256

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
    """The HTTP status TFS answers an error code with."""
    return _HTTP_STATUS.get(code, 500)


def dumps_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _invalid(message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, message)


def _debug(value: Any) -> str:
    """A JSON value as error messages show it (cut, like TFS's, at 256 bytes)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = json.dumps(value, allow_nan=True)
    return text[:_DEBUG_LIMIT]


def _json_type(value: Any) -> str:
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


def _type_name(dtype: DataType) -> str:
    return base(dtype).name.removeprefix("DT_").lower()


# -- parsing ---------------------------------------------------------------------------------


def loads(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; TFS's messages for what is not one."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # the standard parser takes NaN, Infinity and -Infinity, as TFS does
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            offset = getattr(exc, "pos", getattr(exc, "start", 0))
            reason = getattr(exc, "msg", str(exc))
            raise _invalid(f"JSON Parse error: {reason} at offset: {offset}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_debug(doc)} Is not object")
    return doc


def _signature_name(doc: dict[str, Any]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(
            f"JSON Value: {_debug(doc)} not formatted correctly. 'signature_name' key must be a "
            "string value."
        )
    return name


@dataclass(frozen=True, slots=True)
class PredictBody:
    signature: Signature
    inputs: dict[str, np.ndarray]
    row_format: bool


def parse_predict(doc: dict[str, Any], get_signature: Callable[[str], Signature]) -> PredictBody:
    """A predict body (row or columnar form) as arrays of the signature's input dtypes."""
    name = _signature_name(doc)
    signature = get_signature(name)
    specs = signature.inputs
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    instances = doc.get("instances")
    columnar = doc.get("inputs")
    if instances is not None and columnar is not None:
        raise _invalid(
            f"JSON Value: {_debug(doc)} Not formatted correctly expecting only one of 'inputs' "
            "or 'instances' keys to exist "
        )
    if instances is not None:
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {_debug(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {_debug(doc)} No values in 'instances' array")
        return PredictBody(signature, _from_instances(instances, specs), True)
    if "inputs" in doc:
        return PredictBody(signature, _from_inputs(columnar, specs), False)
    raise _invalid("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _from_instances(instances: list[Any], specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if len(specs) == 1 and not _is_named(instances[0]):
        name, spec = next(iter(specs.items()))
        fast = _fast_array(instances, spec.dtype)
        if fast is not None:
            return {name: fast}
    elif not _is_named(instances[0]):
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    names = sorted(specs)
    named = _is_named(instances[0])
    rows: dict[str, list[np.ndarray]] = {}
    for index, item in enumerate(instances):
        if named:
            if not _is_named(item):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                if key not in specs:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                    )
                earlier = rows.setdefault(key, [])
                try:
                    earlier.append(_instance(value, specs[key].dtype, earlier))
                except ServoError as exc:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {exc.code.name}: {exc.message}"
                    ) from None
            if set(item) != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_debug(item)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_named(item):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            earlier = rows.setdefault(names[0], [])
            try:
                earlier.append(_instance(item, specs[names[0]].dtype, earlier))
            except ServoError as exc:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"{exc.code.name}: {exc.message}"
                ) from None
    return {key: np.stack(values) for key, values in rows.items()}


def _instance(value: Any, dtype: DataType, earlier: list[np.ndarray]) -> np.ndarray:
    """One instance as an array; it must match the size and shape of the ones before it."""
    array = _tensor(value, dtype)
    if earlier:
        first = earlier[0]
        if first.size != array.size:
            raise _invalid(f"Expecting tensor size: {first.size} but got: {array.size}")
        if first.shape != array.shape:
            raise _invalid(f"Expecting shape {_shape(first.shape)} but got: {_shape(array.shape)}")
    return array


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _from_inputs(value: Any, specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name, spec = next(iter(specs.items()))
        return {name: _tensor(value, spec.dtype)}
    tensors = {}
    for name in sorted(specs):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(value[name], specs[name].dtype)
    return tensors


# Numeric dtypes TFS reads from JSON, and the range an integer value must fit.
_INT_RANGES = {
    DataType.DT_INT8: (-(2**31), 2**31 - 1),  # TFS reads 8/16-bit values as int32
    DataType.DT_INT16: (-(2**31), 2**31 - 1),
    DataType.DT_UINT8: (-(2**31), 2**31 - 1),
    DataType.DT_INT32: (-(2**31), 2**31 - 1),
    DataType.DT_INT64: (-(2**63), 2**63 - 1),
    DataType.DT_UINT32: (0, 2**32 - 1),
    DataType.DT_UINT64: (0, 2**64 - 1),
}
_FLOATS = (DataType.DT_FLOAT, DataType.DT_DOUBLE)
_SUPPORTED = frozenset({*_INT_RANGES, *_FLOATS, DataType.DT_BOOL, DataType.DT_STRING})


def _fast_array(value: Any, dtype: DataType) -> np.ndarray | None:
    """`value` as an array in one numpy call when it is a rectangular list of plain numbers
    (or bools) of the right kind; None when the validating path must decide."""
    dtype = base(dtype)
    if dtype in _FLOATS:
        want_kinds = "fi"
    elif dtype in _INT_RANGES:
        want_kinds = "iu"
    elif dtype == DataType.DT_BOOL:
        want_kinds = "b"
    else:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in want_kinds:
        return None
    if array.dtype.kind in "iu" and dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if array.size and (array.min() < low or array.max() > high):
            return None
    return array.astype(to_numpy(dtype), copy=False)


def _tensor(value: Any, dtype: DataType) -> np.ndarray:
    """One JSON tensor (a value or nested lists) as an array of `dtype`, TFS's rules."""
    dtype = base(dtype)
    if dtype not in _SUPPORTED:
        raise ServoError(
            Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {_debug(value)} to type: {_type_name(dtype)}",
        )
    fast = _fast_array(value, dtype)
    if fast is not None:
        return fast
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list[Any] = []
    _fill(value, 0, shape, dtype, flat)
    if dtype == DataType.DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=to_numpy(dtype)).reshape(shape)


def _fill(value: Any, level: int, shape: list[int], dtype: DataType, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {rank}"
            )
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _type_error(value: Any, dtype: DataType) -> ServoError:
    return _invalid(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_type_name(dtype)}"
    )


def _scalar(value: Any, dtype: DataType) -> Any:
    if dtype == DataType.DT_STRING:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            return _b64decode(value)
        raise _type_error(value, dtype)
    if isinstance(value, dict):
        raise _type_error(value, dtype)
    if dtype == DataType.DT_BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, dtype)
    if dtype in _FLOATS:
        return value
    if isinstance(value, float):
        raise _type_error(value, dtype)
    low, high = _INT_RANGES[dtype]
    if not low <= value <= high:
        raise _type_error(value, dtype)
    return value


def _b64decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    text = value[_B64]
    try:  # the standard alphabet or the URL-safe one; padding may be left out
        standard = text.translate(_URLSAFE) + "=" * (-len(text) % 4)
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


_URLSAFE = str.maketrans("-_", "+/")


# -- classify and regress requests -----------------------------------------------------------


def parse_examples(doc: dict[str, Any]) -> tuple[str, list[bytes]]:
    """A classify or regress body as (signature name, serialized tf.Examples). With a
    "context", each example is the context's bytes followed by its own, as TFS feeds an
    ExampleListWithContext (a protobuf merge: the example's own features win)."""
    name = _signature_name(doc)
    context = b""
    if "context" in doc:
        context = _example(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise _invalid(
            f"JSON Value: {_debug(doc)} When method is classify, key 'examples' is expected "
            "and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {_debug(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {_debug(doc)} 'examples' value is an empty array")
    return name, [context + _example(e).SerializeToString() for e in examples]


def _example(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
        features[name].CopyFrom(feature)
    return example


def _add_to_feature(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, int):
        if value > 2**63 - 1 and value <= 2**64 - 1:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        if not -(2**63) <= value <= 2**64 - 1:
            kind, item = "float_list", float(value)
        else:
            kind, item = "int64_list", value
    elif isinstance(value, float):
        kind, item = "float_list", value
    elif isinstance(value, str):
        kind, item = "bytes_list", value.encode()
    elif _is_b64(value):
        kind, item = "bytes_list", _b64decode(value)
    else:
        raise _invalid(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        expected = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
        raise _invalid(
            f"Unexpected element type in feature: {name} expecting type: {expected[current]}"
        )
    getattr(feature, kind).value.append(item)


# -- writing answers -------------------------------------------------------------------------


def dumps_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """`{"predictions": ...}` (row form) or `{"outputs": ...}` (columnar form)."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    values = {name: _jsonable(name, array) for name, array in outputs.items()}
    if row_format:
        batch = -1
        for name, array in outputs.items():
            if array.ndim == 0:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and array.shape[0] != batch:
                raise _invalid(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = array.shape[0]
    text = _write(values, row_format)
    # orjson writes a non-finite float as null (no numeric output is null otherwise): write
    # such floats again as TFS's bare tokens.
    if b"null" in text and any(v.dtype.kind == "f" for v in outputs.values()):
        values = {
            name: _with_tokens(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for name, v in values.items()
        }
        text = _write(values, row_format)
    return text


def _write(values: dict[str, Any], row_format: bool) -> bytes:
    if len(values) == 1:
        (value,) = values.values()
        return _dumps({"predictions": value} if row_format else {"outputs": value})
    if not row_format:
        return _dumps({"outputs": values})
    batch = len(next(iter(values.values())))
    return _dumps({"predictions": [{n: v[i] for n, v in values.items()} for i in range(batch)]})


# orjson cannot write the bare tokens TFS writes for non-finite floats: those values are
# written as placeholder strings (a NUL character and a per-process random tag, which a real
# string output will not carry) and the quoted placeholders replaced after.
_TAG = secrets.token_hex(8)
_TAG_BYTES = _TAG.encode()
_NAN, _INF, _NEG_INF = (f"\u0000{_TAG}{t}" for t in ("NaN", "Infinity", "-Infinity"))
_TOKENS = {
    orjson.dumps(_NAN): b"NaN",
    orjson.dumps(_NEG_INF): b"-Infinity",
    orjson.dumps(_INF): b"Infinity",
}


def _dumps(document: Any) -> bytes:
    text = orjson.dumps(document, option=_NUMPY)
    if _TAG_BYTES in text:
        for placeholder, token in _TOKENS.items():
            text = text.replace(placeholder, token)
    return text


def _jsonable(name: str, array: np.ndarray) -> Any:
    """Something orjson writes as TFS would write the tensor."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "f" or array.dtype == _BFLOAT16:
        if array.dtype != np.float32 and array.dtype != np.float64:
            array = array.astype(np.float32)  # float16 / bfloat16: written as float32
        return np.ascontiguousarray(array)
    if kind in "iub":
        return np.ascontiguousarray(array)
    if kind in "OSU":
        as_b64 = name.endswith(_BYTES_SUFFIX)
        return _strings(array.tolist(), as_b64)
    raise _invalid(f"Failed to write JSON value for tensor type: {array.dtype}")


def _with_tokens(array: np.ndarray) -> Any:
    """Nested lists of numpy floats (so float32 keeps its shortest form) with placeholders
    for the non-finite ones."""
    items = [_float_token(v) for v in array.ravel()]  # iterating yields numpy scalars
    cells = np.empty(len(items), dtype=object)
    cells[:] = items
    return cells.reshape(array.shape).tolist()


def _float_token(value: Any) -> Any:
    if np.isfinite(value):
        return value
    if np.isnan(value):
        return _NAN
    return _INF if value > 0 else _NEG_INF


def _strings(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_strings(v, as_b64) for v in value]
    if isinstance(value, str):
        value = value.encode()
    if as_b64:
        return {_B64: base64.b64encode(value).decode()}
    return value.decode("utf-8", "replace")


def dumps_classify(results: Sequence[Sequence[Classification]]) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`."""
    if not results:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    return _dumps(
        {
            "results": [
                [[c.label.decode("utf-8", "replace"), _float32(c.score)] for c in row]
                for row in results
            ]
        }
    )


def dumps_regress(values: Sequence[float]) -> bytes:
    """`{"results": [v0, v1, ...]}`."""
    if not values:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    return _dumps({"results": _jsonable("results", np.asarray(values, dtype=np.float32))})


def _float32(value: float) -> Any:
    return _float_token(np.float32(value))
