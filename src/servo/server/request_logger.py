"""Request logging: a model's `logging_config` makes the server write a sample of its requests,
with their answers, as `PredictionLog` records to TFRecord files.

    logging_config {
      log_collector_config { type: "tfrecord" filename_prefix: "/var/log/servo/m" }
      sampling_config { sampling_rate: 0.01 }
    }

This module owns which requests are sampled, what a log record holds, which file it goes to,
and when files are opened and closed. The data planes (REST, gRPC) ask `should_log` on every
request and, when it says yes, hand the request and its answer to `log_predict` & co.

What is TFS's (`core/server_request_logger.cc`, `core/request_logger.{h,cc}`,
`core/log_collector.h`, `apis/logging.proto`, `config/logging_config.proto`):

- One logger per distinct LoggingConfig: models with equal configs share it, and a config
  that is unchanged across `update` keeps its logger (and so its file); loggers whose config is
  gone are closed.
- Sampling is a uniform draw per request, logged when `draw < sampling_rate`. A
  `per_task_sampling_configs` rule replaces the rate when it matches the task; servo has no
  datacenter or task index, so only rules with an empty `dc` and no `task_index` match.
- A record is a PredictionLog whose `log_metadata` holds the answer's model spec (name,
  version, signature), the logger's sampling config (the effective rate), and the
  `saved_model_tags` the server loads SavedModels with, when there are any.

What is servo's, because open-source TFS has none: TFS's log collectors are plug-ins looked
up by `log_collector_config.type`, and its open-source server registers none (a
logging_config there fails with "No request-logger-creator provided."). servo has one
collector, whatever the `type` says: it writes TFRecord files (what TensorFlow's readers and
TFS's warm-up read) named `<filename_prefix>.<n>.tfrecord`, where `n` is the first number from
0 up whose file does not exist yet. The file is created exclusively, so neither a second
server with the same prefix nor a restart ever writes into an existing file; each logger
opens its own file, and a changed config opens a new one. Parent directories are created.
Each record is flushed to the operating system as it is written, so files can be read while
the server runs and a crash loses nothing that was logged. servo also stamps
`log_metadata.timestamp_secs`. A record that cannot be written (a full disk) is dropped and
logged, never failing the request it describes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from google.protobuf.message import Message

from servo.core.status import Code, ServoError
from servo.metrics import ServerMetrics
from servo.protos import (
    inference_pb2,
    logging_config_pb2,
    model_pb2,
    prediction_log_pb2,
)
from servo.util.tfrecord import RecordWriter

log = logging.getLogger(__name__)

LoggingConfig = logging_config_pb2.LoggingConfig
SamplingConfig = logging_config_pb2.SamplingConfig

FILE_SUFFIX = ".tfrecord"


def log_file_name(filename_prefix: str, n: int) -> str:
    """The name of the `n`th log file of a prefix."""
    return f"{filename_prefix}.{n}{FILE_SUFFIX}"


class _Logger:
    """One LoggingConfig's effective sampling and open file.

    Thread-safety: `write` may be called from any thread (the writer serializes records);
    `errors` is a best-effort count.
    """

    __slots__ = ("config", "errors", "rate", "sampling_config", "writer")

    def __init__(
        self, config: LoggingConfig, sampling: SamplingConfig, writer: RecordWriter
    ) -> None:
        self.config = config
        self.sampling_config = sampling
        self.rate = sampling.sampling_rate
        self.writer = writer
        self.errors = 0

    def write(self, record: bytes, model_name: str) -> Code:
        """Writes one record; the outcome's code (OK, or why the record was dropped)."""
        try:
            self.writer.write(record)
        except ServoError as exc:
            if exc.code == Code.FAILED_PRECONDITION:
                return exc.code  # closed by an update while this request was in flight: dropped
            self.errors += 1
            if self.errors == 1:  # once per file: a full disk would say it on every request
                log.error(
                    "Cannot write the request log of model %s to %s; its records are dropped "
                    "(further errors of this file are not logged): %s",
                    model_name,
                    self.writer.path,
                    exc,
                )
            return exc.code
        return Code.OK

    def close(self) -> None:
        try:
            self.writer.close()
        except ServoError as exc:
            log.error("Cannot close the request log %s: %s", self.writer.path, exc)


class ServerRequestLogger:
    """Per-model request logs, configured by `update` from each model's `logging_config`.

    `random` returns uniform draws in [0, 1) (a seeded `random.Random(...).random` in tests);
    `saved_model_tags` go into every record's metadata; `clock` gives `timestamp_secs`;
    `metrics` counts each sampled record by model and outcome (TFS's request_log_count).

    Thread-safety: every method may be called from any thread at once. `should_log` and the
    `log_*` methods take no lock of the logger's own (a record is written whole under its
    file's lock); `update` and `close` are serialized with each other. A record being logged
    while `update` removes its model's logger may be dropped.
    """

    def __init__(
        self,
        random: Callable[[], float] = _random.random,
        *,
        saved_model_tags: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._random = random
        self._metrics = metrics
        self._tags = tuple(saved_model_tags)
        self._clock = clock
        # Replaced whole by update (never changed in place), so readers need no lock.
        self._by_model: dict[str, _Logger] = {}
        self._by_config: dict[bytes, _Logger] = {}
        self._update_lock = threading.Lock()
        self._next_file: dict[str, int] = {}  # per filename_prefix: the next n to try

    # -- configuration ---------------------------------------------------------------------

    def update(self, configs: Mapping[str, LoggingConfig]) -> None:
        """Logs the models of `configs` (model name -> its logging_config) from now on.

        Models not in `configs` stop logging; files no config uses any more are closed. An
        invalid config, or a file that cannot be created, raises ServoError and changes
        nothing.
        """
        sampling = {name: effective_sampling(name, config) for name, config in configs.items()}
        with self._update_lock:
            by_model: dict[str, _Logger] = {}
            by_config: dict[bytes, _Logger] = {}
            opened: list[_Logger] = []
            try:
                for name, config in configs.items():
                    key = config.SerializeToString(deterministic=True)
                    logger = by_config.get(key)
                    if logger is None:
                        logger = self._by_config.get(key)
                    if logger is None:
                        logger = _Logger(config, sampling[name], self._open(config))
                        opened.append(logger)
                        log.info(
                            "Logging %g of the requests to model %s in %s",
                            logger.rate,
                            name,
                            logger.writer.path,
                        )
                    by_config[key] = logger
                    by_model[name] = logger
            except BaseException:
                for logger in opened:  # nothing changes: not even an empty file stays behind
                    logger.close()
                    with contextlib.suppress(OSError):
                        os.remove(logger.writer.path)
                raise
            old = self._by_config
            self._by_model = by_model
            self._by_config = by_config
            for key, logger in old.items():
                if by_config.get(key) is not logger:
                    logger.close()

    def _open(self, config: LoggingConfig) -> RecordWriter:
        prefix = config.log_collector_config.filename_prefix
        n = self._next_file.get(prefix, 0)
        while True:
            path = log_file_name(prefix, n)
            try:
                writer = RecordWriter(path, exclusive=True, autoflush=True)
            except ServoError as exc:
                if exc.code != Code.ALREADY_EXISTS or not os.path.lexists(path):
                    raise
                n += 1
                continue
            self._next_file[prefix] = n + 1
            return writer

    def files(self) -> dict[str, str]:
        """The file each logging model writes to, by model name."""
        return {name: logger.writer.path for name, logger in self._by_model.items()}

    def close(self) -> None:
        """Stops all logging and closes every file (`update` may start again)."""
        with self._update_lock:
            loggers = list(self._by_config.values())
            self._by_model = {}
            self._by_config = {}
            for logger in loggers:
                logger.close()

    # -- per request ---------------------------------------------------------------------------

    def should_log(self, model_name: str) -> bool:
        """Whether to log this request to `model_name`: a fresh draw against its rate."""
        logger = self._by_model.get(model_name)
        if logger is None:
            return False
        rate = logger.rate
        return rate > 0.0 and self._random() < rate

    def log_predict(self, model_name: str, request: Message, response: Message) -> None:
        """A PredictRequest and its PredictResponse."""
        self._log(model_name, "predict_log", request, response, _answer_spec(request, response))

    def log_classify(self, model_name: str, request: Message, response: Message) -> None:
        """A ClassificationRequest and its ClassificationResponse."""
        self._log(model_name, "classify_log", request, response, _answer_spec(request, response))

    def log_regress(self, model_name: str, request: Message, response: Message) -> None:
        """A RegressionRequest and its RegressionResponse."""
        self._log(model_name, "regress_log", request, response, _answer_spec(request, response))

    def log_multi_inference(self, model_name: str, request: Message, response: Message) -> None:
        """A MultiInferenceRequest and its MultiInferenceResponse."""
        spec = _multi_inference_spec(
            cast(inference_pb2.MultiInferenceRequest, request),
            cast(inference_pb2.MultiInferenceResponse, response),
        )
        self._log(model_name, "multi_inference_log", request, response, spec)

    def _log(
        self,
        model_name: str,
        kind: str,
        request: Message,
        response: Message,
        spec: model_pb2.ModelSpec,
    ) -> None:
        logger = self._by_model.get(model_name)
        if logger is None:
            return  # the model stopped logging since should_log said yes
        record = prediction_log_pb2.PredictionLog()
        metadata = record.log_metadata
        metadata.model_spec.CopyFrom(spec)
        if not metadata.model_spec.name:
            metadata.model_spec.name = model_name
        metadata.sampling_config.CopyFrom(logger.sampling_config)
        metadata.saved_model_tags.extend(self._tags)
        metadata.timestamp_secs = int(self._clock())
        part = getattr(record, kind)
        part.request.CopyFrom(request)
        part.response.CopyFrom(response)
        code = logger.write(record.SerializeToString(), model_name)
        if self._metrics is not None:
            self._metrics.request_log_count.inc(model_name, code.name)


def effective_sampling(model_name: str, config: LoggingConfig) -> SamplingConfig:
    """The sampling config a logger of `config` uses, checked: INVALID_ARGUMENT when a rate is
    outside [0, 1] or the file name prefix is empty."""
    where = f"logging_config of model {model_name}"
    if not config.log_collector_config.filename_prefix:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"{where}: log_collector_config.filename_prefix must not be empty (servo writes "
            f"request logs to <filename_prefix>.<n>{FILE_SUFFIX})",
        )
    sampling = SamplingConfig()
    sampling.CopyFrom(config.sampling_config)
    _check_rate(where, "sampling_config.sampling_rate", sampling.sampling_rate)
    for i, rule in enumerate(sampling.per_task_sampling_configs):
        _check_rate(where, f"per_task_sampling_configs[{i}].sampling_rate", rule.sampling_rate)
    for rule in sampling.per_task_sampling_configs:
        # TFS's first matching rule wins; with no datacenter and no task index of its own,
        # servo matches only the rules that match every task.
        if not rule.dc and not rule.HasField("task_index"):
            sampling.sampling_rate = rule.sampling_rate
            break
    return sampling


def _check_rate(where: str, field: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:  # also false for NaN
        raise ServoError(Code.INVALID_ARGUMENT, f"{where}: {field} must be in [0, 1]; got {rate}")


def _answer_spec(request: Message, response: Message) -> model_pb2.ModelSpec:
    """The model spec the answer carries (name, version, signature), else the request's."""
    if response.HasField("model_spec"):
        return response.model_spec  # type: ignore[attr-defined,no-any-return]
    return request.model_spec  # type: ignore[attr-defined,no-any-return]


def _multi_inference_spec(
    request: inference_pb2.MultiInferenceRequest, response: inference_pb2.MultiInferenceResponse
) -> model_pb2.ModelSpec:
    """The answer's model and version; its signature only when every task used the same."""
    specs = [r.model_spec for r in response.results] or [t.model_spec for t in request.tasks]
    spec = model_pb2.ModelSpec()
    if specs:
        spec.CopyFrom(specs[0])
        if len({s.signature_name for s in specs}) > 1:
            spec.ClearField("signature_name")
    return spec
