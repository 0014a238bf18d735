"""The `pipeline` platform: a model made of other served models (its steps), run one after
another, each step's inputs taken from the request or from earlier steps' outputs.

A version directory holds `pipeline.json`:

    {
      "steps": [
        {"name": "ids", "model": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "classes", "model": "classifier", "label": "stable",
         "signature": "serving_default", "inputs": {"ids": "ids.ids"}}
      ],
      "outputs": {"ids": "ids.ids", "scores": "classes.scores"}
    }

- A step names a served model and at most one of `version` or `label` (neither: its newest
  version), and the `signature` it runs (default `serving_default`). Its `inputs` map every
  input alias of that signature to a reference: `request.<alias>` (an input of the pipeline's
  request) or `<step>.<output>` (an output of another step). A step's name is any text
  without a dot; `request` is taken.
- The pipeline's one signature, `serving_default`, is derived from its steps: its inputs are
  the `request.*` references, with the dtype and shape of the step inputs they feed (two steps
  fed by one request input must agree on its dtype); its outputs are `outputs` (alias ->
  reference; default: every output of the last step), with the dtype and shape of the step
  outputs they name. It is a predict signature unless it is a classifier's or a regressor's:
- Classify and regress. When the pipeline answers with one step's outputs only, each under
  the step's own alias (as it does without `outputs`: the last step's), and that step runs a
  classify signature (method `tensorflow/serving/classify`), the pipeline's signature takes
  that method if it has the tensors TFS's Classify needs: one input, `inputs` (the pipeline
  reads `request.inputs` and nothing else of the request: the serialized tf.Examples, a
  string input of rank 1 or unknown), and one or two outputs, `classes` or `scores` or both
  (`outputs` may keep either). Regress likewise: a regress signature's step, the one input
  `inputs`, the one output `outputs`. TFS's `:classify` / `:regress` (REST) and Classify /
  Regress (gRPC) then run on the pipeline, even with --enable_signature_method_name_check,
  and answer what that step answers for the examples the steps before it hand it (a
  pipeline of one step answers as the step). A pipeline that does not fit (another input,
  outputs renamed or of other steps, a predict step) stays predict: with the check, classify and
  regress on it answer TFS's error for a signature of another method; without it (TFS's
  default) they check its tensors only, as TFS does any signature's.
- Refused when the version loads, with a message naming the step: a step whose model has no
  AVAILABLE version (the load fails UNAVAILABLE and is retried as any failed load: list a
  pipeline after its steps in the config), a signature or an input alias the step's model
  lacks, a signature input left unfed, a reference to an unknown step or output, a cycle, and
  a reference whose dtype differs from the input it feeds, or whose shape cannot be the
  input's (another rank, or another size in a dimension both know).
- Each request takes the handles of all its steps when it starts and holds them to its end:
  one request sees one set of versions even while a step's versions swap. A step runs through
  its own servable, so its batching (its queue) and its isolation (a Python model's worker)
  apply; the pipeline's requests use the pipeline's share of the server's threads, never the
  event loop's thread, and carry their deadline to the steps. A step's failure is answered
  with its code and a message naming the step, its model and version (in a classify or a
  regress too). A step whose version now has another signature than the one the pipeline was
  checked against is refused (FAILED_PRECONDITION: reload the pipeline, e.g. by a new
  version of it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servo.core.status import Code, ServoError
from servo.dtypes import DataType, base
from servo.platforms.options import PlatformOptions
from servo.platforms.servable import (
    CLASSIFY_INPUTS,
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ModelServable,
    Signature,
    TensorSpec,
    check_classify_signature,
    check_inputs,
    check_outputs,
    check_regress_signature,
    unloaded,
)

PLATFORM = "pipeline"
PIPELINE_FILE = "pipeline.json"
REQUEST = "request"
_STEP_FIELDS = {"name", "model", "version", "label", "signature", "inputs"}


@dataclass(frozen=True, slots=True)
class Ref:
    """A tensor a pipeline passes on: `step`'s output `alias`, or the request's input."""

    step: str  # REQUEST for an input of the pipeline's request
    alias: str

    def __str__(self) -> str:
        return f"{self.step}.{self.alias}"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    model: str
    version: int | None
    label: str | None
    signature: str
    inputs: Mapping[str, Ref]
    kind: str = "model"  # what `model` names: a served model, or a composite's part

    def describe(self) -> str:
        which = (
            f" version {self.version}"
            if self.version is not None
            else f" label {self.label}"
            if self.label
            else ""
        )
        return f"Pipeline step '{self.name}' ({self.kind} {self.model}{which})"


# -- pipeline.json ---------------------------------------------------------------------------------


def _bad(path: str, message: str) -> ServoError:
    return ServoError(Code.INVALID_ARGUMENT, f"{path}: {message}")


def _ref(path: str, where: str, text: Any) -> Ref:
    if not isinstance(text, str) or "." not in text:
        raise _bad(
            path,
            f"{where}: {text!r} is not a reference: write request.<input> or <step>.<output>",
        )
    step, _, alias = text.partition(".")
    return Ref(step, alias)


def read_pipeline(
    path: str, file_name: str = PIPELINE_FILE, model_field: str = "model", extra: Any = ()
) -> tuple[list[Step], dict[str, Ref] | None, dict[str, Any]]:
    """The steps (in the file's order), the outputs and the whole document of
    `path`/`file_name`; a step names what it runs in `model_field` ("part" in a composite's
    file, whose other top-level fields are `extra`)."""
    file = os.path.join(path, file_name)
    try:
        with open(file, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ServoError(Code.NOT_FOUND, f"No {file_name} in {path}") from None
    except (OSError, ValueError) as exc:
        raise _bad(file, f"not a JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise _bad(file, 'expected {"steps": [...], "outputs": {...}} with at least one step')
    unknown = sorted(set(doc) - {"steps", "outputs", *extra})
    if unknown:
        raise _bad(file, f"unknown field(s) {', '.join(unknown)}")
    steps: list[Step] = []
    names: set[str] = set()
    for index, entry in enumerate(doc["steps"]):
        where = f"step {index}"
        if not isinstance(entry, dict):
            raise _bad(file, f"{where} is not an object")
        fields = _STEP_FIELDS - {"model"} | {model_field}
        if model_field != "model":
            fields -= {"version", "label"}  # a part has the composite's one version
        unknown_fields = sorted(set(entry) - fields)
        if unknown_fields:
            raise _bad(file, f"{where}: unknown field(s) {', '.join(unknown_fields)}")
        name, model = entry.get("name"), entry.get(model_field)
        if not isinstance(name, str) or not name or "." in name or name == REQUEST:
            raise _bad(file, f"{where}: a name is any text without a dot but {REQUEST!r}")
        where = f"step '{name}'"
        if name in names:
            raise _bad(file, f"{where} is named twice")
        names.add(name)
        if not isinstance(model, str) or not model:
            raise _bad(file, f'{where}: "model" must name a served model')
        version, label = entry.get("version"), entry.get("label")
        if version is not None and (type(version) is not int or version < 0):
            raise _bad(file, f'{where}: "version" must be a version number')
        if label is not None and (not isinstance(label, str) or not label):
            raise _bad(file, f'{where}: "label" must be a version label')
        if version is not None and label is not None:
            raise _bad(file, f"{where}: give a version or a label, not both")
        signature = entry.get("signature", DEFAULT_SIGNATURE)
        if not isinstance(signature, str) or not signature:
            raise _bad(file, f'{where}: "signature" must be a signature name')
        inputs = entry.get("inputs")
        if not isinstance(inputs, dict) or not inputs:
            raise _bad(file, f'{where}: "inputs" must map its input aliases to references')
        refs = {alias: _ref(file, f"{where} input {alias!r}", r) for alias, r in inputs.items()}
        steps.append(Step(name, model, version, label, signature, refs, model_field))
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, dict) or not outputs:
            raise _bad(file, '"outputs" must map output aliases to references')
        return steps, {a: _ref(file, f"output {a!r}", r) for a, r in outputs.items()}, doc
    return steps, None, doc


def _in_order(steps: Sequence[Step]) -> list[Step]:
    """The steps in an order that runs each after the steps it reads (the file's order where
    it may); a cycle or a reference to no step is refused, naming them."""
    by_name = {s.name: s for s in steps}
    for step in steps:
        for alias, ref in step.inputs.items():
            if ref.step != REQUEST and ref.step not in by_name:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{step.describe()}: input {alias!r} reads {ref}, but the pipeline has no "
                    f"step {ref.step!r}",
                )
    done: list[Step] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(step: Step) -> None:
        if step.name in placed:
            return
        if step.name in visiting:
            cycle = [*visiting[visiting.index(step.name) :], step.name]
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Pipeline steps read each other in a cycle: {' -> '.join(cycle)}",
            )
        visiting.append(step.name)
        for ref in step.inputs.values():
            if ref.step != REQUEST:
                visit(by_name[ref.step])
        visiting.pop()
        placed.add(step.name)
        done.append(step)

    for step in steps:
        visit(step)
    return done


# -- checks against the steps' signatures ------------------------------------------------------


def _shapes_fit(given: tuple[int, ...] | None, wanted: tuple[int, ...] | None) -> bool:
    if given is None or wanted is None:
        return True
    if len(given) != len(wanted):
        return False
    return all(g == w or g == -1 or w == -1 for g, w in zip(given, wanted, strict=True))


def _spec_text(spec: TensorSpec) -> str:
    shape = "unknown rank" if spec.shape is None else list(spec.shape)
    return f"{base(spec.dtype).name} {shape}"


def _derive(
    steps: Sequence[Step],
    signatures: Mapping[str, Signature],
    outputs: Mapping[str, Ref] | None,
) -> tuple[Signature, dict[str, Ref]]:
    """The pipeline's signature and its outputs' references, every step's inputs checked."""
    request_inputs: dict[str, TensorSpec] = {}
    for step in steps:
        signature = signatures[step.name]
        missing = [a for a in signature.inputs if a not in step.inputs]
        if missing:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"{step.describe()}: signature {signature.name} input(s) "
                f'{", ".join(map(repr, missing))} are fed by nothing; map each in its "inputs"',
            )
        for alias, ref in step.inputs.items():
            wanted = signature.inputs.get(alias)
            if wanted is None:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{step.describe()}: signature {signature.name} has no input {alias!r} "
                    f"(its inputs: {', '.join(signature.inputs)})",
                )
            if ref.step == REQUEST:
                earlier = request_inputs.get(ref.alias)
                if earlier is not None and base(earlier.dtype) != base(wanted.dtype):
                    raise ServoError(
                        Code.INVALID_ARGUMENT,
                        f"{step.describe()}: input {alias!r} takes {_spec_text(wanted)}, but "
                        f"another step takes {ref} as {_spec_text(earlier)}",
                    )
                request_inputs.setdefault(ref.alias, wanted)
                continue
            given = signatures[ref.step].outputs.get(ref.alias)
            if given is None:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{step.describe()}: input {alias!r} reads {ref}, but step {ref.step!r} "
                    f"has no output {ref.alias!r} (its outputs: "
                    f"{', '.join(signatures[ref.step].outputs)})",
                )
            if base(given.dtype) != base(wanted.dtype) or not _shapes_fit(
                given.shape, wanted.shape
            ):
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{step.describe()}: input {alias!r} takes {_spec_text(wanted)}, but {ref} "
                    f"is {_spec_text(given)}",
                )
    if outputs is None:
        last = steps[-1]
        outputs = {alias: Ref(last.name, alias) for alias in signatures[last.name].outputs}
    out_specs: dict[str, TensorSpec] = {}
    for alias, ref in outputs.items():
        spec = signatures[ref.step].outputs.get(ref.alias) if ref.step in signatures else None
        if spec is None:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Pipeline output {alias!r} reads {ref}, which no step has",
            )
        out_specs[alias] = spec
    signature = Signature(DEFAULT_SIGNATURE, request_inputs, out_specs, PREDICT_METHOD)
    method = _method(signature, outputs, signatures)
    if method != PREDICT_METHOD:
        signature = Signature(DEFAULT_SIGNATURE, request_inputs, out_specs, method)
    return signature, dict(outputs)


# The checks TFS's Classify and Regress make of a signature's tensors (method names aside).
_EXAMPLE_METHODS = {
    CLASSIFY_METHOD: check_classify_signature,
    REGRESS_METHOD: check_regress_signature,
}


def _method(
    signature: Signature, outputs: Mapping[str, Ref], signatures: Mapping[str, Signature]
) -> str:
    """The method of the pipeline's `signature` (a predict one as derived): the classify or
    regress method of the step whose outputs it answers with, when it answers with that
    step's outputs only, each under the step's own alias, and takes and answers what TFS's
    Classify or Regress needs (one input `inputs`, serialized tf.Examples: a string vector;
    its outputs those of TFS's check); else predict."""
    steps = {ref.step for ref in outputs.values()}
    if len(steps) != 1 or any(ref.alias != alias for alias, ref in outputs.items()):
        return PREDICT_METHOD
    method = signatures[steps.pop()].method_name
    check = _EXAMPLE_METHODS.get(method)
    examples = signature.inputs.get(CLASSIFY_INPUTS)
    if (
        check is None
        or examples is None
        or base(examples.dtype) != DataType.DT_STRING
        or not _shapes_fit((-1,), examples.shape)
    ):
        return PREDICT_METHOD
    try:
        check(signature, False)
    except ServoError:  # another count of inputs or outputs, or other output aliases
        return PREDICT_METHOD
    return method


def _interface(signature: Signature) -> tuple[Any, Any]:
    """What a pipeline relies on in a step's signature: its inputs' and outputs' aliases,
    dtypes and shapes (not the model's inner tensor names)."""

    def specs(tensors: Mapping[str, TensorSpec]) -> Any:
        return {alias: (base(t.dtype), t.shape) for alias, t in tensors.items()}

    return specs(signature.inputs), specs(signature.outputs)


def _step_error(step: Step, version: int | None, exc: ServoError) -> ServoError:
    # A composite's part has its composite's version: none of its own to name.
    which = f" version {version}" if version is not None and step.kind == "model" else ""
    return ServoError(
        exc.code,
        f"Pipeline step '{step.name}' ({step.kind} {step.model}{which}): {exc.message}",
    )


# -- the servable ---------------------------------------------------------------------------------


class PipelineServable(ModelServable):
    """Thread-safety: `run` may be called from many threads at once."""

    platform = PLATFORM
    may_run_inline = False  # its steps may block (batch queues, workers)
    takes_deadline = True  # the request's deadline reaches the steps' calls

    def __init__(self, path: str, checked: Checked, servables: Any) -> None:
        steps, outputs, signature = checked.steps, checked.outputs, checked.signature
        self.path = path
        self.steps = tuple(steps)
        self._step_signatures = dict(checked.step_signatures)
        self._signatures = {signature.name: signature}
        self._outputs = dict(outputs)
        self._servables = servables
        self._closed = False
        # Each step's outputs read later (by steps or the answer); None: all of them.
        read: dict[str, list[str]] = {}
        for step in steps:
            for ref in step.inputs.values():
                read.setdefault(ref.step, []).append(ref.alias)
        for ref in outputs.values():
            read.setdefault(ref.step, []).append(ref.alias)
        self._wanted = {s.name: tuple(dict.fromkeys(read.get(s.name, ()))) for s in steps}

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise unloaded(f"Pipeline at {self.path}")
        check_inputs(signature, inputs)
        check_outputs(signature, output_names)
        with contextlib.ExitStack() as held:
            # Every step's handle first: the versions this request sees, whatever swaps later
            # (one handle for the steps that name the same model the same way, so that they
            # run the same version).
            handles: dict[str, Any] = {}
            taken: dict[tuple[str, int | None, str | None], Any] = {}
            for step in self.steps:
                key = (step.model, step.version, step.label)
                if key not in taken:
                    try:
                        handle = self._servables(*key)
                    except ServoError as exc:
                        raise _step_error(
                            step,
                            step.version,
                            ServoError(Code.UNAVAILABLE, f"no version to run: {exc.message}"),
                        ) from None
                    taken[key] = held.enter_context(handle)
                handles[step.name] = taken[key]
            values: dict[Ref, np.ndarray] = {Ref(REQUEST, a): v for a, v in inputs.items()}
            for step in self.steps:
                handle = handles[step.name]
                servable = handle.servable
                checked = self._step_signatures[step.name]
                current = servable.signatures.get(step.signature)
                if current is not checked and (
                    current is None or _interface(current) != _interface(checked)
                ):
                    raise _step_error(
                        step,
                        handle.id.version,
                        ServoError(
                            Code.FAILED_PRECONDITION,
                            f"its signature {step.signature} is not the one the pipeline was "
                            "loaded with; load a new version of the pipeline",
                        ),
                    )
                feed = {alias: values[ref] for alias, ref in step.inputs.items()}
                try:
                    out = servable.run(current, feed, self._wanted[step.name] or None)
                except ServoError as exc:
                    raise _step_error(step, handle.id.version, exc) from None
                for alias, array in out.items():
                    values[Ref(step.name, alias)] = array
            names = output_names or tuple(self._outputs)
            return {alias: values[self._outputs[alias]] for alias in names}

    def close(self) -> None:
        self._closed = True


def load(path: str, options: PlatformOptions) -> PipelineServable:
    """Reads `path`/pipeline.json and checks it against the steps' models as they are served
    now (see the module docstring)."""
    steps, outputs, _ = read_pipeline(path)
    servables = options.servables
    if servables is None:
        raise ServoError(
            Code.FAILED_PRECONDITION,
            f"The pipeline at {path} needs a server's models to run (no server core given)",
        )
    return PipelineServable(path, check(steps, outputs, servables), servables)


@dataclass(frozen=True, slots=True)
class Checked:
    """A pipeline checked against its steps' signatures: the steps in the order they run,
    each one's signature, the pipeline's signature and its outputs' references."""

    steps: tuple[Step, ...]
    step_signatures: Mapping[str, Signature]
    signature: Signature
    outputs: Mapping[str, Ref]


def check(steps: Sequence[Step], outputs: Mapping[str, Ref] | None, servables: Any) -> Checked:
    """`steps` checked against what `servables` serves now (see the module docstring)."""
    ordered = _in_order(steps)
    signatures: dict[str, Signature] = {}
    for step in ordered:
        try:
            handle = servables(step.model, step.version, step.label)
        except ServoError as exc:
            raise ServoError(
                Code.UNAVAILABLE,
                f"{step.describe()} has no AVAILABLE version to check the pipeline against "
                f"({exc.message}); a pipeline loads after its steps",
            ) from None
        with handle:
            signature = handle.servable.signatures.get(step.signature)
            if signature is None:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"{step.describe()}: version {handle.id.version} has no signature "
                    f"{step.signature!r} (its signatures: "
                    f"{', '.join(handle.servable.signatures)})",
                )
        signatures[step.name] = signature
    signature, refs = _derive(ordered, signatures, outputs)
    return Checked(tuple(ordered), signatures, signature, refs)
