"""Model warm-up: TFS's file, limits, log types and messages; replayed before AVAILABLE.

Warm-up files are written the way TFS users write them: PredictionLog records built with the
official `tensorflow_serving.apis` classes, serialized, framed by TensorFlow's own
TFRecordWriter. The replay function is the test's: it records what the hook asks of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2 as tfs_log_pb2

from servo.apis import messages
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.metrics import ServerMetrics
from servo.platforms.router import ModelLoader
from servo.platforms.servable import ModelServable
from servo.protos import prediction_log_pb2
from servo.server.warmup import MAX_RECORDS, WarmupHook, read_warmup_file, warmup_file

ID = ServableId("m", 1)
SERVABLE: Any = object()  # the hook only hands it to replay

MODEL_PY = """
class Model:
    signatures = {"serving_default": {
        "inputs": {"x": {"dtype": "float32", "shape": [-1]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1]}},
    }}

    def __init__(self):
        self.seen = []  # the x of every predict call, in order

    def predict(self, inputs, signature_name):
        self.seen.append(inputs["x"].tolist())
        return {"y": inputs["x"] * 2}
"""


# -- records, as TFS users make them -------------------------------------------------------------


def predict(value: float) -> tfs_log_pb2.PredictionLog:
    log = tfs_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "m"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    return log


def classify(value: float) -> tfs_log_pb2.PredictionLog:
    log = tfs_log_pb2.PredictionLog()
    example = log.classify_log.request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(value)
    return log


def regress(value: float) -> tfs_log_pb2.PredictionLog:
    log = tfs_log_pb2.PredictionLog()
    example = log.regress_log.request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(value)
    return log


def multi_inference(value: float) -> tfs_log_pb2.PredictionLog:
    log = tfs_log_pb2.PredictionLog()
    request = log.multi_inference_log.request
    request.tasks.add().model_spec.name = "m"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(value)
    return log


def value_of(log: prediction_log_pb2.PredictionLog) -> float:
    """The number a record above carries, read back through servo's own classes."""
    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    if kind == "predict_log":
        return request.inputs["x"].float_val[0]
    return request.input.example_list.examples[0].features.feature["x"].float_list.value[0]


def write_warmup(version: Path, logs: list[Any]) -> Path:
    """The warm-up file of `version`, written by TensorFlow from `logs` (messages or bytes)."""
    path = Path(warmup_file(str(version)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log if isinstance(log, bytes) else log.SerializeToString())
    return path


class Recording:
    """A replay that records (servable, log type, value) and can fail on a chosen call."""

    def __init__(self, fail_at: int | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[Any, str, float]] = []
        self.fail_at = fail_at
        self.error = error or ServoError(Code.INVALID_ARGUMENT, "input size does not match")

    def __call__(self, servable: ModelServable, log: prediction_log_pb2.PredictionLog) -> None:
        assert isinstance(log, prediction_log_pb2.PredictionLog)  # servo's class, not TFS's
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise self.error
        self.calls.append((servable, log.WhichOneof("log_type"), value_of(log)))

    @property
    def kinds(self) -> list[tuple[str, float]]:
        return [(kind, value) for _, kind, value in self.calls]


def failure(hook: WarmupHook, version: Path) -> ServoError:
    with pytest.raises(ServoError) as err:
        hook(ID, str(version), SERVABLE)
    return err.value


# -- replay ------------------------------------------------------------------------------------


def test_every_record_replays_in_order_the_given_number_of_times(tmp_path: Path) -> None:
    write_warmup(tmp_path, [predict(1), classify(2), regress(3), multi_inference(4), predict(5)])
    recording = Recording()
    metrics = ServerMetrics()
    WarmupHook(recording, iterations=3, metrics=metrics)(ID, str(tmp_path), SERVABLE)
    # TFS runs a record all its iterations before it reads the next one.
    assert recording.kinds == [
        *[("predict_log", 1.0)] * 3,
        *[("classify_log", 2.0)] * 3,
        *[("regress_log", 3.0)] * 3,
        *[("multi_inference_log", 4.0)] * 3,
        *[("predict_log", 5.0)] * 3,
    ]
    assert all(servable is SERVABLE for servable, _, _ in recording.calls)
    assert metrics.model_warmup_latency.count(str(tmp_path), "OK") == 1


@pytest.mark.parametrize("iterations", [1, 0, -3])
def test_iterations_below_one_mean_once(tmp_path: Path, iterations: int) -> None:
    write_warmup(tmp_path, [predict(1), predict(2)])
    recording = Recording()
    WarmupHook(recording, iterations=iterations)(ID, str(tmp_path), SERVABLE)
    assert recording.kinds == [("predict_log", 1.0), ("predict_log", 2.0)]


def test_records_read_by_servos_classes_equal_tfs_records(tmp_path: Path) -> None:
    logs = [predict(1.5), classify(2.5), multi_inference(3.5)]
    path = write_warmup(tmp_path, logs)
    read = read_warmup_file(str(path))
    assert [r.SerializeToString(deterministic=True) for r in read] == [
        log.SerializeToString(deterministic=True) for log in logs
    ]


def test_a_record_with_no_log_type_is_skipped(tmp_path: Path) -> None:
    empty = tfs_log_pb2.PredictionLog()
    empty.log_metadata.model_spec.name = "m"
    write_warmup(tmp_path, [predict(1), empty, predict(2)])
    recording = Recording()
    WarmupHook(recording, iterations=2)(ID, str(tmp_path), SERVABLE)
    assert recording.kinds == [("predict_log", 1.0)] * 2 + [("predict_log", 2.0)] * 2


def test_exactly_the_maximum_is_fine(tmp_path: Path) -> None:
    write_warmup(tmp_path, [predict(float(i)) for i in range(MAX_RECORDS)])
    recording = Recording()
    WarmupHook(recording)(ID, str(tmp_path), SERVABLE)
    assert [value for _, value in recording.kinds] == [float(i) for i in range(MAX_RECORDS)]


def test_one_more_than_the_maximum_fails_before_any_replay(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict(1)] * (MAX_RECORDS + 1))
    recording = Recording()
    metrics = ServerMetrics()
    error = failure(WarmupHook(recording, metrics=metrics), tmp_path)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == f"Number of warmup records exceeds the maximum (1000) at {path}"
    assert recording.calls == []
    assert metrics.model_warmup_latency.count(str(tmp_path), "INVALID_ARGUMENT") == 1
    assert metrics.model_warmup_latency.count(str(tmp_path), "OK") == 0


def test_an_empty_file_is_a_warmup_of_nothing(tmp_path: Path) -> None:
    write_warmup(tmp_path, [])
    recording = Recording()
    metrics = ServerMetrics()
    WarmupHook(recording, metrics=metrics)(ID, str(tmp_path), SERVABLE)
    assert recording.calls == []
    assert metrics.model_warmup_latency.count(str(tmp_path), "OK") == 1


# -- no warm-up ----------------------------------------------------------------------------------


def test_a_missing_file_is_no_warmup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recording = Recording()
    metrics = ServerMetrics()
    hook = WarmupHook(recording, metrics=metrics)
    with caplog.at_level(logging.INFO, logger="servo.server.warmup"):
        hook(ID, str(tmp_path), SERVABLE)  # no assets.extra at all
        (tmp_path / "assets.extra").mkdir()
        hook(ID, str(tmp_path), SERVABLE)  # assets.extra without the file
    assert recording.calls == []
    assert metrics.model_warmup_latency.count(str(tmp_path), "OK") == 0
    assert f"No warmup data file found at {warmup_file(str(tmp_path))}" in caplog.text


def test_disabled_warmup_reads_nothing(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict(1)])
    path.write_bytes(path.read_bytes()[:-1])  # even a damaged file is not looked at
    recording = Recording()
    metrics = ServerMetrics()
    WarmupHook(recording, enabled=False, metrics=metrics)(ID, str(tmp_path), SERVABLE)
    assert recording.calls == []
    assert metrics.model_warmup_latency.count(str(tmp_path), "DATA_LOSS") == 0


# -- damaged files -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "fault"), [(-3, "corrupted"), (None, "truncated")])
def test_a_damaged_file_fails_before_any_replay(
    tmp_path: Path, where: int | None, fault: str
) -> None:
    path = write_warmup(tmp_path, [predict(1), predict(2), predict(3)])
    blob = bytearray(path.read_bytes())
    if where is None:
        del blob[-2:]
    else:
        blob[where] ^= 0xFF  # inside the last record's data CRC
    path.write_bytes(bytes(blob))
    recording = Recording()
    metrics = ServerMetrics()
    error = failure(WarmupHook(recording, metrics=metrics), tmp_path)
    assert error.code == Code.DATA_LOSS
    assert error.message.startswith(f"{fault} record at ")
    assert str(path) in error.message and "(record 2)" in error.message
    assert error.message.endswith(". Please verify your warmup data is in TFRecord format.")
    assert recording.calls == []
    assert metrics.model_warmup_latency.count(str(tmp_path), "DATA_LOSS") == 1


def test_a_record_that_is_not_a_prediction_log(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict(1), b"\xff\xff\xff\xff"])
    recording = Recording()
    error = failure(WarmupHook(recording), tmp_path)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("Failed to parse warmup record: record 1 ")
    assert error.message.endswith(f" from {path}")
    assert recording.calls == []


@pytest.mark.parametrize(("kind", "number"), [("session_run_log", 5), ("predict_streamed_log", 7)])
def test_unsupported_log_types_fail_before_any_replay(
    tmp_path: Path, kind: str, number: int
) -> None:
    unsupported = tfs_log_pb2.PredictionLog()
    getattr(unsupported, kind).SetInParent()
    path = write_warmup(tmp_path, [predict(1), unsupported])
    recording = Recording()
    error = failure(WarmupHook(recording), tmp_path)
    assert error.code == Code.UNIMPLEMENTED
    assert error.message.startswith(f"Unsupported log_type for warmup: {number} ")
    assert kind in error.message and f"record 1 of {path}" in error.message
    assert recording.calls == []


# -- failing requests --------------------------------------------------------------------------


def test_a_failing_request_fails_the_warmup_with_its_code(tmp_path: Path) -> None:
    path = write_warmup(tmp_path, [predict(1), predict(2), predict(3)])
    recording = Recording(fail_at=3)  # record 1's second iteration
    metrics = ServerMetrics()
    error = failure(WarmupHook(recording, iterations=2, metrics=metrics), tmp_path)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == f"Warmup record 1 of {path} failed: input size does not match"
    assert recording.kinds == [("predict_log", 1.0), ("predict_log", 1.0), ("predict_log", 2.0)]
    assert metrics.model_warmup_latency.count(str(tmp_path), "INVALID_ARGUMENT") == 1


def test_an_unexpected_exception_is_unknown(tmp_path: Path) -> None:
    write_warmup(tmp_path, [predict(1)])
    error = failure(WarmupHook(Recording(fail_at=0, error=ZeroDivisionError("boom"))), tmp_path)
    assert error.code == Code.UNKNOWN
    assert "Warmup record 0" in error.message and "ZeroDivisionError: boom" in error.message
    assert isinstance(error.__cause__, ZeroDivisionError)


# -- in a load -----------------------------------------------------------------------------------


def test_warmup_runs_inside_the_load_before_the_servable_is_published(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text(MODEL_PY)
    write_warmup(version, [predict(1), predict(5)])
    loader: ModelLoader
    seen: list[Any] = []

    def replay(servable: ModelServable, log: prediction_log_pb2.PredictionLog) -> None:
        assert loader.servable is None  # not yet published: the version is still loading
        seen.append((servable, value_of(log)))

    loader = ModelLoader(ID, str(version), "python", after_load=(WarmupHook(replay, iterations=2),))
    loader.load()
    assert [value for _, value in seen] == [1.0, 1.0, 5.0, 5.0]
    assert all(servable is loader.servable for servable, _ in seen)
    loader.unload()


def test_a_failed_warmup_fails_the_load(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text(MODEL_PY)
    write_warmup(version, [predict(1)])
    hook = WarmupHook(Recording(fail_at=0))
    loader = ModelLoader(ID, str(version), "python", after_load=(hook,))
    with pytest.raises(ServoError) as err:
        loader.load()
    assert err.value.code == Code.INVALID_ARGUMENT and "Warmup record 0" in err.value.message
    assert loader.servable is None


def python_version(tmp_path: Path, logs: list[Any]) -> Path:
    """A python-platform version directory with MODEL_PY and a warm-up file of `logs`."""
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.py").write_text(MODEL_PY)
    write_warmup(version, logs)
    return version


def test_the_data_planes_replay_runs_the_records_on_the_model_during_load(
    tmp_path: Path,
) -> None:
    # The server's own wiring: the data plane's replay, a real servable. When load()
    # returns, the model has already answered every recorded request, each twice, in order.
    version = python_version(tmp_path, [predict(1), predict(5), predict(-2)])
    metrics = ServerMetrics()
    hook = WarmupHook(messages.replay, iterations=2, metrics=metrics)
    loader = ModelLoader(ID, str(version), "python", after_load=(hook,))
    loader.load()
    servable: Any = loader.servable
    assert servable.model.seen == [[1.0], [1.0], [5.0], [5.0], [-2.0], [-2.0]]
    assert metrics.model_warmup_latency.count(str(version), "OK") == 1
    loader.unload()


def test_a_request_the_model_rejects_fails_the_load_in_its_words(tmp_path: Path) -> None:
    wrong = predict(1)
    wrong.predict_log.request.inputs["z"].CopyFrom(wrong.predict_log.request.inputs.pop("x"))
    version = python_version(tmp_path, [predict(1), wrong])
    metrics = ServerMetrics()
    hook = WarmupHook(messages.replay, metrics=metrics)
    loader = ModelLoader(ID, str(version), "python", after_load=(hook,))
    with pytest.raises(ServoError) as err:
        loader.load()
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message.startswith(f"Warmup record 1 of {warmup_file(str(version))} failed: ")
    assert loader.servable is None
    assert metrics.model_warmup_latency.count(str(version), "INVALID_ARGUMENT") == 1


def test_warmup_requests_are_held_to_the_servers_decoded_size_limits(tmp_path: Path) -> None:
    """The server's --max_decoded_bytes_* reach the replay: a record within the server's
    limits loads however they compare with the defaults, one over them fails the load."""
    from servo.decoded_size import DecodeLimits

    version = python_version(tmp_path, [predict(1)])
    for limits, fails in ((DecodeLimits(4, 4), False), (DecodeLimits(2, 2), True)):
        hook = WarmupHook(lambda s, log, lim=limits: messages.replay(s, log, False, lim))
        loader = ModelLoader(ID, str(version), "python", after_load=(hook,))
        if fails:
            with pytest.raises(ServoError) as err:
                loader.load()
            assert "--max_decoded_bytes_per_tensor" in err.value.message
        else:
            loader.load()
            loader.unload()


def test_records_read_are_counted_per_version_directory(tmp_path: Path) -> None:
    """servo's count of warm-up records read (TFS logs the number): every record of a file
    that reads whole, whatever the iterations; none of a file refused before any replay."""
    metrics = ServerMetrics()
    write_warmup(tmp_path / "1", [predict(1), classify(2), predict(3)])
    WarmupHook(Recording(), iterations=2, metrics=metrics)(ID, str(tmp_path / "1"), SERVABLE)
    assert metrics.model_warmup_records_read.value(str(tmp_path / "1")) == 3
    write_warmup(tmp_path / "2", [predict(1)] * (MAX_RECORDS + 1))
    failure(WarmupHook(Recording(), metrics=metrics), tmp_path / "2")
    assert metrics.model_warmup_records_read.value(str(tmp_path / "2")) == 0
    assert f'servo_model_warmup_records_read{{model_path="{tmp_path / "1"}"}} 3' in (
        metrics.render().decode()
    )
