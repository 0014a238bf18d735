"""Runner: where model calls run, deadlines on the pool and inline, and the reference a call
that may outlive its request holds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from servo.apis.runner import Runner, size_class
from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from tests.support.waiting import wait_until


class Handle:
    """A handle the test holds for the whole request; `shared` records the references the
    runner takes of its own, `released` is set when the last of them is released."""

    def __init__(self, servable: Any, id: ServableId | None = None) -> None:
        self.servable = servable
        self.id = id or ServableId("m", 1)
        self.shared = 0
        self.released = threading.Event()

    def share(self) -> Handle:
        self.shared += 1
        return self

    def release(self) -> None:
        self.shared -= 1
        if self.shared == 0:
            self.released.set()


class Servable:
    """Answers with the name of the thread it ran on, after sleeping as long as asked."""

    def run(self, signature: Any, inputs: dict, output_names: Any) -> dict:
        time.sleep(float(inputs.get("sleep", np.zeros(1)).max()))
        return {"thread": threading.current_thread().name}


SIGNATURE = SimpleNamespace(name="serving_default")


@pytest.fixture
def runner() -> Iterator[Runner]:
    # Every call under 10 ms counts as fast, so that a loaded machine does not change where
    # the calls run.
    runner = Runner(concurrency=lambda name: 2, inline_seconds=0.01)
    yield runner
    runner.close()


async def predict(runner: Runner, handle: Any, inputs: dict, timeout: float | None) -> Any:
    """A predict as the data plane runs it: keyed by signature and size class."""
    servable = handle.servable
    return await runner.run(
        handle,
        lambda: servable.run(SIGNATURE, inputs, None),
        (SIGNATURE.name, size_class(inputs)),
        timeout,
        "Predict",
    )


def thread_of(runner: Runner, servable: Any, inputs: dict, timeout: float | None = None) -> str:
    async def go() -> str:
        out = await predict(runner, Handle(servable), inputs, timeout)
        return out["thread"]

    return asyncio.run(go())


def test_calls_start_on_the_pool_and_move_inline_after_a_window_of_fast_ones(
    runner: Runner,
) -> None:
    servable, inputs = Servable(), {"x": np.zeros(4)}
    threads = [thread_of(runner, servable, inputs) for _ in range(Runner.POOL_WINDOW)]
    assert all(name.startswith("servo-run") for name in threads)
    assert thread_of(runner, servable, inputs) == threading.current_thread().name


def test_servables_that_may_block_never_run_inline(runner: Runner) -> None:
    class UserCode(Servable):
        may_run_inline = False

    servable, inputs = UserCode(), {"x": np.zeros(4)}
    threads = [thread_of(runner, servable, inputs) for _ in range(3 * Runner.POOL_WINDOW)]
    assert all(name.startswith("servo-run") for name in threads)


def test_python_models_may_not_run_inline() -> None:
    from servo.platforms.python import PythonServable
    from servo.platforms.servable import ModelServable

    assert ModelServable.may_run_inline and not PythonServable.may_run_inline


def test_a_much_larger_request_is_measured_on_the_pool_before_it_runs_inline(
    runner: Runner,
) -> None:
    servable, small = Servable(), {"x": np.zeros(4)}
    for _ in range(Runner.POOL_WINDOW):
        thread_of(runner, servable, small)
    assert thread_of(runner, servable, small) == threading.current_thread().name
    big = {"x": np.zeros(4000)}
    assert size_class(big) > size_class(small)
    assert thread_of(runner, servable, big).startswith("servo-run")
    assert size_class({"x": np.zeros(5)}) == size_class(small)  # within a factor of two


def test_a_pool_call_over_its_deadline_answers_at_the_deadline(runner: Runner) -> None:
    handle = Handle(Servable())

    async def go() -> None:
        await predict(runner, handle, {"sleep": np.array([0.5])}, 0.05)

    started = time.perf_counter()
    with pytest.raises(ServoError) as error:
        asyncio.run(go())
    assert time.perf_counter() - started < 0.4
    assert error.value.code == Code.DEADLINE_EXCEEDED
    # The request is over, the call still runs: the runner's own reference keeps the
    # version loaded until it ends.
    assert handle.shared == 1 and not handle.released.is_set()
    assert handle.released.wait(5)


def test_an_inline_call_over_its_deadline_answers_deadline_exceeded_and_leaves_the_loop(
    runner: Runner,
) -> None:
    servable, fast = Servable(), {"sleep": np.zeros(1)}
    for _ in range(Runner.POOL_WINDOW):
        thread_of(runner, servable, fast)
    assert thread_of(runner, servable, fast) == threading.current_thread().name  # inline now
    handle = Handle(servable)

    async def go() -> None:
        await predict(runner, handle, {"sleep": np.array([0.3])}, 0.02)

    with pytest.raises(ServoError) as error:
        asyncio.run(go())
    assert error.value.code == Code.DEADLINE_EXCEEDED
    assert handle.shared == 0  # an inline call ends with its request: no reference of its own
    # Its cost (0.3 s in an average of 10 calls) sends the key back to the pool.
    assert thread_of(runner, servable, fast).startswith("servo-run")


def test_runtime_latency_is_recorded_per_model_api_and_runtime() -> None:
    from servo.metrics import ServerMetrics

    class Onnx(Servable):
        platform = "onnx"

    metrics = ServerMetrics()
    runner = Runner(concurrency=lambda name: 2, inline_seconds=0.01, metrics=metrics)
    try:
        handle = Handle(Onnx())

        async def go() -> None:
            for _ in range(Runner.POOL_WINDOW + 2):  # on the pool, then inline
                await predict(runner, handle, {"x": np.zeros(2)}, None)
            await runner.run(handle, lambda: {}, "other", None)  # no API: not recorded

        asyncio.run(go())
        assert metrics.runtime_latency.count("m", "Predict", "onnx") == Runner.POOL_WINDOW + 2
    finally:
        runner.close()


# -- each version's own lane of threads ----------------------------------------------------------


class Blocking(Servable):
    """A model whose calls wait until the test lets them go; `started` counts the calls that
    began."""

    may_run_inline = False

    def __init__(self) -> None:
        self.go = threading.Event()
        self.started = 0

    def run(self, signature: Any, inputs: dict, output_names: Any) -> dict:
        self.started += 1
        self.go.wait(60)
        return {"thread": threading.current_thread().name}


def lanes(concurrency: int, queue: int) -> Runner:
    return Runner(concurrency=lambda name: concurrency, queue=lambda name: queue)


def test_a_hung_model_holds_only_its_own_threads() -> None:
    runner, hung, other = lanes(2, 8), Blocking(), Servable()
    try:

        async def go() -> str:
            stuck = [
                asyncio.ensure_future(predict(runner, Handle(hung, ServableId("hung", 1)), {}, 30))
                for _ in range(2)
            ]
            await asyncio.to_thread(wait_until, lambda: hung.started == 2)
            out = await predict(runner, Handle(other, ServableId("other", 1)), {}, 5)
            hung.go.set()
            await asyncio.gather(*stuck)
            return out["thread"]

        assert asyncio.run(go()).startswith("servo-run")
    finally:
        hung.go.set()
        runner.close()


def test_calls_past_a_versions_threads_and_queue_answer_unavailable() -> None:
    runner, hung = lanes(1, 1), Blocking()
    handle = Handle(hung, ServableId("hung", 3))
    try:

        async def go() -> ServoError:
            running = asyncio.ensure_future(predict(runner, handle, {}, 30))
            waiting = asyncio.ensure_future(predict(runner, handle, {}, 30))
            await asyncio.to_thread(wait_until, lambda: hung.started == 1)
            try:
                await predict(runner, handle, {}, 30)
            except ServoError as error:
                return error
            finally:
                hung.go.set()
                await asyncio.gather(running, waiting)
            raise AssertionError("a third call was accepted")

        error = asyncio.run(go())
        assert error.code == Code.UNAVAILABLE
        assert "hung:3" in error.message or "hung" in error.message
        assert "--max_concurrent_calls_per_model" in error.message
        assert "--max_queued_calls_per_model" in error.message
        assert hung.started == 2  # the two accepted calls ran
    finally:
        hung.go.set()
        runner.close()


def test_a_call_still_waiting_for_a_thread_at_its_deadline_never_runs() -> None:
    runner, hung = lanes(1, 4), Blocking()
    handle = Handle(hung, ServableId("hung", 1))
    try:

        async def go() -> None:
            running = asyncio.ensure_future(predict(runner, handle, {}, 30))
            await asyncio.to_thread(wait_until, lambda: hung.started == 1)
            with pytest.raises(ServoError) as error:
                await predict(runner, handle, {}, 0.05)
            assert error.value.code == Code.DEADLINE_EXCEEDED
            hung.go.set()
            await running

        asyncio.run(go())
        # The dropped call gave its place back: the version's references all ended.
        assert handle.released.wait(5)
        assert hung.started == 1
    finally:
        hung.go.set()
        runner.close()


def test_a_place_given_back_goes_to_the_next_call_waiting_or_past_one_that_left() -> None:
    """Calls wait for a place in arrival order; one whose deadline passed while it waited
    hands the place it would have had to the next."""
    runner, hung = lanes(1, 3), Blocking()
    handle = Handle(hung, ServableId("m", 1))
    try:

        async def go() -> None:
            first = asyncio.ensure_future(predict(runner, handle, {}, 30))
            await asyncio.to_thread(wait_until, lambda: hung.started == 1)
            impatient = asyncio.ensure_future(predict(runner, handle, {}, 0.05))
            patient = asyncio.ensure_future(predict(runner, handle, {}, 30))
            with pytest.raises(ServoError) as error:
                await impatient
            assert error.value.code == Code.DEADLINE_EXCEEDED
            hung.go.set()
            await asyncio.gather(first, patient)

        asyncio.run(go())
        assert hung.started == 2  # the first and the patient one; the impatient one never ran
        assert handle.released.wait(5)
    finally:
        hung.go.set()
        runner.close()


def test_close_waits_for_calls_on_the_pool_up_to_its_timeout_then_leaves_them() -> None:
    runner = Runner(concurrency=lambda name: 1, inline_seconds=0.01)
    gate = threading.Event()
    started = threading.Event()
    handle = Handle(Servable())

    def stuck() -> dict:
        started.set()
        gate.wait()
        return {}

    async def go() -> None:
        call = asyncio.ensure_future(runner.run(handle, stuck, "k", None))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        assert runner.close(timeout=0.1) is False  # returns although the call runs on
        gate.set()
        await call

    asyncio.run(go())
    assert handle.released.is_set()  # the call's own reference ended with the call


def test_close_is_complete_when_no_call_runs() -> None:
    runner = Runner(concurrency=lambda name: 1)
    assert runner.close(timeout=0.0) is True
