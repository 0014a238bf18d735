"""TFS's request messages, built one way for every test: servo's classes for the in-process
tests, and the official client's (`tfs(message)`, the same bytes in
tensorflow_serving.apis' class) for the tests that go through a real server.

    predict_request("half_plus_two", [[1.0]], version_label="stable")
    classify_request("half_plus_two", "classify_x_to_y", 1.0, 4.0)
    stub.Predict(tfs(predict_request("m", [1.0])), timeout=30)

Tensors are written as `tf.make_tensor_proto` writes them (numbers in tensor_content, strings
in string_val).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from servo.protos import (
    classification_pb2,
    example_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    tensor_pb2,
)
from servo.tensor_codec import from_ndarray

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"


def tfs_class(cls: type) -> type:
    """The official client's class of the message class `cls` (one of servo's)."""
    module = cls.__module__.rsplit(".", 1)[-1]  # servo.protos.predict_pb2 -> predict_pb2
    if module in ("example_pb2", "feature_pb2"):
        package = "tensorflow.core.example"
    elif module.endswith("config_pb2"):
        package = "tensorflow_serving.config"
    else:
        package = "tensorflow_serving.apis"
    return getattr(importlib.import_module(f"{package}.{module}"), cls.__name__)  # type: ignore[no-any-return]


def tfs(message: Any) -> Any:
    """`message` (one of servo's) as the official client's class: the same bytes."""
    return tfs_class(type(message)).FromString(message.SerializeToString())


def fill_spec(
    spec: model_pb2.ModelSpec,
    name: str,
    *,
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str | None = None,
) -> None:
    spec.name = name
    if version is not None:
        spec.version.value = version
    if version_label is not None:
        spec.version_label = version_label
    if signature_name is not None:
        spec.signature_name = signature_name


def tensor(x: object, dtype: Any = np.float32) -> tensor_pb2.TensorProto:
    """`x` as a TensorProto of `dtype` (None: numpy's own, strings as DT_STRING)."""
    return from_ndarray(np.asarray(x, dtype))


def predict_request(
    name: str,
    x: object | None = None,
    alias: str = "x",
    *,
    dtype: Any = np.float32,  # None: numpy's own (strings as DT_STRING)
    output_filter: Sequence[str] = (),
    **spec: Any,
) -> predict_pb2.PredictRequest:
    """A predict of `x` (as `dtype`; none without it) under `alias`; `spec`: version,
    version_label, signature_name."""
    request = predict_pb2.PredictRequest()
    fill_spec(request.model_spec, name, **spec)
    if x is not None:
        request.inputs[alias].CopyFrom(tensor(x, dtype))
    request.output_filter.extend(output_filter)
    return request


def example(**features: float | Sequence[float]) -> example_pb2.Example:
    """A tf.Example of float features."""
    out = example_pb2.Example()
    for key, value in features.items():
        values = [value] if isinstance(value, float | int) else value
        out.features.feature[key].float_list.value.extend(values)
    return out


def _examples(into: Any, xs: Iterable[float], context: example_pb2.Example | None) -> None:
    if context is None:
        into.example_list.examples.extend(example(x=x) for x in xs)
    else:
        into.example_list_with_context.context.CopyFrom(context)
        into.example_list_with_context.examples.extend(example(x=x) for x in xs)


def classify_request(
    name: str, signature: str, *xs: float, context: example_pb2.Example | None = None, **spec: Any
) -> classification_pb2.ClassificationRequest:
    """A classify of one example per x (feature "x")."""
    request = classification_pb2.ClassificationRequest()
    fill_spec(request.model_spec, name, signature_name=signature, **spec)
    _examples(request.input, xs, context)
    return request


def regress_request(
    name: str, signature: str, *xs: float, context: example_pb2.Example | None = None, **spec: Any
) -> regression_pb2.RegressionRequest:
    """A regress of one example per x (feature "x")."""
    request = regression_pb2.RegressionRequest()
    fill_spec(request.model_spec, name, signature_name=signature, **spec)
    _examples(request.input, xs, context)
    return request


def multi_request(
    name: str, tasks: Sequence[tuple[str, str]], *xs: float
) -> inference_pb2.MultiInferenceRequest:
    """A multi-inference of (method, signature) tasks of one model on one example per x."""
    request = inference_pb2.MultiInferenceRequest()
    for method, signature in tasks:
        task = request.tasks.add()
        fill_spec(task.model_spec, name, signature_name=signature)
        task.method_name = method
    _examples(request.input, xs, None)
    return request


def metadata_request(
    name: str, *fields: str, **spec: Any
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    fill_spec(request.model_spec, name, **spec)
    request.metadata_field.extend(fields)
    return request


def status_request(name: str, **spec: Any) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    fill_spec(request.model_spec, name, **spec)
    return request
