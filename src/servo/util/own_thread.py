"""Work that may block for long, awaited from the event loop on a daemon thread of its own.

Not an executor's thread: the loop's default executor has min(32, CPUs + 4) threads, so a
few waits that last (config reloads waiting for loads, shutdown steps) would queue the rest
behind them; and an executor's threads are joined when the interpreter exits, so one that
never returns would keep the process alive.

    result = await on_own_thread("servo-reload-rpc", lambda: core.reload_config(config))
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def on_own_thread(name: str, work: Callable[[], T]) -> T:
    """`work()`'s result, run on a new daemon thread named `name`; its exception is raised
    here. When the await is cancelled the thread runs on, and its outcome is dropped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the caller went away
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # handed to the caller
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
