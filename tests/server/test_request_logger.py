"""Request logging: sampled requests and answers as PredictionLog records in TFRecord files.

Files are read back the way a TFS user would: with TensorFlow's TFRecord reader, each record
parsed by the official `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`. Sampling is
checked with a seeded random source, so its counts are the same on every run.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2 as tfs_log_pb2

from servo.core.status import Code, ServoError
from servo.metrics import ServerMetrics
from servo.protos import (
    classification_pb2,
    inference_pb2,
    logging_config_pb2,
    predict_pb2,
    regression_pb2,
)
from servo.server.request_logger import ServerRequestLogger, log_file_name


def config(
    prefix: Path | str, rate: float, kind: str = "tfrecord"
) -> logging_config_pb2.LoggingConfig:
    c = logging_config_pb2.LoggingConfig()
    c.log_collector_config.type = kind
    c.log_collector_config.filename_prefix = str(prefix)
    c.sampling_config.sampling_rate = rate
    return c


def predict(i: int) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].float_val.append(float(i))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 3
    response.model_spec.signature_name = "serving_default"
    response.outputs["y"].dtype = 1
    response.outputs["y"].float_val.append(2.0 * i)
    return request, response


def value_of(log: tfs_log_pb2.PredictionLog) -> float:
    return log.predict_log.request.inputs["x"].float_val[0]


def read(path: str | Path) -> list[tfs_log_pb2.PredictionLog]:
    """A log file as TFS's users read it: TensorFlow's reader, TFS's classes."""
    return [
        tfs_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path))
    ]


def draws(*values: float) -> Iterator[float]:
    yield from values


# -- what is written ---------------------------------------------------------------------------


def test_rate_one_logs_every_request_readable_by_tensorflow_and_tfs(tmp_path: Path) -> None:
    logger = ServerRequestLogger(saved_model_tags=("serve", "gpu"))
    logger.update({"m": config(tmp_path / "logs" / "m", 1.0)})
    path = logger.files()["m"]
    assert path == log_file_name(str(tmp_path / "logs" / "m"), 0)
    assert path.endswith("/logs/m.0.tfrecord")
    before = int(time.time())
    sent = []
    for i in range(20):
        assert logger.should_log("m")
        request, response = predict(i)
        logger.log_predict("m", request, response)
        sent.append((request, response))
    assert len(read(path)) == 20  # readable while the logger is still open
    logger.close()
    logs = read(path)
    assert [value_of(log) for log in logs] == list(range(20))
    for log, (request, response) in zip(logs, sent, strict=True):
        assert log.predict_log.request.SerializeToString(deterministic=True) == (
            request.SerializeToString(deterministic=True)
        )
        assert log.predict_log.response.SerializeToString(deterministic=True) == (
            response.SerializeToString(deterministic=True)
        )
        metadata = log.log_metadata
        assert metadata.model_spec.name == "m"
        assert metadata.model_spec.version.value == 3
        assert metadata.model_spec.signature_name == "serving_default"
        assert metadata.sampling_config.sampling_rate == 1.0
        assert list(metadata.saved_model_tags) == ["serve", "gpu"]
        assert before <= metadata.timestamp_secs <= int(time.time())


def test_every_api_has_its_log_type(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    logger.log_predict("m", *predict(1))

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "m"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    classified = classification_pb2.ClassificationResponse()
    classified.model_spec.name = "m"
    classified.model_spec.version.value = 4
    classified.model_spec.signature_name = "classify_x"
    classified.result.classifications.add().classes.add(label="a", score=0.5)
    logger.log_classify("m", classify, classified)

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "m"
    regress.model_spec.signature_name = "regress_x"
    regressed = regression_pb2.RegressionResponse()  # an answer without its model spec
    regressed.result.regressions.add(value=0.25)
    logger.log_regress("m", regress, regressed)

    multi = inference_pb2.MultiInferenceRequest()
    for signature in ("classify_x", "regress_x"):
        multi.tasks.add(
            method_name="tensorflow/serving/classify"
        ).model_spec.signature_name = signature
    answered = inference_pb2.MultiInferenceResponse()
    for signature in ("classify_x", "regress_x"):
        result = answered.results.add()
        result.model_spec.name = "m"
        result.model_spec.version.value = 4
        result.model_spec.signature_name = signature
    logger.log_multi_inference("m", multi, answered)
    path = logger.files()["m"]
    logger.close()

    logs = read(path)
    assert [log.WhichOneof("log_type") for log in logs] == [
        "predict_log",
        "classify_log",
        "regress_log",
        "multi_inference_log",
    ]
    specs = [log.log_metadata.model_spec for log in logs]
    assert (specs[1].version.value, specs[1].signature_name) == (4, "classify_x")
    assert logs[1].classify_log.response.result.classifications[0].classes[0].label == "a"
    # No model spec in the answer: the request's, and the model's name.
    assert (specs[2].name, specs[2].signature_name) == ("m", "regress_x")
    assert not specs[2].HasField("version")
    assert logs[2].regress_log.response.result.regressions[0].value == 0.25
    # Several signatures in one multi-inference: model and version, no single signature.
    assert (specs[3].name, specs[3].version.value, specs[3].signature_name) == ("m", 4, "")
    assert len(logs[3].multi_inference_log.response.results) == 2


# -- sampling ----------------------------------------------------------------------------------


def test_rate_zero_logs_nothing(tmp_path: Path) -> None:
    logger = ServerRequestLogger(random=random.Random(1).random)
    logger.update({"m": config(tmp_path / "m", 0.0)})
    assert not any(logger.should_log("m") for _ in range(2000))
    path = logger.files()["m"]
    logger.close()
    assert read(path) == []


def test_rate_half_samples_about_half_of_2000_draws(tmp_path: Path) -> None:
    logger = ServerRequestLogger(random.Random(20240607).random)
    logger.update({"m": config(tmp_path / "m", 0.5)})
    sampled = sum(logger.should_log("m") for _ in range(2000))
    # A seeded source gives the same count on every run; the bound is the binomial's 4.5 sigma,
    # so any seed would pass it too.
    assert abs(sampled - 1000) < 4.5 * math.sqrt(2000 * 0.25)
    logger.close()


def test_one_draw_per_request_against_the_rate(tmp_path: Path) -> None:
    source = draws(0.0, 0.2499, 0.25, 0.9)
    logger = ServerRequestLogger(random=lambda: next(source))
    logger.update({"m": config(tmp_path / "m", 0.25)})
    assert [logger.should_log("m") for _ in range(4)] == [True, True, False, False]
    assert not logger.should_log("not logged")  # no config: no draw either
    logger.close()


def test_per_task_rules_that_match_every_task_set_the_rate(tmp_path: Path) -> None:
    c = config(tmp_path / "m", 0.0)
    c.sampling_config.per_task_sampling_configs.add(dc="aa", sampling_rate=0.5)  # not servo's dc
    c.sampling_config.per_task_sampling_configs.add(task_index=0, sampling_rate=0.5)  # nor task
    c.sampling_config.per_task_sampling_configs.add(sampling_rate=1.0)  # every task: this one
    c.sampling_config.per_task_sampling_configs.add(sampling_rate=0.2)  # only the first counts
    logger = ServerRequestLogger()
    logger.update({"m": c})
    assert all(logger.should_log("m") for _ in range(100))
    logger.log_predict("m", *predict(1))
    path = logger.files()["m"]
    logger.close()
    [log] = read(path)
    assert log.log_metadata.sampling_config.sampling_rate == 1.0  # the effective rate
    assert len(log.log_metadata.sampling_config.per_task_sampling_configs) == 4


# -- update ------------------------------------------------------------------------------------


def test_update_keeps_closes_and_reopens_files(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    first = logger.files()["m"]
    logger.log_predict("m", *predict(1))

    logger.update({"m": config(tmp_path / "m", 1.0)})  # unchanged: same file, kept open
    assert logger.files()["m"] == first
    logger.log_predict("m", *predict(2))

    logger.update({})  # model m no longer logs; its file is closed
    assert not logger.should_log("m") and logger.files() == {}
    logger.log_predict("m", *predict(99))  # dropped
    assert [value_of(log) for log in read(first)] == [1, 2]

    logger.update({"m": config(tmp_path / "m", 1.0)})  # logging again: a new file
    second = logger.files()["m"]
    assert second == log_file_name(str(tmp_path / "m"), 1)
    logger.log_predict("m", *predict(3))

    logger.update({"m": config(tmp_path / "m", 0.5)})  # a changed config: another new file
    third = logger.files()["m"]
    assert third == log_file_name(str(tmp_path / "m"), 2)
    logger.log_predict("m", *predict(4))
    logger.close()
    assert [[value_of(log) for log in read(p)] for p in (first, second, third)] == [
        [1, 2],
        [3],
        [4],
    ]
    assert read(third)[0].log_metadata.sampling_config.sampling_rate == 0.5


def test_models_with_equal_configs_share_one_file(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"a": config(tmp_path / "shared", 1.0), "b": config(tmp_path / "shared", 1.0)})
    assert logger.files()["a"] == logger.files()["b"]
    logger.log_predict("a", *predict(1))
    logger.log_predict("b", *predict(2))
    logger.update({"b": config(tmp_path / "shared", 1.0)})  # a leaves; b keeps the file
    logger.log_predict("b", *predict(3))
    path = logger.files()["b"]
    logger.close()
    assert [value_of(log) for log in read(path)] == [1, 2, 3]


def test_existing_files_are_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "m.0.tfrecord").write_bytes(b"an earlier run's log")
    first = ServerRequestLogger()
    first.update({"m": config(tmp_path / "m", 1.0)})
    second = ServerRequestLogger()  # another server with the same prefix
    second.update({"m": config(tmp_path / "m", 1.0)})
    assert first.files()["m"] == str(tmp_path / "m.1.tfrecord")
    assert second.files()["m"] == str(tmp_path / "m.2.tfrecord")
    first.log_predict("m", *predict(1))
    second.log_predict("m", *predict(2))
    first.close()
    second.close()
    assert (tmp_path / "m.0.tfrecord").read_bytes() == b"an earlier run's log"
    assert [value_of(log) for log in read(tmp_path / "m.1.tfrecord")] == [1]
    assert [value_of(log) for log in read(tmp_path / "m.2.tfrecord")] == [2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c.sampling_config, "sampling_rate", 1.5), "sampling_rate must be in"),
        (lambda c: setattr(c.sampling_config, "sampling_rate", -0.1), "got -0.1"),
        (lambda c: setattr(c.sampling_config, "sampling_rate", math.nan), "got nan"),
        (
            lambda c: c.sampling_config.per_task_sampling_configs.add(sampling_rate=2),
            "per_task_sampling_configs[0].sampling_rate must be in [0, 1]; got 2",
        ),
        (
            lambda c: c.log_collector_config.ClearField("filename_prefix"),
            "log_collector_config.filename_prefix must not be empty",
        ),
    ],
)
def test_an_invalid_config_is_rejected_and_changes_nothing(
    tmp_path: Path, change, message: str
) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    bad = config(tmp_path / "bad", 0.5)
    change(bad)
    with pytest.raises(ServoError) as err:
        logger.update({"m": config(tmp_path / "m", 1.0), "bad": bad})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "logging_config of model bad" in err.value.message and message in err.value.message
    assert list(logger.files()) == ["m"]  # the old config still logs
    logger.log_predict("m", *predict(1))
    path = logger.files()["m"]
    logger.close()
    assert len(read(path)) == 1
    assert not list(tmp_path.glob("bad*"))


def test_a_file_that_cannot_be_created_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "not_a_dir").write_text("")
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    with pytest.raises(ServoError) as err:
        logger.update(
            {
                "m": config(tmp_path / "m", 0.5),  # opened first, then taken back
                "z": config(tmp_path / "not_a_dir" / "z", 1.0),
            }
        )
    assert err.value.code == Code.FAILED_PRECONDITION and "not_a_dir" in err.value.message
    assert logger.files() == {"m": str(tmp_path / "m.0.tfrecord")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.0.tfrecord", "not_a_dir"]
    logger.close()


def test_close_stops_everything_and_update_can_start_again(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    logger.close()
    assert not logger.should_log("m")
    logger.log_predict("m", *predict(1))  # dropped, no error
    logger.close()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    logger.log_predict("m", *predict(2))
    logger.close()
    assert [len(read(p)) for p in sorted(tmp_path.glob("m.*.tfrecord"))] == [0, 1]


def test_a_failing_write_never_fails_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    [inner] = logger._by_model.values()

    def full_disk(record: bytes) -> None:
        raise ServoError(Code.RESOURCE_EXHAUSTED, "Cannot write: No space left on device")

    inner.writer.write = full_disk  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="servo.server.request_logger"):
        for i in range(5):
            logger.log_predict("m", *predict(i))
    assert caplog.text.count("No space left on device") == 1  # said once, not per request
    assert inner.errors == 5
    logger.close()


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_logging_from_8_threads_loses_nothing(tmp_path: Path) -> None:
    logger = ServerRequestLogger()
    logger.update({"m": config(tmp_path / "m", 1.0)})
    start = threading.Barrier(8)

    def work(t: int) -> None:
        start.wait()
        for i in range(250):
            if logger.should_log("m"):
                logger.log_predict("m", *predict(t * 1000 + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    path = logger.files()["m"]
    logger.close()
    values = [int(value_of(log)) for log in read(path)]
    assert sorted(values) == [t * 1000 + i for t in range(8) for i in range(250)]
    for t in range(8):  # each thread's records in its order
        assert [v for v in values if v // 1000 == t] == [t * 1000 + i for i in range(250)]


# -- TFS's request_log_count -------------------------------------------------------------------


def test_each_sampled_record_is_counted_by_model_and_write_outcome(tmp_path: Path) -> None:
    """TFS counts a sampled request once its log is collected, by model and the status of the
    collection; an unsampled request is not counted."""
    metrics = ServerMetrics()
    logger = ServerRequestLogger(draws(0.1, 0.9, 0.2).__next__, metrics=metrics)
    logger.update({"m": config(tmp_path / "m", 0.5)})
    for i in range(3):
        if logger.should_log("m"):
            logger.log_predict("m", *predict(i))
    assert metrics.request_log_count.value("m", "OK") == 2
    [inner] = logger._by_model.values()

    def full_disk(record: bytes) -> None:
        raise ServoError(Code.RESOURCE_EXHAUSTED, "Cannot write: No space left on device")

    inner.writer.write = full_disk  # type: ignore[method-assign]
    logger.log_predict("m", *predict(9))
    assert metrics.request_log_count.value("m", "RESOURCE_EXHAUSTED") == 1
    assert metrics.request_log_count.value("m", "OK") == 2
    logger.close()
    assert ':tensorflow:serving:request_log_count{model_name="m",status_code="OK"} 2' in (
        metrics.render().decode()
    )
