"""ReadWatch: a read past its deadline ends with ReadTimeout, others are left alone, and a
request's own cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from servo.apis.rest.read_watch import ReadTimeout, ReadWatch


def test_a_read_past_its_deadline_times_out_and_others_finish() -> None:
    async def go() -> None:
        watch = ReadWatch(0.05)
        never = asyncio.get_running_loop().create_future()
        with pytest.raises(ReadTimeout):
            await watch.read(never)
        assert await watch.read(asyncio.sleep(0, "body")) == "body"
        slow_but_in_time = asyncio.sleep(0.01, "late body")
        assert await watch.read(slow_but_in_time) == "late body"
        assert not watch._reads  # nothing left behind
        await asyncio.sleep(0.1)
        assert watch._sweeper is not None and watch._sweeper.done()  # idle: no task pending

    asyncio.run(go())


def test_a_cancelled_request_is_cancelled_not_timed_out() -> None:
    async def go() -> None:
        watch = ReadWatch(30)
        started = asyncio.Event()

        async def request() -> None:
            started.set()
            await watch.read(asyncio.get_running_loop().create_future())

        task = asyncio.ensure_future(request())
        await started.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
