"""SavedModels using the ops TFS links into its binary, on real servers: the example repository's
TF Text tokenizer and decision forest answering over REST and gRPC (the official client), and,
on a server where
tensorflow-text does not import, the load failure naming the op and the extra, at start (exit
1) and as a version's status over both protocols."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

from tests.support.examples import example_script
from tests.support.server import (
    ServerProcess,
    grpc_stubs,
    model_config,
    running_server,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOKENIZER = "whitespace_tokenizer"
FOREST = "decision_forest"
OP = "TFText>WhitespaceTokenizeWithOffsetsV2"
RPC_TIMEOUT = 30
FAILED_PRECONDITION = 9  # error_code in a version's status, as TFS's protos carry it


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models that use op libraries, as scripts/make_example_models.py writes them."""
    out = tmp_path_factory.mktemp("examples") / "models"
    assert example_script().main([str(out), "--only", TOKENIZER, "--only", FOREST]) == 0
    return out


@pytest.fixture(scope="module")
def server(examples: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("op-libraries") / "models.config"
    models = [(name, examples / name, "tensorflow") for name in (TOKENIZER, FOREST)]
    config.write_text(model_config(models))
    with running_server([f"--model_config_file={config}"]) as process:
        yield process


def without_tensorflow_text(tmp_path: Path) -> dict[str, str]:
    """The environment of a server whose `import tensorflow_text` fails as it does where the
    package is not installed: a package of that name first on the path raises the same error."""
    stub = tmp_path / "hidden" / "tensorflow_text"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorflow_text'\", name='tensorflow_text')\n"
    )
    path = [str(tmp_path / "hidden"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def missing_op_message(version_dir: Path) -> str:
    return (
        f"Failed to load SavedModel at {version_dir}: it uses op {OP}, one of the TF Text ops, "
        "and tensorflow-text is not installed: pip install 'servo-model-server[text]' "
        "(tensorflow-text) to serve models using TF Text ops"
    )


def test_tf_text_model_answers_over_rest(server: ServerProcess) -> None:
    # The Makefile's "Try:" line for the model, row format; and the columnar form.
    url = f"{server.rest}/v1/models/{TOKENIZER}:predict"
    rows = httpx.post(url, json={"instances": ["a model server", "servo serves"]}, timeout=30)
    assert rows.status_code == 200, rows.text
    assert rows.json() == {
        "predictions": [
            {"tokens": ["a", "model", "server"], "lengths": 3},
            {"tokens": ["servo", "serves", ""], "lengths": 2},
        ]
    }
    columns = httpx.post(url, json={"inputs": {"text": ["  tabs\tand\nlines "]}}, timeout=30)
    assert columns.json() == {"outputs": {"tokens": [["tabs", "and", "lines"]], "lengths": [3]}}
    metadata = httpx.get(f"{server.rest}/v1/models/{TOKENIZER}/metadata", timeout=30).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == ["text"]
    assert sorted(signature["outputs"]) == ["lengths", "tokens"]


def test_tf_text_model_answers_over_grpc(server: ServerProcess) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = TOKENIZER
    request.inputs["text"].CopyFrom(
        tf.make_tensor_proto(["a model server", "servo serves"], dtype=tf.string)
    )
    with grpc_stubs(server) as stubs:
        answer = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
    assert tf.make_ndarray(answer.outputs["tokens"]).tolist() == [
        [b"a", b"model", b"server"],
        [b"servo", b"serves", b""],
    ]
    assert tf.make_ndarray(answer.outputs["lengths"]).tolist() == [3, 2]
    assert answer.model_spec.name == TOKENIZER and answer.model_spec.version.value == 1


def test_decision_forest_answers_over_rest_and_grpc_alike(server: ServerProcess) -> None:
    x1, x2 = [0.9, 0.1, 0.5, 0.3], [0.8, 0.2, 0.4, 0.9]
    answer = httpx.post(
        f"{server.rest}/v1/models/{FOREST}:predict",
        json={"instances": [{"x1": a, "x2": b} for a, b in zip(x1, x2, strict=True)]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    rest = answer.json()["predictions"]
    assert rest[0] > 0.9 and rest[1] < 0.1  # far from the boundary x1 + x2 = 1
    request = predict_pb2.PredictRequest()
    request.model_spec.name = FOREST
    request.inputs["x1"].CopyFrom(tf.make_tensor_proto(x1, dtype=tf.float32))
    request.inputs["x2"].CopyFrom(tf.make_tensor_proto(x2, dtype=tf.float32))
    with grpc_stubs(server) as stubs:
        grpc_answer = stubs.predictions.Predict(request, timeout=RPC_TIMEOUT)
    grpc = tf.make_ndarray(grpc_answer.outputs["output"])
    assert grpc.shape == (4,)
    # The same float32s: REST's JSON writes each as the shortest text that reads back to it.
    np.testing.assert_array_equal(grpc, np.array(rest, dtype=np.float32))


def test_without_tensorflow_text_the_server_does_not_start_and_says_why(
    examples: Path, tmp_path: Path
) -> None:
    args = [
        f"--model_name={TOKENIZER}",
        f"--model_base_path={examples / TOKENIZER}",
        "--max_num_load_retries=0",
    ]
    with running_server(args, without_tensorflow_text(tmp_path), ready=False) as server:
        assert server.wait_exit() == 1
    assert "Failed to start server" in server.output
    assert missing_op_message(examples / TOKENIZER / "1") in server.output


def test_without_tensorflow_text_a_version_ends_with_the_error_over_rest_and_grpc(
    examples: Path, tmp_path: Path
) -> None:
    # A server that serves a model and is then given the tokenizer by a polled config file.
    vocab = tmp_path / "vocab" / "1"
    vocab.mkdir(parents=True)
    (vocab / "vocab.txt").write_text("servo\n")
    config = tmp_path / "models.config"
    config.write_text(model_config([("vocab", tmp_path / "vocab", "lookup")]))
    args = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        "--max_num_load_retries=0",
    ]
    with running_server(args, without_tensorflow_text(tmp_path)) as server:
        shutil.copytree(examples / TOKENIZER, tmp_path / TOKENIZER)
        config.write_text(
            model_config(
                [
                    ("vocab", tmp_path / "vocab", "lookup"),
                    (TOKENIZER, tmp_path / TOKENIZER, "tensorflow"),
                ]
            )
        )
        message = missing_op_message(tmp_path / TOKENIZER / "1")

        def rest_status() -> dict | None:
            answer = httpx.get(f"{server.rest}/v1/models/{TOKENIZER}", timeout=10)
            if answer.status_code != 200:
                return None
            [entry] = answer.json()["model_version_status"]
            return entry if entry["state"] == "END" else None

        entry = wait_until(rest_status, 120, "the tokenizer's version ended")
        assert entry["status"] == {"error_code": "FAILED_PRECONDITION", "error_message": message}
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = TOKENIZER
        with grpc_stubs(server) as stubs:
            answer = stubs.models.GetModelStatus(request, timeout=RPC_TIMEOUT)
        [status] = answer.model_version_status
        assert (status.state, status.status.error_code, status.status.error_message) == (
            get_model_status_pb2.ModelVersionStatus.END,
            FAILED_PRECONDITION,
            message,
        )
        # The server goes on serving what it can.
        answer = httpx.post(
            f"{server.rest}/v1/models/vocab:predict", json={"instances": ["servo"]}, timeout=30
        )
        assert answer.json() == {"predictions": [0]}
