"""Run the package's coroutines from synchronous script code, with or without a running loop.

:class:`LoopThread` owns one event loop in a daemon thread: objects built on it (the
pipeline's app, its locks' events) stay on that loop for their whole life, and a call from
any thread - also one whose own loop is running (a notebook, an async script) - blocks only
itself on the result. :func:`run_sync` runs a one-off coroutine: ``asyncio.run`` when no loop
runs here, else in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result; in a worker thread when this thread's loop is running."""
    if not _loop_running():
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ringrift-api") as pool:
        return pool.submit(asyncio.run, coro).result()


class LoopThread:
    """One event loop in a daemon thread; :meth:`call` runs a coroutine on it and waits."""

    def __init__(self, name: str = "ringrift-api-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("LoopThread.call from its own loop: await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """The async twin: await the result from the caller's own loop."""
        loop = self._ensure()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        if not thread.is_alive():
            loop.close()
