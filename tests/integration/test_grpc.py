"""TFS's gRPC API through a real server process, with the official tensorflow-serving-api
client: every RPC of both services, versions and labels, output_filter, metadata unpacked by
the client, reloads, status codes, deadlines, big messages, health, tensor_content, and the
same answers as the REST API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
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
from tests.integration.conftest import write_python_model
from tests.support.server import ServerProcess, running_server
from tests.support.testdata import tfs_path

pytestmark = pytest.mark.integration

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
def server(work: Path, example_models: Path, python_models: dict) -> Iterator[ServerProcess]:
    summer = write_python_model(work / "summer", SUM_MODEL)
    config = work / "models.config"
    config.write_text(
        f"""
        model_config_list {{
          config {{ name: "half_plus_two" base_path: "{tfs_path("saved_model_half_plus_two_cpu")}"
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
          config {{ name: "mlp" base_path: "{example_models / "mlp"}" model_platform: "onnx" }}
          config {{ name: "vocab" base_path: "{example_models / "vocab"}"
                   model_platform: "lookup" }}
          config {{ name: "word_count" base_path: "{example_models / "word_count"}"
                   model_platform: "python" }}
          config {{ name: "slow" base_path: "{python_models["slow"]}" model_platform: "python" }}
          config {{ name: "summer" base_path: "{summer}" model_platform: "python" }}
        }}
        """
    )
    with running_server(
        [f"--model_config_file={config}", "--enable_grpc_healthcheck_service"]
    ) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 2**30), ("grpc.max_receive_message_length", 2**30)]
    with grpc.insecure_channel(server.grpc_target, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name: str, x: object, **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value  # type: ignore[assignment]
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x, dtype=tf.float32))
    return request


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value


def example(x: float) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
        )
    )


# -- PredictionService -------------------------------------------------------------------------


def test_predict_and_the_effective_model_spec(stub) -> None:
    answer = stub.Predict(predict_request("half_plus_two", [[1.0], [2.0], [5.0]]), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert answer.model_spec.name == "half_plus_two"
    assert answer.model_spec.version.value == 123
    assert answer.model_spec.signature_name == "serving_default"
    assert not answer.outputs["y"].tensor_content  # typed fields, TFS's default
    answer = stub.Predict(predict_request("tflite", [[1.0]]), timeout=30)
    assert next(iter(answer.outputs.values())).float_val == [2.5]


def test_versions_labels_and_output_filter(stub) -> None:
    for spec, version in [({"version": 123}, 123), ({"version_label": "canary"}, 124), ({}, 124)]:
        answer = stub.Predict(predict_request("two_versions", [[1.0]], **spec), timeout=30)
        assert answer.model_spec.version.value == version
    request = predict_request("half_plus_two", [[1.0]])
    request.output_filter.append("y")
    assert list(stub.Predict(request, timeout=30).outputs) == ["y"]
    request.output_filter.append("y")
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "duplicate output tensor alias: y"
    request = predict_request("half_plus_two", [[1.0]])
    request.output_filter.append("nope")
    error = rpc_error(stub.Predict, request)
    assert error.details() == (
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."
    )


def test_counter_state_through_signatures(stub) -> None:
    def call(signature: str) -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "counter"
        request.model_spec.signature_name = signature
        answer = stub.Predict(request, timeout=30)
        return float(tf.make_ndarray(answer.outputs["output"]))

    call("reset_counter")
    assert [call("incr_counter"), call("incr_counter"), call("get_counter")] == [1.0, 2.0, 2.0]


def test_classify_regress_and_multi_inference(stub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend([example(1.0), example(4.0)])
    answer = stub.Classify(request, timeout=30)
    assert [c.classes[0].score for c in answer.result.classifications] == [2.5, 4.0]
    assert answer.model_spec.version.value == 123

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y2"
    request.input.example_list_with_context.context.CopyFrom(example(2.0))
    request.input.example_list_with_context.examples.add()
    answer = stub.Regress(request, timeout=30)
    assert [r.value for r in answer.result.regressions] == [4.0]

    request = inference_pb2.MultiInferenceRequest()
    for method, signature in [
        ("tensorflow/serving/classify", "classify_x_to_y"),
        ("tensorflow/serving/regress", "regress_x_to_y"),
    ]:
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(2.0)])
    answer = stub.MultiInference(request, timeout=30)
    assert answer.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert answer.results[1].regression_result.regressions[0].value == 3.0
    assert answer.results[1].model_spec.signature_name == "regress_x_to_y"


def test_metadata_unpacked_by_the_client(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(request, timeout=30)
    assert answer.model_spec.version.value == 123
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signature_map)
    with open(tfs_path("half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)["metadata"]["signature_def"]
    assert (
        json_format.MessageToDict(
            signature_map,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        == expected
    )
    request.metadata_field[:] = []
    error = rpc_error(stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    request.metadata_field.append("graph")
    assert rpc_error(stub.GetModelMetadata, request).details() == (
        "Metadata field graph is not supported"
    )


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_factory", "code", "message"),
    [
        (
            lambda: predict_request("nope", [1.0]),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            lambda: predict_request("half_plus_two", [1.0], version=9),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (
            lambda: predict_request("two_versions", [1.0], version_label="beta"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: beta",
        ),
        (
            lambda: predict_request("half_plus_two", [1.0], signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda: predict_request("", [1.0]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name specified.",
        ),
    ],
)
def test_error_codes(stub, request_factory, code, message) -> None:
    error = rpc_error(stub.Predict, request_factory())
    assert (error.code(), error.details()) == (code, message)


def test_input_errors(stub) -> None:
    request = predict_request("half_plus_two", [[1.0]])
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input size does not match signature: 2!=1 len({extra,x}) != len({x}). "
        "Sent extra: {extra}. Missing but required: {}."
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(["a"]))
    assert rpc_error(stub.Predict, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    request = predict_request("half_plus_two", [[1.0]])
    request.inputs["x"].tensor_shape.dim[0].size = 1000  # the content holds one value
    request.inputs["x"].tensor_content = np.float32(1).tobytes()
    request.inputs["x"].ClearField("float_val")
    assert rpc_error(stub.Predict, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_deadline_bounds_the_call_and_the_server_keeps_serving(stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "slow"
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    answer = stub.Predict(predict_request("half_plus_two", [[1.0]]), timeout=30)
    assert answer.outputs["y"].float_val == [2.5]


def test_messages_over_grpc_default_limit(stub) -> None:
    x = np.ones(5_000_000, np.float32)  # 20 MB: over gRPC's default 4 MB
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "summer"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    answer = stub.Predict(request, timeout=60)
    assert tf.make_ndarray(answer.outputs["total"]).tolist() == [5_000_000.0]


# -- ModelService ------------------------------------------------------------------------------


def test_model_status(models) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "two_versions"
    answer = models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in answer.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    request.model_spec.name = "nope"
    error = rpc_error(models.GetModelStatus, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


def test_health_service(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_rest_and_grpc_give_the_same_answers(server: ServerProcess, stub) -> None:
    def rest(name: str, instances: list) -> list:
        return httpx.post(
            f"{server.rest}/v1/models/{name}:predict", json={"instances": instances}, timeout=30
        ).json()["predictions"]

    x = (np.arange(32, dtype=np.float32).reshape(2, 16) / 7).tolist()
    # REST writes float32 in its shortest form, which reads back as the same float32.
    answer = stub.Predict(predict_request("mlp", x), timeout=30)
    np.testing.assert_array_equal(
        tf.make_ndarray(answer.outputs["y"]), np.array(rest("mlp", x), np.float32)
    )
    answer = stub.Predict(predict_request("half_plus_two", [[3.0]]), timeout=30)
    np.testing.assert_array_equal(
        tf.make_ndarray(answer.outputs["y"]), np.array(rest("half_plus_two", [[3.0]]), np.float32)
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vocab"
    request.inputs["keys"].CopyFrom(tf.make_tensor_proto([b"servo", b"x"]))
    answer = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(answer.outputs["ids"]).tolist() == rest("vocab", ["servo", "x"])


def test_servo_and_tensorflow_messages_in_one_process(stub) -> None:
    ours = servo_predict_pb2.PredictRequest()
    ours.model_spec.name = "half_plus_two"
    ours.inputs["x"].float_val.append(1.0)
    ours.inputs["x"].tensor_shape.dim.add().size = 1
    ours.inputs["x"].dtype = 1
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert stub.Predict(theirs, timeout=30).outputs["y"].float_val == [2.5]


def test_reload_config_through_the_rpc(server: ServerProcess, models, stub, work: Path) -> None:
    added = write_python_model(work / "added", SUM_MODEL)
    config = model_server_config_pb2.ModelServerConfig()
    with open(work / "models.config") as f:
        from google.protobuf import text_format

        text_format.Parse(f.read(), config)
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = "added", str(added), "python"
    request = model_management_pb2.ReloadConfigRequest(config=config)
    answer = models.HandleReloadConfigRequest(request, timeout=120)
    assert answer.status.error_code == 0
    sum_request = predict_pb2.PredictRequest()
    sum_request.model_spec.name = "added"
    sum_request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    assert stub.Predict(sum_request, timeout=30).outputs["total"].double_val == [3.0]
    # A bad config is answered with its error, and nothing changes.
    bad = model_server_config_pb2.ModelServerConfig()
    bad.CopyFrom(config)
    twice = bad.model_config_list.config.add()
    twice.CopyFrom(entry)
    error = rpc_error(
        models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(config=bad)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Illegal to list model added multiple times" in error.details()
    # Removing the model unloads it.
    del config.model_config_list.config[-1]
    models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=120
    )
    deadline = time.monotonic() + 60
    while True:
        status = models.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "added"}), timeout=10
        )
        if status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.END:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)  # polls the version's state
    assert rpc_error(stub.Predict, sum_request).code() == grpc.StatusCode.NOT_FOUND


def test_tensor_content_serialization_flag(python_models: dict) -> None:
    with (
        running_server(
            [
                "--model_name=half",
                f"--model_base_path={tfs_path('saved_model_half_plus_two_cpu')}",
                "--enable_serialization_as_tensor_content",
            ]
        ) as server,
        grpc.insecure_channel(server.grpc_target) as ch,
    ):
        answer = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            predict_request("half", [[1.0]]), timeout=30
        )
        assert answer.outputs["y"].tensor_content
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.5]]
