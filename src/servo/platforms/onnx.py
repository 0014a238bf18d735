"""The onnx platform: `model.onnx` in the version directory, run with ONNX Runtime on the CPU.

This module owns loading the model into an `onnxruntime.InferenceSession` and its one
signature, `serving_default` (predict): the graph's inputs and outputs, aliased by their ONNX
names, with symbolic or unknown dims as -1 and `tensor_name` the ONNX name.

Session settings: `options.intra_op_parallelism` and `options.inter_op_parallelism` (0 = ONNX
Runtime's choice) set the session's thread counts. `options.extra` may override them and more:
- `onnx_intra_op_num_threads` (int): threads inside one operator.
- `onnx_inter_op_num_threads` (int): threads across operators (used in parallel mode only).
- `onnx_execution_mode` ("sequential" or "parallel"): ONNX Runtime's execution mode.
- `onnx_graph_optimization_level` ("disable_all", "basic", "extended" or "all"; default all).
- `onnx_session_config` (mapping of str -> str): `SessionOptions.add_session_config_entry`
  entries, e.g. {"session.intra_op.allow_spinning": "0"} to stop idle threads spinning.

`run` is on the hot path (a small MLP answers in a few microseconds), so it calls the session's
compiled runner directly with a precomputed output-name list and does no per-call validation
beyond what ONNX Runtime does itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    ModelServable,
    Signature,
    TensorSpec,
    missing_input,
    unknown_output,
    unknown_signature,
    unloaded,
)

PLATFORM = "onnx"
MODEL_FILE = "model.onnx"

# ONNX Runtime's type strings -> TensorFlow dtypes.
ONNX_TYPES: dict[str, DataType] = {
    "tensor(float)": DataType.DT_FLOAT,
    "tensor(double)": DataType.DT_DOUBLE,
    "tensor(float16)": DataType.DT_HALF,
    "tensor(bfloat16)": DataType.DT_BFLOAT16,
    "tensor(int8)": DataType.DT_INT8,
    "tensor(int16)": DataType.DT_INT16,
    "tensor(int32)": DataType.DT_INT32,
    "tensor(int64)": DataType.DT_INT64,
    "tensor(uint8)": DataType.DT_UINT8,
    "tensor(uint16)": DataType.DT_UINT16,
    "tensor(uint32)": DataType.DT_UINT32,
    "tensor(uint64)": DataType.DT_UINT64,
    "tensor(bool)": DataType.DT_BOOL,
    "tensor(string)": DataType.DT_STRING,
    "tensor(complex64)": DataType.DT_COMPLEX64,
    "tensor(complex128)": DataType.DT_COMPLEX128,
}

_OPTIMIZATION_LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


def load(path: str, options: PlatformOptions) -> OnnxServable:
    """Loads `path`/model.onnx. NOT_FOUND without the file; DATA_LOSS when it does not parse;
    INVALID_ARGUMENT when ONNX Runtime rejects the graph or an option; UNIMPLEMENTED for input
    or output types servo cannot hold (sequences, maps, optionals, float8, ...)."""
    model_path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise ServoError(Code.NOT_FOUND, f"Could not find {MODEL_FILE} in {path}")
    session_options = _session_options(options)
    try:
        session = ort.InferenceSession(
            model_path, sess_options=session_options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime raises its own classes, one per status code
        name = type(exc).__name__
        code = Code.DATA_LOSS if name == "InvalidProtobuf" else Code.INVALID_ARGUMENT
        if name == "NoSuchFile":
            code = Code.NOT_FOUND
        raise ServoError(code, f"Could not load ONNX model {model_path}: {exc}") from None
    signature = Signature(
        DEFAULT_SIGNATURE,
        {arg.name: _tensor_spec(arg, "input") for arg in session.get_inputs()},
        {arg.name: _tensor_spec(arg, "output") for arg in session.get_outputs()},
        PREDICT_METHOD,
    )
    return OnnxServable(model_path, session, signature)


def _session_options(options: PlatformOptions) -> ort.SessionOptions:
    extra = options.extra
    so = ort.SessionOptions()
    try:
        intra = int(extra.get("onnx_intra_op_num_threads", options.intra_op_parallelism))
        inter = int(extra.get("onnx_inter_op_num_threads", options.inter_op_parallelism))
        if intra > 0:
            so.intra_op_num_threads = intra
        if inter > 0:
            so.inter_op_num_threads = inter
        if "onnx_execution_mode" in extra:
            so.execution_mode = _EXECUTION_MODES[str(extra["onnx_execution_mode"]).lower()]
        level = str(extra.get("onnx_graph_optimization_level", "all")).lower()
        so.graph_optimization_level = _OPTIMIZATION_LEVELS[level]
        for key, value in dict(extra.get("onnx_session_config", {})).items():
            so.add_session_config_entry(str(key), str(value))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ServoError(
            Code.INVALID_ARGUMENT, f"Invalid ONNX Runtime session option: {exc!r}"
        ) from None
    return so


def _tensor_spec(arg: Any, kind: str) -> TensorSpec:
    dtype = ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise ServoError(
            Code.UNIMPLEMENTED,
            f"ONNX {kind} {arg.name!r} has type {arg.type}, which servo cannot serve; supported: "
            f"{', '.join(ONNX_TYPES)}",
        )
    shape = arg.shape
    if shape is None:
        dims: tuple[int, ...] | None = None
    else:
        # Symbolic dims come as names, unknown ones as None.
        dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return TensorSpec(dtype, dims, arg.name)


class OnnxServable(ModelServable):
    """An ONNX Runtime session with one signature, serving_default.

    Thread-safety: `run` may be called from many threads at once (`InferenceSession.run` is
    thread-safe); `close` must not overlap `run`.
    """

    platform = PLATFORM

    def __init__(self, path: str, session: ort.InferenceSession, signature: Signature) -> None:
        self.path = path
        self._session: ort.InferenceSession | None = session
        # InferenceSession.run re-validates feeds and output names in Python on every call;
        # the pybind session behind it does the same checks in C++, for less.
        self._run = session._sess.run
        self._signature = signature
        self._signatures = {signature.name: signature}
        self._input_names = tuple(signature.inputs)
        self._all_outputs = list(signature.outputs)
        self._strings_in = tuple(
            n for n, s in signature.inputs.items() if s.dtype is DataType.DT_STRING
        )
        self._strings_out = tuple(
            n for n, s in signature.outputs.items() if s.dtype is DataType.DT_STRING
        )

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if signature.name != DEFAULT_SIGNATURE:
            raise unknown_signature(signature.name)
        names = self._all_outputs if output_names is None else list(output_names)
        for name in self._input_names:
            # ONNX Runtime's C++ run does not check for missing feeds before it runs the graph.
            if name not in inputs:
                raise missing_input(self._signature, name)
        if self._strings_in:
            inputs = _strings_to_str(inputs, self._strings_in)
        try:
            values = self._run(names, inputs, None)
        except Exception as exc:  # ONNX Runtime's error classes have no common base
            raise _run_error(exc, names, self._signature) from None
        # Indexing, not dict(zip()): measurably cheaper per call here.
        if len(names) == 1:
            result = {names[0]: values[0]}
        else:
            result = {names[i]: values[i] for i in range(len(names))}
        for name in self._strings_out:
            if name in result:
                result[name] = _str_to_bytes(result[name])
        return result

    def close(self) -> None:
        self._session = None
        what = f"ONNX model {self.path}"

        def closed(*_args: Any) -> Any:
            raise unloaded(what)

        self._run = closed


def _run_error(exc: Exception, output_names: Sequence[str], signature: Signature) -> ServoError:
    if isinstance(exc, ServoError):
        return exc
    unknown = [n for n in output_names if n not in signature.outputs]
    if unknown:
        return unknown_output(signature, unknown[0])
    # A bad feed (dtype, shape) is the caller's error; anything else is the model's.
    name = type(exc).__name__
    bad_input = name in ("InvalidArgument", "TypeError", "ValueError", "RuntimeError")
    return ServoError(Code.INVALID_ARGUMENT if bad_input else Code.INTERNAL, f"ONNX Runtime: {exc}")


def _strings_to_str(inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    # ONNX Runtime takes string tensors as arrays of str; servo's are arrays of bytes.
    converted = dict(inputs)
    for name in names:
        value = converted.get(name)
        if value is not None and value.dtype == object:
            out = np.empty(value.shape, dtype=object)
            out.ravel()[:] = [
                v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                for v in value.ravel()
            ]
            converted[name] = out
    return converted


def _str_to_bytes(value: np.ndarray) -> np.ndarray:
    out = np.empty(value.shape, dtype=object)
    out.ravel()[:] = [
        v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
        for v in value.ravel()
    ]
    return out
