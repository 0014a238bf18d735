"""Warm-up and request logging through the server process."""

from __future__ import annotations

import glob
from pathlib import Path

import httpx
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tests.support.models import write_python_model
from tests.support.requests import classify_request, predict_request, regress_request, tfs
from tests.support.server import grpc_stubs, model_config, run_servo, running_server
from tests.support.testdata import TfsModels

pytestmark = pytest.mark.integration

COUNTING_MODEL = """
import os

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
    }}

    def load(self, path):
        self.calls = os.path.join(path, "calls.txt")

    def predict(self, inputs, signature_name):
        with open(self.calls, "a") as f:
            f.write(" ".join(str(v) for v in inputs["x"].tolist()) + "\\n")
        return {"y": inputs["x"] * 2}
"""


def logging_config(prefix: Path) -> str:
    """A model's logging_config field: every request logged to files at `prefix`."""
    return (
        f'logging_config {{ log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}'
        " sampling_config { sampling_rate: 1.0 } }"
    )


def warmup_record(value: float) -> bytes:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "m"
    log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    return log.SerializeToString()


def write_warmup(version_dir: Path, records: list[bytes]) -> Path:
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def test_warmup_requests_run_before_the_version_is_available(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", COUNTING_MODEL)
    write_warmup(base / "1", [warmup_record(1.0), warmup_record(2.0)])
    with running_server(
        ["--model_name=m", f"--model_base_path={base}", "--num_request_iterations_for_warmup=2"]
    ) as server:
        calls = (base / "1" / "calls.txt").read_text().split()
        assert calls == ["1.0", "1.0", "2.0", "2.0"]
        output = server.output
        assert output.index("Finished reading warmup data") < output.index("Successfully loaded")
        answer = httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [3.0]})
        assert answer.json() == {"predictions": [6.0]}
        assert (base / "1" / "calls.txt").read_text().split()[-1] == "3.0"


def test_warmup_can_be_turned_off(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", COUNTING_MODEL)
    write_warmup(base / "1", [warmup_record(1.0)])
    with running_server(
        ["--model_name=m", f"--model_base_path={base}", "--enable_model_warmup=false"]
    ):
        assert not (base / "1" / "calls.txt").exists()


def test_a_corrupt_warmup_file_fails_the_load(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", COUNTING_MODEL)
    path = write_warmup(base / "1", [warmup_record(1.0)])
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run_servo(
        "--model_name=m",
        f"--model_base_path={base}",
        "--max_num_load_retries=0",
        "--rest_api_port=0",
        "--port=0",
    )
    assert result.returncode == 1
    assert "Please verify your warmup data is in TFRecord format" in result.stderr
    assert not (base / "1" / "calls.txt").exists()


def test_every_request_is_logged_at_sampling_rate_one(tmp_path: Path) -> None:
    base = write_python_model(tmp_path / "m", COUNTING_MODEL)
    prefix = tmp_path / "logs" / "m"
    config = tmp_path / "models.config"
    config.write_text(model_config([("m", base, "python", logging_config(prefix))]))
    with running_server([f"--model_config_file={config}"]) as server:
        for value in (1.0, 2.0, 3.0):
            httpx.post(f"{server.rest}/v1/models/m:predict", json={"instances": [value]})
        with grpc_stubs(server) as stubs:
            stubs.predictions.Predict(tfs(predict_request("m", [4.0])), timeout=30)
        assert server.stop() == 0
    logs = []
    for path in sorted(glob.glob(f"{prefix}*")):
        for record in tf.data.TFRecordDataset(path):
            logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    values = [tf.make_ndarray(log.predict_log.request.inputs["x"]).tolist() for log in logs]
    assert values == [[1.0], [2.0], [3.0], [4.0]]
    assert logs[0].log_metadata.model_spec.version.value == 1
    assert logs[0].log_metadata.sampling_config.sampling_rate == 1.0
    assert tf.make_ndarray(logs[3].predict_log.response.outputs["y"]).tolist() == [8.0]


def test_classify_and_regress_calls_are_logged_too(tmp_path: Path, tfs_models: TfsModels) -> None:
    prefix = tmp_path / "logs" / "h"
    config = tmp_path / "models.config"
    base = tfs_models.path("saved_model_half_plus_two_cpu")
    config.write_text(model_config([("h", base, "tensorflow", logging_config(prefix))]))
    with running_server([f"--model_config_file={config}"]) as server:
        with grpc_stubs(server) as stubs:
            request = tfs(classify_request("h", "classify_x_to_y", 1.0))
            stubs.predictions.Classify(request, timeout=30)
            request = tfs(regress_request("h", "regress_x_to_y", 1.0))
            stubs.predictions.Regress(request, timeout=30)
        assert server.stop() == 0
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for path in sorted(glob.glob(f"{prefix}*"))
        for record in tf.data.TFRecordDataset(path)
    ]
    assert [log.WhichOneof("log_type") for log in logs] == ["classify_log", "regress_log"]
    assert logs[0].classify_log.response.result.classifications[0].classes[0].score == 2.5
    assert logs[1].regress_log.response.result.regressions[0].value == 2.5
