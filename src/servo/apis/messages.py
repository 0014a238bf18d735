"""TFS's request and response messages, as the data plane's calls: the protocol-neutral proto
half of the APIs.

gRPC carries these messages on the wire, warm-up files hold them (PredictionLog), and request
logs record them whatever the protocol was. This module turns each request message into the
data plane's call for it (`PredictCall`, ...) and its results back into TFS's response message:

    PredictRequest         -> Predict         -> PredictResponse
    ClassificationRequest  -> Classify        -> ClassificationResponse
    RegressionRequest      -> Regress         -> RegressionResponse
    MultiInferenceRequest  -> MultiInference  -> MultiInferenceResponse

`replay` runs a warm-up record's request on a loading servable through the same steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from servo import tensor_codec
from servo.apis import data_plane
from servo.apis.data_plane import (
    ExampleResults,
    InferenceTask,
    ModelSpec,
    MultiInferenceResults,
    Prediction,
)
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.decoded_size import DEFAULT_LIMITS, DecodeBudget, DecodeLimits, check_examples
from servo.platforms import servable as model
from servo.platforms.servable import ModelServable, Signature
from servo.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

SIGNATURE_DEF_FIELD = "signature_def"
# The type URL of TFS's own message, so that TFS's clients can unpack it.
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


# -- model specs -------------------------------------------------------------------------------


def model_spec(spec: model_pb2.ModelSpec) -> ModelSpec:
    """A request's ModelSpec as the data plane's (the version or label it chose, if any)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return ModelSpec(spec.name, spec.version.value)
    if choice == "version_label":
        return ModelSpec(spec.name, None, spec.version_label)
    return ModelSpec(spec.name)


def fill_model_spec(
    into: model_pb2.ModelSpec, name: str, version: int | None, signature_name: str | None
) -> None:
    """TFS's MakeModelSpec: the spec a response reports (default signature name filled in)."""
    into.Clear()
    into.name = name
    if signature_name is not None:
        into.signature_name = signature_name or model.DEFAULT_SIGNATURE
    if version is not None:
        into.version.value = version


# -- predict ---------------------------------------------------------------------------------


def missing_signature(key: str) -> ServoError:
    """TFS's gRPC message for a predict request naming a signature the model lacks."""
    return ServoError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')


def decode_input(alias: str, tensor: Any, budget: DecodeBudget | None = None) -> np.ndarray:
    """A request tensor as an array, taken from the request's `budget`; a malformed one (or
    one over a limit) is TFS's "tensor parsing error", with servo's reason after it."""
    try:
        return tensor_codec.to_ndarray(tensor, budget)
    except ServoError as exc:
        if exc.code != Code.INVALID_ARGUMENT:
            raise
        raise ServoError(
            Code.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({exc.message})"
        ) from None


class PredictMessage:
    """A PredictRequest as the data plane's PredictCall; answered with a PredictResponse,
    whose tensors are packed (`tensor_content`, strings included) when `tensor_content`.
    Its inputs are decoded within `limits`."""

    __slots__ = ("limits", "request", "tensor_content")

    def __init__(
        self,
        request: predict_pb2.PredictRequest,
        tensor_content: bool = False,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.request = request
        self.tensor_content = tensor_content
        self.limits = limits

    @property
    def signature_name(self) -> str:
        return self.request.model_spec.signature_name

    @property
    def output_filter(self) -> Sequence[str]:
        return self.request.output_filter

    def missing_signature(self, key: str) -> ServoError:
        return missing_signature(key)

    def input_names(self, signature: Signature) -> Sequence[str]:
        return self.request.inputs.keys()  # type: ignore[return-value]

    def inputs(self) -> dict[str, np.ndarray]:
        budget = self.limits.budget()
        return {alias: decode_input(alias, t, budget) for alias, t in self.request.inputs.items()}

    def answer(self, prediction: Prediction) -> predict_pb2.PredictResponse:
        return predict_response(
            self.request.model_spec.name, prediction, self.tensor_content, self.tensor_content
        )

    def log_messages(
        self, prediction: Prediction, answer: predict_pb2.PredictResponse
    ) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
        return self.request, answer


def predict_response(
    name: str, prediction: Prediction, tensor_content: bool, strings_as_content: bool
) -> predict_pb2.PredictResponse:
    """The response; with `tensor_content` every output but strings is packed bytes, and
    strings too with `strings_as_content` (TensorFlow's AsProtoTensorContent)."""
    response = predict_pb2.PredictResponse()
    signature = prediction.signature
    fill_model_spec(response.model_spec, name, prediction.id.version, signature.name)
    outputs = prediction.outputs
    for alias in prediction.output_names or signature.outputs:
        tensor_codec.from_ndarray(
            outputs[alias],
            use_tensor_content=tensor_content,
            strings_as_content=strings_as_content,
            into=response.outputs[alias],
        )
    return response


def predict_messages(
    prediction: Prediction,
) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    """A predict that came as something else (JSON) as the messages gRPC would have carried,
    for its request log."""
    request = predict_pb2.PredictRequest()
    id, signature = prediction.id, prediction.signature
    fill_model_spec(request.model_spec, id.name, id.version, signature.name)
    for alias, array in prediction.inputs.items():
        tensor_codec.from_ndarray(array, into=request.inputs[alias])
    return request, predict_response(id.name, prediction, True, False)


# -- classify and regress ------------------------------------------------------------------


def serialized_examples(
    input: input_pb2.Input, limits: DecodeLimits = DEFAULT_LIMITS
) -> list[bytes]:
    """The examples of an Input, serialized; with a context, each example is the context's
    bytes followed by its own (a protobuf merge: the example's features win), as TFS does.
    What they take (the context once in every example) is checked against `limits` before
    they are joined."""
    kind = input.WhichOneof("kind")
    context = b""
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input.example_list.examples]
    elif kind == "example_list_with_context":
        context = input.example_list_with_context.context.SerializeToString()
        examples = [e.SerializeToString() for e in input.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise ServoError(Code.INVALID_ARGUMENT, "Input is empty.")
    check_examples(len(context), examples, limits)
    return [context + e for e in examples] if context else examples


def classification_result(
    into: classification_pb2.ClassificationResult,
    results: Sequence[Sequence[model.Classification]],
) -> None:
    for row in results:
        classifications = into.classifications.add()
        for item in row:
            cls = classifications.classes.add()
            cls.label = item.label.decode("utf-8", "replace")
            cls.score = item.score


def regression_result(into: regression_pb2.RegressionResult, values: Sequence[float]) -> None:
    for value in values:
        into.regressions.add().value = value


class ExamplesMessage:
    """A ClassificationRequest or RegressionRequest as the data plane's ExamplesCall: made by
    `classify_message` and `regress_message`, which say how its answer is written. Its
    examples are decoded within `limits`."""

    __slots__ = ("_fill", "_response", "limits", "request")

    def __init__(
        self,
        request: Any,
        response: Callable[[], Any],
        fill: Callable[[Any, Any], None],
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.request = request
        self._response = response  # the response message's class
        self._fill = fill  # writes the results into its `result`
        self.limits = limits

    @property
    def signature_name(self) -> str:
        return str(self.request.model_spec.signature_name)

    def examples(self) -> list[bytes]:
        return serialized_examples(self.request.input, self.limits)

    def answer(self, results: ExampleResults[Any]) -> Any:
        response = self._response()
        spec = self.request.model_spec
        fill_model_spec(response.model_spec, spec.name, results.id.version, spec.signature_name)
        self._fill(response.result, results.results)
        return response

    def log_messages(self, results: ExampleResults[Any], answer: Any) -> tuple[Any, Any]:
        return self.request, answer


def classify_message(
    request: classification_pb2.ClassificationRequest, limits: DecodeLimits = DEFAULT_LIMITS
) -> ExamplesMessage:
    return ExamplesMessage(
        request, classification_pb2.ClassificationResponse, classification_result, limits
    )


def regress_message(
    request: regression_pb2.RegressionRequest, limits: DecodeLimits = DEFAULT_LIMITS
) -> ExamplesMessage:
    return ExamplesMessage(request, regression_pb2.RegressionResponse, regression_result, limits)


def classify_messages(
    results: ExampleResults[Any], examples: Sequence[bytes]
) -> tuple[classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse]:
    """A classify that came as something else (JSON) as gRPC's messages, for its request log."""
    return _as_messages(
        classify_message(classification_pb2.ClassificationRequest()), results, examples
    )


def regress_messages(
    results: ExampleResults[Any], examples: Sequence[bytes]
) -> tuple[regression_pb2.RegressionRequest, regression_pb2.RegressionResponse]:
    """A regress that came as something else (JSON) as gRPC's messages, for its request log."""
    return _as_messages(regress_message(regression_pb2.RegressionRequest()), results, examples)


def _as_messages(
    message: ExamplesMessage, results: ExampleResults[Any], examples: Sequence[bytes]
) -> tuple[Any, Any]:
    """`message`'s empty request filled with the spec and the examples, and its answer."""
    request, id = message.request, results.id
    fill_model_spec(request.model_spec, id.name, id.version, results.signature.name)
    listed = request.input.example_list.examples
    for example in examples:
        listed.add().ParseFromString(example)  # a context merged in is already part of it
    return request, message.answer(results)


# -- multi-inference -------------------------------------------------------------------------


class MultiInferenceMessage:
    """A MultiInferenceRequest as the data plane's MultiInferenceCall; its examples, decoded
    once for all its tasks, within `limits`."""

    __slots__ = ("limits", "request", "tasks")

    def __init__(
        self, request: inference_pb2.MultiInferenceRequest, limits: DecodeLimits = DEFAULT_LIMITS
    ) -> None:
        self.request = request
        self.limits = limits
        self.tasks = [
            InferenceTask(t.model_spec.name, t.model_spec.signature_name, t.method_name)
            for t in request.tasks
        ]

    @property
    def model_spec(self) -> ModelSpec:
        """The spec the model is looked up by: the first task's (without tasks an empty one,
        which TFS answers with "ModelSpec has no name specified.")."""
        return model_spec(self.request.tasks[0].model_spec) if self.request.tasks else ModelSpec("")

    def examples(self) -> list[bytes]:
        return serialized_examples(self.request.input, self.limits)

    def answer(self, results: MultiInferenceResults) -> inference_pb2.MultiInferenceResponse:
        response = inference_pb2.MultiInferenceResponse()
        for task, result in zip(self.request.tasks, results.results, strict=True):
            out = response.results.add()
            if task.method_name == model.CLASSIFY_METHOD:
                classification_result(out.classification_result, result)
            else:
                regression_result(out.regression_result, result)
            spec = task.model_spec
            fill_model_spec(out.model_spec, spec.name, results.id.version, spec.signature_name)
        return response

    def log_messages(
        self, results: MultiInferenceResults, answer: inference_pb2.MultiInferenceResponse
    ) -> tuple[inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse]:
        return self.request, answer


# -- metadata --------------------------------------------------------------------------------

_signature_maps: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def check_metadata_request(request: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
    if not request.metadata_field:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        )
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise ServoError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")


def signature_def_map(servable: ModelServable) -> bytes:
    """The servable's SignatureDefMap, serialized (built once per servable)."""
    cached = _signature_maps.get(servable)
    if cached is None:
        message = json_format.ParseDict(
            model.signature_def_map_json(servable.signatures),
            get_model_metadata_pb2.SignatureDefMap(),
        )
        cached = _signature_maps[servable] = message.SerializeToString()
    return cached


def metadata_response(
    id: ServableId, servable: ModelServable
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = id.name
    response.model_spec.version.value = id.version
    packed = response.metadata[SIGNATURE_DEF_FIELD]
    packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
    packed.value = signature_def_map(servable)
    return response


# -- warm-up ---------------------------------------------------------------------------------

_REPLAYS: Mapping[str, Callable[[ModelServable, Any, bool, DecodeLimits], Any]] = {
    "predict_log": lambda s, log, check, limits: data_plane.predict_on(
        s, PredictMessage(log.request, limits=limits), check
    ),
    "classify_log": lambda s, log, check, limits: data_plane.examples_on(
        "Classify", s, classify_message(log.request, limits), check
    ),
    "regress_log": lambda s, log, check, limits: data_plane.examples_on(
        "Regress", s, regress_message(log.request, limits), check
    ),
    "multi_inference_log": lambda s, log, check, limits: data_plane.multi_inference_on(
        s, MultiInferenceMessage(log.request, limits), check
    ),
}


def replay(
    servable: ModelServable,
    log: prediction_log_pb2.PredictionLog,
    method_name_check: bool = False,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> None:
    """Runs a PredictionLog's request on `servable` (model warm-up); raises on failure.
    `method_name_check` is the server's --enable_signature_method_name_check, `limits` its
    decoded size limits (a warm-up request is held to the same as a client's)."""
    kind = log.WhichOneof("log_type")
    run = _REPLAYS.get(kind or "")
    if run is None:
        raise ServoError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
    run(servable, getattr(log, kind), method_name_check, limits)
