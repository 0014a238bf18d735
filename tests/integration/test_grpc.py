"""TFS's gRPC API through a real server process, with the official tensorflow-serving-api
client: every RPC of both services, versions and labels, output_filter, metadata unpacked by
the client, reloads, TFS's status codes and messages, deadlines, big messages, health, and the
same answers as the REST API.

One server process serves every model here; tests/integration/test_grpc_flags.py starts the
servers whose flags differ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from servo.protos import predict_pb2 as servo_predict_pb2
from tests.integration.conftest import METRICS_PATH, write_python_model
from tests.support.server import ServerProcess, running_server
from tests.support.testdata import tfs_path

pytestmark = pytest.mark.integration

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
RPC_TIMEOUT = 30

SUM_MODEL = """
import numpy as np

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"total": {"dtype": "float64", "shape": [-1]}},
    }}

    def predict(self, inputs, signature_name):
        return {"total": np.array([inputs["x"].astype(np.float64).sum()])}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpc")


@pytest.fixture(scope="module")
def config_path(work: Path, example_models: Path, python_models: dict) -> Path:
    summer = write_python_model(work / "summer", SUM_MODEL)
    path = work / "models.config"
    path.write_text(
        f"""
        model_config_list {{
          config {{ name: "half_plus_two" base_path: "{tfs_path("saved_model_half_plus_two_cpu")}"
                   model_platform: "tensorflow" }}
          config {{ name: "half_plus_three"
                   base_path: "{tfs_path("saved_model_half_plus_three")}"
                   model_platform: "tensorflow" }}
          config {{ name: "tf2" base_path: "{tfs_path("saved_model_half_plus_two_tf2_cpu")}"
                   model_platform: "tensorflow" }}
          config {{ name: "two_versions"
                   base_path: "{tfs_path("saved_model_half_plus_two_2_versions")}"
                   model_platform: "tensorflow"
                   model_version_policy {{ all {{}} }}
                   version_labels {{ key: "stable" value: 123 }}
                   version_labels {{ key: "canary" value: 124 }} }}
          config {{ name: "counter" base_path: "{tfs_path("saved_model_counter")}"
                   model_platform: "tensorflow" }}
          config {{ name: "tflite" base_path: "{tfs_path("saved_model_half_plus_two_tflite")}"
                   model_platform: "tflite" }}
          config {{ name: "tflite_sigdef"
                   base_path: "{tfs_path("saved_model_half_plus_two_tflite_with_sigdef")}"
                   model_platform: "tflite" }}
          config {{ name: "mlp" base_path: "{example_models / "mlp"}" model_platform: "onnx" }}
          config {{ name: "vocab" base_path: "{example_models / "vocab"}"
                   model_platform: "lookup" }}
          config {{ name: "word_count" base_path: "{example_models / "word_count"}"
                   model_platform: "python" }}
          config {{ name: "two_io" base_path: "{python_models["two_io"]}"
                   model_platform: "python" }}
          config {{ name: "slow" base_path: "{python_models["slow"]}" model_platform: "python" }}
          config {{ name: "summer" base_path: "{summer}" model_platform: "python" }}
        }}
        """
    )
    return path


@pytest.fixture(scope="module")
def server(config_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        [
            f"--model_config_file={config_path}",
            "--enable_grpc_healthcheck_service",
            f"--monitoring_config_file={tfs_path('monitoring_config.txt')}",
        ]
    ) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    # The client's own limits are raised; the server's are what the big-message test shows.
    options = [("grpc.max_send_message_length", 2**30), ("grpc.max_receive_message_length", 2**30)]
    with grpc.insecure_channel(server.grpc_target, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


# -- helpers -----------------------------------------------------------------------------------


def predict_request(
    name: str, x: object | None = None, alias: str = "x", **spec: Any
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    if x is not None:
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(x, dtype=tf.float32))
    return request


def rpc_error(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=RPC_TIMEOUT)
    return err.value


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details()


def example(**features: float) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                k: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                for k, v in features.items()
            }
        )
    )


def classify_request(
    name: str, signature: str, *xs: float
) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend([example(x=x) for x in xs])
    return request


def regress_request(name: str, signature: str, *xs: float) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend([example(x=x) for x in xs])
    return request


def multi_request(
    name: str, tasks: list[tuple[str, str]], *xs: float
) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for method, signature in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(x=x) for x in xs])
    return request


def tf_signature_text(model: str, signature: str) -> str:
    """A SignatureDef of one of TFS's test models, as TensorFlow's DebugString writes it."""
    saved = saved_model_pb2.SavedModel()
    with open(Path(tfs_path(model)) / "00000123" / "saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    return text_format.MessageToString(saved.meta_graphs[0].signature_def[signature])


def model_status(models, name: str) -> dict[int, tuple[int, int, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    answer = models.GetModelStatus(request, timeout=RPC_TIMEOUT)
    return {
        s.version: (s.state, s.status.error_code, s.status.error_message)
        for s in answer.model_version_status
    }


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls a state through RPCs (bounded), never a fixed wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the state was not reached in time"
        time.sleep(0.05)


# -- Predict -----------------------------------------------------------------------------------


def test_predict_fills_in_the_model_spec_it_used(stub) -> None:
    answer = stub.Predict(predict_request("half_plus_two", [[1.0], [2.0], [5.0]]), RPC_TIMEOUT)
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert (answer.model_spec.name, answer.model_spec.signature_name) == (
        "half_plus_two",
        "serving_default",
    )
    assert answer.model_spec.version.value == 123
    assert answer.model_spec.WhichOneof("version_choice") == "version"
    # TFS's default: typed fields, not tensor_content.
    assert not answer.outputs["y"].tensor_content
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    answer = stub.Predict(predict_request("half_plus_three", [[1.0]]), RPC_TIMEOUT)
    assert answer.outputs["y"].float_val == [3.5]


def test_predict_on_every_platform(stub) -> None:
    for name in ("tf2", "tflite", "tflite_sigdef"):
        answer = stub.Predict(predict_request(name, [[1.0], [3.0]]), RPC_TIMEOUT)
        (output,) = answer.outputs.values()
        assert tf.make_ndarray(output).reshape(-1).tolist() == [2.5, 3.5], name
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "word_count"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["a model server", "servo"]))
    answer = stub.Predict(request, timeout=RPC_TIMEOUT)
    assert tf.make_ndarray(answer.outputs["words"]).tolist() == [3, 1]
    assert tf.make_ndarray(answer.outputs["chars"]).tolist() == [14, 5]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "two_io"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto([[1, 2], [3, 4]], dtype=tf.float32))
    request.inputs["tag"].CopyFrom(tf.make_tensor_proto([b"ab", b"xyz"]))
    answer = stub.Predict(request, timeout=RPC_TIMEOUT)
    assert tf.make_ndarray(answer.outputs["sum"]).tolist() == [3.0, 7.0]
    assert tf.make_ndarray(answer.outputs["tag_bytes"]).tolist() == [b"ba", b"zyx"]


def test_versions_and_labels(stub) -> None:
    for spec, version in [
        ({"version": 123}, 123),
        ({"version": 124}, 124),
        ({"version_label": "stable"}, 123),
        ({"version_label": "canary"}, 124),
        ({}, 124),
    ]:
        answer = stub.Predict(predict_request("two_versions", [[1.0]], **spec), RPC_TIMEOUT)
        assert answer.model_spec.version.value == version, spec
        assert answer.outputs["y"].float_val == [2.5]


def test_output_filter(stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "word_count"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["a b"]))
    assert sorted(stub.Predict(request, timeout=RPC_TIMEOUT).outputs) == ["chars", "words"]
    request.output_filter.append("words")
    answer = stub.Predict(request, timeout=RPC_TIMEOUT)
    assert list(answer.outputs) == ["words"]
    assert tf.make_ndarray(answer.outputs["words"]).tolist() == [2]
    request.output_filter.append("words")
    assert status_of(rpc_error(stub.Predict, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: words",
    )
    request.output_filter[:] = ["nope"]
    assert status_of(rpc_error(stub.Predict, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope Outputs expected to be in the set "
        "{chars,words}.",
    )
    # Messages longer than 1024 characters are cut as TFS cuts them.
    request.output_filter[:] = ["z" * 2000]
    message = f"output tensor alias not found in signature: {'z' * 2000} Outputs expected"
    assert status_of(rpc_error(stub.Predict, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        message[:1024] + "...TRUNCATED",
    )


def test_state_through_signatures(stub) -> None:
    def call(signature: str) -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "counter"
        request.model_spec.signature_name = signature
        answer = stub.Predict(request, timeout=RPC_TIMEOUT)
        assert answer.model_spec.signature_name == signature
        return float(tf.make_ndarray(answer.outputs["output"]))

    call("reset_counter")
    assert [call("incr_counter"), call("incr_counter"), call("get_counter")] == [1.0, 2.0, 2.0]


# -- Classify, Regress, MultiInference ---------------------------------------------------------


@pytest.mark.parametrize("name", ["half_plus_two", "tf2"])
def test_classify_regress_and_multi_inference(stub, name: str) -> None:
    """TF1 signatures say classify and regress; TF2's all say predict, and TFS (without
    --enable_signature_method_name_check) classifies and regresses on them all the same."""
    answer = stub.Classify(classify_request(name, "classify_x_to_y", 1.0, 4.0), RPC_TIMEOUT)
    assert [[(c.label, c.score) for c in r.classes] for r in answer.result.classifications] == [
        [("", 2.5)],
        [("", 4.0)],
    ]
    assert (answer.model_spec.name, answer.model_spec.signature_name) == (name, "classify_x_to_y")
    assert answer.model_spec.version.value == 123

    answer = stub.Regress(regress_request(name, "regress_x_to_y", 2.0, 5.0), RPC_TIMEOUT)
    assert [r.value for r in answer.result.regressions] == [3.0, 4.5]
    assert answer.model_spec.signature_name == "regress_x_to_y"

    # An example list with a context: each example's features merged over the context's.
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "regress_x_to_y2"
    request.input.example_list_with_context.context.CopyFrom(example(x=4.0))
    request.input.example_list_with_context.examples.extend([example(), example(x=2.0)])
    answer = stub.Regress(request, timeout=RPC_TIMEOUT)
    assert [r.value for r in answer.result.regressions] == [5.0, 4.0]

    request = multi_request(name, [(REGRESS, "regress_x_to_y"), (CLASSIFY, "classify_x_to_y")], 2.0)
    answer = stub.MultiInference(request, timeout=RPC_TIMEOUT)
    assert [r.WhichOneof("result") for r in answer.results] == [
        "regression_result",
        "classification_result",
    ]
    assert answer.results[0].regression_result.regressions[0].value == 3.0
    assert answer.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for result, signature in zip(
        answer.results, ["regress_x_to_y", "classify_x_to_y"], strict=True
    ):
        assert (result.model_spec.name, result.model_spec.signature_name) == (name, signature)
        assert result.model_spec.version.value == 123


def test_regress_on_half_plus_three(stub) -> None:
    answer = stub.Regress(
        regress_request("half_plus_three", "tensorflow/serving/regress", 1.0), RPC_TIMEOUT
    )
    assert [r.value for r in answer.result.regressions] == [3.5]


def test_classify_regress_and_multi_inference_errors(stub) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(stub.Classify, classify_request("half_plus_two", "nope", 1.0))
    assert status_of(error) == (invalid, "No signature was found with the name: nope")
    error = rpc_error(stub.Regress, regress_request("half_plus_two", "serving_default", 1.0))
    assert status_of(error) == (
        invalid,
        "No regression inputs found in SignatureDef: "
        + tf_signature_text("saved_model_half_plus_two_cpu", "serving_default"),
    )
    error = rpc_error(stub.Classify, classify_request("half_plus_two", "regress_x_to_y", 1.0))
    assert status_of(error) == (
        invalid,
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: '
        + tf_signature_text("saved_model_half_plus_two_cpu", "regress_x_to_y"),
    )
    error = rpc_error(stub.Classify, classify_request("half_plus_two", "classify_x_to_y"))
    assert status_of(error) == (invalid, "Input is empty.")
    # No model_spec at all: TFS's own message, not the empty name's
    assert status_of(rpc_error(stub.Classify, classification_pb2.ClassificationRequest())) == (
        invalid,
        "Missing ModelSpec",
    )
    assert status_of(rpc_error(stub.Regress, regression_pb2.RegressionRequest())) == (
        invalid,
        "Missing ModelSpec",
    )

    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")] * 2, 1.0)
    assert status_of(rpc_error(stub.MultiInference, request)) == (
        invalid,
        "Duplicate evaluation of signature: regress_x_to_y",
    )
    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")], 1.0)
    request.tasks.add().CopyFrom(request.tasks[0])
    request.tasks[1].model_spec.name = "tf2"
    assert status_of(rpc_error(stub.MultiInference, request)) == (
        invalid,
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    )
    request = multi_request("half_plus_two", [(REGRESS, "nope")], 1.0)
    assert status_of(rpc_error(stub.MultiInference, request)) == (
        invalid,
        "Requested signature not found in model graph: nope",
    )
    request = multi_request("half_plus_two", [("tensorflow/serving/predict", "regress_x_to_y")])
    assert status_of(rpc_error(stub.MultiInference, request)) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
    request = multi_request("half_plus_two", [(REGRESS, "regress_x_to_y")])
    assert status_of(rpc_error(stub.MultiInference, request)) == (invalid, "Input is empty.")
    # No tasks: TFS looks up an empty ModelSpec.
    request = inference_pb2.MultiInferenceRequest()
    request.input.example_list.examples.add()
    assert status_of(rpc_error(stub.MultiInference, request)) == (
        invalid,
        "ModelSpec has no name specified.",
    )


# -- GetModelMetadata --------------------------------------------------------------------------


def test_metadata_unpacked_by_the_client(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("half_plus_two", 123)
    assert list(answer.metadata) == ["signature_def"]
    assert answer.metadata["signature_def"].TypeName() == "tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signature_map)
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)["metadata"]["signature_def"]
    # TFS's JSON sample, read back through the client's own message: equal messages.
    assert signature_map == json_format.ParseDict(
        expected, get_model_metadata_pb2.SignatureDefMap()
    )
    assert (
        json_format.MessageToDict(
            signature_map,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        == expected
    )
    # A version by label, and a model of another platform.
    request.model_spec.name, request.model_spec.version_label = "two_versions", "stable"
    assert stub.GetModelMetadata(request, timeout=RPC_TIMEOUT).model_spec.version.value == 123
    request.model_spec.Clear()
    request.model_spec.name = "mlp"
    answer = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    assert answer.metadata["signature_def"].Unpack(signature_map)
    tensor = signature_map.signature_def["serving_default"].inputs["x"]
    assert (tensor.dtype, [d.size for d in tensor.tensor_shape.dim]) == (tf.float32, [-1, 16])


def test_metadata_errors(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    assert status_of(rpc_error(stub.GetModelMetadata, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )
    request.model_spec.name = "half_plus_two"
    assert status_of(rpc_error(stub.GetModelMetadata, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    request.metadata_field.append("graph")
    assert status_of(rpc_error(stub.GetModelMetadata, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )
    request.metadata_field[:] = ["signature_def"]
    request.model_spec.name = "nope"
    assert status_of(rpc_error(stub.GetModelMetadata, request)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


# -- Predict's errors ---------------------------------------------------------------------------


def _content_mismatch() -> predict_pb2.PredictRequest:
    request = predict_request("half_plus_two")
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = 1000  # the content holds one value
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_content = np.float32(1).tobytes()
    return request


def _strings() -> predict_pb2.PredictRequest:
    request = predict_request("half_plus_two")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([["a"]]))
    return request


def _extra() -> predict_pb2.PredictRequest:
    request = predict_request("half_plus_two", [[1.0]])
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    return request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
PREDICT_ERRORS = [
    (
        "unknown model",
        lambda: predict_request("nope", [1.0]),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        lambda: predict_request("half_plus_two", [1.0], version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half_plus_two, 9)",
    ),
    (
        "unknown label",
        lambda: predict_request("two_versions", [1.0], version_label="beta"),
        INVALID,
        "Unrecognized servable version label: beta",
    ),
    (
        "bad signature",
        lambda: predict_request("half_plus_two", [1.0], signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    (
        "empty name",
        lambda: predict_request("", [1.0]),
        INVALID,
        "ModelSpec has no name specified.",
    ),
    ("no model spec", predict_pb2.PredictRequest, INVALID, "Missing ModelSpec"),
    (
        "no inputs",
        lambda: predict_request("half_plus_two"),
        INVALID,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    ),
    (
        "an extra input",
        _extra,
        INVALID,
        "input size does not match signature: 2!=1 len({extra,x}) != len({x}). "
        "Sent extra: {extra}. Missing but required: {}.",
    ),
    (
        "a missing input",
        lambda: predict_request("two_io", [[1.0, 2.0]], alias="a"),
        INVALID,
        "input size does not match signature: 1!=2 len({a}) != len({a,tag}). Sent extra: {}. "
        "Missing but required: {tag}.",
    ),
    (
        "a wrong input name",
        lambda: predict_request("half_plus_two", [[1.0]], alias="nope"),
        INVALID,
        "Signature input alias: x(feed name: x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {nope}, or default input alias set: ",
    ),
    (
        "a wrong dtype",
        _strings,
        INVALID,
        "Expects arg[0] to be float but string is provided",
    ),
    (
        "content not of its shape's size",
        _content_mismatch,
        INVALID,
        "tensor parsing error: x",
    ),
]


@pytest.mark.parametrize(
    ("request_factory", "code", "message"),
    [case[1:] for case in PREDICT_ERRORS],
    ids=[case[0] for case in PREDICT_ERRORS],
)
def test_predict_errors(stub, request_factory, code, message) -> None:
    code_, details = status_of(rpc_error(stub.Predict, request_factory()))
    assert code_ == code
    # TFS's message; servo may say why a tensor did not parse after it.
    if message.startswith("tensor parsing error"):
        assert details.startswith(message + " ("), details
    else:
        assert details == message


def test_a_deadline_shorter_than_the_model_call(stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "slow"
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto([1.5], dtype=tf.float32))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server keeps serving, the slow model included.
    answer = stub.Predict(predict_request("half_plus_two", [[1.0]]), RPC_TIMEOUT)
    assert answer.outputs["y"].float_val == [2.5]
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto([0.0], dtype=tf.float32))
    assert stub.Predict(request, timeout=RPC_TIMEOUT).outputs["slept"].float_val == [0.0]


def test_messages_over_grpc_default_limit(stub) -> None:
    x = np.ones(5_000_000, np.float32)  # 20 MB: over gRPC's default 4 MB
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "summer"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert request.ByteSize() > 20_000_000
    answer = stub.Predict(request, timeout=60)
    assert tf.make_ndarray(answer.outputs["total"]).tolist() == [5_000_000.0]
    # And an answer over the limit: echo 20 MB back.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "two_io"
    request.model_spec.signature_name = "echo"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    answer = stub.Predict(request, timeout=60)
    assert tf.make_ndarray(answer.outputs["x"]).shape == (5_000_000,)


# -- ModelService ------------------------------------------------------------------------------


def test_model_status(models) -> None:
    assert model_status(models, "two_versions") == {
        124: (AVAILABLE, 0, ""),
        123: (AVAILABLE, 0, ""),
    }
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "two_versions"
    request.model_spec.version.value = 123
    answer = models.GetModelStatus(request, timeout=RPC_TIMEOUT)
    assert [(s.version, s.state) for s in answer.model_version_status] == [(123, AVAILABLE)]
    request.model_spec.version.value = 9
    assert status_of(rpc_error(models.GetModelStatus, request)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model two_versions",
    )
    request.model_spec.Clear()
    request.model_spec.name = "nope"
    assert status_of(rpc_error(models.GetModelStatus, request)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    request.model_spec.name = ""  # TFS looks the empty name up like any other
    assert status_of(rpc_error(models.GetModelStatus, request)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model ",
    )
    assert status_of(
        rpc_error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_reload_config_adds_and_removes_models(
    server: ServerProcess, models, stub, work: Path, config_path: Path
) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_path.read_text(), config)
    added = config.model_config_list.config.add()
    added.name = "added"
    added.base_path = str(write_python_model(work / "added", SUM_MODEL))
    added.model_platform = "python"
    request = model_management_pb2.ReloadConfigRequest(config=config)
    answer = models.HandleReloadConfigRequest(request, timeout=120)
    assert (answer.status.error_code, answer.status.error_message) == (0, "")
    # The reload returned once the new model was AVAILABLE.
    assert model_status(models, "added") == {1: (AVAILABLE, 0, "")}
    sum_request = predict_pb2.PredictRequest()
    sum_request.model_spec.name = "added"
    sum_request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    assert stub.Predict(sum_request, timeout=RPC_TIMEOUT).outputs["total"].double_val == [3.0]

    # A bad config is answered with its error status, and nothing changes.
    bad = model_server_config_pb2.ModelServerConfig()
    bad.CopyFrom(config)
    bad.model_config_list.config.add().CopyFrom(added)
    error = rpc_error(
        models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(config=bad)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Illegal to list model added multiple times" in error.details()
    assert stub.Predict(sum_request, timeout=RPC_TIMEOUT).outputs["total"].double_val == [3.0]

    # Leaving the model out unloads it: its version ends, and requests find nothing.
    del config.model_config_list.config[-1]
    answer = models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=120
    )
    assert answer.status.error_code == 0
    wait_for(lambda: model_status(models, "added")[1][0] == END)
    assert status_of(rpc_error(stub.Predict, sum_request)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(added)",
    )
    assert stub.Predict(predict_request("half_plus_two", [[1.0]]), RPC_TIMEOUT).outputs


def test_health_service(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    # The server as a whole, and TFS's two services by the names TFS gives them.
    for service in ("", "ModelService", "PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- REST and gRPC agree -----------------------------------------------------------------------


def test_rest_and_grpc_give_the_same_answers(server: ServerProcess, stub) -> None:
    def rest(name: str, body: dict, verb: str = "predict") -> Any:
        answer = httpx.post(f"{server.rest}/v1/models/{name}:{verb}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def grpc_predict(name: str, alias: str, value: Any) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs[alias].CopyFrom(value)
        answer = stub.Predict(request, timeout=RPC_TIMEOUT)
        return {k: tf.make_ndarray(v) for k, v in answer.outputs.items()}

    # REST writes float32 in its shortest form, which reads back as the same float32.
    x = (np.arange(32, dtype=np.float32).reshape(2, 16) / 7).tolist()
    for name, rows in (("mlp", x), ("half_plus_two", [[3.0], [0.1]])):
        grpc_y = grpc_predict(name, "x", tf.make_tensor_proto(rows, dtype=tf.float32))["y"]
        rest_y = np.array(rest(name, {"instances": rows})["predictions"], np.float32)
        np.testing.assert_array_equal(grpc_y, rest_y)
        assert grpc_y.dtype == np.float32
    words = ["servo", "x", "the"]
    ids = grpc_predict("vocab", "keys", tf.make_tensor_proto(words))["ids"]
    assert ids.tolist() == rest("vocab", {"instances": words})["predictions"]
    texts = ["a model server", "hello"]
    outputs = grpc_predict("word_count", "text", tf.make_tensor_proto(texts))
    rows = [{k: int(v[i]) for k, v in outputs.items()} for i in range(len(texts))]
    assert rows == rest("word_count", {"instances": texts})["predictions"]
    # Classify and regress.
    answer = stub.Classify(classify_request("half_plus_two", "classify_x_to_y", 1.0), RPC_TIMEOUT)
    rest_classes = rest(
        "half_plus_two",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
        "classify",
    )["results"]
    assert rest_classes == [[[c.label, c.score] for c in answer.result.classifications[0].classes]]
    answer = stub.Regress(regress_request("half_plus_two", "regress_x_to_y", 1.0), RPC_TIMEOUT)
    rest_values = rest(
        "half_plus_two",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
        "regress",
    )["results"]
    assert rest_values == [r.value for r in answer.result.regressions]


# -- servo's and TensorFlow's messages in one process ------------------------------------------


def test_servo_and_tensorflow_messages_in_one_process(channel, stub) -> None:
    """This process has loaded TensorFlow's message classes (the client's) and servo's; they
    live in different proto packages, and either talks to the server."""
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
    assert servo_predict_pb2.PredictRequest.DESCRIPTOR.full_name.startswith("servo.")
    ours = servo_predict_pb2.PredictRequest()
    ours.model_spec.name = "half_plus_two"
    ours.inputs["x"].float_val.append(1.0)
    ours.inputs["x"].tensor_shape.dim.add().size = 1
    ours.inputs["x"].tensor_shape.dim.add().size = 1
    ours.inputs["x"].dtype = 1  # DT_FLOAT
    # servo's message, read by TensorFlow's classes and sent through the official stub ...
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert stub.Predict(theirs, timeout=RPC_TIMEOUT).outputs["y"].float_val == [2.5]
    # ... and servo's own classes on the wire, on the same channel.
    call = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=servo_predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=servo_predict_pb2.PredictResponse.FromString,
    )
    answer = call(ours, timeout=RPC_TIMEOUT)
    assert isinstance(answer, servo_predict_pb2.PredictResponse)
    assert (answer.outputs["y"].float_val, answer.model_spec.version.value) == ([2.5], 123)


def test_metrics_count_every_grpc_call_and_time_the_good_ones(server: ServerProcess, stub) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def families() -> dict:
        page = httpx.get(f"{server.rest}{METRICS_PATH}", timeout=10).text
        return {f.name: f for f in text_string_to_metric_families(page)}

    def sample(families: dict, metric: str, suffix: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[metric].samples
            if s.name.endswith(suffix) and labels.items() <= s.labels.items()
        )

    count, latency = ":tensorflow:serving:request_count", ":tensorflow:serving:request_latency"
    before = families()
    for _ in range(2):
        stub.Predict(predict_request("half_plus_two", [1.0]), timeout=RPC_TIMEOUT)
    rpc_error(stub.Predict, predict_request("half_plus_two", [1.0], alias="not_an_input"))
    after = families()

    def added(metric: str, suffix: str, **labels: str) -> float:
        return sample(after, metric, suffix, **labels) - sample(before, metric, suffix, **labels)

    assert added(count, "", model_name="half_plus_two", status="OK") == 2
    assert added(count, "", model_name="half_plus_two", status="INVALID_ARGUMENT") == 1
    # only the two good calls are timed
    timed = {"model_name": "half_plus_two", "API": "Predict", "entrypoint": "GRPC"}
    assert added(latency, "_count", **timed) == 2
