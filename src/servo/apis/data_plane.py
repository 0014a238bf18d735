"""The data plane: TFS's inference APIs over a model spec, one implementation for every
protocol.

    REST (JSON), gRPC (protos), warm-up replay:   decode -> data plane -> encode

A protocol decodes what it can without the model and hands the data plane a *call*: the
request as that protocol carries it, and the way that protocol answers it (`PredictCall`,
`ExamplesCall`, `MultiInferenceCall`). The data plane does the rest, in TFS's order:

    model spec -> handle, held (`with`) until the answer is written
      -> signature -> the request's checks (`request_checks`) -> inputs
      -> the model call, through the `Runner` (inline, pool or batch queue; the cost key is
         chosen here, the same for every protocol)
      -> the protocol's answer -> the request log (when the request is sampled)

and TFS's example counts. The request count and latency are the protocols' to record at their
boundary, because they count requests that fail before they get here (TFS records them in its
HTTP dispatcher and in its gRPC methods); `record_request` records them the same way for all.

Warm-up runs the same steps on a servable that is still loading, with no handle, no runner
and no metrics: `predict_on`, `examples_on`, `multi_inference_on`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from servo.apis import access_log
from servo.apis.request_checks import (
    check_input_dtypes,
    check_input_names,
    find_signature,
    missing_example_signature,
    output_names,
    verify_predict_signature,
)
from servo.apis.runner import Runner, size_class
from servo.core.servable_handle import ServableHandle
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.platforms import servable as model
from servo.platforms.servable import ModelServable, Signature

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from servo.metrics import ServerMetrics
    from servo.server.server_core import ServerCore, VersionStatus

A = TypeVar("A")  # what a protocol answers with: JSON bytes, a response message
R = TypeVar("R")

# Warm-up answers are thrown away; the version they would name does not matter.
WARMUP_ID = ServableId("warmup", 0)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model a request is for: a name and at most one of a version or a label."""

    name: str
    version: int | None = None
    label: str | None = None


# -- what a request computed -------------------------------------------------------------------
# (Plain slotted dataclasses, built once per request: a frozen one's __init__ costs about a
# microsecond more. Nothing changes them after they are made.)


@dataclass(slots=True)
class Prediction:
    id: ServableId  # the version that answered
    signature: Signature
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    output_names: tuple[str, ...] | None  # what the request asked for; None: every output


@dataclass(slots=True)
class ExampleResults(Generic[R]):
    """A classify (R: one list of Classification per example) or regress (R: one float per
    example) request's results."""

    id: ServableId
    signature: Signature
    results: list[R]


@dataclass(frozen=True, slots=True)
class InferenceTask:
    """One task of a multi-inference request."""

    model_name: str
    signature_name: str
    method_name: str


@dataclass(slots=True)
class MultiInferenceResults:
    id: ServableId
    tasks: tuple[tuple[InferenceTask, Signature], ...]
    results: list[Any]  # per task: its classifications or its regressions


# -- what a protocol hands the data plane --------------------------------------------------------


class PredictCall(Protocol[A]):
    """A predict request as one protocol carries it, and how that protocol answers.

    The data plane reads `signature_name` once it holds the model's handle, then calls
    `input_names(signature)` (a protocol whose values need the signature's dtypes, JSON,
    decodes them here), checks the names, and then calls `inputs()` (a protocol that decodes
    tensors on their own, protos, decodes them here, only once the names are right)."""

    @property
    def signature_name(self) -> str: ...

    @property
    def output_filter(self) -> Sequence[str]: ...

    def missing_signature(self, key: str) -> ServoError: ...

    def input_names(self, signature: Signature) -> Collection[str]: ...

    def inputs(self) -> dict[str, np.ndarray]: ...

    def answer(self, prediction: Prediction) -> A: ...

    def log_messages(self, prediction: Prediction, answer: A) -> tuple[Message, Message]:
        """The PredictRequest and PredictResponse the request log records."""
        ...


class ExamplesCall(Protocol[A]):
    """A classify or regress request: serialized tf.Examples for one signature."""

    @property
    def signature_name(self) -> str: ...

    def examples(self) -> list[bytes]: ...

    def answer(self, results: ExampleResults[Any]) -> A: ...

    def log_messages(self, results: ExampleResults[Any], answer: A) -> tuple[Message, Message]: ...


class MultiInferenceCall(Protocol[A]):
    """Several classify and regress tasks of one model on the same examples."""

    @property
    def tasks(self) -> Sequence[InferenceTask]: ...

    def examples(self) -> list[bytes]: ...

    def answer(self, results: MultiInferenceResults) -> A: ...

    def log_messages(
        self, results: MultiInferenceResults, answer: A
    ) -> tuple[Message, Message]: ...


class RequestLogger(Protocol):
    """Where sampled requests go, as TFS's messages of their API
    (servo.server.request_logger.ServerRequestLogger)."""

    def should_log(self, model_name: str) -> bool: ...

    def log_predict(self, model_name: str, request: Message, response: Message) -> None: ...

    def log_classify(self, model_name: str, request: Message, response: Message) -> None: ...

    def log_regress(self, model_name: str, request: Message, response: Message) -> None: ...

    def log_multi_inference(self, model_name: str, request: Message, response: Message) -> None: ...


# -- the steps on a servable, shared by requests and warm-up --------------------------------------


def _with_deadline(
    servable: ModelServable, call: Callable[[], R], timeout: float | None
) -> Callable[[], R]:
    """`call` knowing its deadline (`servable.call_deadline()`) wherever it runs, for a
    servable that can stop a call (`takes_deadline`: a Python model's worker); as is for the
    others, or without a deadline."""
    if timeout is None or not getattr(servable, "takes_deadline", False):
        return call
    deadline = time.monotonic() + timeout
    return lambda: model.within_deadline(deadline, call)


def _prepare_predict(
    servable: ModelServable, call: PredictCall[Any], method_name_check: bool
) -> tuple[Signature, dict[str, np.ndarray], tuple[str, ...] | None]:
    """TFS's order: the signature, its method, the input aliases, the tensors, the output
    filter, then (TensorFlow's feed check) the input dtypes."""
    signature = find_signature(servable, call.signature_name, call.missing_signature)
    names = call.input_names(signature)
    if method_name_check:
        verify_predict_signature(signature)
    check_input_names(signature, names)
    inputs = call.inputs()
    output_filter = call.output_filter
    wanted = output_names(signature, output_filter) if output_filter else None
    check_input_dtypes(signature, inputs)
    return signature, inputs, wanted


# The model call of each example API; results per example.
_EXAMPLE_APIS: dict[str, Callable[[ModelServable, Signature, Sequence[bytes], bool], list[Any]]] = {
    "Classify": model.classify,
    "Regress": model.regress,
}


def _example_signature(servable: ModelServable, call: ExamplesCall[Any]) -> Signature:
    return find_signature(servable, call.signature_name, missing_example_signature)


def _examples_size(examples: Sequence[bytes]) -> int:
    """The cost class of a call on examples: the bit length of their bytes."""
    return sum(map(len, examples)).bit_length()


def _prepare_multi_inference(
    servable: ModelServable, tasks: Sequence[InferenceTask], method_name_check: bool
) -> tuple[tuple[InferenceTask, Signature], ...]:
    """TFS's checks, for every task before any runs: one model, no signature twice, classify
    or regress tasks only, on signatures of the right shape."""
    name = ""
    seen: set[str] = set()
    prepared = []
    for task in tasks:
        if not task.model_name:
            raise ServoError(Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
        if not name:
            name = task.model_name
        elif name != task.model_name:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            )
        key = task.signature_name or model.DEFAULT_SIGNATURE
        if key in seen:
            raise ServoError(Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signatures.get(key)
        if signature is None:
            raise ServoError(
                Code.INVALID_ARGUMENT, f"Requested signature not found in model graph: {key}"
            )
        if task.method_name == model.CLASSIFY_METHOD:
            model.check_classify_signature(signature, method_name_check)
        elif task.method_name == model.REGRESS_METHOD:
            model.check_regress_signature(signature, method_name_check)
        else:
            raise ServoError(
                Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
            )
        prepared.append((task, signature))
    return tuple(prepared)


def _run_multi_inference(
    servable: ModelServable,
    tasks: Sequence[tuple[InferenceTask, Signature]],
    examples: Sequence[bytes],
    method_name_check: bool,
) -> list[Any]:
    """Each task's results, in order (one model call per task)."""
    return [
        (model.classify if task.method_name == model.CLASSIFY_METHOD else model.regress)(
            servable, signature, examples, method_name_check
        )
        for task, signature in tasks
    ]


def predict_on(servable: ModelServable, call: PredictCall[A], method_name_check: bool) -> A:
    """A predict on a servable that no handle guards (warm-up), in the calling thread."""
    signature, inputs, wanted = _prepare_predict(servable, call, method_name_check)
    outputs = servable.run(signature, inputs, wanted)
    return call.answer(Prediction(WARMUP_ID, signature, inputs, outputs, wanted))


def examples_on(
    api: str, servable: ModelServable, call: ExamplesCall[A], method_name_check: bool
) -> A:
    """A classify or regress (`api`) on a servable that no handle guards (warm-up)."""
    signature = _example_signature(servable, call)
    results = _EXAMPLE_APIS[api](servable, signature, call.examples(), method_name_check)
    return call.answer(ExampleResults(WARMUP_ID, signature, results))


def multi_inference_on(
    servable: ModelServable, call: MultiInferenceCall[A], method_name_check: bool
) -> A:
    """A multi-inference on a servable that no handle guards (warm-up)."""
    tasks = _prepare_multi_inference(servable, call.tasks, method_name_check)
    results = _run_multi_inference(servable, tasks, call.examples(), method_name_check)
    return call.answer(MultiInferenceResults(WARMUP_ID, tasks, results))


# -- requests ------------------------------------------------------------------------------------


class DataPlane:
    """TFS's inference APIs over model specs, for every protocol.

    `method_name_check` is --enable_signature_method_name_check. Thread-safety: the request
    methods run on the event loop's thread; `record_request` may be called from any thread.
    """

    def __init__(
        self,
        core: ServerCore,
        runner: Runner,
        *,
        metrics: ServerMetrics | None = None,
        request_logger: RequestLogger | None = None,
        method_name_check: bool = False,
        access_log: bool = False,
    ) -> None:
        """`access_log`: record each request's model and version into its access log entry
        (servo.apis.access_log)."""
        self.core = core
        self.runner = runner
        self.metrics = metrics
        self.request_logger = request_logger
        self.method_name_check = method_name_check
        self.access_log = access_log
        # Set when the server begins to stop: readiness says not ready from then on (the
        # drain, --shutdown_drain_seconds), while requests are still served.
        self.stopping = False

    def _handle(self, spec: ModelSpec) -> ServableHandle:
        if self.access_log:
            return self._noted_handle(spec)
        return self.core.servable_handle(spec.name, spec.version, spec.label)

    def _noted_handle(self, spec: ModelSpec) -> ServableHandle:
        """The handle, its model and version noted in the request's access log entry."""
        access_log.note_spec(spec.name, spec.version)
        handle = self.core.servable_handle(spec.name, spec.version, spec.label)
        access_log.note_served(handle.id.version)
        return handle

    def _logs(self, name: str) -> RequestLogger | None:
        """The request logger, when this request to `name` is one it samples."""
        logger = self.request_logger
        return logger if logger is not None and logger.should_log(name) else None

    # The request methods below inline `_handle` and `_logs` on predict's path: each Python
    # call there is a measurable part of a small model's request.

    def _count_examples(self, name: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.request_example_count_total.inc(name, amount=count)
            self.metrics.request_example_counts.observe(count, name)

    # -- the inference APIs ----------------------------------------------------------------

    async def predict(self, spec: ModelSpec, call: PredictCall[A], timeout: float | None) -> A:
        with self._handle(spec) as handle:
            servable = handle.servable
            signature, inputs, wanted = _prepare_predict(servable, call, self.method_name_check)
            submit = getattr(servable, "submit", None)  # a batching servable's queue
            outputs = await self.runner.run(
                handle,
                _with_deadline(servable, lambda: servable.run(signature, inputs, wanted), timeout),
                (signature.name, size_class(inputs)),
                timeout,
                "Predict",
                None
                if submit is None
                else _with_deadline(servable, lambda: submit(signature, inputs, wanted), timeout),
            )
            prediction = Prediction(handle.id, signature, inputs, outputs, wanted)
            answer = call.answer(prediction)
        logger = self.request_logger
        if logger is not None and logger.should_log(handle.id.name):
            logger.log_predict(handle.id.name, *call.log_messages(prediction, answer))
        return answer

    async def classify(self, spec: ModelSpec, call: ExamplesCall[A], timeout: float | None) -> A:
        return await self._on_examples("Classify", spec, call, timeout)

    async def regress(self, spec: ModelSpec, call: ExamplesCall[A], timeout: float | None) -> A:
        return await self._on_examples("Regress", spec, call, timeout)

    async def _on_examples(
        self, api: str, spec: ModelSpec, call: ExamplesCall[A], timeout: float | None
    ) -> A:
        run, check = _EXAMPLE_APIS[api], self.method_name_check
        with self._handle(spec) as handle:
            servable = handle.servable
            signature = _example_signature(servable, call)
            examples = call.examples()
            self._count_examples(handle.id.name, len(examples))
            results = await self.runner.run(
                handle,
                _with_deadline(
                    servable, lambda: run(servable, signature, examples, check), timeout
                ),
                (signature.name, _examples_size(examples)),
                timeout,
                api,
            )
            outcome = ExampleResults(handle.id, signature, results)
            answer = call.answer(outcome)
        logger = self._logs(handle.id.name)
        if logger is not None:
            log = logger.log_classify if api == "Classify" else logger.log_regress
            log(handle.id.name, *call.log_messages(outcome, answer))
        return answer

    async def multi_inference(
        self, spec: ModelSpec, call: MultiInferenceCall[A], timeout: float | None
    ) -> A:
        """`spec` is the first task's (TFS looks the model up by it)."""
        check = self.method_name_check
        with self._handle(spec) as handle:
            servable = handle.servable
            tasks = _prepare_multi_inference(servable, call.tasks, check)
            examples = call.examples()
            self._count_examples(handle.id.name, len(examples))
            results = await self.runner.run(
                handle,
                _with_deadline(
                    servable,
                    lambda: _run_multi_inference(servable, tasks, examples, check),
                    timeout,
                ),
                ("MultiInference", _examples_size(examples)),
                timeout,
                "MultiInference",
            )
            outcome = MultiInferenceResults(handle.id, tasks, results)
            answer = call.answer(outcome)
        logger = self._logs(handle.id.name)
        if logger is not None:
            logger.log_multi_inference(handle.id.name, *call.log_messages(outcome, answer))
        return answer

    # -- metadata and status ---------------------------------------------------------------

    def metadata(self, spec: ModelSpec, answer: Callable[[ServableId, ModelServable], A]) -> A:
        """`answer(id, servable)` for the version `spec` names, while its handle is held."""
        with self._handle(spec) as handle:
            return answer(handle.id, handle.servable)

    def model_status(self, spec: ModelSpec) -> list[VersionStatus]:
        if self.access_log:
            access_log.note_spec(spec.name, spec.version)
        return self.core.model_status(spec.name, spec.version, spec.label)

    def model_names(self) -> list[str]:
        """The configured models' names, in the config's order."""
        return self.core.model_names()

    def version_labels(self, name: str) -> dict[str, int]:
        """The model's version labels (label -> version); none for an unknown model."""
        return dict(self.core.version_labels(name))

    def versions(self, spec: ModelSpec) -> list[VersionStatus]:
        """`model_status`, but [] where the model (or the version) has no state yet."""
        return self._versions(spec, self.model_status)

    @staticmethod
    def _versions(
        spec: ModelSpec, status: Callable[[ModelSpec], list[VersionStatus]]
    ) -> list[VersionStatus]:
        try:
            return status(spec)
        except ServoError as exc:
            if exc.code != Code.NOT_FOUND:
                raise
            return []

    def models(self) -> list[tuple[str, list[VersionStatus]]]:
        """Every configured model, in the config's order, with the versions it has had
        (newest first; none yet for a model whose base path has nothing to load). A request
        for them all names no model in its access log entry."""

        def status(spec: ModelSpec) -> list[VersionStatus]:
            return self.core.model_status(spec.name, spec.version, spec.label)

        return [(name, self._versions(ModelSpec(name), status)) for name in self.model_names()]

    # -- request metrics, recorded at each protocol's boundary ---------------------------

    def record_request(
        self, name: str, api: str, entrypoint: str, code: Code, started: float
    ) -> None:
        """TFS's request count (by model and status) and, for a success, its latency (by
        model, API and entrypoint: "REST", "GRPC"); `started` is a `time.perf_counter()`."""
        metrics = self.metrics
        if metrics is None:
            return
        metrics.request_count.inc(name, code.name)
        if code is Code.OK:
            metrics.request_latency.observe(
                (time.perf_counter() - started) * 1e6, name, api, entrypoint
            )
