"""Request logging: a model's `logging_config` makes the server write a sample of its requests,
with their answers, as PredictionLog records to TFRecord files.

    logging_config {
      log_collector_config { type: "file" filename_prefix: "/var/log/servo/m" }
      sampling_config { sampling_rate: 0.01 }
    }

TFS's log collectors are plug-ins chosen by `type`; servo has one, which writes TFRecord files
named `<filename_prefix>-<pid>-<n>.tfrecord` (`n` counts the files a process opened for that
prefix), so that several servers and config reloads never write into one file. Each record's
`log_metadata` carries the answer's model spec (name, version, signature) and the sampling
config, as TFS's do.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from servo.core.status import Code, ServoError
from servo.protos import logging_config_pb2, prediction_log_pb2
from servo.util.tfrecord import RecordWriter

log = logging.getLogger(__name__)

LoggingConfig = logging_config_pb2.LoggingConfig


class _ModelLog:
    __slots__ = ("config", "rate", "writer")

    def __init__(self, config: LoggingConfig, writer: RecordWriter) -> None:
        self.config = config
        self.rate = config.sampling_config.sampling_rate
        self.writer = writer


class ServerRequestLogger:
    """Per-model request logs, replaced whole by `update` when the config changes.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, random: Callable[[], float] = random.random) -> None:
        self._random = random
        self._logs: dict[str, _ModelLog] = {}
        self._lock = threading.Lock()
        self._counter: dict[str, int] = {}

    def update(self, configs: Mapping[str, LoggingConfig]) -> None:
        """Logs the models of `configs` from now on (closing the files of the others)."""
        for name, config in configs.items():
            _check(name, config)
        with self._lock:
            old = self._logs
            logs: dict[str, _ModelLog] = {}
            for name, config in configs.items():
                previous = old.get(name)
                if previous is not None and previous.config == config:
                    logs[name] = previous
                    continue
                prefix = config.log_collector_config.filename_prefix
                n = self._counter.get(prefix, 0)
                self._counter[prefix] = n + 1
                path = f"{prefix}-{os.getpid()}-{n}.tfrecord"
                logs[name] = _ModelLog(config, RecordWriter(path))
                log.info(
                    "Logging %g of the requests to model %s in %s",
                    config.sampling_config.sampling_rate,
                    name,
                    path,
                )
            self._logs = logs
        for name, entry in old.items():
            if logs.get(name) is not entry:
                entry.writer.close()

    def should_log(self, model_name: str) -> bool:
        entry = self._logs.get(model_name)
        return entry is not None and entry.rate > 0 and self._random() < entry.rate

    def log_predict(self, model_name: str, request: Any, response: Any) -> None:
        self._write(model_name, "predict_log", request, response)

    def log_classify(self, model_name: str, request: Any, response: Any) -> None:
        self._write(model_name, "classify_log", request, response)

    def log_regress(self, model_name: str, request: Any, response: Any) -> None:
        self._write(model_name, "regress_log", request, response)

    def log_multi_inference(self, model_name: str, request: Any, response: Any) -> None:
        self._write(model_name, "multi_inference_log", request, response)

    def _write(self, model_name: str, kind: str, request: Any, response: Any) -> None:
        entry = self._logs.get(model_name)
        if entry is None:
            return
        record = prediction_log_pb2.PredictionLog()
        metadata = record.log_metadata
        spec = response.model_spec if kind != "multi_inference_log" else None
        if spec is not None:
            metadata.model_spec.CopyFrom(spec)
        else:
            metadata.model_spec.name = model_name
        metadata.sampling_config.CopyFrom(entry.config.sampling_config)
        part = getattr(record, kind)
        part.request.CopyFrom(request)
        part.response.CopyFrom(response)
        try:
            entry.writer.write(record.SerializeToString())
        except (OSError, ValueError) as exc:  # a full disk must not fail the request
            log.error("Cannot write the request log of model %s: %s", model_name, exc)

    def close(self) -> None:
        with self._lock:
            logs, self._logs = self._logs, {}
        for entry in logs.values():
            entry.writer.close()


def _check(name: str, config: LoggingConfig) -> None:
    rate = config.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Model {name}: logging_config sampling_rate must be in [0, 1]; got {rate}",
        )
    if not config.log_collector_config.filename_prefix:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Model {name}: logging_config needs log_collector_config.filename_prefix",
        )
