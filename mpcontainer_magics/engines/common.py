"""What both engines share: the resolution cache, pulls, the bookkeeping of what was made.

- Resolution: a reference is resolved through the registry client once per engine
  (``refresh`` asks again) and kept in the cache (:mod:`.resolutions`); when its registry
  cannot be reached, what it resolved to last stands in (``_lookup``), and a pull that then
  succeeds from what the engine holds says so in a note. The pull of a platform the engine
  does not hold fails with the registry's own error (``offline_failure``). A resolution a
  mirror served says so in a note too. With ``resolve_from = "cache"`` (a classroom's
  prefetched images) what the cache knows is used without asking the registry at all.
- Pulls: one at a time per (reference, platform), shared by concurrent callers, each of whom
  sees its progress (:class:`PullProgress` passes it on, and replays where it is to a
  caller who joins late); a pull of what is already here reports ``(total, total)`` once.
- Bookkeeping: the containers an engine made (``_live``) and the images it made (``_made``,
  oldest first), removed by ``aclose`` in the one safe order: containers, then images
  newest first (a snapshot goes before the snapshot it was made from), then connections.
- CPU models: which model QEMU emulates for an emulated platform (:mod:`.cpu_models`),
  proven once per engine by ``_try_cpu_model`` and given to containers as ``QEMU_CPU``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from .._aio import once
from ..errors import EngineError, InvalidArgument, RegistryError
from ..platforms import Platform
from .base import Engine, ProgressCallback, PulledImage
from .cpu_models import CpuModels, ModelCheck, with_model
from .resolutions import Resolutions
from .store import default_cache_dir

if TYPE_CHECKING:
    from ..registry import RegistryClient, ResolvedImage

#: What an engine keeps about each container it made.
C = TypeVar("C")


class PullProgress:
    """The byte counts of one pull, passed on to every caller waiting for it."""

    def __init__(self) -> None:
        self.listeners: list[ProgressCallback] = []
        self.last: tuple[int, int | None] | None = None

    def add(self, listener: ProgressCallback) -> None:
        self.listeners.append(listener)
        if self.last is not None:  # joined a pull under way: where it is
            listener(*self.last)

    def __call__(self, done: int, total: int | None) -> None:
        self.last = (done, total)
        for listener in list(self.listeners):
            listener(done, total)

    def finish(self, total: int) -> None:
        """The pull is over: everything is here (said once, unless it was said already)."""
        if self.last != (total, total):
            self(total, total)


def _succeeded(task: asyncio.Task[PulledImage]) -> bool:
    return not task.cancelled() and task.exception() is None


def missing_path(path: str) -> InvalidArgument:
    """``copy_from`` of a path the container lacks (both engines say it alike)."""
    return InvalidArgument(
        f"{path} does not exist in the container; check the name, e.g. list "
        f"{posixpath.dirname(path.rstrip('/')) or '/'} with ls"
    )


def not_a_directory(target: str, why: str) -> InvalidArgument:
    """``copy_to`` through a path that is a file in the container (both engines refuse it)."""
    return InvalidArgument(
        f"cannot copy to {target} in the container: {why}; copy to a path whose parents are "
        "directories (or remove that file first)"
    )


class EngineBase(Engine, Generic[C]):
    """The shared half of an engine; a subclass says how to fetch and how to remove."""

    def __init__(
        self, registry: RegistryClient, cache_dir: Path | None = None, where: str = ""
    ) -> None:
        self.registry = registry
        #: The CPU models emulated platforms get; the client shares one with all its engines.
        self.cpu_models = CpuModels()
        self._models = ModelCheck(
            self._try_cpu_model, where or f"the {self.name} engine", self.note
        )
        self.resolutions = Resolutions(cache_dir or default_cache_dir())
        #: "registry": ask it, the cache standing in when it is unreachable; "cache": use
        #: what the cache knows without asking (zero requests for prefetched images).
        self.resolve_from = "registry"
        self._resolved: dict[str, ResolvedImage] = {}
        # Names resolved from the cache: the registry's error, and what a pull then says.
        self._offline: dict[str, tuple[RegistryError, str]] = {}
        self._pulls: dict[tuple[str, Platform], asyncio.Task[PulledImage]] = {}
        self._progress: dict[tuple[str, Platform], PullProgress] = {}
        self._sizes: dict[str, int] = {}  # image ID -> bytes its pull reported
        self._live: dict[str, C] = {}  # containers made and not removed yet
        self._made: dict[str, None] = {}  # IDs of images made here, oldest first

    # -- images ------------------------------------------------------------------------------

    async def image_platforms(self, reference: str) -> list[Platform]:
        return (await self._resolve(reference)).platforms()

    async def _resolve(self, reference: str, refresh: bool = False) -> ResolvedImage:
        if refresh or reference not in self._resolved:
            self._resolved[reference] = await self._lookup(reference)
        return self._resolved[reference]

    async def _lookup(self, reference: str) -> ResolvedImage:
        """What ``reference`` points to now, asked of its registry; when the registry cannot
        be reached (or refuses: a rate limit), what it pointed to last time, if the cache
        knows (as Docker runs a local image then)."""
        if self.resolve_from == "cache":
            recalled = self.resolutions.recall(reference)
            if recalled is not None:
                self.note(recalled.prefetched_note(reference))
                return recalled.resolved
        try:
            resolved = await self.registry.resolve(reference)
        except RegistryError as failure:  # not ImageNotFound: a name gone is gone
            recalled = self.resolutions.recall(reference)
            if recalled is None:
                raise
            self._offline[reference] = (failure, recalled.note(reference, failure))
            return recalled.resolved
        self._offline.pop(reference, None)
        self.resolutions.remember(reference, resolved)
        if resolved.mirror is not None:
            self.note(f"{reference}: resolved through mirror {resolved.mirror}")
        return resolved

    def offline_failure(self, reference: str) -> RegistryError | None:
        """The registry's error, when ``reference`` was resolved from the cache instead."""
        offline = self._offline.get(reference)
        return offline[0] if offline else None

    async def pull(
        self,
        reference: str,
        platform: Platform,
        *,
        refresh: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
        key = (reference, platform)
        pulled = self._pulls.get(key)
        if refresh and pulled is not None and pulled.done():
            del self._pulls[key]
        elif pulled is not None and pulled.done() and _succeeded(pulled):
            image = pulled.result()
            if on_progress is not None:  # here already: all of it at once
                size = self._sizes.get(image.image_id, 0)
                on_progress(size, size)
            return image
        progress = self._progress.setdefault(key, PullProgress())
        if on_progress is not None:
            progress.add(on_progress)
        try:
            return await once(
                self._pulls, key, lambda: self._measured(reference, platform, refresh, progress)
            )
        finally:
            if on_progress is not None:
                progress.listeners.remove(on_progress)
            if not progress.listeners and self._progress.get(key) is progress:
                del self._progress[key]

    async def _measured(
        self, reference: str, platform: Platform, refresh: bool, progress: PullProgress
    ) -> PulledImage:
        progress.last = None  # a new attempt starts from zero
        image, size = await self._fetch(reference, platform, refresh, progress)
        self._sizes[image.image_id] = size
        if reference in self._offline:  # it ran from the cache: say so, once per pull
            self.note(self._offline[reference][1])
        progress.finish(size)
        return image

    # -- CPU models --------------------------------------------------------------------------

    async def _with_cpu_model(self, platform: Platform, env: dict[str, str]) -> dict[str, str]:
        """``env`` of a container of ``platform``, with the CPU model its emulator should
        use (``QEMU_CPU``) when it is emulated here and the user set none."""
        if not await self._emulates(platform):
            return env
        return with_model(env, await self._models.model_for(platform, self.cpu_models))

    @abc.abstractmethod
    async def _emulates(self, platform: Platform) -> bool:
        """Whether containers of ``platform`` run under QEMU on this engine."""

    @abc.abstractmethod
    async def _try_cpu_model(self, platform: Platform, model: str) -> str | None:
        """Run a tiny program of ``platform`` with ``QEMU_CPU=model``: None when it ran,
        else what QEMU said."""

    @abc.abstractmethod
    async def _fetch(
        self, reference: str, platform: Platform, refresh: bool, on_progress: ProgressCallback
    ) -> tuple[PulledImage, int]:
        """Make ``platform`` of ``reference`` available here, pinned: the image, and its
        size in bytes (the total a pull reports; ``on_progress`` follows the bytes fetched)."""

    # -- bookkeeping -------------------------------------------------------------------------

    def _made_here(self, image: PulledImage) -> PulledImage:
        """Record an image this engine made, for ``aclose`` to remove."""
        self._made[image.image_id] = None
        return image

    async def aclose(self) -> None:
        # Synchronous on purpose: at interpreter exit (atexit) no thread pool accepts work
        # any more, and closing is the last thing an engine does anyway.
        try:
            self._remove_containers_now()
            self._live.clear()
            for image_id in reversed(list(self._made)):
                with contextlib.suppress(EngineError, OSError):
                    self._remove_image_now(image_id)
            self._made.clear()
        finally:
            await self.registry.aclose()
            self._disconnect()

    @abc.abstractmethod
    def _remove_containers_now(self) -> None:
        """Remove every container this process made (blocking; failures are skipped)."""

    @abc.abstractmethod
    def _remove_image_now(self, image_id: str) -> None:
        """Remove an image this process made (blocking); a missing one is not an error."""

    def _disconnect(self) -> None:
        """Release the engine's own connections (the registry client is closed already)."""
