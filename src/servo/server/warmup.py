"""Model warm-up: TFS's `assets.extra/tf_serving_warmup_requests`, replayed while a version
loads, before it is AVAILABLE, so that its first real requests do not pay for lazy
initialization (graph tracing, kernel selection, memory pools).

This module owns the warm-up file's rules: where it is, how many records it may hold, which
log types may be replayed, what counts as an error and with which message, how often each
record runs, and the warm-up latency metric. Running one record's request on a servable is
not its business: the data plane supplies that as `replay` (see `WarmupHook`).

The rules, from TFS's `servables/tensorflow/saved_model_warmup_util.cc` and
`saved_model_warmup.cc`:

- The file is `<version dir>/assets.extra/tf_serving_warmup_requests`, an uncompressed
  TFRecord file of `PredictionLog` records. No file means no warm-up; an empty file is a
  warm-up of zero records.
- At most 1000 records: "Number of warmup records exceeds the maximum (1000) at <file>",
  INVALID_ARGUMENT.
- A damaged file is DATA_LOSS, its reader's message followed by ". Please verify your warmup
  data is in TFRecord format."; a record that is not a PredictionLog is INVALID_ARGUMENT
  "Failed to parse warmup record: ... from <file>".
- predict_log, classify_log, regress_log and multi_inference_log are replayed;
  session_run_log and predict_streamed_log are UNIMPLEMENTED "Unsupported log_type for
  warmup: <its field number>"; a record with no log type is read and skipped, as TFS's
  SavedModel runtime does.
- Each record runs `--num_request_iterations_for_warmup` times, in file order; TFS uses the
  flag only when it is > 0, so anything less means once.
- The first failing request fails the load with its own code.
- Wall time goes to `/tensorflow/serving/model_warmup_latency{model_path, status}` in
  microseconds, model_path being the version directory. TFS only logs the number of records
  read; servo also counts them in `servo_model_warmup_records_read{model_path}` (a file
  that reads whole, checked, before anything is replayed).

Where servo differs, deliberately: it reads and checks the whole file (framing, count, parse,
log types) before replaying anything, where TFS replays each record as it reads it and so
runs up to 1000 records, or even the 1001st, of a file it then rejects. A load that fails
should not have half-run. Messages add the record's index where TFS dumps the record's bytes
or says nothing. The metric's status label is the code's name ("OK", "DATA_LOSS", ...) rather
than TFS's whole status text, which would make a time series per message; and servo records
it for every outcome once the file exists, where TFS skips it on a parse or request error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from google.protobuf.message import DecodeError

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError, Status
from servo.metrics import ServerMetrics
from servo.platforms.servable import ModelServable
from servo.protos import prediction_log_pb2
from servo.util.tfrecord import read_records

log = logging.getLogger(__name__)

PredictionLog = prediction_log_pb2.PredictionLog

ASSETS_EXTRA = "assets.extra"  # TensorFlow's kSavedModelAssetsExtraDirectory
REQUESTS_FILE = "tf_serving_warmup_requests"  # TFS's WarmupConsts::kRequestsFileName
MAX_RECORDS = 1000  # TFS's WarmupConsts::kMaxNumRecords

REPLAYED_LOG_TYPES = frozenset(
    {"predict_log", "classify_log", "regress_log", "multi_inference_log"}
)

DATA_LOSS_HINT = ". Please verify your warmup data is in TFRecord format."

# Runs one PredictionLog's request on the servable; raises (ServoError) when it fails.
Replay = Callable[[ModelServable, PredictionLog], None]


def warmup_file(version_dir: str) -> str:
    """Where a version's warm-up requests are."""
    return os.path.join(version_dir, ASSETS_EXTRA, REQUESTS_FILE)


def read_warmup_file(path: str) -> list[PredictionLog]:
    """The records of the warm-up file at `path`, all checked: framing and CRCs, count, parse
    and log types. The first fault raises ServoError with TFS's code and message."""
    logs: list[PredictionLog] = []
    try:
        # One more than the limit, to know whether there are too many without reading on.
        for index, record in enumerate(read_records(path, max_records=MAX_RECORDS + 1)):
            if index == MAX_RECORDS:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
            logs.append(_parse(record, index, path))
    except ServoError as exc:
        if exc.code == Code.DATA_LOSS:
            raise ServoError(Code.DATA_LOSS, exc.message + DATA_LOSS_HINT) from None
        raise
    return logs


def _parse(record: bytes, index: int, path: str) -> PredictionLog:
    entry = PredictionLog()
    try:
        entry.ParseFromString(record)
    except DecodeError:
        # TFS puts the record's raw bytes where servo says which record it was.
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Failed to parse warmup record: record {index} ({len(record)} bytes) from {path}",
        ) from None
    kind = entry.WhichOneof("log_type")
    if kind is not None and kind not in REPLAYED_LOG_TYPES:
        # TFS prints the oneof case, which is the field's number (session_run_log is 5).
        number = PredictionLog.DESCRIPTOR.fields_by_name[kind].number
        raise ServoError(
            Code.UNIMPLEMENTED,
            f"Unsupported log_type for warmup: {number} ({kind}, record {index} of {path})",
        )
    return entry


class WarmupHook:
    """The warm-up of each version being loaded: a `servo.platforms.router.LoadHook`.

    `replay(servable, log)` runs one PredictionLog's request (predict, classify, regress or
    multi_inference) on the servable and raises ServoError when it fails; the gRPC data plane
    supplies it. `enabled=False` (TFS's --enable_model_warmup=false) turns warm-up off;
    `iterations` is --num_request_iterations_for_warmup; `metrics` receives the warm-up
    latency and the records read.

    Thread-safety: the manager may load several versions at once, each calling the hook from
    its own thread; the hook keeps no state between calls, and `replay` must allow concurrent
    calls on different servables.
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
        self.iterations = max(1, iterations)  # TFS uses the flag only when it is > 0
        self.metrics = metrics

    def __call__(self, id: ServableId, path: str, servable: ModelServable) -> None:
        if not self.enabled:
            return
        file = warmup_file(path)
        if not os.path.exists(file):
            log.info("No warmup data file found at %s", file)
            return
        log.info(
            "Starting to read warmup data for model %s at %s (%d iterations per record)",
            id,
            file,
            self.iterations,
        )
        started = time.perf_counter()
        status = Code.OK
        try:
            logs = read_warmup_file(file)
            if self.metrics is not None:
                self.metrics.model_warmup_records_read.inc(path, amount=len(logs))
            replayed = self._replay_all(servable, logs, file)
        except ServoError as exc:
            status = exc.code
            raise
        except BaseException:  # a bug or an interrupt; still a warm-up that did not finish
            status = Code.UNKNOWN
            raise
        finally:
            micros = (time.perf_counter() - started) * 1e6
            if self.metrics is not None:
                self.metrics.model_warmup_latency.observe(micros, path, status.name)
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Requests replayed: %d. Elapsed time (microseconds): %d.",
            file,
            len(logs),
            replayed,
            micros,
        )

    def _replay_all(self, servable: ModelServable, logs: list[PredictionLog], file: str) -> int:
        """Runs each record `iterations` times in order; returns how many requests ran."""
        replayed = 0
        for index, entry in enumerate(logs):
            if entry.WhichOneof("log_type") is None:
                continue  # nothing to run: TFS's SavedModel runtime skips such a record too
            for _ in range(self.iterations):
                try:
                    self.replay(servable, entry)
                except Exception as exc:
                    status = Status.from_exception(exc)
                    raise ServoError(
                        status.code,
                        f"Warmup record {index} of {file} failed: {status.message}",
                    ) from exc
                replayed += 1
        return replayed
