"""TFS's request and response messages on a servable: the proto half of the data plane.

Each API is split where a model call happens, so that the gRPC service can run the call through
the `Runner` (inline or on a thread) while decoding and encoding stay on the event loop:

    prepare_*(servable, request)  -> what to run   (decode, find the signature, check inputs)
    servable call                 -> arrays / results
    *_response(...)               -> the response message

The whole-call functions (`predict`, `classify`, `regress`, `multi_inference`, `replay`) do
all three in the calling thread; warm-up uses them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format

from servo.apis import inference, tensor_codec
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
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


def model_spec(
    into: model_pb2.ModelSpec, name: str, version: int | None, signature_name: str | None
) -> None:
    """TFS's MakeModelSpec: the spec a response reports (default signature name filled in)."""
    into.Clear()
    into.name = name
    if signature_name is not None:
        into.signature_name = signature_name or model.DEFAULT_SIGNATURE
    if version is not None:
        into.version.value = version


def spec_fields(spec: model_pb2.ModelSpec) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a request's ModelSpec."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, spec.version.value, None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


# -- predict -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedPredict:
    signature: Signature
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None


def prepare_predict(
    servable: ModelServable, request: predict_pb2.PredictRequest
) -> PreparedPredict:
    """TFS's order: the signature, its method, the input aliases, each tensor, the output
    filter, then (TensorFlow's feed check) the input dtypes."""
    signature = inference.signature_for_grpc(servable, request.model_spec.signature_name)
    model.verify_predict_signature(signature)
    inference.check_input_names(signature, request.inputs.keys())
    inputs = {alias: _decode(alias, t) for alias, t in request.inputs.items()}
    outputs = inference.output_names(signature, request.output_filter)
    inference.check_input_dtypes(signature, inputs)
    return PreparedPredict(signature, inputs, outputs)


def _decode(alias: str, tensor: Any) -> np.ndarray:
    """A request tensor as an array; a malformed one is TFS's "tensor parsing error", with
    servo's reason after it."""
    try:
        return tensor_codec.to_ndarray(tensor)
    except ServoError as exc:
        if exc.code != Code.INVALID_ARGUMENT:
            raise
        raise ServoError(
            Code.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({exc.message})"
        ) from None


def predict_response(
    request: predict_pb2.PredictRequest,
    id: ServableId,
    prepared: PreparedPredict,
    outputs: Mapping[str, np.ndarray],
    tensor_content: bool = False,
    strings_as_content: bool | None = None,
) -> predict_pb2.PredictResponse:
    """The response; with `tensor_content` every output is packed bytes, strings included
    unless `strings_as_content` is false (TensorFlow's AsProtoTensorContent)."""
    if strings_as_content is None:
        strings_as_content = tensor_content
    response = predict_pb2.PredictResponse()
    model_spec(response.model_spec, request.model_spec.name, id.version, prepared.signature.name)
    wanted = prepared.outputs or prepared.signature.outputs
    for alias in wanted:
        tensor_codec.from_ndarray(
            outputs[alias],
            use_tensor_content=tensor_content,
            strings_as_content=strings_as_content,
            into=response.outputs[alias],
        )
    return response


def predict_messages(
    id: ServableId,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    """A REST predict as the messages gRPC would have carried (for request logs)."""
    request = predict_pb2.PredictRequest()
    model_spec(request.model_spec, id.name, id.version, signature.name)
    for alias, array in inputs.items():
        tensor_codec.from_ndarray(array, into=request.inputs[alias])
    prepared = PreparedPredict(signature, dict(inputs), None)
    return request, predict_response(request, id, prepared, outputs, True, False)


def run_predict(servable: ModelServable, prepared: PreparedPredict) -> dict[str, np.ndarray]:
    return servable.run(prepared.signature, prepared.inputs, prepared.outputs)


def predict(
    servable: ModelServable,
    id: ServableId,
    request: predict_pb2.PredictRequest,
    tensor_content: bool = False,
) -> predict_pb2.PredictResponse:
    prepared = prepare_predict(servable, request)
    outputs = run_predict(servable, prepared)
    return predict_response(request, id, prepared, outputs, tensor_content)


# -- classify and regress ------------------------------------------------------------------


def serialized_examples(input: input_pb2.Input) -> list[bytes]:
    """The examples of an Input, serialized; with a context, each example is the context's
    bytes followed by its own (a protobuf merge: the example's features win), as TFS does."""
    kind = input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input.example_list.examples]
    elif kind == "example_list_with_context":
        context = input.example_list_with_context.context.SerializeToString()
        examples = [
            context + e.SerializeToString() for e in input.example_list_with_context.examples
        ]
    else:
        examples = []
    if not examples:
        raise ServoError(Code.INVALID_ARGUMENT, "Input is empty.")
    return examples


def example_signature(servable: ModelServable, name: str) -> Signature:
    key = name or model.DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise ServoError(Code.INVALID_ARGUMENT, f"No signature was found with the name: {key}")
    return signature


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


def classify(
    servable: ModelServable, id: ServableId, request: classification_pb2.ClassificationRequest
) -> classification_pb2.ClassificationResponse:
    signature = example_signature(servable, request.model_spec.signature_name)
    results = model.classify(servable, signature, serialized_examples(request.input))
    return classify_response(request, id, results)


def classify_response(
    request: classification_pb2.ClassificationRequest,
    id: ServableId,
    results: Sequence[Sequence[model.Classification]],
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    spec = request.model_spec
    model_spec(response.model_spec, spec.name, id.version, spec.signature_name)
    classification_result(response.result, results)
    return response


def regress(
    servable: ModelServable, id: ServableId, request: regression_pb2.RegressionRequest
) -> regression_pb2.RegressionResponse:
    signature = example_signature(servable, request.model_spec.signature_name)
    values = model.regress(servable, signature, serialized_examples(request.input))
    return regress_response(request, id, values)


def regress_response(
    request: regression_pb2.RegressionRequest, id: ServableId, values: Sequence[float]
) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    spec = request.model_spec
    model_spec(response.model_spec, spec.name, id.version, spec.signature_name)
    regression_result(response.result, values)
    return response


# -- multi-inference -------------------------------------------------------------------------


def prepare_multi_inference(
    servable: ModelServable, request: inference_pb2.MultiInferenceRequest
) -> list[tuple[inference_pb2.InferenceTask, Signature]]:
    """TFS's checks, for every task before any runs: one model, no signature twice, classify
    or regress tasks only, on signatures of the right shape."""
    name = ""
    seen: set[str] = set()
    tasks = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise ServoError(Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
        if not name:
            name = task.model_spec.name
        elif name != task.model_spec.name:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            )
        key = task.model_spec.signature_name or model.DEFAULT_SIGNATURE
        if key in seen:
            raise ServoError(Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signatures.get(key)
        if signature is None:
            raise ServoError(
                Code.INVALID_ARGUMENT, f"Requested signature not found in model graph: {key}"
            )
        if task.method_name == model.CLASSIFY_METHOD:
            model.check_classify_signature(signature)
        elif task.method_name == model.REGRESS_METHOD:
            model.check_regress_signature(signature)
        else:
            raise ServoError(
                Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
            )
        tasks.append((task, signature))
    return tasks


def run_multi_inference(
    servable: ModelServable,
    tasks: Sequence[tuple[inference_pb2.InferenceTask, Signature]],
    examples: Sequence[bytes],
) -> list[Any]:
    """Each task's results, in order (one model call per task)."""
    return [
        model.classify(servable, signature, examples)
        if task.method_name == model.CLASSIFY_METHOD
        else model.regress(servable, signature, examples)
        for task, signature in tasks
    ]


def multi_inference_response(
    id: ServableId,
    tasks: Sequence[tuple[inference_pb2.InferenceTask, Signature]],
    results: Sequence[Any],
) -> inference_pb2.MultiInferenceResponse:
    response = inference_pb2.MultiInferenceResponse()
    for (task, _), result in zip(tasks, results, strict=True):
        out = response.results.add()
        if task.method_name == model.CLASSIFY_METHOD:
            classification_result(out.classification_result, result)
        else:
            regression_result(out.regression_result, result)
        spec = task.model_spec
        model_spec(out.model_spec, spec.name, id.version, spec.signature_name)
    return response


def multi_inference(
    servable: ModelServable, id: ServableId, request: inference_pb2.MultiInferenceRequest
) -> inference_pb2.MultiInferenceResponse:
    tasks = prepare_multi_inference(servable, request)
    results = run_multi_inference(servable, tasks, serialized_examples(request.input))
    return multi_inference_response(id, tasks, results)


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
    servable: ModelServable, id: ServableId
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = id.name
    response.model_spec.version.value = id.version
    packed = response.metadata[SIGNATURE_DEF_FIELD]
    packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
    packed.value = signature_def_map(servable)
    return response


# -- warm-up ---------------------------------------------------------------------------------

# Warm-up answers are thrown away, so the version they name does not matter.
_WARMUP_ID = ServableId("warmup", 0)
_REPLAYS: dict[str, Callable[[ModelServable, Any], Any]] = {
    "predict_log": lambda s, log: predict(s, _WARMUP_ID, log.request),
    "classify_log": lambda s, log: classify(s, _WARMUP_ID, log.request),
    "regress_log": lambda s, log: regress(s, _WARMUP_ID, log.request),
    "multi_inference_log": lambda s, log: multi_inference(s, _WARMUP_ID, log.request),
}


def replay(servable: ModelServable, log: prediction_log_pb2.PredictionLog) -> None:
    """Runs a PredictionLog's request on `servable` (model warm-up); raises on failure."""
    kind = log.WhichOneof("log_type")
    run = _REPLAYS.get(kind or "")
    if run is None:
        raise ServoError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
    run(servable, getattr(log, kind))  # type: ignore[arg-type]
