"""BatchingServable: a servable wrapped so that its calls go through batch queues.

The wrapper is made when a version loads (before warm-up, so warm-up runs through it too) and
closed when it unloads. Each signature and output set gets its own queue on the shared
scheduler. A batch's inputs are concatenated along dim 0 (padded to the next allowed batch size
with copies of a real row, and, with `pad_variable_length_inputs`, padded in the other dims to
the batch's largest with the tensor's first value, as TFS pads), run once, and the outputs cut
back per request; padding never reaches a caller. Signatures whose inputs have no batch
dimension (a first dim that is not -1) are not batched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future

import numpy as np

from servo.batching.parameters import (
    PER_MODEL_FILE,
    BatchingConfig,
    BatchingConfigError,
    InvalidBatchingFile,
    QueueOptions,
    from_proto,
    read_file,
    round_up,
)
from servo.batching.scheduler import Batch, BatchQueue, BatchScheduler, Piece, Request
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.metrics import ServerMetrics
from servo.platforms.servable import ModelServable, Signature, call_deadline, within_deadline

log = logging.getLogger(__name__)


def batchable(signature: Signature) -> bool:
    """Whether a signature's inputs all have a batch dimension (dim 0 of unknown size)."""
    return bool(signature.inputs) and all(
        spec.shape is not None and len(spec.shape) > 0 and spec.shape[0] == -1
        for spec in signature.inputs.values()
    )


class BatchingServable(ModelServable):
    """Thread-safety: `run` and `submit` may be called from any thread."""

    def __init__(
        self,
        inner: ModelServable,
        scheduler: BatchScheduler,
        options: QueueOptions,
        model_name: str,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.may_run_inline = inner.may_run_inline
        # A servable that can stop a call past its deadline (a Python model's worker) gets
        # each batch's: the latest of its requests' (none when one of them has none).
        self.takes_deadline = getattr(inner, "takes_deadline", False)
        self._scheduler = scheduler
        self._options = options
        self._model_name = model_name
        self._metrics = metrics
        self._queues: dict[tuple[str, tuple[str, ...] | None], BatchQueue] = {}
        self._lock = threading.Lock()
        self._batchable = {name: batchable(sig) for name, sig in inner.signatures.items()}

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self.inner.signatures

    # -- calls -----------------------------------------------------------------------------

    def submit(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> Future[dict[str, np.ndarray]] | None:
        """Queues a call and returns the future of its outputs; None when this signature is
        not batched (the caller then runs it directly)."""
        if not self._batchable.get(signature.name, False) or not inputs:
            return None
        sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
        if len(sizes) != 1 or -1 in sizes:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                "Batching session Run() input tensors must have equal 0th-dimension size",
            )
        (size,) = sizes
        if self._metrics is not None:  # once per input tensor, as TFS's ComputeInputSize
            for _ in inputs:
                self._metrics.batching_input_batch_size.observe(size)
        if size == 0:
            return None  # nothing to batch: an empty request runs as it is
        request = Request(dict(inputs), size, call_deadline() if self.takes_deadline else None)
        self._queue(signature, output_names).schedule(request)
        return request.future

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        future = self.submit(signature, inputs, output_names)
        if future is None:
            return self.inner.run(signature, inputs, output_names)
        return future.result()

    def close(self) -> None:
        with self._lock:
            queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            self._scheduler.remove_queue(queue)
        self.inner.close()

    # -- queues and batches ----------------------------------------------------------------

    def _queue(self, signature: Signature, output_names: Sequence[str] | None) -> BatchQueue:
        key = (signature.name, None if output_names is None else tuple(output_names))
        queue = self._queues.get(key)
        if queue is None:
            with self._lock:
                queue = self._queues.get(key)
                if queue is None:
                    outputs = key[1]
                    queue = self._scheduler.add_queue(
                        self._options,
                        lambda batch: self._process(signature, outputs, batch),
                        f"{self._model_name}/{signature.name}",
                    )
                    self._queues[key] = queue
        return queue

    def _process(
        self, signature: Signature, output_names: tuple[str, ...] | None, batch: Batch
    ) -> None:
        started = time.monotonic()
        options = self._options
        pieces = batch.pieces
        size = batch.size
        padded = round_up(size, options.allowed_batch_sizes)
        padding = padded - size
        if self._metrics is not None:
            name = self._scheduler.name
            for piece in pieces:
                self._metrics.batching_queuing_latency.observe(
                    (started - piece.request.enqueued_at) * 1e6, name
                )
            self._metrics.batch_size.observe(padded, self._model_name, signature.name)
            self._metrics.padding_size.observe(padding, self._model_name, str(padded))
            self._metrics.batching_processed_batch_size.observe(padded)
        try:
            merged = {
                name: self._merge(
                    name, [p.request.inputs[name][p.start : p.stop] for p in pieces], padding
                )
                for name in signature.inputs
            }
            try:
                if self.takes_deadline:
                    deadline = _batch_deadline(pieces)
                    outputs = within_deadline(
                        deadline, lambda: self.inner.run(signature, merged, output_names)
                    )
                else:
                    outputs = self.inner.run(signature, merged, output_names)
            finally:  # a run that failed counts too, as in TFS
                if self._metrics is not None:
                    self._metrics.batching_wrapped_run_count.inc()
            for alias, tensor in outputs.items():
                if tensor.ndim == 0:
                    raise ServoError(
                        Code.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions"
                    )
                if tensor.shape[0] != padded:
                    raise ServoError(
                        Code.FAILED_PRECONDITION,
                        "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                        f"dimension sizes of the input tensors (output {alias})",
                    )
        except BaseException as exc:
            error = exc if isinstance(exc, ServoError) else _internal(exc)
            for piece in pieces:
                piece.request.fail(error)
            return
        offset = 0
        for piece in pieces:
            end = offset + piece.size
            try:
                piece.request.deliver(piece.index, {k: v[offset:end] for k, v in outputs.items()})
            except BaseException as exc:  # that request's failure, not its batch-mates'
                piece.request.fail(exc if isinstance(exc, ServoError) else _internal(exc))
            offset = end

    def _merge(self, name: str, arrays: list[np.ndarray], padding: int) -> np.ndarray:
        if self._options.pad_variable_length_inputs:
            arrays = _pad_to_largest(arrays)
        else:
            first = arrays[0].shape[1:]
            if any(a.shape[1:] != first for a in arrays[1:]):
                raise ServoError(
                    Code.FAILED_PRECONDITION,
                    f"Tensors with name '{name}' from different tasks have different shapes and "
                    "padding is turned off. Set pad_variable_length_inputs to true, or ensure "
                    "that all tensors with the same name have equal dimensions starting with the "
                    "first dim.",
                )
        if padding:
            # Copies of a real row: padding rows must be valid inputs for the model.
            arrays = [*arrays, np.repeat(arrays[-1][:1], padding, axis=0)]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _pad_to_largest(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pads dims 1.. of each array to the largest among them, with the array's first value."""
    ranks = {a.ndim for a in arrays}
    if len(ranks) != 1:
        raise ServoError(
            Code.FAILED_PRECONDITION, "Tensors in a batch must have the same rank to be padded"
        )
    target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    padded = []
    for array in arrays:
        if array.shape[1:] == target:
            padded.append(array)
            continue
        if array.size == 0:
            raise ServoError(
                Code.INVALID_ARGUMENT, "Got empty tensor in batch of non-empty tensors."
            )
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(array.shape[1:], target, strict=True)]
        padded.append(np.pad(array, widths, mode="constant", constant_values=array.flat[0]))
    return padded


class BatchingWrapper:
    """Wraps each loading version in a BatchingServable on the shared scheduler: with the
    server's queue options, or, `per_model`, with the version directory's
    `batching_params.pbtxt` (a version without one is not batched, as in TFS).

    Thread-safety: called from the manager's load threads; holds no state of its own.
    """

    def __init__(
        self,
        config: BatchingConfig,
        *,
        per_model: bool = False,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.config = config
        self.per_model = per_model
        self.metrics = metrics
        self.scheduler = BatchScheduler(config.num_batch_threads, config.thread_pool_name)

    def __call__(self, id: ServableId, path: str, servable: ModelServable) -> ModelServable:
        options = self.config.queue
        if self.per_model:
            file = os.path.join(path, PER_MODEL_FILE)
            if not os.path.exists(file):
                log.info("%s has no %s: not batched", id, PER_MODEL_FILE)
                return servable
            try:
                options = from_proto(read_file(file)).queue
            except InvalidBatchingFile as exc:
                # TFS's status, and the parser's line (logged too) for whoever reads it.
                raise ServoError(Code.INVALID_ARGUMENT, exc.detail) from None
            except BatchingConfigError as exc:
                raise ServoError(Code.INVALID_ARGUMENT, f"{file}: {exc}") from None
        batched = [name for name, sig in servable.signatures.items() if batchable(sig)]
        log.info(
            "Batching %s (signatures %s): max_batch_size %d, batch_timeout_micros %d, "
            "max_enqueued_batches %d",
            id,
            ", ".join(batched) or "none",
            options.max_batch_size,
            options.batch_timeout_micros,
            options.max_enqueued_batches,
        )
        return BatchingServable(servable, self.scheduler, options, id.name, self.metrics)

    def stop(self) -> None:
        self.scheduler.stop()


def _internal(exc: BaseException) -> ServoError:
    return ServoError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


def _batch_deadline(pieces: Sequence[Piece]) -> float | None:
    """The latest deadline of a batch's requests; None when one of them has none."""
    deadlines = [p.request.deadline for p in pieces]
    if any(d is None for d in deadlines):
        return None
    return max(d for d in deadlines if d is not None)
