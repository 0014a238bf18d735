"""The tflite platform: `model.tflite` in the version directory, run by a TF Lite interpreter.

This module owns reading the model's signatures and running them on a pool of interpreters.

Signatures, the first of these that the model has (1 and 3 are what TFS does):
1. SignatureDefs stored the way TFS's TF Lite session reads them (`tflite::GetSignatureDefMap`:
   the model metadata entry `signature_defs_metadata`, a flexbuffer map of key -> serialized
   SignatureDef). Tensor names that do not exist in the model are retried without their `:0`
   suffix, as TFS does ("tflite_input:0" -> "tflite_input").
2. (servo only) the model's native signatures, which the TF Lite converter writes for TF2
   models; TFS ignores these and falls through to 3.
3. What TFS's TF Lite session builds: one `serving_default` predict signature whose inputs and
   outputs are the model's, each keyed by its tensor name cut at the first ':' and named by
   the tensor name. Shapes are the model's shape signature, -1 for a dynamic dim (TFS shows
   the current dims, which are the same unless the model has dynamic dims).

Interpreters are not thread-safe, so each run takes one from a pool (created lazily, at most
`tflite_num_interpreters` of them) and gives it back. A fed input whose shape differs from the
interpreter's current one resizes that input (any dim, as TFS's session does), so a model
exported with batch size 1 answers any batch size. An input is not resized beyond 6 dims (or
its own rank, when that is more): XNNPack, TF Lite's default CPU delegate, takes at most 6, and
in TF 2.21 crashes the process when a delegated input is resized to 8 or more.

The interpreter is `ai_edge_litert`'s when that package is installed (the `tflite` extra: TF
Lite's maintained home, a 20 MB wheel that needs no TensorFlow), else TensorFlow's
`tf.lite.Interpreter`, which TF 2.21 still ships (deprecated). Both run the same TF Lite
runtime; litert is preferred even where TensorFlow is installed, as it is the maintained one
and loads without TensorFlow's libraries. `RUNTIME` names the one in use. Nothing else here
needs TensorFlow: SignatureDefs are parsed with servo's own copy of their proto.

`options.intra_op_parallelism` sets each interpreter's thread count (0 = TF Lite's default).
`options.extra` keys read here:
- `tflite_num_interpreters` (int, default min(4, CPUs)): interpreters in the pool, i.e. runs
  of one version that can proceed at once.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flatbuffers import encode, flexbuffers, number_types, packer, table
from google.protobuf import message

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, from_numpy
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    ModelServable,
    Signature,
    TensorSpec,
    missing_input,
    unexpected_inputs,
    unknown_output,
    unknown_signature,
    unloaded,
)
from servo.protos import meta_graph_pb2

_Interpreter: Any
try:  # pragma: no cover - depends on what is installed
    from ai_edge_litert import interpreter as _litert

    _Interpreter = _litert.Interpreter
    RUNTIME = "ai_edge_litert"
except ImportError:
    try:
        import tensorflow as tf
    except ImportError:  # the router names the `tflite` extra for a missing ai_edge_litert
        raise ImportError(
            "The tflite platform needs ai-edge-litert (or TensorFlow)", name="ai_edge_litert"
        ) from None
    _Interpreter = tf.lite.Interpreter
    RUNTIME = "tensorflow"

PLATFORM = "tflite"
MODEL_FILE = "model.tflite"
SIGNATURE_DEFS_METADATA = b"signature_defs_metadata"
NUM_INTERPRETERS_KEY = "tflite_num_interpreters"
# The most dims an input is resized to (beyond its own rank): XNNPack's XNN_MAX_TENSOR_DIMS.
MAX_RESIZED_RANK = 6


def load(path: str, options: PlatformOptions) -> TfLiteServable:
    """Loads `path`/model.tflite. NOT_FOUND without the file; INVALID_ARGUMENT when it is not
    a TF Lite model or its signatures do not match its tensors; UNIMPLEMENTED for tensor types
    servo cannot hold."""
    model_path = os.path.join(path, MODEL_FILE)
    try:
        with open(model_path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise ServoError(Code.NOT_FOUND, f"Could not find {MODEL_FILE} in {path}") from None
    except OSError as exc:
        raise ServoError(Code.NOT_FOUND, f"Could not read {model_path}: {exc}") from None
    threads = options.intra_op_parallelism if options.intra_op_parallelism > 0 else None
    size = int(options.extra.get(NUM_INTERPRETERS_KEY, 0) or min(4, os.cpu_count() or 1))
    if size < 1:
        raise ServoError(Code.INVALID_ARGUMENT, f"{NUM_INTERPRETERS_KEY} must be >= 1: {size}")

    def make() -> _Slot:
        return _Slot(_new_interpreter(content, threads, model_path))

    first = make()
    programs = _programs(first.interpreter, content, model_path)
    pool = _Pool(make, size, first, f"TF Lite model {model_path}")
    return TfLiteServable(model_path, programs, pool)


def _new_interpreter(content: bytes, threads: int | None, model_path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            interpreter = _Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Cannot build a TF Lite interpreter from {model_path}: {exc}",
        ) from None
    return interpreter


# -- signatures ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Program:
    """How to run one signature: tensor indices by alias, in subgraph 0, or the key of a
    native signature (run through the interpreter's signature runner)."""

    signature: Signature
    inputs: Mapping[str, int]  # alias -> tensor index (subgraph 0), or runner input name
    outputs: Mapping[str, int]
    max_ranks: Mapping[str, int]  # alias -> the most dims a fed input may have
    runner_key: str | None = None


def _dtype(numpy_type: Any, what: str) -> DataType:
    try:
        return from_numpy(np.dtype(numpy_type))
    except (ServoError, TypeError) as exc:
        raise ServoError(
            Code.UNIMPLEMENTED, f"{what} has a type servo cannot serve: {exc}"
        ) from None


def _shape(detail: Mapping[str, Any]) -> tuple[int, ...]:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) != len(detail["shape"]):
        shape = detail["shape"]
    return tuple(int(d) for d in shape)


def _programs(interpreter: Any, content: bytes, model_path: str) -> dict[str, _Program]:
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    sigdefs = _metadata_signature_defs(content, model_path)
    if sigdefs:
        return {
            key: _program_from_sigdef(key, sigdef, inputs, outputs, model_path)
            for key, sigdef in sigdefs.items()
        }
    native = interpreter.get_signature_list()
    if native:
        return {key: _program_from_runner(interpreter, key, model_path) for key in native}
    # TFS's generated signature.
    in_specs: dict[str, TensorSpec] = {}
    in_index: dict[str, int] = {}
    for name, d in inputs.items():
        alias = name.split(":", 1)[0]
        in_specs[alias] = TensorSpec(_dtype(d["dtype"], f"Input {name}"), _shape(d), name)
        in_index[alias] = d["index"]
    out_specs: dict[str, TensorSpec] = {}
    out_index: dict[str, int] = {}
    for name, d in outputs.items():
        alias = name.split(":", 1)[0]
        out_specs[alias] = TensorSpec(_dtype(d["dtype"], f"Output {name}"), _shape(d), name)
        out_index[alias] = d["index"]
    signature = Signature(DEFAULT_SIGNATURE, in_specs, out_specs, PREDICT_METHOD)
    max_ranks = {a: _max_rank(inputs[s.tensor_name]) for a, s in in_specs.items()}
    return {DEFAULT_SIGNATURE: _Program(signature, in_index, out_index, max_ranks)}


def _max_rank(detail: Mapping[str, Any]) -> int:
    return max(MAX_RESIZED_RANK, len(detail["shape"]))


def _program_from_sigdef(
    key: str,
    sigdef: meta_graph_pb2.SignatureDef,
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Mapping[str, Any]],
    model_path: str,
) -> _Program:
    def resolve(
        infos: Mapping[str, meta_graph_pb2.TensorInfo],
        tensors: Mapping[str, Mapping[str, Any]],
        kind: str,
    ) -> tuple[dict[str, TensorSpec], dict[str, int]]:
        specs: dict[str, TensorSpec] = {}
        index: dict[str, int] = {}
        for alias, info in infos.items():
            name = info.name
            if name not in tensors:
                name = name.split(":", 1)[0]  # converters used to drop the ':0'
            if name not in tensors:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"Signature {kind} {alias} references an unknown tensor: Unknown tensor "
                    f"'{info.name}' in {model_path}",
                )
            shape: tuple[int, ...] | None
            if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
                shape = tuple(int(d.size) for d in info.tensor_shape.dim)
            else:
                shape = None
            try:
                dtype = DataType(info.dtype)
            except ValueError:
                dtype = DataType.DT_INVALID
            specs[alias] = TensorSpec(dtype, shape, name)
            index[alias] = tensors[name]["index"]
        return specs, index

    in_specs, in_index = resolve(sigdef.inputs, inputs, "input")
    out_specs, out_index = resolve(sigdef.outputs, outputs, "output")
    signature = Signature(key, in_specs, out_specs, sigdef.method_name or PREDICT_METHOD)
    max_ranks = {a: _max_rank(inputs[s.tensor_name]) for a, s in in_specs.items()}
    return _Program(signature, in_index, out_index, max_ranks)


def _program_from_runner(interpreter: Any, key: str, model_path: str) -> _Program:
    runner = interpreter.get_signature_runner(key)
    in_specs = {
        alias: TensorSpec(_dtype(d["dtype"], f"Input {alias} of {key}"), _shape(d), d["name"])
        for alias, d in runner.get_input_details().items()
    }
    out_specs = {
        alias: TensorSpec(_dtype(d["dtype"], f"Output {alias} of {key}"), _shape(d), d["name"])
        for alias, d in runner.get_output_details().items()
    }
    signature = Signature(key, in_specs, out_specs, PREDICT_METHOD)
    return _Program(
        signature,
        {a: d["index"] for a, d in runner.get_input_details().items()},
        {a: d["index"] for a, d in runner.get_output_details().items()},
        {a: _max_rank(d) for a, d in runner.get_input_details().items()},
        runner_key=key,
    )


def _metadata_signature_defs(
    content: bytes, model_path: str
) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs in the model's `signature_defs_metadata` entry, as TF Lite's
    signature_def_util stores them; {} when there is none."""
    try:
        raw = _metadata(content, SIGNATURE_DEFS_METADATA)
        if raw is None:
            return {}
        root = flexbuffers.GetRoot(raw).AsMap
        sigdefs: dict[str, meta_graph_pb2.SignatureDef] = {}
        for key, value in zip(root.Keys, root.Values, strict=True):
            sigdef = meta_graph_pb2.SignatureDef()
            sigdef.ParseFromString(value.AsBlob if value.IsBlob else value.AsStringBytes)
            sigdefs[key.AsKey] = sigdef
        return sigdefs
    except (
        message.DecodeError,
        struct.error,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Invalid SignatureDefs found in TfLite model {model_path}: {exc}",
        ) from None


def _metadata(content: bytes, name: bytes) -> bytes | None:
    """The bytes of the model's metadata entry `name`, read from the flatbuffer.

    TF Lite's schema.fbs: Model.buffers is field 4 and Model.metadata field 6 (vtable offsets
    12 and 16), Metadata{name, buffer}, Buffer{data, offset, size}; offset and size locate
    data stored after the flatbuffer in models over 2 GB.
    """
    model = table.Table(content, encode.Get(packer.uoffset, content, 0))
    metadata = _vector(model, 16)
    buffers = _vector(model, 12)
    if metadata is None or buffers is None:
        return None
    for i in range(metadata[1]):
        entry = table.Table(content, model.Indirect(metadata[0] + 4 * i))
        o = entry.Offset(4)
        if not o or entry.String(o + entry.Pos) != name:
            continue
        o = entry.Offset(6)
        index = entry.Get(number_types.Uint32Flags, o + entry.Pos) if o else 0
        if index >= buffers[1]:
            return None
        buffer = table.Table(content, model.Indirect(buffers[0] + 4 * index))
        o_off, o_size = buffer.Offset(6), buffer.Offset(8)
        offset = buffer.Get(number_types.Uint64Flags, o_off + buffer.Pos) if o_off else 0
        size = buffer.Get(number_types.Uint64Flags, o_size + buffer.Pos) if o_size else 0
        if offset > 1:
            return bytes(content[offset : offset + size])
        data = _vector(buffer, 4)
        return bytes(content[data[0] : data[0] + data[1]]) if data else b""
    return None


def _vector(tab: table.Table, slot: int) -> tuple[int, int] | None:
    o = tab.Offset(slot)
    if not o:
        return None
    return tab.Vector(o), tab.VectorLen(o)


# -- the interpreter pool --------------------------------------------------------------------


class _Slot:
    """One interpreter and the input shapes it is currently allocated for."""

    __slots__ = ("interpreter", "runners", "shapes")

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.shapes: dict[int, tuple[int, ...]] = {
            d["index"]: tuple(int(x) for x in d["shape"]) for d in interpreter.get_input_details()
        }
        self.runners: dict[str, Any] = {}


class _Pool:
    """At most `size` interpreters, made on demand; `acquire` waits when all are busy."""

    def __init__(self, make: Callable[[], _Slot], size: int, first: _Slot, what: str) -> None:
        self._what = what  # the model, as the error after close names it
        self._make = make
        self._size = size
        self._idle = [first]
        self._created = 1
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def acquire(self) -> _Slot:
        with self._cond:
            while True:
                if self._closed:
                    raise unloaded(self._what)
                if self._idle:
                    return self._idle.pop()
                if self._created < self._size:
                    self._created += 1
                    break
                self._cond.wait()
        try:
            return self._make()
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def release(self, slot: _Slot) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(slot)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._idle.clear()
            self._cond.notify_all()


# -- the servable ----------------------------------------------------------------------------


class TfLiteServable(ModelServable):
    """A TF Lite model with its signatures, run on a pool of interpreters.

    Thread-safety: `run` may be called from many threads at once; each run has an interpreter
    of its own for its duration (runs beyond the pool's size wait for one).
    """

    platform = PLATFORM

    def __init__(self, path: str, programs: dict[str, _Program], pool: _Pool) -> None:
        self.path = path
        self._programs = programs
        self._signatures = {name: p.signature for name, p in programs.items()}
        self._pool = pool

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        program = self._programs.get(signature.name)
        if program is None:
            raise unknown_signature(signature.name)
        wanted = program.outputs.keys() if output_names is None else output_names
        for alias in wanted:
            if alias not in program.outputs:
                raise unknown_output(program.signature, alias)
        feeds: dict[str, np.ndarray] = {}
        for alias in program.inputs:
            try:
                value = inputs[alias]
            except KeyError:
                raise missing_input(program.signature, alias) from None
            if value.ndim > program.max_ranks[alias]:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"Input {alias!r} of signature {signature.name} has {value.ndim} dims; "
                    f"this TF Lite model takes at most {program.max_ranks[alias]}",
                )
            # Strings stay object arrays of bytes: TF Lite takes them as they are, while
            # numpy's fixed-width bytes would drop a string's trailing NUL bytes.
            feeds[alias] = value
        if len(inputs) != len(feeds):  # the interpreter would ignore them
            raise unexpected_inputs(program.signature, inputs)
        slot = self._pool.acquire()
        try:
            if program.runner_key is not None:
                results = self._run_runner(slot, program, feeds)
            else:
                results = self._run_indices(slot, program, feeds, wanted)
        except (ValueError, RuntimeError) as exc:
            raise ServoError(Code.INVALID_ARGUMENT, f"TF Lite run failed: {exc}") from None
        finally:
            self._pool.release(slot)
        return {alias: _output(results[alias]) for alias in wanted}

    @staticmethod
    def _run_indices(
        slot: _Slot, program: _Program, feeds: Mapping[str, np.ndarray], wanted: Any
    ) -> dict[str, np.ndarray]:
        interpreter = slot.interpreter
        resized = False
        for alias, index in program.inputs.items():
            shape = feeds[alias].shape
            if slot.shapes.get(index) != shape:
                interpreter.resize_tensor_input(index, list(shape), strict=False)
                slot.shapes[index] = shape
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for alias, index in program.inputs.items():
            interpreter.set_tensor(index, feeds[alias])
        interpreter.invoke()
        return {alias: interpreter.get_tensor(program.outputs[alias]) for alias in wanted}

    @staticmethod
    def _run_runner(
        slot: _Slot, program: _Program, feeds: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        key = program.runner_key
        assert key is not None
        runner = slot.runners.get(key)
        if runner is None:
            runner = slot.runners[key] = slot.interpreter.get_signature_runner(key)
        # The runner resizes its inputs to the fed shapes itself.
        outputs: dict[str, np.ndarray] = runner(**feeds)
        return outputs

    def close(self) -> None:
        self._pool.close()


def _output(value: np.ndarray) -> np.ndarray:
    if type(value) is not np.ndarray:  # a rank-0 tensor comes back as a numpy scalar
        value = np.asarray(value)
    if value.dtype.kind == "S":  # servo's strings are object arrays of bytes
        out = np.empty(value.shape, dtype=object)
        out.ravel()[:] = [bytes(v) for v in value.ravel()]
        return out
    return value
