"""TFS's gRPC API under flags that differ from test_grpc.py's server: tensor_content outputs,
the signature method-name check, and a version that fails to load while the server runs.

One server process has all of these flags; each test looks at one of them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.integration.conftest import copy_tfs_model, write_python_model
from tests.integration.test_grpc import (
    AVAILABLE,
    END,
    RPC_TIMEOUT,
    classify_request,
    model_status,
    predict_request,
    rpc_error,
    status_of,
    wait_for,
)
from tests.support.server import ServerProcess, model_config, running_server
from tests.support.testdata import tfs_path

pytestmark = pytest.mark.integration

CUSTOM_METHOD_MODEL = """
class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "method_name": "custom/method",
    }}

    def predict(self, inputs, signature_name):
        return {"x": inputs["x"]}
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of half_plus_two (version 123), where a test adds a version."""
    return copy_tfs_model("saved_model_half_plus_two_cpu", tmp_path_factory.mktemp("flags"))


@pytest.fixture(scope="module")
def config_path(base: Path, python_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("flags_config")
    custom = write_python_model(work / "custom", CUSTOM_METHOD_MODEL)
    config = work / "models.config"
    config.write_text(
        model_config(
            [
                ("half", base, "tensorflow"),
                ("custom", custom, "python"),
                ("two_io", python_models["two_io"], "python"),
            ]
        )
    )
    return config


@pytest.fixture(scope="module")
def server(config_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        [
            f"--model_config_file={config_path}",
            "--enable_serialization_as_tensor_content",
            "--enable_signature_method_name_check",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ]
    ) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def test_outputs_as_tensor_content(stub) -> None:
    answer = stub.Predict(predict_request("half", [[1.0], [2.0]]), timeout=RPC_TIMEOUT)
    y = answer.outputs["y"]
    assert y.tensor_content == np.array([2.5, 3.0], "<f4").tobytes()
    assert not y.float_val
    assert tf.make_ndarray(y).tolist() == [[2.5], [3.0]]
    # Strings too, in TensorFlow's encoding (TensorFlow's own parser reads them back).
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "two_io"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto([[1, 2], [3, 4]], dtype=tf.float32))
    request.inputs["tag"].CopyFrom(tf.make_tensor_proto([b"ab", b"x" * 200]))
    answer = stub.Predict(request, timeout=RPC_TIMEOUT)
    tags = answer.outputs["tag_bytes"]
    assert tags.tensor_content and not tags.string_val
    parsed = tf.io.parse_tensor(tags.SerializeToString(), tf.string)
    assert parsed.numpy().tolist() == [b"ba", b"x" * 200]
    assert tf.make_ndarray(answer.outputs["sum"]).tolist() == [3.0, 7.0]


def test_signature_method_name_check(stub) -> None:
    error = rpc_error(stub.Classify, classify_request("half", "regress_x_to_y", 1.0))
    assert status_of(error) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress",
    )
    answer = stub.Classify(classify_request("half", "classify_x_to_y", 1.0), timeout=RPC_TIMEOUT)
    assert answer.result.classifications[0].classes[0].score == 2.5
    error = rpc_error(stub.Predict, predict_request("custom", [1.0]))
    assert status_of(error) == (
        grpc.StatusCode.INTERNAL,
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method",
    )
    assert isinstance(answer, classification_pb2.ClassificationResponse)


def test_a_version_that_fails_to_load_ends_with_its_error(
    stub, models, base: Path, tmp_path: Path
) -> None:
    # Version 124 appears at once (a rename), and is not a SavedModel.
    staging = tmp_path / "00000124"
    shutil.copytree(Path(tfs_path("bad_half_plus_two")) / "00000123", staging)
    os.rename(staging, base / "00000124")
    wait_for(lambda: model_status(models, "half").get(124, (0,))[0] == END)
    status = model_status(models, "half")
    state, code, message = status[124]
    assert state == END
    assert code == grpc.StatusCode.NOT_FOUND.value[0]
    assert message.startswith(
        "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{base / '00000124'}"
    )
    # The old version keeps serving.
    assert status[123] == (AVAILABLE, 0, "")
    answer = stub.Predict(predict_request("half", [[1.0]]), timeout=RPC_TIMEOUT)
    assert answer.model_spec.version.value == 123
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half"
    request.model_spec.version.value = 124
    (entry,) = models.GetModelStatus(request, timeout=RPC_TIMEOUT).model_version_status
    assert (entry.state, entry.status.error_code) == (END, code)


def test_a_reload_whose_new_model_fails_answers_its_error(models, config_path: Path) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_path.read_text(), config)
    bad = config.model_config_list.config.add()
    bad.name, bad.base_path = "bad", tfs_path("bad_half_plus_two")
    bad.model_platform = "tensorflow"
    request = model_management_pb2.ReloadConfigRequest(config=config)
    code, message = status_of(rpc_error(models.HandleReloadConfigRequest, request))
    assert code == grpc.StatusCode.UNKNOWN
    # TFS's braces: the list's, the entry's, and the servable id's own.
    assert message == (
        "1 model(s) did not become available: {{{name: bad version: 123} due to error: "
        "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{bad.base_path}/00000123. Check that the directory exists and that you have the right "
        "permissions for accessing it.}, }"
    )
    assert model_status(models, "bad")[123][:2] == (END, grpc.StatusCode.NOT_FOUND.value[0])
    assert model_status(models, "half")[123] == (AVAILABLE, 0, "")
