"""ModelServable: the servable every platform loads, and the signatures it computes.

A model servable holds named signatures (TensorFlow's SignatureDefs: inputs and outputs with a
dtype and a shape, and a method name) and runs one signature on a dict of numpy arrays. The
APIs (REST, gRPC) decode requests into arrays using the signature's dtypes, call `run`, and
encode what it returns; classify and regress are built on `run` the way TFS builds them.
"""

from __future__ import annotations

import abc
import contextvars
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, to_numpy

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"

# The tensor keys TFS's classify and regress signatures use.
CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature. `shape` is None when the rank is unknown; a dim of
    -1 is unknown. `tensor_name` is the name inside the model (`x:0` for TensorFlow).
    `shape_recorded` is False when the model records no shape at all (an old SavedModel's
    TensorInfo without `tensor_shape`): the metadata then has none, as TFS's has none."""

    dtype: DataType
    shape: tuple[int, ...] | None
    tensor_name: str = ""
    shape_recorded: bool = True


@dataclass(frozen=True, slots=True)
class Signature:
    """A named computation: inputs and outputs by alias, and TFS's method name."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = PREDICT_METHOD
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """TFS's JSON form of a SignatureDef (proto JSON with default values written out)."""
        return {
            "inputs": {k: _tensor_info_json(v) for k, v in self.inputs.items()},
            "outputs": {k: _tensor_info_json(v) for k, v in self.outputs.items()},
            "method_name": self.method_name,
            "defaults": dict(self.defaults),
        }


def _tensor_info_json(spec: TensorSpec) -> dict[str, Any]:
    if not spec.shape_recorded:  # an unset message field: TFS's JSON leaves it out
        return {"dtype": spec.dtype.name, "name": spec.tensor_name}
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}
    return {"dtype": spec.dtype.name, "tensor_shape": shape, "name": spec.tensor_name}


def signature_def_map_json(signatures: Mapping[str, Signature]) -> dict[str, Any]:
    """`{"signature_def": {name: SignatureDef JSON}}`, as in TFS's metadata answer."""
    return {"signature_def": {name: sig.to_json() for name, sig in signatures.items()}}


class ModelServable(abc.ABC):
    """A loaded model: named signatures, and a way to run them.

    The contract every platform keeps (tests/platforms/test_conformance.py checks it on each):

    - `signatures` is fixed at load: the same names, and for each input and output alias the
      same dtype and shape (None for an unknown rank, -1 for an unknown dim), for the
      servable's whole life.
    - `run(signature, inputs, output_names)` runs one of the servable's signatures on a numpy
      array for each of its input aliases, of the signature's dtype (strings: object arrays of
      bytes), and returns one array per requested output alias: every output when
      `output_names` is None, else those of the (non-empty) sequence. It raises `ServoError`,
      never another exception, and with INVALID_ARGUMENT for each mistake of the caller's:
      a signature the servable does not have (`unknown_signature`, TFS's text); an input
      missing, or one the signature does not have (`missing_input`, `unexpected_inputs`); an
      input of another dtype; an output alias the signature does not have (`unknown_output`,
      TFS's text); a shape the model cannot take. A platform may run shapes other than the
      signature's where the model can compute them (TensorFlow's session, like TFS's, does not
      hold a fed tensor to its placeholder's static shape; a lookup table takes keys of any
      shape); an empty batch runs like any other where the model takes it. A failure of the
      model itself has another code (the runtime's own, or INTERNAL for a Python model's
      exception). After a failed run the servable answers the next one as before.
    - `close()` frees what the servable holds; calling it again does nothing. `run` after
      `close` raises `ServoError(FAILED_PRECONDITION)` saying that the model at its path is
      unloaded (`unloaded`). The manager never closes a servable while a run is in progress
      (it unloads a version only after every handle to it is released).

    A platform's `load(path, options)` raises `ServoError` when version directory `path` holds
    no model it can serve, with a message naming the path (or the file): NOT_FOUND when the
    platform's file is missing or is not a file, the code its docstring names when the file is
    corrupt (DATA_LOSS or INVALID_ARGUMENT, as TFS's for the same file). A failed load leaves
    nothing behind: no open session, file or thread, no imported module, nothing written.

    Thread-safety: `run` may be called from many threads at once; each call gets the answer
    to its own inputs.
    """

    platform: str = ""
    # False for servables whose calls may block for long whatever their past cost (user
    # code that may sleep or do I/O): the server never runs them on its event loop's thread.
    may_run_inline: bool = True

    @property
    @abc.abstractmethod
    def signatures(self) -> Mapping[str, Signature]:
        """Signatures by name."""

    @abc.abstractmethod
    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs `signature` on `inputs` (every input alias of the signature, with an array of
        the signature's dtype) and returns the requested outputs by alias."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Frees what the servable holds, when its version unloads; a second call does
        nothing."""


# -- a call's deadline, for servables that can end a call early -----------------------------

T = TypeVar("T")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "servo_call_deadline", default=None
)


def call_deadline() -> float | None:
    """The `time.monotonic()` by which the model call running on this thread must end, or
    None (no deadline). A servable that can stop a call (a Python model's worker process)
    says so with `takes_deadline = True` and reads it in `run`; the data plane sets it for
    those only."""
    return _deadline.get()


def within_deadline(deadline: float | None, call: Callable[[], T]) -> T:
    """Runs `call()` with `call_deadline()` answering `deadline` (the data plane wraps each
    model call in it, on whatever thread the call runs)."""
    token = _deadline.set(deadline)
    try:
        return call()
    finally:
        _deadline.reset(token)


# -- the contract's errors, with the same codes and texts on every platform ------------------


def unknown_signature(name: str) -> ServoError:
    """A signature the servable does not have, in TFS's words."""
    return ServoError(
        Code.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def'
    )


def unknown_output(signature: Signature, alias: str) -> ServoError:
    """An output alias that `signature` does not have, in TFS's words."""
    return ServoError(
        Code.INVALID_ARGUMENT,
        f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
        f"set {{{','.join(signature.outputs)}}}.",
    )


def missing_input(signature: Signature, alias: str) -> ServoError:
    return ServoError(
        Code.INVALID_ARGUMENT, f"Missing input {alias!r} of signature {signature.name}"
    )


def unexpected_inputs(signature: Signature, inputs: Mapping[str, Any]) -> ServoError:
    """Inputs that `signature` does not have (the caller found more inputs than it has)."""
    extra = [alias for alias in inputs if alias not in signature.inputs]
    return ServoError(
        Code.INVALID_ARGUMENT,
        f"Unexpected input {', '.join(map(repr, extra))}: signature {signature.name} has "
        f"inputs {{{','.join(signature.inputs)}}}",
    )


def check_inputs(signature: Signature, inputs: Mapping[str, Any]) -> None:
    """The contract's checks of `run`'s inputs, for platforms whose runtime makes none: an
    array for every input of `signature` and for no other, each of its dtype (a string input
    takes object, bytes or str arrays) and of its shape where the signature records one (the
    same rank, and the same size in every known dim)."""
    for alias, spec in signature.inputs.items():
        value = inputs.get(alias)
        if value is None:
            raise missing_input(signature, alias)
        where = f"Input {alias!r} of signature {signature.name}"
        if not isinstance(value, np.ndarray):
            raise ServoError(
                Code.INVALID_ARGUMENT, f"{where} is a {type(value).__name__}, not an array"
            )
        want = to_numpy(spec.dtype)
        if value.dtype != want and not (want.kind == "O" and value.dtype.kind in "SUO"):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{where} has dtype {value.dtype}; the signature's is {spec.dtype.name}",
            )
        if spec.shape is not None and not _fits(value.shape, spec.shape):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{where} has shape {_dims(value.shape)}; the signature's is {_dims(spec.shape)}",
            )
    if len(inputs) != len(signature.inputs):
        raise unexpected_inputs(signature, inputs)


def checked_call(
    signatures: Mapping[str, Signature],
    signature: Signature,
    inputs: Mapping[str, Any],
    output_names: Sequence[str] | None,
) -> Signature:
    """The servable's own signature of `signature`'s name, once the call passes the contract's
    checks of its inputs and outputs (for platforms whose runtime makes none)."""
    own = signatures.get(signature.name)
    if own is None:
        raise unknown_signature(signature.name)
    check_inputs(own, inputs)
    check_outputs(own, output_names)
    return own


def check_outputs(signature: Signature, output_names: Sequence[str] | None) -> None:
    """That every requested output alias is one of `signature`'s."""
    for alias in output_names or ():
        if alias not in signature.outputs:
            raise unknown_output(signature, alias)


def _fits(shape: Sequence[int], wanted: Sequence[int]) -> bool:
    """That `shape` has `wanted`'s rank and its size in every dim `wanted` knows (not -1)."""
    return len(shape) == len(wanted) and all(
        want in (-1, dim) for dim, want in zip(shape, wanted, strict=True)
    )


def _dims(shape: Sequence[int]) -> str:
    return f"[{','.join(str(d) for d in shape)}]"


def unloaded(what: str) -> ServoError:
    """`run` after `close`: `what` names the model and its path."""
    return ServoError(Code.FAILED_PRECONDITION, f"{what} is unloaded")


# -- classify and regress, built on run() as TFS builds them on a session --------------------
#
# `method_name_check` is TFS's `--enable_signature_method_name_check` (off by default): when on,
# classify and regress need signatures of their own method; when off they check only a
# signature's tensors, so that TF2 models (whose signatures all say predict) can classify and
# regress.


def debug_string(signature: Signature) -> str:
    """The signature as TensorFlow's `SignatureDef::DebugString` writes it (text format), for
    TFS's messages that quote it."""
    from google.protobuf import json_format, text_format

    from servo.protos import meta_graph_pb2

    message = meta_graph_pb2.SignatureDef()
    doc = signature.to_json()
    try:
        json_format.ParseDict(doc, message)
    except json_format.ParseError:  # defaults that are not TensorProto JSON
        doc.pop("defaults")
        json_format.ParseDict(doc, message)
    return text_format.MessageToString(message)


@dataclass(frozen=True, slots=True)
class Classification:
    label: bytes
    score: float


def _shape(tensor: np.ndarray) -> str:
    """A shape as TensorFlow's `TensorShape::DebugString` writes it: [2,3]."""
    return f"[{','.join(str(d) for d in tensor.shape)}]"


def check_classify_signature(signature: Signature, method_name_check: bool) -> list[str]:
    """TFS's PreProcessClassification: the outputs to fetch (`classes`, `scores` or both)."""
    if method_name_check and signature.method_name != CLASSIFY_METHOD:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {signature.method_name}",
        )
    if len(signature.inputs) != 1:
        raise ServoError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Expected one or two output Tensors, found {len(signature.outputs)}",
        )
    if CLASSIFY_INPUTS not in signature.inputs:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"No classification inputs found in SignatureDef: {debug_string(signature)}",
        )
    wanted = [
        k for k in (CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES) if k in signature.outputs
    ]
    if not wanted:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f'Expected classification signature outputs to contain at least one of "'
            f'{CLASSIFY_OUTPUT_CLASSES}" or "{CLASSIFY_OUTPUT_SCORES}". Signature was: '
            f"{debug_string(signature)}",
        )
    return wanted


def check_regress_signature(signature: Signature, method_name_check: bool) -> None:
    """TFS's PreProcessRegression."""
    if method_name_check and signature.method_name != REGRESS_METHOD:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {signature.method_name}",
        )
    if len(signature.inputs) != 1:
        raise ServoError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise ServoError(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"No regression inputs found in SignatureDef: {debug_string(signature)}",
        )
    if REGRESS_OUTPUTS not in signature.outputs:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"No regression outputs found in SignatureDef: {debug_string(signature)}",
        )


def _examples_tensor(examples: Sequence[bytes]) -> np.ndarray:
    if not examples:
        raise ServoError(Code.INVALID_ARGUMENT, "Input is empty.")
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = list(examples)
    return tensor


def classify(
    servable: ModelServable,
    signature: Signature,
    examples: Sequence[bytes],
    method_name_check: bool = False,
) -> list[list[Classification]]:
    """Runs a classify signature on serialized `tf.Example`s: per example, its (label, score)
    pairs. Without a `classes` output the labels are empty; without `scores`, the scores 0.
    Beyond TFS, a 1-D output counts as one class per example, labels may be of any type
    (written as text) and scores of any real type."""
    wanted = check_classify_signature(signature, method_name_check)
    batch = len(examples)
    outputs = servable.run(signature, {CLASSIFY_INPUTS: _examples_tensor(examples)}, wanted)
    classes = outputs.get(CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(CLASSIFY_OUTPUT_SCORES)
    for name, tensor in ((CLASSIFY_OUTPUT_CLASSES, classes), (CLASSIFY_OUTPUT_SCORES, scores)):
        if tensor is None:
            continue
        if tensor.ndim == 1:
            tensor = tensor.reshape(-1, 1)
        if tensor.ndim != 2:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape(tensor)}",
            )
        if tensor.shape[0] != batch:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Expected {name} output batch size of {batch}. Got: {tensor.shape[0]}",
            )
        if name == CLASSIFY_OUTPUT_CLASSES:
            classes = tensor
        else:
            scores = tensor
    if scores is not None and scores.dtype.kind not in "biuf":
        # TFS takes DT_FLOAT only; servo any real type, but a score must be a number.
        raise ServoError(
            Code.INVALID_ARGUMENT, f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}"
        )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
            f"{scores.shape[1]}",
        )
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    results: list[list[Classification]] = []
    for row in range(batch):
        results.append(
            [
                Classification(
                    _as_bytes(classes[row, k]) if classes is not None else b"",
                    float(scores[row, k]) if scores is not None else 0.0,
                )
                for k in range(width)
            ]
        )
    return results


def regress(
    servable: ModelServable,
    signature: Signature,
    examples: Sequence[bytes],
    method_name_check: bool = False,
) -> list[float]:
    """Runs a regress signature on serialized `tf.Example`s: one value per example."""
    check_regress_signature(signature, method_name_check)
    batch = len(examples)
    outputs = servable.run(
        signature, {REGRESS_INPUTS: _examples_tensor(examples)}, [REGRESS_OUTPUTS]
    )
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {_shape(values)}",
        )
    if values.shape[0] != batch:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}",
        )
    return [float(v) for v in values.reshape(-1)]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()
