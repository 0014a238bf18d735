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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from servo.core.servable_handle import ServableHandle
from servo.core.status import Code, ServoError
from servo.dtypes import DataType, base, to_numpy
from servo.platforms.servable import DEFAULT_SIGNATURE, ModelServable, Signature


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


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TFS's check that a request sends exactly the signature's inputs, of their dtypes."""
    expected = signature.inputs
    if inputs.keys() != expected.keys() and not (
        signature.defaults and len(inputs) < len(expected) and inputs.keys() <= expected.keys()
    ):
        sent, wanted = sorted(inputs), sorted(expected)
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
            f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}.",
        )
    for index, (alias, spec) in enumerate(expected.items()):
        array = inputs.get(alias)
        if array is None:
            continue
        want = to_numpy(spec.dtype)
        if array.dtype != want and not (want.kind == "O" and array.dtype.kind in "SUO"):
            raise ServoError(
                Code.INVALID_ARGUMENT,
                f"Expects arg[{index}] ({alias}) to be {_type_name(spec.dtype)} but "
                f"{_numpy_type_name(array.dtype)} is provided",
            )


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


class Runner:
    """Runs signatures where it is cheapest.

    A model call that takes less than `inline_seconds` (measured, as a moving average per
    servable and signature) runs on the event loop's thread: for small models a thread hop
    costs more than the model. Longer calls run on a pool of `threads` threads (the model
    runtimes release the interpreter lock while they compute), so the loop keeps serving and
    a deadline can answer DEADLINE_EXCEEDED while the run finishes in the background. A
    servable with `run_async` (the batching wrapper) is awaited instead.

    The handle is released when the run is over, never before, even after a deadline has
    answered the client: the version stays loaded while its code runs.

    Thread-safety: `run` is called from the event loop's thread.
    """

    def __init__(self, threads: int = 0, inline_seconds: float = 0.0002) -> None:
        self._pool = ThreadPoolExecutor(
            threads or max(2, os.cpu_count() or 2), thread_name_prefix="servo-run"
        )
        self._inline_seconds = inline_seconds
        self._cost: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def run(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        key: str,
        timeout: float | None,
    ) -> Any:
        """Runs `call()` (a model call on `handle`'s servable) and releases the handle after.

        `key` names the call for the cost average (usually the signature name); `timeout` in
        seconds (None: no limit) answers DEADLINE_EXCEEDED when over.
        """
        servable = handle.servable
        costs = self._cost.get(servable)
        if costs is None:
            costs = self._cost.setdefault(servable, {})
        cost = costs.get(key)
        if cost is not None and cost < self._inline_seconds:
            started = time.perf_counter()
            try:
                return call()
            finally:
                costs[key] = 0.9 * cost + 0.1 * (time.perf_counter() - started)
                handle.release()
        return await self._run_in_pool(handle, call, costs, key, timeout)

    async def _run_in_pool(
        self,
        handle: ServableHandle,
        call: Callable[[], Any],
        costs: dict[str, float],
        key: str,
        timeout: float | None,
    ) -> Any:
        def timed() -> Any:
            started = time.perf_counter()
            try:
                return call()
            finally:
                spent = time.perf_counter() - started
                old = costs.get(key)
                costs[key] = spent if old is None else 0.9 * old + 0.1 * spent

        future = self._pool.submit(timed)
        future.add_done_callback(lambda _: handle.release())
        wrapped = asyncio.wrap_future(future)
        if timeout is None:
            return await wrapped
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except TimeoutError:
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None

    async def run_async(
        self,
        handle: ServableHandle,
        awaitable: Any,
        timeout: float | None,
    ) -> Any:
        """Awaits a servable's coroutine (the batching path) and releases the handle after."""
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(lambda _: handle.release())
        if timeout is None:
            return await task
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise ServoError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
