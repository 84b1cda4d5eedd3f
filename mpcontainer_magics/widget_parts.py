"""The widget app's parts: a platform's column (:class:`PlatformCard`), a coroutine on the
app's loop (:class:`Job`), and showing objects in an ``Output`` from any thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import ipywidgets as w

from .platforms import Platform

#: Lines shown live per platform and run; the full text is in the result table.
MAX_LIVE_LINES = 2000
#: At most this often (seconds) a platform's pull bar moves (~10 updates/s); the last
#: count of a burst is shown when the interval is over, the end at once.
PROGRESS_INTERVAL = 0.1


def byte_label(done: int, total: int | None) -> str:
    """``"12.3/45.6 MB"`` (decimal units, as Docker counts), or ``"12.3 MB"`` while the
    total is unknown."""
    largest = max(done, total or 0)
    units = [(u, s) for u, s in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)) if largest >= s]
    if not units:
        return f"{done}/{total} B" if total is not None else f"{done} B"
    unit, scale = units[0]
    if total is None:
        return f"{done / scale:.1f} {unit}"
    return f"{done / scale:.1f}/{total / scale:.1f} {unit}"


class Job:
    """One coroutine on the app's loop: ``cancel()`` and ``wait()`` from any thread.

    Unlike the future of ``run_coroutine_threadsafe`` (which reports "cancelled" at once),
    a Job is done only when its task has finished, cleanup (containers stopped) included.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        self.kind = getattr(coro, "__name__", "job").strip("_")
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._future.cancel()
            self._future.set_running_or_notify_cancel()
        elif task.exception() is not None:
            self._future.set_exception(task.exception())
        else:
            self._future.set_result(task.result())

    def cancel(self) -> None:
        """Ask the task to stop (it runs in order after ``_start``, never before)."""
        if not self._future.done():
            self._loop.call_soon_threadsafe(lambda: self._task is not None and self._task.cancel())

    def done(self) -> bool:
        return self._future.done()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        self._future.add_done_callback(lambda _: callback(self))

    def wait(self, timeout: float | None = None) -> Any:
        """The coroutine's result (raises its exception, or CancelledError when stopped)."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)


class PlatformCard(w.VBox):
    """One platform's column: name and how it runs, pull bar (bytes), live output."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.header = w.HTML(f"<b>{html.escape(str(platform))}</b>")
        self.pull_bar = w.IntProgress(
            value=0,
            min=0,
            max=1,
            description="pull",
            style={"description_width": "initial"},
            layout=w.Layout(width="9em", min_width="9em"),
        )
        self.pull_bytes = w.Label("")  # "12.3/45.6 MB"
        self.pull_state = w.HTML("")
        self.output = w.Output(
            layout=w.Layout(
                max_height="18em", overflow="auto", border="1px solid #eee", padding="2px"
            )
        )
        self.lines = 0
        # Pull progress arrives from any thread (Docker's pull streams on one of its own):
        # the lock keeps the bar's updates in order, and at most one per PROGRESS_INTERVAL.
        self._progress_lock = threading.Lock()
        self._progress: tuple[int, int | None] | None = None
        self._progress_shown = 0.0
        self._progress_due = False
        super().__init__(
            [
                self.header,
                w.HBox(
                    [self.pull_bar, self.pull_bytes, self.pull_state],
                    layout=w.Layout(flex_flow="row wrap", align_items="center"),
                ),
                self.output,
            ],
            layout=w.Layout(border="1px solid #ccc", padding="4px", min_width="0"),
        )
        self.add_class("mpc-platform-card")  # CSS hooks, for styling and browser tests
        self.output.add_class("mpc-platform-output")
        self.pull_bytes.add_class("mpc-pull-bytes")

    def reset(self, how: str) -> None:
        self.header.value = f"<b>{html.escape(str(self.platform))}</b> <i>({how})</i>"
        with self._progress_lock:
            self._progress, self._progress_shown, self._progress_due = None, 0.0, False
            self.pull_bar.max, self.pull_bar.value = 1, 0
            self.pull_bar.bar_style = ""
            self.pull_bytes.value = ""
        self.pull_state.value = "waiting"
        self.output.outputs = ()  # never clear_output() from a thread: it uses `with out:`
        self.lines = 0

    def pull_started(self) -> None:
        self.pull_bar.bar_style = "info"
        self.pull_state.value = "pulling…"

    def pull_progress(self, done: int, total: int | None) -> bool:
        """Show ``done`` of ``total`` bytes (any thread), unless the bar moved less than
        PROGRESS_INTERVAL ago: then True, once, and ``show_progress()`` is due later."""
        with self._progress_lock:
            self._progress = (done, total)
            now = time.monotonic()
            final = total is not None and done >= total
            if not final and now - self._progress_shown < PROGRESS_INTERVAL:
                due, self._progress_due = not self._progress_due, True
                return due
            self._show(now)
        return False

    def show_progress(self) -> None:
        """Show the last count :meth:`pull_progress` held back."""
        with self._progress_lock:
            if self._progress_due:
                self._show(time.monotonic())

    def _show(self, now: float) -> None:  # with the lock held
        assert self._progress is not None
        done, total = self._progress
        self._progress_shown, self._progress_due = now, False
        if total is None:  # unknown yet: the bar waits, the label counts
            self.pull_bar.max, self.pull_bar.value = 1, 0
        else:
            self.pull_bar.max = max(total, 1)
            self.pull_bar.value = min(done, self.pull_bar.max) if total else 1
        self.pull_bytes.value = byte_label(done, total)
        if self.pull_state.value == "pulling…":
            self.pull_state.value = ""
        if total is not None and done >= total:  # the engine's last count: pulled
            self.pull_bar.bar_style = "success"

    def pulled(self, digest: str | None) -> None:
        with self._progress_lock:
            self.pull_bar.value = self.pull_bar.max
            self.pull_bar.bar_style = "success"
            self._progress_due = False  # the engine's last count, (total, total), is shown
        self.pull_state.value = (
            f"<code title='{digest}'>{html.escape(digest[:19])}…</code>" if digest else "local"
        )

    def pull_failed_unless_done(self) -> None:
        with self._progress_lock:
            done = self.pull_bar.bar_style == "success"
        if not done:
            self.pull_failed()

    def pull_failed(self) -> None:
        with self._progress_lock:
            self.pull_bar.bar_style = "danger"
            self._progress_due = False
        self.pull_state.value = "pull failed"

    def append(self, stream: str, lines: Sequence[str]) -> None:
        room = MAX_LIVE_LINES - self.lines
        if room <= 0:
            return
        shown = list(lines[:room])
        self.lines += len(lines)
        if self.lines > MAX_LIVE_LINES:
            shown.append("… (more output: see the table below)")
        text = "".join(line + "\n" for line in shown)
        if stream == "stderr":
            self.output.append_stderr(text)
        else:
            self.output.append_stdout(text)


def show(output: Any, obj: Any) -> None:
    """Append ``obj`` to ``output`` as both plain text and HTML, whatever the shell.

    Not ``Output.append_display_data``: it formats with the current shell's formatters, and
    a terminal IPython has HTML switched off (with no shell at all, it would make one).
    """
    data = {"text/plain": repr(obj)}
    to_html = getattr(obj, "_repr_html_", None)
    if to_html is not None:
        data["text/html"] = to_html()
    output.outputs += ({"output_type": "display_data", "data": data, "metadata": {}},)
