"""The interface every container engine implements (Docker now, the embedded engine later).

An engine knows three things: which platform it runs natively and which it can emulate,
how to get an image for one platform *pinned* (so later runs cannot drift to another
platform's image), and how to run an argv in a fresh container while streaming its output.
Everything is async; blocking client libraries are wrapped in threads by the engine itself.

``run`` must be cancellation-safe: when its task is cancelled (timeout, Ctrl-C) the container
is stopped and removed before the cancellation propagates.
"""

from __future__ import annotations

import abc
import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from ..platforms import Platform

T = TypeVar("T")

#: ``on_output(stream, chunk)`` with stream "stdout" or "stderr"; called on the event loop.
OutputCallback = Callable[[str, bytes], None]

#: Label keys put on everything we create, so leftovers can be found and attributed.
LABEL_MANAGED = "io.mpcontainer-magics.managed"
LABEL_HOST = "io.mpcontainer-magics.host"
LABEL_PID = "io.mpcontainer-magics.pid"
LABEL_PID_START = "io.mpcontainer-magics.pid-start"


@dataclass(frozen=True)
class PulledImage:
    """An image made available for exactly one platform, pinned by an engine-local ID."""

    reference: str  # as the user wrote it, e.g. "alpine:3.16"
    platform: Platform
    image_id: str  # what the engine runs; never the tag, which may be re-pointed
    digest: str | None  # the per-platform manifest digest, when known


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int
    duration_s: float


class Engine(abc.ABC):
    """A place where containers run."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def native_platform(self) -> Platform:
        """The platform containers run on without emulation."""

    @abc.abstractmethod
    async def emulated_platforms(self) -> list[Platform]:
        """Foreign platforms this engine can run through emulation (may be empty)."""

    @abc.abstractmethod
    async def image_platforms(self, reference: str) -> list[Platform]:
        """Every platform the image offers."""

    @abc.abstractmethod
    async def pull(
        self, reference: str, platform: Platform, *, refresh: bool = False
    ) -> PulledImage:
        """Make ``reference`` available for ``platform``; cached unless ``refresh``."""

    @abc.abstractmethod
    async def run(
        self,
        image: PulledImage,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecOutcome:
        """Run ``argv`` in a new container of ``image``, removed afterwards."""

    @abc.abstractmethod
    async def reap_orphans(self) -> int:
        """Remove containers left by processes of this host that no longer exist."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Remove everything this process created and release connections."""


def process_start_ticks(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" if unknown).

    Together with the PID it identifies a process even after the PID is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The command name (field 2) may contain spaces; fields after ")" are fixed.
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return ""


def owner_labels() -> dict[str, str]:
    """Labels naming this project and this process (host, PID, PID start time)."""
    pid = os.getpid()
    return {
        LABEL_MANAGED: "1",
        LABEL_HOST: socket.gethostname(),
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start_ticks(pid),
    }


def owner_is_gone(labels: Mapping[str, str]) -> bool:
    """True when the labels name a process of this host that no longer exists.

    Containers of other hosts (a shared remote daemon) are never judged gone.
    """
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    recorded = labels.get(LABEL_PID_START, "")
    return bool(recorded) and recorded != process_start_ticks(pid)


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
        raise asyncio.CancelledError
    return future.result()
