"""TFS's gRPC API under flags that differ from the API server's: that
--enable_serialization_as_tensor_content and --enable_signature_method_name_check reach the
services, and versions that fail to load while the server runs (found by polling, or added by
a reload).

One server process has all of these flags. What the two flags change in the answers is tested
in process in tests/apis/grpc/test_service.py.
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
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.integration.conftest import copy_tfs_model
from tests.support.requests import classify_request, predict_request, status_request, tfs
from tests.support.server import GrpcStubs, grpc_stubs, model_config, running_server
from tests.support.testdata import TfsModels
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
RPC_TIMEOUT = 30


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tfs_models: TfsModels) -> Path:
    """A writable copy of half_plus_two (version 123), where a test adds a version."""
    return copy_tfs_model(
        tfs_models, "saved_model_half_plus_two_cpu", tmp_path_factory.mktemp("flags")
    )


@pytest.fixture(scope="module")
def config_path(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("flags_config") / "models.config"
    config.write_text(model_config([("half", base, "tensorflow")]))
    return config


@pytest.fixture(scope="module")
def stubs(config_path: Path) -> Iterator[GrpcStubs]:
    with (
        running_server(
            [
                f"--model_config_file={config_path}",
                "--enable_serialization_as_tensor_content",
                "--enable_signature_method_name_check",
                "--file_system_poll_wait_seconds=1",
                "--max_num_load_retries=0",
            ]
        ) as server,
        grpc_stubs(server) as opened,
    ):
        yield opened


def model_status(stubs: GrpcStubs, name: str) -> dict[int, tuple[int, int, str]]:
    answer = stubs.models.GetModelStatus(tfs(status_request(name)), timeout=RPC_TIMEOUT)
    return {
        s.version: (s.state, s.status.error_code, s.status.error_message)
        for s in answer.model_version_status
    }


def test_the_flags_reach_the_services(stubs: GrpcStubs) -> None:
    request = tfs(predict_request("half", [[1.0], [2.0]]))
    y = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT).outputs["y"]
    assert y.tensor_content == np.array([2.5, 3.0], "<f4").tobytes()
    assert not y.float_val
    assert tf.make_ndarray(y).tolist() == [[2.5], [3.0]]
    with pytest.raises(grpc.RpcError) as err:
        request = tfs(classify_request("half", "regress_x_to_y", 1.0))
        stubs.predictions.Classify(request, timeout=RPC_TIMEOUT)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress",
    )


def test_a_version_that_fails_to_load_ends_with_its_error(
    stubs: GrpcStubs, base: Path, tmp_path: Path, tfs_models: TfsModels
) -> None:
    # Version 124 appears at once (a rename), and is not a SavedModel.
    staging = tmp_path / "00000124"
    shutil.copytree(Path(tfs_models.path("bad_half_plus_two")) / "00000123", staging)
    os.rename(staging, base / "00000124")
    wait_until(lambda: model_status(stubs, "half").get(124, (0,))[0] == END, what="version 124 END")
    status = model_status(stubs, "half")
    state, code, message = status[124]
    assert state == END
    assert code == grpc.StatusCode.NOT_FOUND.value[0]
    assert message.startswith(
        "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{base / '00000124'}"
    )
    # The old version keeps serving.
    assert status[123] == (AVAILABLE, 0, "")
    answer = stubs.predictions.Predict(tfs(predict_request("half", [[1.0]])), RPC_TIMEOUT)
    assert answer.model_spec.version.value == 123
    request = tfs(status_request("half", version=124))
    (entry,) = stubs.models.GetModelStatus(request, timeout=RPC_TIMEOUT).model_version_status
    assert (entry.state, entry.status.error_code) == (END, code)


def test_a_reload_whose_new_model_fails_answers_its_error(
    stubs: GrpcStubs, config_path: Path, tfs_models: TfsModels
) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_path.read_text(), config)
    bad = config.model_config_list.config.add()
    bad.name, bad.base_path = "bad", tfs_models.path("bad_half_plus_two")
    bad.model_platform = "tensorflow"
    request = model_management_pb2.ReloadConfigRequest(config=config)
    with pytest.raises(grpc.RpcError) as err:
        stubs.models.HandleReloadConfigRequest(request, timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    # TFS's braces: the list's, the entry's, and the servable id's own.
    assert err.value.details() == (
        "1 model(s) did not become available: {{{name: bad version: 123} due to error: "
        "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{bad.base_path}/00000123. Check that the directory exists and that you have the right "
        "permissions for accessing it.}, }"
    )
    assert model_status(stubs, "bad")[123][:2] == (END, grpc.StatusCode.NOT_FOUND.value[0])
    assert model_status(stubs, "half")[123] == (AVAILABLE, 0, "")
