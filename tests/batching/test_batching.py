"""The shared batch scheduler and the batching wrapper, against a fake model that records the
batches it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from servo.batching import parameters as bp
from servo.batching.batching_servable import BatchingServable, batchable
from servo.batching.parameters import QueueOptions
from servo.batching.scheduler import QUEUE_FULL, BatchScheduler
from servo.core.status import Code, ServoError
from servo.dtypes import DataType
from servo.metrics import ServerMetrics
from servo.platforms.servable import (
    ModelServable,
    Signature,
    TensorSpec,
    call_deadline,
    within_deadline,
)
from servo.protos import batching_parameters_pb2
from tests.support.testdata import TfsModels

BATCHED = Signature(
    "serving_default",
    {
        "x": TensorSpec(DataType.DT_FLOAT, (-1, -1), "x"),
        "k": TensorSpec(DataType.DT_INT64, (-1,), "k"),
    },
    {
        "y": TensorSpec(DataType.DT_FLOAT, (-1, -1), "y"),
        "k2": TensorSpec(DataType.DT_INT64, (-1,), "k2"),
    },
)
FIXED = Signature(
    "fixed",
    {"x": TensorSpec(DataType.DT_FLOAT, (3,), "x")},
    {"y": TensorSpec(DataType.DT_FLOAT, (3,), "y")},
)


class Recorder(ModelServable):
    """y = 2x, k2 = k + 1; records every call's batch size; can hold calls on a gate."""

    platform = "fake"

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.order: list[int] = []  # the first k of each batch, in run order
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.closed = False

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return {"serving_default": BATCHED, "fixed": FIXED}

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self.entered.release()
        self.gate.wait()
        if signature.name == "fixed":
            return {"y": inputs["x"] * 2}
        self.sizes.append(len(inputs["k"]))
        self.order.append(int(inputs["k"][0]))
        out = {"y": inputs["x"] * 2, "k2": inputs["k"] + 1}
        return {k: out[k] for k in (output_names or out)}

    def close(self) -> None:
        self.closed = True


def request(rows: int, start: int, width: int = 2) -> dict[str, np.ndarray]:
    return {
        "x": np.arange(start * width, (start + rows) * width, dtype=np.float32).reshape(
            rows, width
        ),
        "k": np.arange(start, start + rows, dtype=np.int64),
    }


def expected(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] * 2, "k2": inputs["k"] + 1}


@pytest.fixture
def scheduler():
    scheduler = BatchScheduler(1)
    yield scheduler
    scheduler.stop()


def wrapped(scheduler: BatchScheduler, **options) -> tuple[BatchingServable, Recorder]:
    inner = Recorder()
    return BatchingServable(inner, scheduler, QueueOptions(**options), "m"), inner


class Busy:
    """Keeps the scheduler's only thread busy on another queue until released, so that
    requests pile up in the queue under test."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self.servable, self.inner = wrapped(scheduler)
        self.inner.gate.clear()
        self.future = self.servable.submit(BATCHED, request(1, 0))
        self.inner.entered.acquire()

    def release(self) -> None:
        self.inner.gate.set()
        self.future.result(10)


def test_concurrent_requests_get_exactly_their_rows(scheduler) -> None:
    servable, inner = wrapped(scheduler, max_batch_size=64)
    sizes = [1, 3, 2, 5, 1, 4, 7, 2, 1, 6, 3, 1] * 4
    starts = np.cumsum([0, *sizes[:-1]])
    with ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(lambda s: servable.run(BATCHED, request(*s)), zip(sizes, starts, strict=True))
        )
    for size, start, result in zip(sizes, starts, results, strict=True):
        want = expected(request(size, start))
        np.testing.assert_array_equal(result["y"], want["y"])
        np.testing.assert_array_equal(result["k2"], want["k2"])
    assert sum(inner.sizes) == sum(sizes)
    assert len(inner.sizes) <= len(sizes)


def test_requests_wait_in_one_batch_while_the_thread_is_busy(scheduler) -> None:
    servable, inner = wrapped(scheduler, max_batch_size=10)
    inner.gate.clear()
    first = servable.submit(BATCHED, request(1, 0))
    inner.entered.acquire()  # the only thread now runs the first batch, held at the gate
    later = [servable.submit(BATCHED, request(2, 1 + 2 * i)) for i in range(3)]
    inner.gate.set()
    first.result(10)
    outs = [f.result(10) for f in later]
    assert inner.sizes == [1, 6]
    assert [o["k2"].tolist() for o in outs] == [[2, 3], [4, 5], [6, 7]]


def test_a_full_queue_answers_unavailable(scheduler) -> None:
    servable, inner = wrapped(scheduler, max_batch_size=2, max_enqueued_batches=2)
    inner.gate.clear()
    running = servable.submit(BATCHED, request(2, 0))
    inner.entered.acquire()
    queued = [servable.submit(BATCHED, request(2, 2)), servable.submit(BATCHED, request(2, 4))]
    with pytest.raises(ServoError) as err:
        servable.submit(BATCHED, request(2, 6))
    assert (err.value.code, err.value.message) == (Code.UNAVAILABLE, QUEUE_FULL)
    inner.gate.set()
    for future in [running, *queued]:
        future.result(10)


def test_oversize_requests_are_refused_or_split(scheduler) -> None:
    servable, _ = wrapped(scheduler, max_batch_size=4)
    with pytest.raises(ServoError) as err:
        servable.run(BATCHED, request(5, 0))
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == "Task size 5 is larger than maximum input batch size 4"

    splitting, inner = wrapped(
        scheduler, max_batch_size=100, enable_large_batch_splitting=True, max_execution_batch_size=4
    )
    out = splitting.run(BATCHED, request(11, 0))
    np.testing.assert_array_equal(out["k2"], np.arange(1, 12))
    np.testing.assert_array_equal(out["y"], expected(request(11, 0))["y"])
    assert inner.sizes == [4, 4, 3]


def test_a_split_request_fills_the_open_batch_first(scheduler) -> None:
    servable, inner = wrapped(
        scheduler, max_batch_size=20, enable_large_batch_splitting=True, max_execution_batch_size=4
    )
    busy = Busy(scheduler)
    small = servable.submit(BATCHED, request(1, 0))  # opens a batch
    big = servable.submit(BATCHED, request(9, 1))  # 3 rows join it, 4 + 2 in new batches
    busy.release()
    assert small.result(10)["k2"].tolist() == [1]
    assert big.result(10)["k2"].tolist() == list(range(2, 11))
    assert inner.sizes == [4, 4, 2]


def test_padding_to_allowed_sizes_never_leaks(scheduler) -> None:
    servable, inner = wrapped(scheduler, max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    out = servable.run(BATCHED, request(3, 0))
    assert inner.sizes == [4]
    assert out["k2"].tolist() == [1, 2, 3] and out["y"].shape == (3, 2)


def test_variable_length_inputs(scheduler) -> None:
    strict, _ = wrapped(scheduler, max_batch_size=8)
    busy = Busy(scheduler)
    a = strict.submit(BATCHED, request(1, 0, width=2))
    b = strict.submit(BATCHED, request(2, 1, width=3))
    busy.release()
    with pytest.raises(ServoError) as err:
        b.result(10)
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "have different shapes and padding is turned off" in err.value.message
    with pytest.raises(ServoError):
        a.result(10)

    padding, _ = wrapped(scheduler, max_batch_size=8, pad_variable_length_inputs=True)
    busy = Busy(scheduler)
    a = padding.submit(BATCHED, request(1, 0, width=2))
    b = padding.submit(BATCHED, request(2, 1, width=3))
    busy.release()
    # Row [0, 1] is padded to [0, 1, 0] with the tensor's first value, 0.
    np.testing.assert_array_equal(a.result(10)["y"], [[0, 2, 0]])
    np.testing.assert_array_equal(b.result(10)["y"], expected(request(2, 1, width=3))["y"])


def test_a_split_request_whose_pieces_disagree_fails_alone(scheduler) -> None:
    servable, _ = wrapped(
        scheduler,
        max_batch_size=20,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        pad_variable_length_inputs=True,
    )
    busy = Busy(scheduler)
    wide = servable.submit(BATCHED, request(1, 0, width=5))  # opens a batch 5 wide
    # 3 rows join it (padded to 5 wide), 2 go to a new batch (2 wide): outputs that differ
    split = servable.submit(BATCHED, request(5, 1, width=2))
    busy.release()
    np.testing.assert_array_equal(wide.result(10)["y"], expected(request(1, 0, width=5))["y"])
    with pytest.raises(ServoError) as err:
        split.result(10)
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "pieces of a split request have outputs of different shapes" in err.value.message


class Meeting(Recorder):
    """Runs only when `parties` calls are inside run() at once (or fails after 10 s)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def run(self, signature, inputs, output_names=None):  # type: ignore[no-untyped-def]
        self.barrier.wait()
        return super().run(signature, inputs, output_names)


def test_the_pieces_of_a_split_request_run_on_every_free_thread() -> None:
    scheduler = BatchScheduler(2)
    try:
        inner = Meeting(2)
        options = QueueOptions(
            max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4
        )
        servable = BatchingServable(inner, scheduler, options, "m")
        # Two batches from one request: both threads must take one, or the barrier breaks.
        out = servable.run(BATCHED, request(8, 0))
        assert out["k2"].tolist() == list(range(1, 9))
        assert inner.sizes == [4, 4]
    finally:
        scheduler.stop()


def test_a_model_error_in_a_batch_is_internal_with_its_message(scheduler) -> None:
    class Failing(Recorder):
        def run(self, signature, inputs, output_names=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("kernel exploded")

    servable = BatchingServable(Failing(), scheduler, QueueOptions(max_batch_size=8), "m")
    with pytest.raises(ServoError) as err:
        servable.run(BATCHED, request(2, 0))
    assert (err.value.code, err.value.message) == (Code.INTERNAL, "RuntimeError: kernel exploded")


def test_batch_timeout_gathers_requests(scheduler) -> None:
    servable, inner = wrapped(scheduler, max_batch_size=3, batch_timeout_micros=60_000_000)
    # The open batch waits (a minute, at most) until it is full: three requests, one batch.
    futures = [servable.submit(BATCHED, request(1, i)) for i in range(3)]
    assert [f.result(10)["k2"].tolist() for f in futures] == [[1], [2], [3]]
    assert inner.sizes == [3]


class Stoppable(Recorder):
    """A servable that can stop a call past its deadline (as a Python model's worker):
    records the deadline each batch ran with."""

    takes_deadline = True

    def __init__(self) -> None:
        super().__init__()
        self.deadlines: list[float | None] = []

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self.deadlines.append(call_deadline())
        return super().run(signature, inputs, output_names)


def test_a_batch_of_a_servable_that_takes_deadlines_runs_with_its_latest(scheduler) -> None:
    """Each request's deadline goes with it into its batch, which runs with the latest of
    them, or none when one request has none (a hung batch then ends as its last caller
    gives up, not never)."""
    inner = Stoppable()
    servable = BatchingServable(
        inner, scheduler, QueueOptions(max_batch_size=3, batch_timeout_micros=60_000_000), "m"
    )
    assert servable.takes_deadline
    now = time.monotonic()
    futures = [
        within_deadline(now + 30 + i, lambda i=i: servable.submit(BATCHED, request(1, i)))
        for i in range(3)
    ]
    assert [f.result(10)["k2"].tolist() for f in futures] == [[1], [2], [3]]
    futures = [
        within_deadline(deadline, lambda: servable.submit(BATCHED, request(1, 0)))
        for deadline in (now + 30, None, now + 40)
    ]
    for future in futures:
        future.result(10)
    assert inner.deadlines == [now + 32, None]
    assert not wrapped(scheduler)[0].takes_deadline  # a servable that cannot stop a call


def test_signatures_without_a_batch_dim_and_mismatched_inputs(scheduler) -> None:
    servable, _ = wrapped(scheduler)
    assert not batchable(FIXED) and batchable(BATCHED)
    assert servable.submit(FIXED, {"x": np.ones(3, np.float32)}) is None
    np.testing.assert_array_equal(servable.run(FIXED, {"x": np.ones(3, np.float32)})["y"], [2] * 3)
    with pytest.raises(ServoError, match="must have equal 0th-dimension size"):
        servable.submit(BATCHED, {"x": np.zeros((2, 2), np.float32), "k": np.zeros(3, np.int64)})
    out = servable.run(BATCHED, request(2, 0), ["k2"])
    assert list(out) == ["k2"]


def test_threads_serve_queues_round_robin(scheduler) -> None:
    busy, inner = wrapped(scheduler, max_batch_size=1, max_enqueued_batches=10)
    quiet = BatchingServable(inner, scheduler, QueueOptions(max_batch_size=1), "other")
    busy.run(BATCHED, request(1, 0))  # both queues exist, in this order
    quiet.run(BATCHED, request(1, 0))
    inner.order.clear()
    inner.gate.clear()
    first = busy.submit(BATCHED, request(1, 0))
    inner.entered.acquire()
    busy_more = [busy.submit(BATCHED, request(1, i)) for i in (1, 2, 3)]
    other = quiet.submit(BATCHED, request(1, 100))
    inner.gate.set()
    for f in [first, *busy_more, other]:
        f.result(10)
    # After one batch of the busy queue, the other queue's batch runs before the busy ones.
    assert inner.order == [0, 100, 1, 2, 3]


def test_close_removes_queues_and_closes_the_model(scheduler) -> None:
    servable, inner = wrapped(scheduler)
    servable.run(BATCHED, request(1, 0))
    servable.close()
    assert inner.closed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 "
            "allowed_batch_sizes: 8",
            "monotonically increasing",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
            "expected 8",
        ),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 4 } allowed_batch_sizes: 2",
            "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size",
        ),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 16 }",
            "less than or equal to max_batch_size",
        ),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive"),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches must be positive"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative"),
    ],
)
def test_parameter_validation(text: str, message: str, tmp_path) -> None:
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(bp.BatchingConfigError) as err:
        bp.load_config(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_parameter_defaults_and_tfs_sample(tfs_models: TfsModels) -> None:
    config = bp.from_proto(batching_parameters_pb2.BatchingParameters())
    assert config.queue == QueueOptions(1000, 0, 10, False, 1000, (), False)
    assert config.num_batch_threads >= 1
    sample = bp.load_config(tfs_models.path("batching_config.txt"))
    assert (sample.queue.max_batch_size, sample.queue.max_enqueued_batches) == (128, 1000000)
    assert sample.num_batch_threads == 8
    path = tfs_models.path("bad_model_config.txt")
    with pytest.raises(bp.BatchingConfigError) as err:
        bp.load_config(path)
    assert isinstance(err.value, bp.InvalidBatchingFile)
    assert str(err.value) == f"Invalid protobuf file: '{path}'"
    assert err.value.lines == [
        "Error parsing text-format tensorflow.serving.BatchingParameters: 1:12: Message type "
        '"tensorflow.serving.BatchingParameters" has no field named "improperly".'
    ]


def test_batching_session_metrics_count_inputs_runs_and_padded_batches(scheduler) -> None:
    """TFS's batching-session families: each request's input tensors' dim 0 as it enters a
    queue (once per tensor), each run on the wrapped model, each batch's padded size."""
    metrics = ServerMetrics()
    inner = Recorder()
    servable = BatchingServable(
        inner,
        scheduler,
        QueueOptions(max_batch_size=8, allowed_batch_sizes=(4, 8)),
        "m",
        metrics=metrics,
    )
    busy = Busy(scheduler)
    futures = [servable.submit(BATCHED, request(n, 10 * n)) for n in (1, 2)]
    busy.release()
    for f in futures:
        assert f is not None
        f.result(10)
    input_sizes = metrics.batching_input_batch_size
    assert input_sizes.count() == 4  # two requests of two input tensors each
    assert metrics.batching_processed_batch_size.count() == 1
    assert metrics.batching_wrapped_run_count.value() == 1
    page = metrics.render().decode()
    # 1 + 2 rows padded to 4: one batch of size 4, in bucket le=4 but not le=2
    assert ':tensorflow:serving:batching_session:processed_batch_size_bucket{le="2"} 0' in page
    assert ':tensorflow:serving:batching_session:processed_batch_size_bucket{le="4"} 1' in page
    assert ':tensorflow:serving:batching_session:input_batch_size_bucket{le="1"} 2' in page
    assert ":tensorflow:serving:batching_session:input_batch_size_sum{} 6" in page
    assert ":tensorflow:serving:batching_session:wrapped_run_count{} 1" in page

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    inner.run = failing  # type: ignore[method-assign]
    future = servable.submit(BATCHED, request(1, 0))
    assert future is not None
    with pytest.raises(ServoError):
        future.result(10)
    assert metrics.batching_wrapped_run_count.value() == 2  # a failed run counts, as in TFS
