"""on_own_thread: a result or an exception carried back to the loop; a thread per call, so
many long waits at once do not queue; a cancelled await leaves the thread to finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from servo.util.own_thread import on_own_thread


def test_the_result_and_the_exception_come_back() -> None:
    async def main() -> None:
        assert await on_own_thread("t", lambda: threading.current_thread().name) == "t"
        with pytest.raises(KeyError, match="missing"):
            await on_own_thread("t", lambda: {}["missing"])

    asyncio.run(main())


def test_more_waits_at_once_than_an_executor_has_threads_all_run() -> None:
    together = threading.Barrier(40, timeout=30)

    async def main() -> list[int]:
        return await asyncio.gather(*(on_own_thread("t", together.wait) for _ in range(40)))

    assert sorted(asyncio.run(main())) == list(range(40))


def test_a_cancelled_wait_leaves_its_thread_to_end() -> None:
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(30)
        ended.set()

    async def main() -> None:
        task = asyncio.ensure_future(on_own_thread("t", work))
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the thread finishes, settling nothing: its caller went away
        assert await asyncio.to_thread(ended.wait, 30)

    asyncio.run(main())
