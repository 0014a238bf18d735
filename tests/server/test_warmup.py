"""Model warm-up: TFS's file, TFS's limits, replayed before the version is AVAILABLE."""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2 as tfs_prediction_log_pb2

from servo.apis.grpc.handlers import replay
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.platforms.router import ModelLoader
from servo.server.metrics import ServerMetrics
from servo.server.warmup import WarmupHook

ID = ServableId("m", 1)

COUNTING_MODEL = """
import numpy as np

CALLS = []

class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
    }}

    def predict(self, inputs, signature_name):
        CALLS.append(inputs["x"].tolist())
        return {"y": inputs["x"] * 2}
"""


def predict_log(value: float, model: str = "m") -> bytes:
    """A PredictionLog made with TFS's own classes (so the file is what TFS users write)."""
    log = tfs_prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    return log.SerializeToString()


def write_warmup(version: Path, records: list[bytes]) -> Path:
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


class Recording:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, servable, id, log) -> None:
        self.calls.append(log.WhichOneof("log_type"))


def test_records_replay_in_order_the_given_number_of_times(tmp_path: Path) -> None:
    write_warmup(tmp_path, [predict_log(1.0), predict_log(2.0)])
    recording = Recording()
    metrics = ServerMetrics()
    WarmupHook(recording, iterations=3, metrics=metrics)(ID, str(tmp_path), object())
    assert recording.calls == ["predict_log"] * 6
    assert metrics.model_warmup_latency.count(str(tmp_path), "OK") == 1


def test_recorded_requests_run_before_the_version_is_loaded(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text(COUNTING_MODEL)
    write_warmup(version, [predict_log(1.0), predict_log(5.0)])
    loader = ModelLoader(ID, str(version), "python", after_load=(WarmupHook(replay, iterations=2),))
    loader.load()
    calls = type(loader.servable.model).predict.__globals__["CALLS"]
    assert calls == [[1.0], [1.0], [5.0], [5.0]]
    loader.unload()


def test_a_failing_record_fails_the_load(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text(COUNTING_MODEL)
    log = tfs_prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "m"
    log.predict_log.request.inputs["z"].CopyFrom(tf.make_tensor_proto([1.0]))
    write_warmup(version, [log.SerializeToString()])
    loader = ModelLoader(ID, str(version), "python", after_load=(WarmupHook(replay),))
    with pytest.raises(ServoError) as err:
        loader.load()
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "Warmup record 0" in err.value.message and "input size does not match" in (
        err.value.message
    )
    assert loader.servable is None


def test_too_many_records(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict_log(1.0)] * 1001)
    recording = Recording()
    with pytest.raises(ServoError) as err:
        WarmupHook(recording)(ID, str(tmp_path), object())
    assert err.value.message == f"Number of warmup records exceeds the maximum (1000) at {path}"
    assert recording.calls == []


def test_corrupt_file_fails_before_any_replay(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict_log(1.0), predict_log(2.0)])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    recording = Recording()
    with pytest.raises(ServoError) as err:
        WarmupHook(recording)(ID, str(tmp_path), object())
    assert err.value.code == Code.DATA_LOSS
    assert "Please verify your warmup data is in TFRecord format." in err.value.message
    assert recording.calls == []


def test_missing_file_disabled_hook_and_unsupported_types(tmp_path: Path) -> None:
    recording = Recording()
    WarmupHook(recording)(ID, str(tmp_path), object())  # no file: no warm-up
    write_warmup(tmp_path, [predict_log(1.0)])
    WarmupHook(recording, enabled=False)(ID, str(tmp_path), object())
    assert recording.calls == []
    log = tfs_prediction_log_pb2.PredictionLog()
    log.session_run_log.SetInParent()
    write_warmup(tmp_path, [log.SerializeToString()])
    with pytest.raises(ServoError) as err:
        WarmupHook(recording)(ID, str(tmp_path), object())
    assert err.value.code == Code.UNIMPLEMENTED
    assert "Unsupported log_type for warmup: session_run_log" in err.value.message
