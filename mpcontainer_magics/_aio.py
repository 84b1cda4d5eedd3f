"""Small asyncio helpers the whole package shares (private).

- ``gather_or_cancel``: gather, but the first failure cancels (and awaits) the rest;
- ``finish_despite_cancel``: cleanup that completes even when its task is cancelled;
- ``in_thread``: blocking work on a worker thread, never abandoned half-way;
- ``once``: one computation per key, shared by concurrent callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K")


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather`` but on the first failure cancel (and await) the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except asyncio.CancelledError:
        # gather has cancelled each task once; wait for their cleanup (containers removed).
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    except Exception:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def finish_despite_cancel(work: Awaitable[T]) -> T:
    """Await ``work`` to completion even if this task is cancelled, once or many times.

    For cleanup (creating-then-removing, removing): a bare ``asyncio.shield`` stops waiting at
    the next cancellation, so the task would end while the container still exists. The
    cancellation is re-raised once the work is done.
    """
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it: the cancellation wins
        raise asyncio.CancelledError
    return future.result()


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking ``function`` on a worker thread, not returning before it has finished.

    A thread cannot be stopped. If we are cancelled, wait for it anyway: the caller may then
    remove what it writes into, which must not race a thread still writing.
    """
    return await finish_despite_cancel(asyncio.to_thread(function, *args, **kwargs))


async def once(memo: dict[K, asyncio.Task[T]], key: K, compute: Callable[[], Awaitable[T]]) -> T:
    """``compute()`` once per key, shared by concurrent callers; a failure is not kept.

    Callers await the task itself, so cancelling them (Ctrl-C) cancels the work too.
    """
    task = memo.get(key)
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        task = memo[key] = asyncio.ensure_future(compute())
    return await task
