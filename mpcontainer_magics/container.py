"""Immutable, lazily evaluated containers, named after Dagger's Python SDK.

    ctr = client.container(platform="linux/arm64").from_("alpine:3.23")
    out = await ctr.with_exec(["uname", "-m"]).stdout()

Builder calls (``from_``, ``with_exec``, ``with_env_variable``…) only record what to do
(a :class:`~.recipes.ContainerRecipe`) and return a new object; nothing runs until a terminal
call (``stdout()``, ``entries()``, ``export()``…) is awaited. Then the chain is evaluated
once per client and remembered (see :mod:`.evaluate`), so ``ctr.stdout()`` followed by
``ctr.stderr()`` runs the command once, and two containers sharing a prefix share its work.
Their files are :class:`~.directory.Directory` objects.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .directory import Directory, File
from .errors import ExecUnsupported, InvalidArgument
from .evaluate import BuildContext
from .platforms import Platform
from .recipes import (
    ContainerPath,
    ContainerRecipe,
    CopyDir,
    Exec,
    FromImage,
    MountDir,
    Rootfs,
    SetEnv,
    SetWorkdir,
    Step,
)


@dataclass(frozen=True)
class Container:
    """A container for one platform, described step by step; see the module docstring."""

    _ctx: BuildContext = field(repr=False, compare=False)
    _recipe: ContainerRecipe

    def from_(self, address: str) -> Container:
        """Start from the image ``address`` (its variant for this container's platform)."""
        if not address or not address.strip():
            raise InvalidArgument("from_() needs an image reference such as alpine:3.23")
        return self._rebased(FromImage(address.strip()))

    def with_rootfs(self, directory: Directory) -> Container:
        """A container whose filesystem is exactly ``directory``, for this platform."""
        return self._rebased(Rootfs(directory._source))

    def with_exec(
        self, args: Sequence[str], *, expect: Literal["success", "any"] = "success"
    ) -> Container:
        """Run ``args`` (an argv, not a shell string). A non-zero exit fails the evaluation
        unless ``expect="any"``; then ``exit_code()`` tells it."""
        if isinstance(args, str) or not args:
            raise InvalidArgument(
                "with_exec() takes a non-empty argv list such as ['uname', '-m'], "
                "or ['sh', '-c', 'a shell command']"
            )
        if expect not in ("success", "any"):
            raise InvalidArgument(f"expect must be 'success' or 'any', not {expect!r}")
        platform = self._recipe.platform
        if platform is not None and platform.os != "linux":
            raise ExecUnsupported(platform)
        return self._then(Exec(tuple(map(str, args)), expect))

    def with_env_variable(self, name: str, value: str) -> Container:
        if not name or "=" in name:
            raise InvalidArgument(
                f"bad environment variable name {name!r}; give a name without '=', e.g. 'PATH'"
            )
        return self._then(SetEnv(name, str(value)))

    def with_workdir(self, path: str) -> Container:
        """Later commands start in ``path`` (relative paths extend the current workdir)."""
        return self._then(SetWorkdir(path))

    def with_mounted_directory(self, path: str, directory: Directory) -> Container:
        """``directory`` mounted at ``path`` for later commands; not part of the rootfs."""
        return self._then(MountDir(path, directory._source))

    def with_directory(self, path: str, directory: Directory) -> Container:
        """``directory``'s contents copied into the filesystem at ``path``."""
        return self._then(CopyDir(path, directory._source))

    def directory(self, path: str) -> Directory:
        """The directory at ``path`` after every step (mounts included)."""
        return Directory(self._ctx, ContainerPath(self._recipe, path))

    def file(self, path: str) -> File:
        """The file at ``path`` after every step."""
        parent = Directory(self._ctx, ContainerPath(self._recipe, path, as_file=True))
        return File(parent, posixpath.basename(posixpath.normpath(path)))

    def rootfs(self) -> Directory:
        """The whole filesystem (without mounts)."""
        return Directory(self._ctx, ContainerPath(self._recipe, "/"))

    async def platform(self) -> Platform:
        return self._recipe.platform or await self._ctx.engine.native_platform()

    async def stdout(self) -> str:
        """What the last ``with_exec`` printed on stdout."""
        return (await self._ctx.evaluator.last_exec(self._recipe)).stdout

    async def stderr(self) -> str:
        return (await self._ctx.evaluator.last_exec(self._recipe)).stderr

    async def exit_code(self) -> int:
        return (await self._ctx.evaluator.last_exec(self._recipe)).exit_code

    async def publish(self, address: str, *, platform_variants: Sequence[Container] = ()) -> str:
        """Push this container (and ``platform_variants``, one per platform) as ``address``.

        Several variants make an OCI image index. Returns the repository pinned to what was
        pushed, ``host/repo@sha256:<digest>`` (the tag points there too).
        """
        snapshots = await self._ctx.snapshots(self._with_variants(platform_variants))
        return (await self._ctx.publish(address, snapshots)).reference

    async def export(
        self,
        path: str | os.PathLike[str],
        *,
        platform_variants: Sequence[Container] = (),
        tag: str = "latest",
    ) -> str:
        """Write the same as ``publish`` would push, as an OCI image layout (a directory, or
        a tar archive when ``path`` ends in .tar); returns the path."""
        snapshots = await self._ctx.snapshots(self._with_variants(platform_variants))
        return (await self._ctx.export(path, snapshots, tag)).reference

    def _with_variants(self, platform_variants: Sequence[Container]) -> list[ContainerRecipe]:
        # `client.container().publish(ref, platform_variants=[...])`: the empty receiver is
        # only the handle, as in Dagger; a container that has content is a variant itself.
        mine = [] if self._recipe.is_bare else [self]
        return [c._recipe for c in (*mine, *platform_variants)]

    async def sync(self) -> Container:
        """Evaluate every step now (errors surface here); returns self."""
        await self._ctx.evaluator.evaluate(self._recipe)
        return self

    def _then(self, step: Step) -> Container:
        return replace(self, _recipe=replace(self._recipe, steps=(*self._recipe.steps, step)))

    def _rebased(self, base: FromImage | Rootfs) -> Container:
        return replace(self, _recipe=ContainerRecipe(self._recipe.platform, base))
