"""The Open Inference Protocol ("KServe v2") over the data plane, for both of its transports:
its datatypes and platform names, its model metadata, and its infer request as the data
plane's `PredictCall`.

A v2 infer is a TFS predict: the same model spec (a version string of digits is a version,
any other a version label: servo's extension), the same signature (`serving_default`, or the
one a `signature_name` request parameter names: servo's extension), the same checks, runner,
batching, limits, metrics and request log. What differs is only how tensors travel:

    JSON `data` (flat or nested, row-major)      -> `from_json`
    raw little-endian bytes (gRPC's `raw_input_contents`, REST's binary extension)
                                                 -> `from_raw`; BYTES elements each with a
                                                    4-byte little-endian length before it
    gRPC's typed `contents`                      -> `from_contents`

Every decoder takes the tensor's decoded size from the request's `DecodeBudget` before it
builds the array, as TFS's decoders do, and checks that the data holds exactly the elements
its shape says.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import ml_dtypes
import numpy as np

from servo.apis import messages
from servo.apis.data_plane import ModelSpec, Prediction
from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError
from servo.decoded_size import STRING_ELEMENT_BYTES, DecodeBudget
from servo.dtypes import DataType, base
from servo.platforms.servable import DEFAULT_SIGNATURE, Signature

if TYPE_CHECKING:
    from servo.apis.data_plane import DataPlane
    from servo.server.server_core import VersionStatus

A = TypeVar("A")

# v2's datatype names for TensorFlow's dtypes, and the numpy dtypes of each (little-endian,
# as the protocol's raw form is).
DATATYPES: dict[DataType, str] = {
    DataType.DT_BOOL: "BOOL",
    DataType.DT_UINT8: "UINT8",
    DataType.DT_UINT16: "UINT16",
    DataType.DT_UINT32: "UINT32",
    DataType.DT_UINT64: "UINT64",
    DataType.DT_INT8: "INT8",
    DataType.DT_INT16: "INT16",
    DataType.DT_INT32: "INT32",
    DataType.DT_INT64: "INT64",
    DataType.DT_HALF: "FP16",
    DataType.DT_FLOAT: "FP32",
    DataType.DT_DOUBLE: "FP64",
    DataType.DT_STRING: "BYTES",
    DataType.DT_BFLOAT16: "BF16",
}
NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_FROM_NUMPY: dict[np.dtype, str] = {dt: name for name, dt in NUMPY_TYPES.items()}
# The kinds of numpy array a JSON list of each datatype may read as: numbers for numbers
# (integers for integer types), true/false for BOOL, strings for BYTES.
_JSON_KINDS: dict[str, str] = {
    **{t: "iu" for t in ("UINT8", "UINT16", "UINT32", "UINT64")},
    **{t: "iu" for t in ("INT8", "INT16", "INT32", "INT64")},
    **{t: "iuf" for t in ("FP16", "FP32", "FP64", "BF16")},
    "BOOL": "b",
    "BYTES": "U",
}

# The platform names Triton's clients know, for servo's platforms.
PLATFORMS: dict[str, str] = {
    "tensorflow": "tensorflow_savedmodel",
    "onnx": "onnxruntime_onnx",
    "tflite": "tensorflow_lite",
    "python": "python",
    "lookup": "servo_lookup",
    "pipeline": "ensemble",  # Triton's name for a model made of models
}

SIGNATURE_PARAMETER = "signature_name"
_LENGTH = struct.Struct("<I")
_INT64_MAX = 2**63 - 1
_MAX_RANK = 64  # numpy's most dimensions


def invalid(message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, message)


def datatype(dtype: DataType) -> str:
    """The v2 datatype of a signature's dtype; TensorFlow's own name for one v2 has not."""
    plain = base(dtype)
    return DATATYPES.get(plain, plain.name)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of an output array (numpy strings are BYTES; big-endian numbers are
    their datatype, which `to_raw` and `to_json_data` write little-endian)."""
    dtype = array.dtype
    found = _FROM_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if found is not None:
        return found
    if array.dtype.kind in "SUO":
        return "BYTES"
    raise ServoError(Code.UNIMPLEMENTED, f"Output of numpy dtype {array.dtype} has no v2 datatype")


def platform_name(platform: str) -> str:
    return PLATFORMS.get(platform, platform)


def model_spec(name: str, version: str) -> ModelSpec:
    """A v2 model name and version string: "" is the newest version, digits a version, and
    anything else a version label (servo's extension)."""
    if not version:
        return ModelSpec(name)
    if version.isdigit() and version.isascii():
        # Leading zeros apart, a version of more than 19 digits is past int64, and int() would
        # refuse one of more than 4300 (a ValueError, not the client's INVALID_ARGUMENT).
        digits = version.lstrip("0")
        number = int(digits or "0") if len(digits) <= len(str(_INT64_MAX)) else _INT64_MAX + 1
        if number > _INT64_MAX:
            raise invalid(f"Model version {version} is out of range")
        return ModelSpec(name, number)
    return ModelSpec(name, label=version)


# -- metadata ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size; [-1] too for a tensor of unknown rank


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    def to_json(self) -> dict[str, Any]:
        def tensors(specs: Sequence[TensorMetadata]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }


def model_metadata(
    name: str, versions: Sequence[int], platform: str, signatures: Mapping[str, Signature]
) -> ModelMetadata:
    """A model's v2 metadata: its servable versions, its platform by Triton's name, and the
    inputs and outputs of its `serving_default` signature (none when it has no such
    signature: its requests then name theirs in the `signature_name` parameter)."""
    signature = signatures.get(DEFAULT_SIGNATURE)

    def tensors(specs: Mapping[str, Any]) -> tuple[TensorMetadata, ...]:
        return tuple(
            TensorMetadata(
                alias, datatype(spec.dtype), (-1,) if spec.shape is None else tuple(spec.shape)
            )
            for alias, spec in specs.items()
        )

    return ModelMetadata(
        name,
        tuple(str(v) for v in versions),
        platform_name(platform),
        tensors(signature.inputs) if signature else (),
        tensors(signature.outputs) if signature else (),
    )


# -- health and metadata, from the data plane ----------------------------------------------------


def server_not_ready(plane: DataPlane) -> str:
    """Why the server is not ready ("" when it is): stopping, or the configured models with
    no AVAILABLE version, each with its versions' states."""
    if plane.stopping:
        return "Not ready: the server is stopping (it serves requests until it stops accepting)"
    waiting = [
        f"{name} ({describe(versions)})"
        for name, versions in plane.models()
        if not any(v.state is ManagerState.AVAILABLE for v in versions)
    ]
    if not waiting:
        return ""
    return f"Not ready: no AVAILABLE version of {len(waiting)} model(s): " + "; ".join(waiting)


def model_ready(plane: DataPlane, spec: ModelSpec) -> tuple[bool, str]:
    """Whether the model (the version, the label) `spec` names has an AVAILABLE version, and
    why not when it has none."""
    if spec.name not in plane.model_names():
        return False, f"Model {spec.name} is not in the server's config"
    try:
        versions = plane.versions(spec)
    except ServoError as exc:  # a label the model lacks
        return False, f"Not ready: {exc.message}"
    if any(v.state is ManagerState.AVAILABLE for v in versions):
        return True, ""
    if spec.version is not None:
        what = f"version {spec.version} of {spec.name}"
    elif spec.label is not None:
        what = f"version label {spec.label} of {spec.name}"
    else:
        what = spec.name
    return False, f"Not ready: {what} ({describe(versions)})"


def model_metadata_of(plane: DataPlane, spec: ModelSpec) -> ModelMetadata:
    """The v2 metadata of the version `spec` names; an error naming the model's states when
    it has no AVAILABLE version."""
    versions = [
        v.version for v in plane.versions(ModelSpec(spec.name)) if v.state is ManagerState.AVAILABLE
    ]
    try:
        return plane.metadata(
            spec,
            lambda id, servable: model_metadata(
                spec.name, versions, servable.platform, servable.signatures
            ),
        )
    except ServoError as exc:
        if exc.code is not Code.NOT_FOUND or spec.name not in plane.model_names():
            raise
        raise ServoError(
            Code.NOT_FOUND,
            f"{exc.message}; {spec.name}: {describe(plane.versions(ModelSpec(spec.name)))}",
        ) from None


def describe(versions: list[VersionStatus]) -> str:
    """A model's versions as an operator reads them: `version 2 LOADING; version 1 END:
    NOT_FOUND: no model`; `nothing loaded yet` when it has none."""
    if not versions:
        return "nothing loaded yet"
    parts = []
    for v in versions:
        part = f"version {v.version} {v.state.name}"
        if not v.status.ok:
            part += f": {v.status.code.name}: {v.status.message}"
        parts.append(part)
    return "; ".join(parts)


# -- tensors in -------------------------------------------------------------------------------


def _element_count(name: str, shape: Sequence[int], itemsize: int) -> int:
    """The elements of `shape`, refusing a shape no numpy array of `itemsize`-byte elements
    can have: numpy refuses more than 64 dimensions, and nonzero dims that multiply past its
    address space even when another dim is 0 (a ValueError, not the client's
    INVALID_ARGUMENT, had the reshape found them)."""
    if len(shape) > _MAX_RANK:
        raise invalid(
            f"Input '{name}' has {len(shape)} dimensions; at most {_MAX_RANK} are supported"
        )
    count = bound = 1
    for dim in shape:
        if dim < 0:
            raise invalid(f"Input '{name}' has shape {list(shape)}: a dimension is negative")
        count *= dim
        bound *= dim or 1
    if bound > _INT64_MAX // itemsize:
        raise invalid(f"Input '{name}' has shape {list(shape)}: too many elements")
    return count


def _numpy_type(name: str, datatype: str) -> np.dtype:
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise invalid(
            f"Input '{name}' has datatype '{datatype}', which is not one of the protocol's: "
            f"{', '.join(NUMPY_TYPES)}"
        )
    return dtype


def _describe(name: str, datatype: str, shape: Sequence[int]) -> Callable[[], str]:
    return lambda: f"Input '{name}' of shape {list(shape)} and datatype {datatype}"


def _take_numbers(
    budget: DecodeBudget, name: str, datatype: str, shape: Sequence[int], dtype: np.dtype
) -> int:
    count = _element_count(name, shape, dtype.itemsize)
    budget.take(count * dtype.itemsize, _describe(name, datatype, shape))
    return count


def _count_error(name: str, shape: Sequence[int], count: int, got: int, what: str) -> ServoError:
    return invalid(
        f"Input '{name}' has shape {list(shape)}, {count} element(s), but its {what} holds {got}"
    )


def from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview, budget: DecodeBudget
) -> np.ndarray:
    """A tensor from the protocol's raw bytes (a read-only view of them, BYTES apart)."""
    dtype = _numpy_type(name, datatype)
    if datatype == "BYTES":
        return _strings_from_raw(name, shape, raw, budget)
    count = _take_numbers(budget, name, datatype, shape, dtype)
    if len(raw) != count * dtype.itemsize:
        raise invalid(
            f"Input '{name}' has shape {list(shape)} and datatype {datatype}: "
            f"{count * dtype.itemsize} bytes expected, {len(raw)} given"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise invalid(f"Input '{name}' of datatype BOOL holds a byte other than 0 or 1")
    return array.reshape(shape)


def _strings_from_raw(
    name: str, shape: Sequence[int], raw: bytes | memoryview, budget: DecodeBudget
) -> np.ndarray:
    count = _element_count(name, shape, NUMPY_TYPES["BYTES"].itemsize)
    describe = _describe(name, "BYTES", shape)
    # Every element takes at least its 4-byte length: a count the bytes cannot hold is refused
    # before the array is made.
    if count * _LENGTH.size > len(raw):
        raise _count_error(name, shape, count, len(raw) // _LENGTH.size, "data (too short)")
    # The elements' bytes are the data less their lengths (exactly, or the framing is refused
    # below): the size a string tensor decodes to, as JSON and contents are charged.
    budget.take(count * STRING_ELEMENT_BYTES + len(raw) - count * _LENGTH.size, describe)
    view = memoryview(raw)
    values: list[bytes] = []
    offset, end = 0, len(view)
    for _ in range(count):
        if offset + _LENGTH.size > end:
            raise invalid(f"Input '{name}': its data ends inside element {len(values)}'s length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise invalid(
                f"Input '{name}': element {len(values)} is {length} bytes long, past the end "
                "of the data"
            )
        values.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise invalid(
            f"Input '{name}' has shape {list(shape)}, {count} element(s), but its data holds "
            f"{end - offset} byte(s) more"
        )
    array = np.empty(count, dtype=object)
    array[:] = values
    return array.reshape(shape)


def from_json(
    name: str, datatype: str, shape: Sequence[int], data: Any, budget: DecodeBudget
) -> np.ndarray:
    """A tensor from a JSON `data` member: a list, flat or nested in row-major order, of
    numbers, booleans (BOOL) or strings (BYTES, as UTF-8); or a single value of a shape of one
    element."""
    dtype = _numpy_type(name, datatype)
    count = _element_count(name, shape, dtype.itemsize)
    describe = _describe(name, datatype, shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        return _strings_from_json(name, shape, count, data, budget)
    budget.take(count * dtype.itemsize, describe)
    try:
        read = np.asarray(data)
    except ValueError:
        raise _not_nested(name, "numbers") from None
    if read.size != count:
        raise _count_error(name, shape, count, read.size, "data")
    kinds = _JSON_KINDS[datatype]  # every datatype's (BYTES is read above)
    if dtype.kind in "iu" and read.dtype.kind in "fO" and read.size:
        # numpy reads integers from both halves of uint64's range ([0, 2**63]) as float64, and
        # integers past it as objects: as Python's ints they keep their values, and are
        # range-checked exactly. (Fractions, nulls, ... are refused by their kind below.)
        flat = _flatten(name, data)
        if all(type(v) is int for v in flat):
            _check_range(name, datatype, dtype, min(flat), max(flat))
            return np.array(flat, dtype=dtype).reshape(shape)
    if read.dtype.kind not in kinds and read.size:
        raise invalid(f"Input '{name}' of datatype {datatype} holds {_kind_name(read)}")
    if read.dtype.kind in "iu" and dtype.kind in "iu" and read.size:
        _check_range(name, datatype, dtype, int(read.min()), int(read.max()))
    return read.astype(dtype, copy=False).reshape(shape)


def _check_range(name: str, datatype: str, dtype: np.dtype, low: int, high: int) -> None:
    info = np.iinfo(dtype)
    if low < info.min or high > info.max:
        raise invalid(
            f"Input '{name}' of datatype {datatype} holds {low if low < info.min else high}, "
            f"out of its range [{info.min}, {info.max}]"
        )


def _kind_name(array: np.ndarray) -> str:
    kind = array.dtype.kind
    return {
        "f": "a number with a fraction",
        "b": "true or false",
        "U": "a string",
        "i": "an integer",
        "u": "an integer",
    }.get(kind, "a value of another type (an integer out of range, or null)")


def _strings_from_json(
    name: str, shape: Sequence[int], count: int, data: list[Any], budget: DecodeBudget
) -> np.ndarray:
    flat = _flatten(name, data)
    if len(flat) != count:
        raise _count_error(name, shape, count, len(flat), "data")
    values = []
    for value in flat:
        if not isinstance(value, str):
            raise invalid(f"Input '{name}' of datatype BYTES holds {value!r}, not a string")
        values.append(value.encode("utf-8", "surrogatepass"))
    budget.take(
        count * STRING_ELEMENT_BYTES + sum(map(len, values)), _describe(name, "BYTES", shape)
    )
    array = np.empty(count, dtype=object)
    array[:] = values
    return array.reshape(shape)


def _flatten(name: str, data: list[Any]) -> list[Any]:
    """The values of a tensor's `data`, flat or nested to one depth with every list at a
    depth of one length: the data numpy reads for a numeric tensor, and nothing else."""
    if not any(isinstance(v, list) for v in data):
        return data
    lengths: list[int] = []  # the lists' length at each depth, as the first list there has it
    probe: Any = data
    while isinstance(probe, list):
        if len(lengths) == _MAX_RANK:
            raise invalid(f"Input '{name}': its data nests lists more than {_MAX_RANK} deep")
        lengths.append(len(probe))
        probe = probe[0] if probe else None
    depth = len(lengths)
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        level = len(stack)
        for value in stack[-1]:
            if isinstance(value, list):
                if level == depth or len(value) != lengths[level]:
                    raise _not_nested(name, "strings")
                stack.append(iter(value))
                break
            if level != depth:
                raise _not_nested(name, "strings")
            flat.append(value)
        else:
            stack.pop()
    return flat


def _not_nested(name: str, what: str) -> ServoError:
    return invalid(
        f"Input '{name}': its data is not a list of {what} nested to one depth "
        "(its lists differ in length, or it mixes lists and values)"
    )


# The contents field of each datatype in gRPC's InferTensorContents.
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def from_contents(
    name: str, datatype: str, shape: Sequence[int], contents: Any, budget: DecodeBudget
) -> np.ndarray:
    """A tensor from gRPC's typed contents (an InferTensorContents message)."""
    dtype = _numpy_type(name, datatype)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise invalid(
            f"Input '{name}': datatype {datatype} has no contents field; send it in "
            "raw_input_contents"
        )
    values = getattr(contents, field)
    count = _element_count(name, shape, dtype.itemsize)
    if len(values) != count:
        raise _count_error(name, shape, count, len(values), field)
    if datatype == "BYTES":
        budget.take(
            count * STRING_ELEMENT_BYTES + sum(map(len, values)), _describe(name, datatype, shape)
        )
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    budget.take(count * dtype.itemsize, _describe(name, datatype, shape))
    # Read as the widest type of their kind: numpy would read a list of uint64s from both
    # halves of its range as float64 (upb's repeated fields hand numpy their own buffer, but
    # protobuf's other runtimes hand it Python ints).
    wide = np.array(values, dtype={"i": np.int64, "u": np.uint64}.get(dtype.kind))
    if dtype.kind in "iu" and wide.size:
        _check_range(name, datatype, dtype, int(wide.min()), int(wide.max()))
    return wide.astype(dtype, copy=False).reshape(shape)


# -- tensors out -------------------------------------------------------------------------------


def to_raw(array: np.ndarray) -> bytes:
    """An output's raw bytes: little-endian elements in row-major order; BYTES elements each
    after their 4-byte length."""
    if array.dtype.kind in "SUO":
        pack = _LENGTH.pack
        parts = []
        for value in array.reshape(-1):
            data = _as_bytes(value)
            parts.append(pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def to_json_data(name: str, array: np.ndarray) -> list[Any] | np.ndarray:
    """An output's JSON `data`: its elements, flat (numbers as a flat array, for orjson's
    numpy option); BYTES as UTF-8 text."""
    if array.dtype.kind in "SUO":
        try:
            return [_as_bytes(v).decode("utf-8") for v in array.reshape(-1)]
        except UnicodeDecodeError:
            raise invalid(
                f"Output '{name}' holds bytes that are not UTF-8 text, which JSON cannot "
                'carry: ask for it as binary data (its "parameters": {"binary_data": true})'
            ) from None
    if array.dtype == NUMPY_TYPES["BF16"] or array.dtype == NUMPY_TYPES["FP16"]:
        array = array.astype(np.float32)
    elif array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).reshape(-1)


# -- the infer request as the data plane's call -------------------------------------------------


@dataclass(slots=True)
class InferInput:
    """One input of an infer request; `decode(budget)` makes its array."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    decode: Callable[[DecodeBudget], np.ndarray]


class InferCall(Generic[A]):
    """An infer request as the data plane's PredictCall: its inputs are checked against the
    signature (names, datatypes) before any is decoded, then decoded within `budget`;
    `respond(prediction)` writes the protocol's answer."""

    __slots__ = ("_budget", "_inputs", "_respond", "output_filter", "signature_name")

    def __init__(
        self,
        inputs: Sequence[InferInput],
        outputs: Sequence[str],
        signature_name: str,
        budget: DecodeBudget,
        respond: Callable[[Prediction], A],
    ) -> None:
        seen: set[str] = set()
        for tensor in inputs:
            if tensor.name in seen:
                raise invalid(f"Input '{tensor.name}' is given twice")
            seen.add(tensor.name)
        wanted: set[str] = set()
        for output in outputs:
            if output in wanted:
                raise invalid(f"Output '{output}' is requested twice")
            wanted.add(output)
        self._inputs = inputs
        self.output_filter = tuple(outputs)
        self.signature_name = signature_name
        self._budget = budget
        self._respond = respond

    def missing_signature(self, key: str) -> ServoError:
        return invalid(
            f"The model has no signature {key!r}; name one of its signatures in the "
            f"request's '{SIGNATURE_PARAMETER}' parameter"
        )

    def input_names(self, signature: Signature) -> Collection[str]:
        for tensor in self._inputs:
            _numpy_type(tensor.name, tensor.datatype)  # one of the protocol's
            spec = signature.inputs.get(tensor.name)
            if spec is None:
                continue  # the data plane's name check words it
            want = datatype(spec.dtype)
            if tensor.datatype != want:
                raise invalid(
                    f"Input '{tensor.name}' has datatype {tensor.datatype}; the model takes {want}"
                )
        return [tensor.name for tensor in self._inputs]

    def inputs(self) -> dict[str, np.ndarray]:
        budget = self._budget
        return {tensor.name: tensor.decode(budget) for tensor in self._inputs}

    def answer(self, prediction: Prediction) -> A:
        return self._respond(prediction)

    def log_messages(self, prediction: Prediction, answer: A) -> tuple[Any, Any]:
        return messages.predict_messages(prediction)


def output_arrays(prediction: Prediction) -> list[tuple[str, np.ndarray]]:
    """The outputs to answer with, in the order requested (the signature's when none were)."""
    outputs = prediction.outputs
    return [
        (alias, outputs[alias]) for alias in prediction.output_names or prediction.signature.outputs
    ]
