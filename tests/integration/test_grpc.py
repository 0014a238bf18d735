"""TFS's gRPC API through a real server process with the official tensorflow-serving-api client
over a socket, for what only that shows: a few representative calls as the client makes and
reads them (predict, classify and regress, metadata unpacked by the client, status, a status
code and text on the wire), config reloads that load and unload models, the health service,
messages over gRPC's 4 MB default, a client's deadline reaching the server, both message
families on one channel, and REST and gRPC giving the same answers.

Everything the services decide, every error text included, is tested in process in
tests/apis/grpc/test_service.py. The server is conftest's `api_server`, shared with
test_rest.py; test_grpc_flags.py starts the servers whose flags differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from servo.protos import predict_pb2 as servo_predict_pb2
from tests.support.models import SUM_MODEL, write_python_model
from tests.support.requests import (
    classify_request,
    metadata_request,
    predict_request,
    regress_request,
    status_request,
    tfs,
)
from tests.support.server import GrpcStubs, ServerProcess
from tests.support.testdata import TfsModels, saved_signature_map_json
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
RPC_TIMEOUT = 30


def tf_predict_request(name: str, x: object, alias: str = "x") -> predict_pb2.PredictRequest:
    """A predict request as the official client's users write it: tf.make_tensor_proto."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(x, dtype=tf.float32))
    return request


def rpc_status(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=RPC_TIMEOUT)
    return err.value.code(), err.value.details()


def model_status(stubs: GrpcStubs, name: str) -> dict[int, tuple[int, int, str]]:
    answer = stubs.models.GetModelStatus(tfs(status_request(name)), timeout=RPC_TIMEOUT)
    return {
        s.version: (s.state, s.status.error_code, s.status.error_message)
        for s in answer.model_version_status
    }


def test_predict_fills_in_the_model_spec_it_used(stubs: GrpcStubs) -> None:
    request = tf_predict_request("half_plus_two", [[1.0], [2.0], [5.0]])
    answer = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
    assert isinstance(answer, predict_pb2.PredictResponse)
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert (answer.model_spec.name, answer.model_spec.signature_name) == (
        "half_plus_two",
        "serving_default",
    )
    assert answer.model_spec.version.value == 123
    # TFS's default: typed fields, not tensor_content.
    assert not answer.outputs["y"].tensor_content
    assert list(answer.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    request.model_spec.version_label = "canary"
    request.model_spec.name = "two_versions"
    assert stubs.predictions.Predict(request, timeout=RPC_TIMEOUT).model_spec.version.value == 124


def test_classify_and_regress(stubs: GrpcStubs) -> None:
    request = tfs(classify_request("half_plus_two", "classify_x_to_y", 1.0, 4.0))
    answer = stubs.predictions.Classify(request, timeout=RPC_TIMEOUT)
    assert [[(c.label, c.score) for c in r.classes] for r in answer.result.classifications] == [
        [("", 2.5)],
        [("", 4.0)],
    ]
    assert answer.model_spec.signature_name == "classify_x_to_y"
    request = tfs(regress_request("half_plus_two", "regress_x_to_y", 2.0, 5.0))
    answer = stubs.predictions.Regress(request, timeout=RPC_TIMEOUT)
    assert [r.value for r in answer.result.regressions] == [3.0, 4.5]


def test_errors_reach_the_client_with_tfs_code_and_text(stubs: GrpcStubs) -> None:
    assert rpc_status(stubs.predictions.Predict, tf_predict_request("nope", [1.0])) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    # A long message, cut as TFS cuts it, arrives whole.
    request = tfs(predict_request("word_count", ["a b"], "text", dtype=None))
    request.output_filter.append("z" * 2000)
    message = f"output tensor alias not found in signature: {'z' * 2000} Outputs expected"
    assert rpc_status(stubs.predictions.Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        message[:1024] + "...TRUNCATED",
    )


def test_metadata_unpacked_by_the_client(stubs: GrpcStubs, tfs_models: TfsModels) -> None:
    request = tfs(metadata_request("half_plus_two", "signature_def"))
    answer = stubs.predictions.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("half_plus_two", 123)
    assert answer.metadata["signature_def"].TypeName() == "tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signature_map)
    version = tfs_models.path("saved_model_half_plus_two_cpu", "00000123")
    expected = saved_signature_map_json(version)
    assert signature_map == json_format.ParseDict(
        expected, get_model_metadata_pb2.SignatureDefMap()
    )


def test_model_status(stubs: GrpcStubs) -> None:
    assert model_status(stubs, "two_versions") == {
        124: (AVAILABLE, 0, ""),
        123: (AVAILABLE, 0, ""),
    }
    assert rpc_status(stubs.models.GetModelStatus, tfs(status_request("nope"))) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


def test_reload_config_adds_and_removes_models(
    stubs: GrpcStubs, tmp_path: Path, api_config: Path
) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(api_config.read_text(), config)
    added = config.model_config_list.config.add()
    added.name = "added"
    added.base_path = str(write_python_model(tmp_path / "added", SUM_MODEL))
    added.model_platform = "python"
    request = model_management_pb2.ReloadConfigRequest(config=config)
    answer = stubs.models.HandleReloadConfigRequest(request, timeout=120)
    assert (answer.status.error_code, answer.status.error_message) == (0, "")
    # The reload returned once the new model was AVAILABLE.
    assert model_status(stubs, "added") == {1: (AVAILABLE, 0, "")}
    sum_request = tf_predict_request("added", [1.0, 2.0])
    answer = stubs.predictions.Predict(sum_request, timeout=RPC_TIMEOUT)
    assert answer.outputs["total"].double_val == [3.0]

    # A bad config is answered with its error status, and nothing changes.
    bad = model_server_config_pb2.ModelServerConfig()
    bad.CopyFrom(config)
    bad.model_config_list.config.add().CopyFrom(added)
    code, details = rpc_status(
        stubs.models.HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=bad),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Illegal to list model added multiple times" in details
    answer = stubs.predictions.Predict(sum_request, timeout=RPC_TIMEOUT)
    assert answer.outputs["total"].double_val == [3.0]

    # Leaving the model out unloads it: its version ends, and requests find nothing.
    del config.model_config_list.config[-1]
    answer = stubs.models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=120
    )
    assert answer.status.error_code == 0
    wait_until(lambda: model_status(stubs, "added")[1][0] == END, what="added's version END")
    assert rpc_status(stubs.predictions.Predict, sum_request) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(added)",
    )
    request = tf_predict_request("half_plus_two", [[1.0]])
    assert stubs.predictions.Predict(request, timeout=RPC_TIMEOUT).outputs


def test_health_service(stubs: GrpcStubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    # The server as a whole, and TFS's two services by the names TFS gives them.
    for service in ("", "ModelService", "PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_deadline_shorter_than_the_model_call(stubs: GrpcStubs) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "slow"
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto([1.5], dtype=tf.float32))
    with pytest.raises(grpc.RpcError) as err:
        stubs.predictions.Predict(request, timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server keeps serving, the slow model included.
    answer = stubs.predictions.Predict(tf_predict_request("half_plus_two", [[1.0]]), RPC_TIMEOUT)
    assert answer.outputs["y"].float_val == [2.5]
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto([0.0], dtype=tf.float32))
    answer = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
    assert answer.outputs["slept"].float_val == [0.0]


def test_messages_over_grpc_default_limit(stubs: GrpcStubs) -> None:
    x = np.ones(5_000_000, np.float32)  # 20 MB: over gRPC's default 4 MB
    request = tf_predict_request("summer", x)
    assert request.ByteSize() > 20_000_000
    answer = stubs.predictions.Predict(request, timeout=60)
    assert tf.make_ndarray(answer.outputs["total"]).tolist() == [5_000_000.0]
    # And an answer over the limit: echo 20 MB back.
    request = tf_predict_request("two_io", x)
    request.model_spec.signature_name = "echo"
    answer = stubs.predictions.Predict(request, timeout=60)
    assert tf.make_ndarray(answer.outputs["x"]).shape == (5_000_000,)


def test_the_35_byte_request_of_issue_11_is_refused_at_the_default_limits(
    stubs: GrpcStubs,
) -> None:
    """Finding 2: DT_FLOAT, shape [67108864], one float_val fills 256 MiB. servo's main
    allocated it (and then refused its dtype); now it is refused from its shape."""
    request = tfs(predict_request("two_io", signature_name="fail"))
    code = request.inputs["code"]
    code.dtype = tf.float32.as_datatype_enum
    code.tensor_shape.dim.add().size = 67108864
    code.float_val.append(1.0)
    assert code.ByteSize() < 20
    assert rpc_status(stubs.predictions.Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: code (Tensor of shape [67108864] and type DT_FLOAT would take "
        "268435456 bytes decoded, over the limit of 134217728 bytes per tensor "
        "(--max_decoded_bytes_per_tensor))",
    )


def test_rest_and_grpc_give_the_same_answers(api_server: ServerProcess, stubs: GrpcStubs) -> None:
    def rest(name: str, body: dict, verb: str = "predict") -> Any:
        answer = httpx.post(f"{api_server.rest}/v1/models/{name}:{verb}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def grpc_predict(name: str, alias: str, value: Any) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs[alias].CopyFrom(value)
        answer = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
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
    request = tfs(classify_request("half_plus_two", "classify_x_to_y", 1.0))
    answer = stubs.predictions.Classify(request, timeout=RPC_TIMEOUT)
    rest_classes = rest(
        "half_plus_two",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
        "classify",
    )["results"]
    assert rest_classes == [[[c.label, c.score] for c in answer.result.classifications[0].classes]]
    request = tfs(regress_request("half_plus_two", "regress_x_to_y", 1.0))
    answer = stubs.predictions.Regress(request, timeout=RPC_TIMEOUT)
    rest_values = rest(
        "half_plus_two",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
        "regress",
    )["results"]
    assert rest_values == [r.value for r in answer.result.regressions]


def test_servo_and_tensorflow_messages_in_one_process(stubs: GrpcStubs) -> None:
    """This process has loaded TensorFlow's message classes (the client's) and servo's; they
    live in different proto packages, and either talks to the server."""
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
    assert servo_predict_pb2.PredictRequest.DESCRIPTOR.full_name.startswith("servo.")
    ours = servo_predict_pb2.PredictRequest()
    ours.model_spec.name = "half_plus_two"
    ours.inputs["x"].float_val.append(1.0)
    ours.inputs["x"].tensor_shape.dim.add().size = 1
    ours.inputs["x"].tensor_shape.dim.add().size = 1
    ours.inputs["x"].dtype = 1  # type: ignore[assignment]  # DT_FLOAT
    # servo's message, read by TensorFlow's classes and sent through the official stub ...
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    answer = stubs.predictions.Predict(theirs, timeout=RPC_TIMEOUT)
    assert answer.outputs["y"].float_val == [2.5]
    # ... and servo's own classes on the wire, on the same channel.
    call = stubs.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=servo_predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=servo_predict_pb2.PredictResponse.FromString,
    )
    answer = call(ours, timeout=RPC_TIMEOUT)
    assert isinstance(answer, servo_predict_pb2.PredictResponse)
    assert (answer.outputs["y"].float_val, answer.model_spec.version.value) == ([2.5], 123)
