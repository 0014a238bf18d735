"""Model warm-up: TFS's `assets.extra/tf_serving_warmup_requests`, replayed while a version
loads, before it is AVAILABLE, so that its first real requests do not pay for lazy
initialization.

The file is a TFRecord file of PredictionLog records (predict, classify, regress or
multi_inference logs), at most 1000. servo reads and checks the whole file before replaying
anything, so a corrupt file fails the load cleanly. Each record is replayed
`iterations` times, in order. A missing file means no warm-up. Works for every platform.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.platforms.servable import ModelServable
from servo.protos import prediction_log_pb2
from servo.server.metrics import ServerMetrics
from servo.util.tfrecord import read_records

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000
_SUPPORTED = ("predict_log", "classify_log", "regress_log", "multi_inference_log")

Replay = Callable[[ModelServable, ServableId, prediction_log_pb2.PredictionLog], None]


def read_warmup_file(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The records of a warm-up file, checked: framing, count and log types."""
    logs = []
    try:
        for index, record in enumerate(read_records(path, max_records=MAX_RECORDS + 1)):
            if index >= MAX_RECORDS:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception:  # protobuf's DecodeError, by any of its names
                raise ServoError(
                    Code.INVALID_ARGUMENT, f"Failed to parse warmup record {index} from {path}"
                ) from None
            kind = entry.WhichOneof("log_type")
            if kind not in _SUPPORTED:
                raise ServoError(
                    Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind} (record {index})"
                )
            logs.append(entry)
    except ServoError as exc:
        if exc.code == Code.DATA_LOSS:
            raise ServoError(
                Code.DATA_LOSS,
                f"{exc.message}. Please verify your warmup data is in TFRecord format.",
            ) from None
        raise
    return logs


class WarmupHook:
    """A load hook (see `servo.platforms.router.LoadHook`) that replays a version's warm-up
    requests through `replay` (servo.apis.grpc.handlers.replay in the server).

    Thread-safety: called from the manager's load threads; holds no state of its own.
    """

    def __init__(
        self,
        replay: Replay,
        *,
        enabled: bool = True,
        iterations: int = 1,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.replay = replay
        self.enabled = enabled
        self.iterations = max(1, iterations)
        self.metrics = metrics

    def __call__(self, id: ServableId, path: str, servable: ModelServable) -> None:
        if not self.enabled:
            return
        file = os.path.join(path, ASSETS_EXTRA, REQUESTS_FILE)
        if not os.path.exists(file):
            log.info("No warmup data file found at %s", file)
            return
        started = time.perf_counter()
        status = "OK"
        try:
            logs = read_warmup_file(file)
            for index, entry in enumerate(logs):
                for _ in range(self.iterations):
                    try:
                        self.replay(servable, id, entry)
                    except ServoError as exc:
                        raise ServoError(
                            exc.code, f"Warmup record {index} of {file} failed: {exc.message}"
                        ) from None
        except ServoError as exc:
            status = exc.code.name
            raise
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.model_warmup_latency.observe(elapsed * 1e6, path, status)
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d, "
            "replayed %d times each, in %.3f s.",
            file,
            len(logs),
            self.iterations,
            elapsed,
        )
