"""Request logging: sampled requests and answers as PredictionLog records in TFRecord files."""

from __future__ import annotations

import glob
import random
import threading
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2 as tfs_prediction_log_pb2

from servo.core.status import Code, ServoError
from servo.protos import logging_config_pb2, predict_pb2
from servo.server.request_logger import ServerRequestLogger


def config(prefix: Path, rate: float) -> logging_config_pb2.LoggingConfig:
    c = logging_config_pb2.LoggingConfig()
    c.log_collector_config.type = "file"
    c.log_collector_config.filename_prefix = str(prefix)
    c.sampling_config.sampling_rate = rate
    return c


def messages(i: int) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].float_val.append(float(i))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 3
    response.model_spec.signature_name = "serving_default"
    response.outputs["y"].float_val.append(2.0 * i)
    return request, response


def read_logs(prefix: Path) -> list[tfs_prediction_log_pb2.PredictionLog]:
    logs = []
    for path in sorted(glob.glob(f"{prefix}-*.tfrecord")):
        for record in tf.data.TFRecordDataset(path):
            logs.append(tfs_prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def test_rate_one_logs_every_request_readable_by_tensorflow(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    for i in range(5):
        assert logger.should_log("m")
        logger.log_predict("m", *messages(i))
    logger.close()
    logs = read_logs(tmp_path / "m")
    assert [log.predict_log.request.inputs["x"].float_val[0] for log in logs] == [0, 1, 2, 3, 4]
    first = logs[0]
    assert first.log_metadata.model_spec.version.value == 3
    assert first.log_metadata.model_spec.signature_name == "serving_default"
    assert first.log_metadata.sampling_config.sampling_rate == 1.0
    assert first.predict_log.response.outputs["y"].float_val[0] == 0.0


def test_sampling_rates(tmp_path: Path) -> None:
    source = random.Random(7)
    logger = ServerRequestLogger(random=source.random)
    logger.update({"m": config(tmp_path / "m", 0.5), "z": config(tmp_path / "z", 0.0)})
    sampled = sum(logger.should_log("m") for _ in range(2000))
    assert 900 < sampled < 1100  # a seeded source: the same count every run
    assert not any(logger.should_log("z") for _ in range(100))
    assert not logger.should_log("unknown")
    logger.close()


def test_update_stops_and_starts_logs(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    logger.log_predict("m", *messages(1))
    logger.update({})  # model m no longer logs; its file is closed
    assert not logger.should_log("m")
    logger.log_predict("m", *messages(2))
    logger.update({"m": config(tmp_path / "m", 1.0)})  # a new file
    logger.log_predict("m", *messages(3))
    logger.close()
    assert len(glob.glob(f"{tmp_path / 'm'}-*.tfrecord")) == 2
    assert [
        log.predict_log.request.inputs["x"].float_val[0] for log in read_logs(tmp_path / "m")
    ] == [1.0, 3.0]


def test_concurrent_logging_loses_nothing(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})

    def work(base: int) -> None:
        for i in range(200):
            logger.log_predict("m", *messages(base * 1000 + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.close()
    assert len(read_logs(tmp_path / "m")) == 1600


@pytest.mark.parametrize(
    ("rate", "prefix", "message"),
    [
        (1.5, "p", "sampling_rate must be in [0, 1]"),
        (-0.1, "p", "sampling_rate must be in [0, 1]"),
        (0.5, "", "needs log_collector_config.filename_prefix"),
    ],
)
def test_invalid_configs(tmp_path: Path, rate: float, prefix: str, message: str) -> None:
    c = config(tmp_path / prefix if prefix else Path(""), rate)
    if not prefix:
        c.log_collector_config.filename_prefix = ""
    with pytest.raises(ServoError) as err:
        ServerRequestLogger().update({"m": c})
    assert err.value.code == Code.INVALID_ARGUMENT and message in err.value.message
