"""The tensorflow platform: SavedModels served through a TensorFlow v1 session, as TFS does.

This module owns loading a SavedModel version directory into a `tf.compat.v1.Session` over a
fresh graph (the MetaGraph with the configured tags, variables restored, main op / legacy init
op and table initializers run with the asset paths fed, as TensorFlow's loader API does), the
signatures read from its `signature_def` map, and running them by tensor name.

Why a session and not `tf.saved_model.load`: TFS runs every SavedModel, TF1 or TF2, through a
session over its MetaGraph, and some models TFS serves (TF1 exports such as the test data's
half_plus_two) cannot be loaded by the TF2 object API at all. A session also keeps TFS's
leniency on fed shapes: the C++ session does not check a fed tensor against its placeholder's
static shape, so half_plus_two (x: [-1, 1]) answers a shape-[3] input, as TFS's README shows.

Each (signature, output set) runs through a callable made with the C++ `Session::MakeCallable`
(fixed feeds and fetches, pruned and compiled once), which costs several times less per call
than `Session.run` (feed-dict parsing, fetch mapping and shape checks in Python every time).

The op libraries TFS links into its binary (TF Text's ops; TensorFlow Decision Forests'
inference ops, which ydf-tf now ships) are Python packages here: `_register_op_libraries`
imports each that is installed before the first SavedModel loads (importing one registers its
ops with TensorFlow), and a model that needs an op of one that is not installed fails its load
naming the op and the extra to install, rather than with TensorFlow's bare "Op type not
registered".

`options.intra_op_parallelism` / `inter_op_parallelism` (0 = TensorFlow's choice) go into the
session's ConfigProto. TensorFlow sizes its shared CPU thread pools from the first session a
process creates, so in practice they apply per process, as TFS's flags of the same names do.
"""

from __future__ import annotations

import glob
import importlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format, message, text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2
from tensorflow.python.saved_model import loader_impl

from servo import pip_install
from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    ModelServable,
    Signature,
    TensorSpec,
    missing_input,
    unexpected_inputs,
    unknown_output,
    unknown_signature,
    unloaded,
)
from servo.protos import text_format as servo_text_format
from servo.util import tensorflow_logs

log = logging.getLogger(__name__)

PLATFORM = "tensorflow"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"


# -- op libraries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpLibrary:
    """A package whose import registers ops that TFS links into its binary."""

    module: str  # imported to register the ops
    package: str  # what pip installs
    extra: str  # the extra that installs it (pip_install)
    what: str  # the ops' family, as the error names it
    ops: frozenset[str]  # its ops (as of the version the extra installs) ...
    prefix: str  # ... and the prefix of its newer ops' names

    def has(self, op: str) -> bool:
        return op in self.ops or op.startswith(self.prefix)


OP_LIBRARIES: tuple[OpLibrary, ...] = (
    OpLibrary(
        "tensorflow_text",
        "tensorflow-text",
        "text",
        "TF Text",
        # The ops tensorflow-text 2.21 registers without the "TFText>" prefix of the others.
        frozenset(
            {
                "CaseFoldUTF8",
                "ConstrainedSequence",
                "FastBertNormalize",
                "FastWordpieceTokenizeWithOffsets",
                "FindSourceOffsets",
                "MaxSpanningTree",
                "NormalizeUTF8",
                "NormalizeUTF8WithOffsetsMap",
                "PhraseTokenize",
                "RegexSplitWithOffsets",
                "RougeL",
                "SentenceFragments",
                "SentenceFragmentsV2",
                "SentencepieceDetokenizeOp",
                "SentencepieceIdToStringOp",
                "SentencepieceOp",
                "SentencepieceStringToIdOp",
                "SentencepieceTokenizeOp",
                "SentencepieceTokenizeWithOffsetsOp",
                "SentencepieceVocabSizeOp",
                "SplitMergeTokenizeWithOffsets",
                "TokenizerFromLogits",
                "UnicodeScriptTokenizeWithOffsets",
                "WhitespaceTokenizeWithOffsets",
                "WordpieceTokenizeWithOffsets",
            }
        ),
        "TFText>",
    ),
    OpLibrary(
        # TF-DF's inference ops, which models exported by TF-DF or by YDF use (TF-DF's own
        # package is built for older TensorFlow versions; ydf-tf took its op over).
        "ydf_tf",
        "ydf-tf",
        "decision-forests",
        "TensorFlow Decision Forests",
        frozenset(
            {
                "SimpleMLCreateModelResource",
                "SimpleMLInferenceLeafIndexOpWithHandle",
                "SimpleMLInferenceOp",
                "SimpleMLInferenceOpWithHandle",
                "SimpleMLLoadModelFromPath",
                "SimpleMLLoadModelFromPathWithHandle",
            }
        ),
        "SimpleML",
    ),
)

# Per library module: None once imported, else why not (_NOT_INSTALLED, or its import's error).
_op_libraries: dict[str, str | None] | None = None
_op_libraries_lock = threading.Lock()
_NOT_INSTALLED = "not installed"
_OP_NOT_REGISTERED = re.compile(r"Op type not registered '([^']+)'")


def _register_op_libraries() -> dict[str, str | None]:
    """Imports every installed op library, once per process (a SavedModel's graph is imported
    after this, so its ops are there); returns each one's state."""
    global _op_libraries
    with _op_libraries_lock:
        if _op_libraries is None:
            states: dict[str, str | None] = {}
            for library in OP_LIBRARIES:
                try:
                    module = importlib.import_module(library.module)
                    for native in glob.glob(
                        os.path.join(os.path.dirname(module.__file__ or ""), "*.so")
                    ):
                        tensorflow_logs.restore_level(native)  # its absl flags reset the level
                except ImportError as exc:
                    if (exc.name or "").split(".")[0] == library.module:
                        states[library.module] = _NOT_INSTALLED
                    else:  # installed, but something it needs is not
                        states[library.module] = f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # e.g. a build for another TensorFlow: NotFoundError
                    states[library.module] = f"{type(exc).__name__}: {exc}"
                else:
                    states[library.module] = None
                if states[library.module] not in (None, _NOT_INSTALLED):
                    log.warning(
                        "%s is installed but its ops could not be registered; SavedModels "
                        "using %s ops will not load: %s",
                        library.package,
                        library.what,
                        states[library.module],
                    )
            _op_libraries = states
        return _op_libraries


def _missing_op_error(path: str, text: str) -> ServoError | None:
    """For TensorFlow's "Op type not registered 'OP'" about an op of a known library that is
    not registered: FAILED_PRECONDITION naming the op and the extra (a runtime that is not
    installed, as the router reports a missing platform runtime). None otherwise: an op of no
    known library keeps TensorFlow's error, as TFS reports it."""
    match = _OP_NOT_REGISTERED.search(text)
    if match is None:
        return None
    op = match.group(1)
    library = next((lib for lib in OP_LIBRARIES if lib.has(op)), None)
    if library is None:
        return None
    state = _register_op_libraries().get(library.module)
    if state is None:  # imported, and still without the op: a newer version's
        return None
    if state == _NOT_INSTALLED:
        why = f"{library.package} is not installed"
    else:
        why = f"{library.package} is installed but could not be loaded ({state})"
    return ServoError(
        Code.FAILED_PRECONDITION,
        f"Failed to load SavedModel at {path}: it uses op {op}, one of the {library.what} ops, "
        f"and {why}: {pip_install(library.extra)} ({library.package}) to serve models "
        f"using {library.what} ops",
    )


def load(path: str, options: PlatformOptions) -> TensorFlowServable:
    """Loads the SavedModel in version directory `path`.

    Errors, with TensorFlow's codes and messages where TFS has them: NOT_FOUND when there is no
    saved_model.pb / .pbtxt or no MetaGraph with the configured tags; DATA_LOSS when the file
    does not parse; the TensorFlow error's own code when restoring or initializing fails;
    FAILED_PRECONDITION, naming the op and the extra, when the graph needs an op of a library
    in OP_LIBRARIES that is not installed.

    Each call is one attempt for TensorFlow's loader metrics (`options.saved_model_loads`):
    reading the MetaGraph through restoring and initializing, failed or not.
    """
    record = options.saved_model_loads
    if record is None:
        return _load(path, options)
    started = time.perf_counter()
    ok = False
    try:
        servable = _load(path, options)
        ok = True
        return servable
    finally:
        record(path, ok, (time.perf_counter() - started) * 1e6)


def _load(path: str, options: PlatformOptions) -> TensorFlowServable:
    tags = tuple(options.saved_model_tags) or ("serve",)
    meta_graph = _read_meta_graph(path, tags)
    _register_op_libraries()
    signatures = _signatures(meta_graph)
    config = config_pb2.ConfigProto(
        intra_op_parallelism_threads=options.intra_op_parallelism,
        inter_op_parallelism_threads=options.inter_op_parallelism,
        # Models exported on a GPU machine name GPU devices; serve them on what is here.
        allow_soft_placement=True,
    )
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            # Restores the variables and runs the main op or legacy init op, feeding each asset
            # tensor its absolute path under `path`/assets: what TFS's LoadSavedModel does.
            # The loader class itself: `tf.compat.v1.saved_model.loader.load`, its wrapper,
            # logs a deprecation warning (pointing at tf.saved_model.load, which cannot load
            # TF1 exports into a session) on the first load of every process.
            loader_impl.SavedModelLoader(path).load(session, list(tags))
        servable = TensorFlowServable(path, graph, session, signatures)
    except tf.errors.OpError as exc:
        session.close()
        raise _missing_op_error(path, exc.message) or ServoError(
            _code(exc), f"Failed to load SavedModel at {path}: {exc.message}"
        ) from None
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        session.close()
        raise ServoError(
            Code.INVALID_ARGUMENT, f"Failed to load SavedModel at {path}: {exc}"
        ) from exc
    except BaseException:
        session.close()
        raise
    return servable


def _read_meta_graph(path: str, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set equals `tags`, read the way TensorFlow's C++ reader does
    (so that the errors are TFS's)."""
    pb_path = os.path.join(path, SAVED_MODEL_PB)
    pbtxt_path = os.path.join(path, SAVED_MODEL_PBTXT)
    saved_model = saved_model_pb2.SavedModel()
    try:
        if os.path.isfile(pb_path):
            with open(pb_path, "rb") as f:
                saved_model.ParseFromString(f.read())
        elif os.path.isfile(pbtxt_path):
            with open(pbtxt_path, "rb") as f:
                data = f.read()
            try:
                text_format.Parse(data, saved_model)  # Python's parser first: large files
            except text_format.ParseError:
                # TensorFlow's ReadTextProto: the C++ parser's lines logged, then DATA_LOSS.
                try:
                    servo_text_format.parse(data, saved_model_pb2.SavedModel())
                except servo_text_format.TextFormatError as exc:
                    raise ServoError(
                        Code.DATA_LOSS,
                        f"Can't parse {pbtxt_path} as text proto: {exc.lines[0]}",
                    ) from None
                raise
        else:
            raise ServoError(
                Code.NOT_FOUND,
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
                f"{path}. Check that the directory exists and that you have the right "
                f"permissions for accessing it.",
            )
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        name = pb_path if os.path.isfile(pb_path) else pbtxt_path
        raise ServoError(Code.DATA_LOSS, f"Can't parse {name} as SavedModel proto: {exc}") from None
    except OSError as exc:
        raise ServoError(Code.NOT_FOUND, f"Could not read SavedModel at {path}: {exc}") from None
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    raise ServoError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. To "
        f"inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli`",
    )


# -- signatures ------------------------------------------------------------------------------


def _dtype(number: int) -> DataType:
    try:
        return DataType(number)
    except ValueError:
        return DataType.DT_INVALID


def _tensor_spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    shape: tuple[int, ...] | None
    if not info.HasField("tensor_shape") or info.tensor_shape.unknown_rank:
        shape = None  # an old export that recorded no shape says nothing about the rank
    else:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    # Sparse and composite tensors have no single name; they stay listed (TFS lists them in
    # metadata) and fail when run.
    return TensorSpec(_dtype(info.dtype), shape, info.name, info.HasField("tensor_shape"))


def _signatures(meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, Signature]:
    """Every SignatureDef of the MetaGraph, as TFS's metadata lists them (TF2's
    `__saved_model_init_op` included)."""
    signatures: dict[str, Signature] = {}
    for name, sig in meta_graph.signature_def.items():
        defaults = {
            key: json_format.MessageToDict(
                value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for key, value in sig.defaults.items()
        }
        signatures[name] = Signature(
            name=name,
            inputs={alias: _tensor_spec(info) for alias, info in sig.inputs.items()},
            outputs={alias: _tensor_spec(info) for alias, info in sig.outputs.items()},
            method_name=sig.method_name,
            defaults=defaults,
        )
    return signatures


# -- the servable ----------------------------------------------------------------------------


def _code(exc: tf.errors.OpError) -> Code:
    try:
        return Code(exc.error_code)
    except ValueError:
        return Code.UNKNOWN


@dataclass(frozen=True, slots=True)
class _Program:
    """One (signature, output set): a compiled callable and how its values map to aliases."""

    input_aliases: tuple[str, ...]
    output_aliases: tuple[str, ...]
    fetch_index: tuple[int, ...]  # output alias i -> position in the callable's results
    call: Callable[..., list[Any]]


class TensorFlowServable(ModelServable):
    """A SavedModel loaded into a session; runs signatures through cached callables.

    Thread-safety: `run` may be called from many threads at once (a TensorFlow session and its
    callables are thread-safe; the callable cache is filled under a lock). `close` must not
    overlap `run` (the manager unloads a version only after its handles are released).
    """

    platform = PLATFORM

    def __init__(
        self,
        path: str,
        graph: tf.Graph,
        session: tf.compat.v1.Session,
        signatures: dict[str, Signature],
    ) -> None:
        self.path = path
        self._graph: tf.Graph | None = graph
        self._session: tf.compat.v1.Session | None = session
        self._signatures = signatures
        self._programs: dict[tuple[str, tuple[str, ...] | None], _Program] = {}
        self._lock = threading.Lock()
        # Compile every signature's full-output callable now, so that the first request does
        # not pay for it; a signature that cannot run (TF2's init-op signature, sparse tensors)
        # reports its error when it is asked for.
        for name in signatures:
            try:
                self._program(name, None)
            except ServoError as exc:
                log.debug("Signature %s of %s cannot run: %s", name, path, exc)

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        key = (signature.name, None if output_names is None else tuple(output_names))
        program = self._programs.get(key)
        if program is None:
            program = self._program(signature.name, key[1])
        try:
            feeds = [inputs[alias] for alias in program.input_aliases]
        except KeyError as exc:
            raise missing_input(signature, exc.args[0]) from None
        if len(inputs) != len(feeds):  # a callable would ignore what it is not fed by
            raise unexpected_inputs(self._signatures[signature.name], inputs)
        try:
            values = program.call(*feeds)
        except tf.errors.OpError as exc:
            raise ServoError(_code(exc), exc.message) from None
        except (TypeError, ValueError) as exc:  # a feed numpy cannot turn into a tensor
            raise ServoError(Code.INVALID_ARGUMENT, str(exc)) from None
        result: dict[str, np.ndarray] = {}
        for alias, index in zip(program.output_aliases, program.fetch_index, strict=True):
            value = values[index]
            # Scalars come back as numpy scalars; callers get arrays.
            result[alias] = value if type(value) is np.ndarray else np.asarray(value)
        return result

    def _program(self, name: str, output_names: tuple[str, ...] | None) -> _Program:
        with self._lock:
            key = (name, output_names)
            program = self._programs.get(key)
            if program is not None:
                return program
            if self._session is None:
                raise unloaded(f"SavedModel {self.path}")
            signature = self._signatures.get(name)
            if signature is None:
                raise unknown_signature(name)
            if output_names is None:
                output_aliases = tuple(signature.outputs)
            else:
                output_aliases = tuple(dict.fromkeys(output_names))
                unknown = [a for a in output_aliases if a not in signature.outputs]
                if unknown:
                    raise unknown_output(signature, unknown[0])
            input_aliases = tuple(signature.inputs)
            feeds = [self._tensor_name(signature, a, signature.inputs[a]) for a in input_aliases]
            fetches: list[str] = []
            fetch_index: list[int] = []
            for alias in output_aliases:
                tensor = self._tensor_name(signature, alias, signature.outputs[alias])
                if tensor not in fetches:
                    fetches.append(tensor)
                fetch_index.append(fetches.index(tensor))
            options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
            try:
                # Session.make_callable with a feed list delegates to Session.run (and its
                # Python shape checks); the C++ MakeCallable behind this method is what makes
                # per-call overhead low and leaves shapes to the kernels, as TFS's session does.
                call = self._session._make_callable_from_options(options)
            except tf.errors.OpError as exc:
                raise ServoError(_code(exc), exc.message) from None
            program = _Program(input_aliases, output_aliases, tuple(fetch_index), call)
            self._programs[key] = program
            return program

    def _tensor_name(self, signature: Signature, alias: str, spec: TensorSpec) -> str:
        name = spec.tensor_name
        if not name:
            raise ServoError(
                Code.UNIMPLEMENTED,
                f"Signature {signature.name}: {alias} is not a dense tensor; servo runs dense "
                f"tensors only",
            )
        assert self._graph is not None
        try:
            element = self._graph.as_graph_element(name, allow_tensor=True, allow_operation=True)
        except (KeyError, ValueError) as exc:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Signature {signature.name}: tensor {name} of {alias} is not in the graph: {exc}",
            ) from None
        if not isinstance(element, tf.Tensor):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Signature {signature.name}: {alias} names operation {name}, not a tensor; "
                f"it cannot be run",
            )
        return str(element.name)

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            # Callables release their handles while the session is still open.
            self._programs = {}
            self._graph = None
        if session is not None:
            session.close()
