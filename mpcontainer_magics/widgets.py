"""The widget app: pick an image and platforms, type a command, click Run, compare.

    import mpcontainer_magics as mpc
    mpc.ui(image="alpine:3.23")

Everything it does goes through the same async :class:`~.client.Client` API as the magics.
It never blocks the kernel: button clicks only *start* coroutines on a private event loop
thread (:class:`._loop.LoopThread`), so the kernel keeps answering (and Stop keeps working)
while containers run. Output is appended from that thread with ``Output.append_stdout`` and
``append_display_data`` (never ``with out:``, which only works in the kernel's own thread).

Runs happen in a session (one live container per platform, see :mod:`.session`), so that the
files of the last run can be published as one multi-platform image with the Publish button.
The session starts afresh when the image or the platforms change; it is removed by
``app.close()``, at interpreter exit, and (as every container of a dead kernel) by the next
kernel that loads the extension.

This module imports ipywidgets; ``mpcontainer_magics.ui()`` imports it on first use only, so
``%load_ext mpcontainer_magics`` stays fast.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import html
import itertools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import ipywidgets as w

from ._loop import CLEANUP_SECONDS, LoopThread
from .client import Client, open_engine
from .defaults import DEFAULT_IMAGE
from .errors import InvalidArgument, MPCError
from .platform_report import PlatformReport
from .platforms import Platform
from .publish import Published
from .results import RunResult
from .targets import Target, parse_request
from .widget_parts import PROGRESS_INTERVAL, Job, PlatformCard, show

#: The platforms the picker always lists (others the image offers are added after these).
COMMON_PLATFORMS = (
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/s390x",
    "linux/ppc64le",
    "linux/386",
    "linux/riscv64",
)

#: At most this often (seconds) a platform's Output gets a message while lines pour in; the
#: first line after a quiet spell goes out at once.
FLUSH_INTERVAL = 0.05


_session_numbers = itertools.count(1)
_apps: weakref.WeakSet[ContainerApp] = weakref.WeakSet()


def _close_all() -> None:
    for app in list(_apps):
        with contextlib.suppress(Exception):  # interpreter exit: do what can be done
            app.close()


atexit.register(_close_all)


class ContainerApp(w.VBox):
    """The widget app: image, platform picker, command, Run/Stop, live output, table, Publish.

    ``image`` is looked up at once (which platforms it offers); ``platforms`` pre-ticks some
    (default: every platform the image offers that can run here); ``engine`` is "auto",
    "docker" or "embedded"; ``publish_to`` presets the Publish reference; ``session`` names
    the session the runs happen in (default ``ui-N``). ``bridge`` and ``connect`` share a
    loop and client (``%container ui`` passes the magics' own). ``app.close()`` removes its
    containers.

    Its parts are attributes, so code can drive it:
    ``image_box``, ``platform_boxes`` ({"linux/arm64": Checkbox}), ``command_box``,
    ``run_button``, ``stop_button``, ``status``, ``cards`` ({"linux/arm64": PlatformCard}, each
    with ``.output``, ``.pull_bar`` (max: the bytes to pull) and ``.pull_bytes``, its label),
    ``table`` (the result), ``publish_ref``,
    ``publish_button``, ``publish_output``. After a run: ``result`` (a RunResult);
    ``report`` is the PlatformReport of the image; ``job`` what runs now (``app.wait()``).
    """

    def __init__(
        self,
        image: str | None = None,
        *,
        command: str = "uname -m",
        platforms: str | Sequence[str] | None = None,
        engine: str = "auto",
        publish_to: str = "",
        session: str | None = None,
        bridge: LoopThread | None = None,
        connect: Callable[[], Awaitable[Client]] | None = None,
    ) -> None:
        self._owns_bridge = bridge is None
        self._bridge = bridge or LoopThread("mpcontainer-ui")
        self._engine_kind = engine
        self._connect = connect
        self._client: Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._wanted = parse_request(platforms)  # None or "all": what the image offers
        self.session_name = session or f"ui-{next(_session_numbers)}"
        self._session_key: tuple[str, tuple[str, ...]] | None = None
        self._lookup: Job | None = None
        self._lookup_image = ""
        self.report: PlatformReport | None = None
        self.job: Job | None = None
        self.result: RunResult | None = None
        self.published: Published | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, list[tuple[str, str]]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        self._closed = False
        self._clicked = time.monotonic()
        self._make_inputs(image or "", command)
        self._make_outputs(publish_to)
        super().__init__(self._layout())
        self.add_class("mpc-app")  # CSS hooks, for styling and browser tests
        _apps.add(self)
        if self.image_box.value.strip():
            self.lookup()
        else:
            self._say("enter an image: its platforms are read from its registry")

    # -- the widgets -------------------------------------------------------------------------

    def _make_inputs(self, image: str, command: str) -> None:
        self.image_box = w.Text(
            value=image,
            placeholder=DEFAULT_IMAGE,
            description="image",
            continuous_update=False,  # value changes on Enter or when the box loses focus
            layout=w.Layout(width="36em"),
        )
        self.platform_boxes: dict[str, w.Checkbox] = {}
        self.picker = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.image_note = w.HTML("")
        for name in COMMON_PLATFORMS:
            self._checkbox(Platform.parse(name))
        self.command_box = w.Textarea(
            value=command,
            description="command",
            placeholder="uname -m",
            rows=4,
            layout=w.Layout(width="36em"),
        )
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.status = w.HTML("")
        self.image_box.observe(lambda _: self.lookup(), names="value")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.status.add_class("mpc-status")

    def _make_outputs(self, publish_to: str) -> None:
        self.cards: dict[str, PlatformCard] = {}
        self.columns = w.GridBox(
            layout=w.Layout(
                grid_template_columns="repeat(auto-fill, minmax(16em, 1fr))",
                grid_gap="6px",
                width="100%",
            )
        )
        self.table = w.Output()
        self.publish_ref = w.Text(
            value=publish_to,
            placeholder="registry.example:5000/me/hello:1",
            description="publish to",
            layout=w.Layout(width="36em"),
        )
        self.publish_button = w.Button(description="Publish", icon="upload", disabled=True)
        self.publish_button.on_click(lambda _: self.publish())
        self.publish_output = w.Output()
        self.table.add_class("mpc-result")

    def _layout(self) -> list[w.Widget]:
        return [
            self.image_box,
            self.image_note,
            self.picker,
            self.command_box,
            w.HBox([self.run_button, self.stop_button]),
            self.status,
            self.columns,
            self.table,
            w.HBox([self.publish_ref, self.publish_button]),
            self.publish_output,
        ]

    # -- connection --------------------------------------------------------------------------

    async def _connected(self) -> Client:
        if self._connect is not None:
            return await self._connect()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is None:
                self._client = Client(await open_engine(self._engine_kind))
            return self._client

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> Job:
        if self._closed:
            coro.close()
            raise RuntimeError("this app is closed; make a new one with mpc.ui()")
        return Job(self._bridge.loop, coro)

    # -- status ------------------------------------------------------------------------------

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = "#b00" if error else "#444"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _set_busy(self, busy: bool) -> None:
        self.run_button.disabled = busy
        self.stop_button.disabled = not busy
        self.publish_button.disabled = busy or self._session_key is None

    @property
    def waited_s(self) -> float:
        """Seconds since the last click on Run or Publish: pulls and session start included."""
        return time.monotonic() - self._clicked

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()

    # -- the platform picker -----------------------------------------------------------------

    def _checkbox(self, platform: Platform) -> w.Checkbox:
        box = w.Checkbox(
            value=False,
            description=str(platform),
            disabled=True,
            indent=False,
            layout=w.Layout(width="auto", margin="0 1.5em 0 0"),
        )
        self.platform_boxes[str(platform)] = box
        self.picker.children = (*self.picker.children, box)
        return box

    @property
    def selected_platforms(self) -> list[Platform]:
        return [
            Platform.parse(name)
            for name, box in self.platform_boxes.items()
            if box.value and not box.disabled
        ]

    def lookup(self) -> Job | None:
        """Read which platforms the image offers (from its registry) and update the picker."""
        image = self.image_box.value.strip()
        if not image:
            self._say("enter an image: its platforms are read from its registry")
            return None
        if self._lookup is not None and image == self._lookup_image:
            failed = self._lookup.done() and self._lookup.exception() is not None
            if not failed:
                return self._lookup
        self._lookup_image = image
        self._say(f"reading which platforms {image} offers…")
        self._lookup = self._spawn(self._read_platforms(image))
        return self._lookup

    async def _read_platforms(self, image: str) -> PlatformReport:
        try:
            report = await (await self._connected()).platforms(image)
        except MPCError as exc:
            if image == self._lookup_image:
                for box in self.platform_boxes.values():
                    box.disabled, box.value = True, False
                self.image_note.value = ""
                self._say(str(exc), error=True)
            raise
        if image == self._lookup_image:  # a later lookup supersedes this one
            self._show_platforms(report)
        return report

    def _show_platforms(self, report: PlatformReport) -> None:
        self.report = report
        for platform in report.offered:
            if platform.os == "linux" and not any(
                platform.matches(Platform.parse(n)) for n in self.platform_boxes
            ):
                self._checkbox(platform)
        for name, box in self.platform_boxes.items():
            platform = Platform.parse(name)
            offered = any(platform.matches(p) for p in report.offered)
            runs = report.runnable(platform)
            if not offered:
                how, ok = "not in image", False
            elif runs == "no emulation":
                how, ok = "no emulator here", False
            else:
                how, ok = runs, True
            tooltip = {
                "native": "runs natively on this engine",
                "emulated": "runs under QEMU user-mode emulation (slower)",
                "no emulator here": f"the {report.engine} engine cannot emulate {name} here",
                "not in image": f"{report.image} has no {name} variant",
            }[how]
            target = report.target(platform)
            if ok and target.node:  # with nodes: where it would run, and why there
                how, tooltip = f"{how} on {target.node}", target.why
            box.description = f"{name} ({how})"
            box.tooltip = tooltip
            wanted = self._wanted in (None, "all") or any(platform.matches(p) for p in self._wanted)
            box.disabled = not ok
            box.value = ok and wanted
        others = [str(p) for p in report.offered if p.os != "linux"]
        self.image_note.value = (
            f"<small>{html.escape(report.image or '')} also offers "
            f"{html.escape(', '.join(others))} (files only: these cannot run)</small>"
            if others
            else ""
        )
        usable = sum(not b.disabled for b in self.platform_boxes.values())
        self._say(
            f"{report.image}: {len(report.offered)} platforms offered, {usable} can run on the "
            f"{report.engine} engine ({report.native} native)"
        )

    # -- running -----------------------------------------------------------------------------

    def run(self) -> Job | None:
        """What the Run button does: start the command on the ticked platforms; returns at once."""
        if self.busy:
            self._say("still busy: wait, or click Stop", error=True)
            return None
        return self._start(self._run())

    def _start(self, coro: Coroutine[Any, Any, Any]) -> Job:
        self._clicked = time.monotonic()  # "done in" counts from here: what the user waited
        self._set_busy(True)
        self.job = job = self._spawn(coro)
        job.add_done_callback(self._finished)
        return job

    def stop(self) -> None:
        """What the Stop button does: cancel the run (its commands are killed); returns at once.

        The session's containers stay, so that the next run (or Publish) is quick.
        """
        if self.job is None or self.job.done():
            self._say("nothing is running")
            return
        self._say("stopping…")
        self.job.cancel()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the current job (run or publish) is done; its result, or raises."""
        if self.job is None:
            return None
        return self.job.wait(timeout)

    def _finished(self, job: Job) -> None:
        self._set_busy(False)
        if job.cancelled():
            self._say(f"stopped: the {job.kind} was cancelled")
            return
        exc = job.exception()
        if isinstance(exc, MPCError):
            self._say(str(exc), error=True)
        elif exc is not None:
            self._say(f"{type(exc).__name__}: {exc}", error=True)

    async def _run(self) -> RunResult:
        image = self.image_box.value.strip()
        command = self.command_box.value
        if not image:
            raise InvalidArgument("enter an image first")
        if not command.strip():
            raise InvalidArgument("write a command to run first")
        lookup = self.lookup()
        assert lookup is not None
        await asyncio.wrap_future(lookup._future)
        platforms = self.selected_platforms
        if not platforms:
            raise InvalidArgument("tick at least one platform to run on")
        client = await self._connected()
        await self._fresh_session(client, image, platforms)
        self.table.outputs = ()
        self._say(f"pulling {image} and starting the session on {len(platforms)} platforms…")
        shown: list[PlatformCard] = []  # this run's cards, once it knows its targets
        try:
            result = await client.run(
                command,
                platforms=platforms,
                image=image,
                session=self.session_name,
                on_targets=lambda targets: shown.extend(self._show_cards(targets)),
                on_progress=self._on_progress,
                on_line=self._on_line,
            )
        except BaseException:
            for card in shown:
                card.pull_failed_unless_done()
            raise
        finally:
            self._flush()
            # The session may run even when the command did not (Stop): keep it for Publish.
            running = self.session_name in client.session_names
            self._session_key = _session_key(image, platforms) if running else None
        for row in result:
            self.cards[str(row.platform)].pulled(row.image_digest)
        self.result = result
        show(self.table, result)
        failed = [str(r.platform) for r in result if not r.ok]
        self._say(
            f"done in {self.waited_s:.1f} s on {len(result)} platforms"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + f" (session {self.session_name}: Publish sends its files)",
            error=bool(failed),
        )
        return result

    def _show_cards(self, targets: Sequence[Target]) -> list[PlatformCard]:
        # On the loop, once the run knows its targets: before any pull or line.
        shown = []
        for target in targets:
            card = self.cards.get(str(target.platform))
            if card is None:
                card = self.cards[str(target.platform)] = PlatformCard(target.platform)
            card.reset(target.runs)
            card.pull_started()
            shown.append(card)
        self.columns.children = shown
        return shown

    def _on_progress(self, platform: Platform, done: int, total: int | None) -> None:
        # Any thread. The bar counts the platform's bytes; an image already here fills it.
        card = self.cards[str(platform)]
        if card.pull_progress(done, total):  # held back: show it when the interval ends
            loop = self._bridge.loop
            loop.call_soon_threadsafe(loop.call_later, PROGRESS_INTERVAL, card.show_progress)

    async def _fresh_session(
        self, client: Client, image: str, platforms: Sequence[Platform]
    ) -> None:
        """Stop the app's session when the image or the platforms changed since it started."""
        if self.session_name in client.session_names and self._session_key != _session_key(
            image, platforms
        ):
            self._say("the image or the platforms changed: starting a new session…")
            await client.stop(self.session_name)
        self._session_key = None

    def _on_line(self, platform: Platform, stream: str, line: str) -> None:
        # Any thread: queue the line; the loop sends it out now, or within FLUSH_INTERVAL.
        with self._lock:
            self._pending.setdefault(str(platform), []).append((stream, line))
        self._bridge.loop.call_soon_threadsafe(self._schedule_flush)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            delay = max(0.0, self._last_flush + FLUSH_INTERVAL - time.monotonic())
            self._flush_handle = self._bridge.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        with self._lock:
            pending, self._pending = self._pending, {}
        self._last_flush = time.monotonic()
        for name, items in pending.items():
            card = self.cards.get(name)
            if card is None:
                continue
            for stream, group in itertools.groupby(items, key=lambda item: item[0]):
                card.append(stream, [line for _, line in group])

    # -- publishing --------------------------------------------------------------------------

    def publish(self) -> Job | None:
        """What the Publish button does: push the last run's session as one image."""
        if self.busy:
            self._say("still busy: wait, or click Stop", error=True)
            return None
        reference = self.publish_ref.value.strip()
        if not reference:
            self._say("enter a reference to publish to, e.g. registry:5000/me/hello:1", error=True)
            return None
        if self._session_key is None:
            self._say("run a command first: Publish sends the files of its session", error=True)
            return None
        return self._start(self._publish(reference))

    async def _publish(self, reference: str) -> Published:
        client = await self._connected()
        session = client.get_session(self.session_name)
        self._say(f"publishing {', '.join(map(str, session.platforms))} to {reference}…")
        self.publish_output.outputs = ()
        published = await client.publish(reference, session)
        self.published = published
        show(self.publish_output, published.to_frame())
        self.publish_output.append_stdout(f"{published.reference}\n")
        self._say(f"published {len(published.variants)} platforms: {published.reference}")
        return published

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop what runs, remove the app's session (and its own engine connection)."""
        if self._closed:
            return
        self._closed = True
        _apps.discard(self)
        job = self.job
        if job is not None and not job.done():
            job.cancel()
            with contextlib.suppress(Exception):  # cancelled or failed: over either way
                job.wait(CLEANUP_SECONDS)
        try:
            if self._connect is None and self._client is not None:
                self._bridge.run(self._client.aclose())
            elif self._connect is not None and self._session_key is not None:
                connect = self._connect

                async def stop_session() -> None:
                    client = await connect()
                    if self.session_name in client.session_names:
                        await client.stop(self.session_name)

                self._bridge.run(stop_session())
        finally:
            self._client = None
            self._session_key = None
            if self._owns_bridge:
                self._bridge.close()
            for card in self.cards.values():
                card.close()
            super().close()


def _session_key(image: str, platforms: Sequence[Platform]) -> tuple[str, tuple[str, ...]]:
    return image, tuple(sorted(map(str, platforms)))
