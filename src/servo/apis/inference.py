"""The data plane REST and gRPC share: signature lookup, input checks, output selection, and
the runner that decides where a model runs.

A request resolves its model spec to a handle (ServerCore), finds the signature, decodes its
inputs (transport-specific), is checked here, runs through `Runner.run`, and is encoded
(transport-specific). TFS's messages are kept where clients may match on them.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from servo.core.servable_handle import ServableHandle
from servo.core.status import Code, ServoError
from servo.dtypes import DataType, base, to_numpy
from servo.platforms.servable import (
    DEFAULT_SIGNATURE,
    ModelServable,
    Signature,
    verify_predict_signature,
)

if TYPE_CHECKING:
    from servo.server.metrics import ServerMetrics


def signature_for_rest(servable: ModelServable, name: str) -> Signature:
    """The signature a REST request names; TFS's REST message and code when it is missing."""
    key = name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise ServoError(
            Code.INVALID_ARGUMENT, f'Serving signature name: "{key}" not found in signature def'
        )
    return signature


def signature_for_grpc(servable: ModelServable, name: str) -> Signature:
    """The signature a gRPC request names; TFS's gRPC message and code when it is missing."""
    key = name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise ServoError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    return signature


def check_input_names(signature: Signature, names: Collection[str]) -> None:
    """TFS's checks that a request's input aliases fit the signature: the count first, then
    each alias (an input with a default may be left out). Messages are TFS's."""
    expected = signature.inputs
    if len(names) > len(expected) or (len(names) < len(expected) and not signature.defaults):
        sent, wanted = sorted(names), sorted(expected)
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
            f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}.",
        )
    used = 0
    for alias, spec in expected.items():
        if alias in names:
            used += 1
        elif alias not in signature.defaults:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Signature input alias: {alias}(feed name: {spec.tensor_name}) not found in "
                f"request and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(names))}}}, or default input alias set: "
                f"{','.join(sorted(signature.defaults))}",
            )
    if names and used != len(names):
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"Inputs contains invalid name. Used request inputs: "
            f"{','.join(sorted(set(names) & expected.keys()))}, request input: "
            f"{','.join(sorted(names))}",
        )


def check_input_dtypes(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TensorFlow's check that each input has its signature's dtype (TFS's message)."""
    for index, (alias, spec) in enumerate(signature.inputs.items()):
        array = inputs.get(alias)
        if array is None:
            continue
        want = to_numpy(spec.dtype)
        if array.dtype != want and not (want.kind == "O" and array.dtype.kind in "SUO"):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Expects arg[{index}] to be {_type_name(spec.dtype)} but "
                f"{_numpy_type_name(array.dtype)} is provided",
            )


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TFS's checks of a predict request: the signature's method (with the method-name check
    on), exactly the signature's inputs, of their dtypes."""
    verify_predict_signature(signature)
    check_input_names(signature, inputs.keys())
    check_input_dtypes(signature, inputs)


def _type_name(dtype: DataType) -> str:
    return base(dtype).name.removeprefix("DT_").lower()


def _numpy_type_name(dtype: np.dtype) -> str:
    from servo.dtypes import from_numpy

    try:
        return _type_name(from_numpy(dtype))
    except ServoError:
        return str(dtype)


def output_names(signature: Signature, output_filter: Sequence[str]) -> tuple[str, ...] | None:
    """The output aliases a request asks for (None: all), with TFS's messages."""
    if not output_filter:
        return None
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.",
            )
        if alias in seen:
            raise ServoError(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


DEADLINE_MESSAGE = "Deadline Exceeded"


def size_class(inputs: Mapping[str, np.ndarray]) -> int:
    """A request's size as a class of cost: the bit length of its inputs' bytes, so that
    requests within a factor of two of each other share their measurements."""
    return sum(array.nbytes for array in inputs.values()).bit_length()


class _Cost:
    """Where one (servable, signature) runs, from measurements.

    On the pool a call's wall time includes waiting for the interpreter lock while the loop
    runs, so the pool is judged by the fastest of its recent calls; inline calls hold the lock
    and are judged by their moving average. The two thresholds differ so that a model near the
    limit does not flip back and forth.
    """

    __slots__ = ("average", "best", "inline", "samples")

    def __init__(self) -> None:
        self.inline = False
        self.best = float("inf")  # fastest pool call of the current window
        self.samples = 0  # pool calls in the current window
        self.average = 0.0  # moving average of inline calls


class Runner:
    """Runs signatures where it is cheapest.

    A model call that takes less than `inline_seconds` runs on the event loop's thread: for
    small models a thread hop costs more than the model. Longer calls run on a pool of
    `threads` threads (the model runtimes release the interpreter lock while they compute), so
    the loop keeps serving and a deadline can answer DEADLINE_EXCEEDED while the run finishes
    in the background. Every key starts on the pool (a first call of unknown cost must not
    stall the loop) and moves inline once a window of `POOL_WINDOW` pool calls shows one
    faster than `inline_seconds`; it moves back when its inline average passes twice that.
    Servables that say `may_run_inline = False` (user code, which may block) stay on the pool.
    `predict` keys calls by signature and request size (`size_class`), so a request much
    larger than those measured, a big batch, is measured on the pool before it may run inline.
    An inline call cannot be interrupted: one that outlasts its deadline answers
    DEADLINE_EXCEEDED all the same when it ends. `predict` sends calls of a batching servable
    to its batch queue instead.

    The handle is released when the run is over, never before, even after a deadline has
    answered the client: the version stays loaded while its code runs.

    Thread-safety: `run` is called from the event loop's thread.
    """

    POOL_WINDOW = 16

    def __init__(
        self,
        threads: int = 0,
        inline_seconds: float = 0.0002,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(
            threads or max(2, os.cpu_count() or 2), thread_name_prefix="servo-run"
        )
        self._inline_seconds = inline_seconds
        # TFS's runtime latency: the model call's own time (a batched call's includes its
        # wait in the batch queue, as TFS's batching session's does), by model, API, runtime.
        self._runtime_latency = metrics.runtime_latency if metrics is not None else None
        self._costs: weakref.WeakKeyDictionary[Any, dict[str, _Cost]] = weakref.WeakKeyDictionary()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _cost(self, servable: Any, key: Hashable) -> _Cost:
        costs = self._costs.get(servable)
        if costs is None:
            costs = self._costs.setdefault(servable, {})
        cost = costs.get(key)
        if cost is None:
            cost = costs[key] = _Cost()
        return cost

    def _observe(self, handle: ServableHandle, api: str, seconds: float) -> None:
        histogram = self._runtime_latency
        if histogram is not None and api:
            platform = handle.servable.platform
            runtime = "TF1" if platform == "tensorflow" else platform  # TFS's name for TF's
            histogram.observe(seconds * 1e6, handle.id.name, api, runtime)

    def runs_inline(self, servable: Any, key: Hashable) -> bool:
        return self._cost(servable, key).inline

    async def run(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        key: Hashable,
        timeout: float | None,
        api: str = "",
    ) -> Any:
        """Runs `call()` (a model call on `handle`'s servable) and releases the handle after.

        `key` names the call for its cost (the signature name, with the request's size class
        where the cost depends on it); `timeout` in seconds (None: no limit) answers
        DEADLINE_EXCEEDED when over; `api` ("Predict", "Classify", ...) labels the call's
        runtime latency (none recorded without it).
        """
        cost = self._cost(handle.servable, key)
        if cost.inline:
            started = time.perf_counter()
            try:
                result = call()
            finally:
                spent = time.perf_counter() - started
                cost.average = 0.9 * cost.average + 0.1 * spent
                if cost.average > 2 * self._inline_seconds:
                    cost.inline, cost.best, cost.samples = False, float("inf"), 0
                self._observe(handle, api, spent)
                handle.release()
            if timeout is not None and spent > timeout:
                raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
            return result
        return await self._run_in_pool(handle, call, cost, timeout, api)

    async def _run_in_pool(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        cost: _Cost,
        timeout: float | None,
        api: str,
    ) -> Any:
        limit = self._inline_seconds if getattr(handle.servable, "may_run_inline", True) else 0.0

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return call()
            finally:
                spent = time.perf_counter() - started
                self._observe(handle, api, spent)
                cost.best = min(cost.best, spent)
                cost.samples += 1
                if cost.samples >= self.POOL_WINDOW:
                    if cost.best < limit:
                        cost.inline, cost.average = True, cost.best
                    cost.best, cost.samples = float("inf"), 0

        future = self._pool.submit(timed)
        future.add_done_callback(lambda _: handle.release())
        return await self._wait(asyncio.wrap_future(future), timeout)

    async def predict(
        self,
        handle: ServableHandle,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
        timeout: float | None,
    ) -> dict[str, np.ndarray]:
        """Runs a signature on `handle`'s servable: through its batch queue when it has one
        for this signature (the batching wrapper's `submit`), else through `run`."""
        servable = handle.servable
        submit = getattr(servable, "submit", None)
        if submit is not None:
            started = time.perf_counter()
            try:
                future = submit(signature, inputs, output_names)
            except BaseException:
                handle.release()
                raise
            if future is not None:

                def done(_: Any) -> None:
                    self._observe(handle, "Predict", time.perf_counter() - started)
                    handle.release()

                future.add_done_callback(done)
                return await self._wait(asyncio.wrap_future(future), timeout)
        return await self.run(
            handle,
            lambda: servable.run(signature, inputs, output_names),
            (signature.name, size_class(inputs)),
            timeout,
            "Predict",
        )

    @staticmethod
    async def _wait(awaitable: Any, timeout: float | None) -> Any:
        if timeout is None:
            return await awaitable
        try:
            return await asyncio.wait_for(asyncio.shield(awaitable), timeout)
        except TimeoutError:
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
