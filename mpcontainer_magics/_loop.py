"""The one sync bridge: a private event loop on a daemon thread.

Magics are plain functions, yet a Jupyter kernel already runs an event loop in the main
thread, so ``asyncio.run()`` would fail there (and nesting loops is fragile). Like IPython's
``%%script``, we keep our own loop on a background thread and submit coroutines to it.

The calling thread keeps control while it waits: it runs a ``poll`` callback every few
milliseconds (the magics print streamed output from there, so output lands in the right
cell), and a Ctrl-C (KeyboardInterrupt in the main thread) cancels the task and waits for its
cleanup, so containers are removed before the interrupt reaches the user.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: How long an interrupted task may take to clean up (kill + remove containers).
CLEANUP_SECONDS = 30.0


class LoopThread:
    """An event loop running forever on its own daemon thread, started on first use."""

    def __init__(self, name: str = "mpcontainer-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name=self._name, daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop and return at once (fire and forget, or wait later)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        poll: Callable[[], None] | None = None,
        interval: float = 0.02,
    ) -> T:
        """Run ``coro`` to completion on the loop; call ``poll`` while waiting."""
        loop = self.loop
        started: concurrent.futures.Future[asyncio.Task[T]] = concurrent.futures.Future()
        finished = threading.Event()

        def start() -> None:
            try:
                task = loop.create_task(coro)
            except BaseException as exc:  # e.g. not a coroutine: tell the caller, never hang
                started.set_exception(exc)
                return
            task.add_done_callback(lambda _: finished.set())
            started.set_result(task)

        loop.call_soon_threadsafe(start)
        task = started.result()
        try:
            while not finished.wait(interval):
                if poll is not None:
                    poll()
        except KeyboardInterrupt:
            loop.call_soon_threadsafe(task.cancel)
            finished.wait(CLEANUP_SECONDS)
            raise
        finally:
            if poll is not None:
                poll()
        return task.result()

    def close(self) -> None:
        """Stop the loop and its thread; pending tasks are cancelled first."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return

        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(CLEANUP_SECONDS)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(CLEANUP_SECONDS)
            if not loop.is_running():
                loop.close()
