"""Batching parameters: TFS's BatchingParameters, with its defaults and its validation.

Read from `--batching_parameters_file` (shared by every model) or, with
`--enable_per_model_batching_parameters`, from `batching_params.pbtxt` in each version
directory (a version without that file is not batched, as in TFS).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from servo.protos import batching_parameters_pb2
from servo.protos.text_format import InvalidProtobufFile, parse_file_text
from servo.util import gfile

PER_MODEL_FILE = "batching_params.pbtxt"
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10


class BatchingConfigError(ValueError):
    """Batching parameters servo cannot use; the message says why."""


class InvalidBatchingFile(BatchingConfigError, InvalidProtobufFile):
    """A batching parameters file whose text protobuf's parser refused (its lines are
    logged): the message is TFS's, `Invalid protobuf file: '<path>'`."""


@dataclass(frozen=True)
class QueueOptions:
    """One queue's options (TFS's QueueOptions plus BatchingSessionOptions).

    `max_batch_size`: the largest request (and, without splitting, the largest batch).
    `max_execution_batch_size`: the largest batch run, when `enable_large_batch_splitting`
    splits requests into pieces of at most this size.
    `batch_timeout_micros`: how long the oldest request of an open batch waits for others;
    0 runs a batch as soon as a thread is free.
    `max_enqueued_batches`: batches a queue holds before it refuses requests (UNAVAILABLE).
    `allowed_batch_sizes`: batches are padded up to the next of these sizes.
    `pad_variable_length_inputs`: pad dims after the first to the batch's largest.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @property
    def execution_limit(self) -> int:
        """The largest batch that runs."""
        if self.enable_large_batch_splitting:
            return self.max_execution_batch_size
        return self.max_batch_size


@dataclass(frozen=True)
class BatchingConfig:
    queue: QueueOptions
    num_batch_threads: int
    thread_pool_name: str = "batch_threads"


def from_proto(params: batching_parameters_pb2.BatchingParameters) -> BatchingConfig:
    """TFS's defaults for unset fields, then TFS's checks (and servo's for nonsense)."""
    max_batch = (
        params.max_batch_size.value if params.HasField("max_batch_size") else DEFAULT_MAX_BATCH_SIZE
    )
    splitting = (
        params.enable_large_batch_splitting.value
        if params.HasField("enable_large_batch_splitting")
        else False
    )
    execution = (
        params.max_execution_batch_size.value
        if params.HasField("max_execution_batch_size")
        else max_batch
    )
    queue = QueueOptions(
        max_batch_size=max_batch,
        batch_timeout_micros=(
            params.batch_timeout_micros.value if params.HasField("batch_timeout_micros") else 0
        ),
        max_enqueued_batches=(
            params.max_enqueued_batches.value
            if params.HasField("max_enqueued_batches")
            else DEFAULT_MAX_ENQUEUED_BATCHES
        ),
        enable_large_batch_splitting=splitting,
        max_execution_batch_size=execution,
        allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        pad_variable_length_inputs=params.pad_variable_length_inputs,
    )
    threads = (
        params.num_batch_threads.value
        if params.HasField("num_batch_threads")
        else os.cpu_count() or 1
    )
    validate(queue, threads)
    name = params.thread_pool_name.value if params.HasField("thread_pool_name") else ""
    return BatchingConfig(queue, threads, name or "batch_threads")


def validate(queue: QueueOptions, num_batch_threads: int = 1) -> None:
    if queue.max_batch_size < 1:
        raise BatchingConfigError(f"max_batch_size must be positive; was {queue.max_batch_size}")
    if queue.batch_timeout_micros < 0:
        raise BatchingConfigError(
            f"batch_timeout_micros must be non-negative; was {queue.batch_timeout_micros}"
        )
    if queue.max_enqueued_batches < 1:
        raise BatchingConfigError(
            f"max_enqueued_batches must be positive; was {queue.max_enqueued_batches}"
        )
    if num_batch_threads < 1:
        raise BatchingConfigError(f"num_batch_threads must be positive; was {num_batch_threads}")
    if queue.enable_large_batch_splitting:
        if queue.max_execution_batch_size < 1:
            raise BatchingConfigError(
                f"max_execution_batch_size must be positive; was {queue.max_execution_batch_size}"
            )
        if queue.max_execution_batch_size > queue.max_batch_size:
            raise BatchingConfigError(
                "max_execution_batch_size must be less than or equal to max_batch_size; was "
                f"{queue.max_execution_batch_size} > {queue.max_batch_size}"
            )
    sizes = queue.allowed_batch_sizes
    if not sizes:
        return
    if any(size < 1 for size in sizes):
        raise BatchingConfigError(f"allowed_batch_sizes entries must be positive; got {sizes}")
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise BatchingConfigError("allowed_batch_sizes entries must be monotonically increasing")
    if queue.enable_large_batch_splitting:
        if sizes[-1] != queue.max_execution_batch_size:
            raise BatchingConfigError(
                "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                f"last entry was {sizes[-1]}; expected {queue.max_execution_batch_size}"
            )
    elif sizes[-1] != queue.max_batch_size:
        raise BatchingConfigError(
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{sizes[-1]}; expected {queue.max_batch_size}"
        )


def round_up(size: int, allowed: tuple[int, ...]) -> int:
    """The smallest allowed batch size that holds `size` (size itself when none is set)."""
    for candidate in allowed:
        if candidate >= size:
            return candidate
    return size


def read_file(path: str) -> batching_parameters_pb2.BatchingParameters:
    """A BatchingParameters text-format file; `BatchingConfigError` naming the file (an
    `InvalidBatchingFile` for text protobuf's parser refuses, its lines logged)."""
    try:
        text = gfile.read_file(path).decode("utf-8")  # local or in object storage, as TFS
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchingConfigError(f"Cannot read '{path}': {exc}") from None
    try:
        return parse_file_text(text, batching_parameters_pb2.BatchingParameters(), path)
    except InvalidProtobufFile as exc:
        raise InvalidBatchingFile(exc.path, exc.error) from None


def load_config(path: str | None) -> BatchingConfig:
    """The config of `--batching_parameters_file` (TFS's defaults without one)."""
    params = read_file(path) if path else batching_parameters_pb2.BatchingParameters()
    try:
        return from_proto(params)
    except BatchingConfigError as exc:
        raise BatchingConfigError(f"{path or 'batching parameters'}: {exc}") from None
