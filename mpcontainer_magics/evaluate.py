"""Evaluating recipes (:mod:`.recipes`) into files and images, each once per client.

- Linux platforms run on the engine. Each ``with_exec`` runs in a fresh container of the
  previous step's snapshot and is itself snapshotted (``commit``), so every object keeps the
  exact filesystem its chain describes.
- Other platforms (say ``windows/amd64``) cannot run anywhere here, but their files can be
  read: the image's layers are fetched from the registry and unpacked on the host.
- A directory is materialised as a read-only host directory in the client's workspace.
  That is what lets a directory made in an amd64 container be mounted in an arm64 one, or a
  git checkout become a rootfs.
- Mounted directories are copies (as in Dagger): commands may write to them, later steps of
  the chain see the writes, and neither the host nor the image changes.

The builders reach all this through a :class:`BuildContext`, not through the client.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._aio import gather_or_cancel, in_thread, once
from .engines.base import Engine, ImageConfig, Mount, PulledImage
from .engines.tree import resolve_in_root
from .errors import ExecUnsupported, InvalidArgument, NonZeroExit
from .platforms import Platform
from .publish import Published, Snapshot, Variant, build_variant, check_variants, push
from .publish import write_layout as write_oci_layout
from .recipes import (
    ContainerPath,
    ContainerRecipe,
    CopyDir,
    DirSource,
    Empty,
    Exec,
    FromImage,
    GitTree,
    HostPath,
    MountDir,
    NewFile,
    SetEnv,
    SetWorkdir,
    Step,
    Subdirectory,
)
from .workspace import Workspace, copy_out, copy_tree

if TYPE_CHECKING:
    from .registry import Reference


@dataclass(frozen=True)
class ExecResult:
    args: tuple[str, ...]
    platform: Platform
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class _State:
    platform: Platform
    config: ImageConfig
    image: PulledImage | None  # what the engine runs (Linux platforms)
    files: Path | None  # the unpacked filesystem (platforms that cannot run here)
    mounts: tuple[tuple[str, Path], ...] = ()
    last: ExecResult | None = None
    origin: PulledImage | None = None  # the registry image the chain started from


class Evaluator:
    """Evaluates container and directory recipes on one engine; remembers every result."""

    def __init__(self, engine: Engine, workspace: Workspace) -> None:
        self.engine = engine
        #: The network ``with_exec`` commands run in (the client's; None: the engine's).
        self.network: str | None = None
        self._workspace = workspace
        self._states: dict[ContainerRecipe, asyncio.Task[_State]] = {}
        self._dirs: dict[DirSource, asyncio.Task[Path]] = {}
        self._variants: dict[Snapshot, asyncio.Task[Variant]] = {}

    def scratch(self, kind: str) -> Path:
        return self._workspace.scratch(kind)

    def close(self) -> None:
        """Forget every result and delete the workspace."""
        self._states.clear()
        self._dirs.clear()
        self._variants.clear()
        self._workspace.close()

    # -- containers --------------------------------------------------------------------------

    async def evaluate(self, recipe: ContainerRecipe) -> _State:
        return await once(self._states, recipe, lambda: self._evaluate(recipe))

    async def last_exec(self, recipe: ContainerRecipe) -> ExecResult:
        state = await self.evaluate(recipe)
        if state.last is None:
            raise InvalidArgument("nothing has run yet: call with_exec([...]) before stdout()")
        return state.last

    async def _evaluate(self, recipe: ContainerRecipe) -> _State:
        if not recipe.steps:
            return await self._base(recipe)
        return await self._step(await self.evaluate(recipe.parent()), recipe.steps[-1])

    async def _base(self, recipe: ContainerRecipe) -> _State:
        platform = recipe.platform or await self.engine.native_platform()
        base = recipe.base
        if isinstance(base, FromImage):
            if platform.os != "linux":
                from .engines.rootfs import unpack_image

                unpacked = await unpack_image(
                    self.engine.registry, base.reference, platform, self.scratch("image")
                )
                config = ImageConfig.from_oci(unpacked.config)
                return _State(platform, config, None, unpacked.root)
            image = await self.engine.pull(base.reference, platform)
            config = await self.engine.image_config(image)
            return _State(platform, config, image, None, origin=image)
        root = await self.materialise(base.directory)
        if platform.os != "linux":
            return _State(platform, ImageConfig(), None, root)
        image = await self.engine.image_from_directory(root, platform, ImageConfig())
        return _State(platform, ImageConfig(), image, None)

    async def _step(self, state: _State, step: Step) -> _State:
        if isinstance(step, SetEnv):
            return replace(state, config=state.config.with_env(step.name, step.value))
        if isinstance(step, SetWorkdir):
            workdir = posixpath.normpath(posixpath.join(state.config.workdir or "/", step.path))
            return replace(state, config=replace(state.config, workdir=workdir))
        if isinstance(step, MountDir):
            path = _absolute(state, step.path)
            mounts = tuple((p, d) for p, d in state.mounts if p != path)
            return replace(state, mounts=(*mounts, (path, await self.materialise(step.directory))))
        if isinstance(step, CopyDir):
            return await self._copy_in(state, _absolute(state, step.path), step.directory)
        return await self._exec(state, step)

    async def _copy_in(self, state: _State, path: str, directory: DirSource) -> _State:
        source = await self.materialise(directory)
        if state.image is None:
            assert state.files is not None
            files = self.scratch("rootfs")
            await in_thread(copy_tree, state.files, files)
            await in_thread(copy_tree, source, resolve_in_root(files, path))
            return replace(state, files=files)
        async with self.engine.container(state.image) as container_id:
            await self.engine.copy_to(container_id, source, path)
            image = await self.engine.commit(container_id, state.config)
        return replace(state, image=image)

    async def _exec(self, state: _State, step: Exec) -> _State:
        if state.image is None:
            raise ExecUnsupported(state.platform)
        # Fresh copies: the command may write to its mounts, and earlier results must not
        # change under their feet.
        mounts = []
        for path, source in state.mounts:
            copy = self.scratch("mount")
            await in_thread(copy_tree, source, copy)
            mounts.append((path, copy))
        output: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        async with self.engine.container(
            state.image,
            step.args,
            env=state.config.env_dict(),
            workdir=state.config.workdir or None,
            mounts=[Mount(str(copy), path) for path, copy in mounts],
            network=self.network,
        ) as container_id:
            outcome = await self.engine.start_and_wait(
                container_id, lambda stream, chunk: output[stream].extend(chunk)
            )
            image = await self.engine.commit(container_id, state.config)
        result = ExecResult(
            step.args,
            state.platform,
            outcome.exit_code,
            output["stdout"].decode(errors="replace"),
            output["stderr"].decode(errors="replace"),
            outcome.duration_s,
        )
        if outcome.exit_code != 0 and step.expect == "success":
            last_line = (result.stderr.strip().splitlines() or ["no stderr"])[-1]
            raise NonZeroExit(
                f"{shlex.join(step.args)} exited with {outcome.exit_code} on {state.platform}: "
                f"{last_line[:200]} (pass expect='any' to with_exec to carry on)",
                result,
            )
        return replace(state, image=image, mounts=tuple(mounts), last=result)

    async def variant(self, snapshot: Snapshot) -> Variant:
        """The published form of ``snapshot``, built once (publish, then export, is cheap)."""
        return await once(
            self._variants,
            snapshot,
            lambda: build_variant(self.engine, snapshot, self.scratch("variant")),
        )

    async def snapshot(self, recipe: ContainerRecipe) -> Snapshot:
        """The engine image and config a published variant of ``recipe`` is made from."""
        state = await self.evaluate(recipe)
        if state.image is None:
            raise InvalidArgument(
                f"cannot publish a {state.platform} variant: only Linux variants can be "
                "published (their files come from a container engine); publish the Linux "
                "platforms, or export() this one's files"
            )
        return Snapshot(state.platform, state.image, state.config, state.origin)

    # -- directories -------------------------------------------------------------------------

    async def materialise(self, source: DirSource) -> Path:
        """The host directory holding ``source``'s tree; treat it as read-only."""
        return await once(self._dirs, source, lambda: self._materialise(source))

    async def _materialise(self, source: DirSource) -> Path:
        if isinstance(source, Subdirectory):
            found = resolve_in_root(await self.materialise(source.base), source.path)
            if not found.is_dir():
                raise InvalidArgument(
                    f"{source.path} is not a directory; list the parent's entries() to see "
                    "what is there"
                )
            return found
        dest = self.scratch("dir")
        if isinstance(source, Empty):
            dest.mkdir()
        elif isinstance(source, HostPath):
            if not os.path.isdir(source.path):
                what = "is not a directory" if os.path.exists(source.path) else "does not exist"
                raise InvalidArgument(
                    f"host path {source.path} {what}; give host().directory() an existing directory"
                )
            await in_thread(copy_tree, Path(source.path), dest)
        elif isinstance(source, GitTree):
            from .git import checkout

            ref = {} if source.kind == "head" else {source.kind: source.ref}
            await checkout(source.url, dest, keep_git_dir=source.keep_git_dir, **ref)
        elif isinstance(source, ContainerPath):
            await self._from_container(source, dest)
        elif isinstance(source, NewFile):
            await in_thread(copy_tree, await self.materialise(source.base), dest)
            await in_thread(_write_file, dest, source)
        else:
            base, other = await self.materialise(source.base), await self.materialise(source.other)
            await in_thread(copy_tree, base, dest)
            await in_thread(copy_tree, other, resolve_in_root(dest, source.path))
        return dest

    async def _from_container(self, source: ContainerPath, dest: Path) -> None:
        state = await self.evaluate(source.container)
        path = _absolute(state, source.path)
        for mount_path, mount_dir in state.mounts:
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                inside = posixpath.relpath(path, mount_path)
                await in_thread(copy_out, mount_dir, inside, dest, source.as_file)
                return
        if state.files is not None:
            await in_thread(copy_out, state.files, path, dest, source.as_file)
            return
        assert state.image is not None
        if _touches_docker_files(path):
            # A container's view adds Docker's own files; read the image's exact layers.
            whole = self.scratch("rootfs")
            await self.engine.read_image(state.image, whole)
            await in_thread(copy_out, whole, path, dest, source.as_file)
            await in_thread(shutil.rmtree, whole, ignore_errors=True)
            return
        await self._copy_from_engine(state.image, source, path, dest)

    async def _copy_from_engine(
        self, image: PulledImage, source: ContainerPath, path: str, dest: Path
    ) -> None:
        name = posixpath.basename(path)
        async with self.engine.container(image) as container_id:
            for _ in range(MAX_LINKS):
                is_dir = await self.engine.copy_from(container_id, path, dest)
                copied = dest / posixpath.basename(path)
                if is_dir or not copied.is_symlink():
                    break
                # Docker hands out a symlink itself; follow it as the container would.
                path = posixpath.normpath(
                    posixpath.join(posixpath.dirname(path), os.readlink(copied))
                )
                shutil.rmtree(dest)
            else:
                raise InvalidArgument(
                    f"too many symbolic links resolving {source.path}; name the link's "
                    "target instead"
                )
        if is_dir == source.as_file:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidArgument(
                f"{path} is {'a directory' if is_dir else 'a file'} in the container; "
                f"use {'directory' if is_dir else 'file'}() for it"
            )
        if not is_dir:  # under the name asked for, not the name a symlink led to
            (dest / posixpath.basename(path)).rename(dest / name)


@dataclass(frozen=True)
class BuildContext:
    """What builders need, as Dagger's ``_ctx``: the engine, the evaluator (and its
    workspace), and where blobs already are, so a push mounts them instead of uploading."""

    engine: Engine
    evaluator: Evaluator
    blob_homes: dict[str, Reference] = field(default_factory=dict)

    async def snapshots(self, recipes: Iterable[ContainerRecipe]) -> list[Snapshot]:
        return await gather_or_cancel(self.evaluator.snapshot(r) for r in recipes)

    async def publish(self, address: str, snapshots: list[Snapshot]) -> Published:
        """Push the snapshots as one image ``address`` (an index for several platforms)."""
        built = await self._variants(snapshots)
        return await push(self.engine.registry, address, built, self.blob_homes)

    async def export(
        self, path: str | os.PathLike[str], snapshots: list[Snapshot], tag: str
    ) -> Published:
        """Write the snapshots as an OCI image layout (a directory, or a tar for *.tar)."""
        built = await self._variants(snapshots)
        return await write_oci_layout(self.engine.registry, path, built, tag)

    async def _variants(self, snapshots: list[Snapshot]) -> list[Variant]:
        check_variants(snapshots)
        return await gather_or_cancel(self.evaluator.variant(s) for s in snapshots)


#: Symlinks followed in one path before giving up (Linux's limit).
MAX_LINKS = 40

#: Paths Docker creates in every container (init layer, bind mounts); see ``read_image``.
DOCKER_FILES = (
    "/.dockerenv",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/dev",
    "/proc",
    "/sys",
)


def _touches_docker_files(path: str) -> bool:
    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/")

    return any(inside(path, d) or inside(d, path) for d in DOCKER_FILES)


def _absolute(state: _State, path: str) -> str:
    return posixpath.normpath(posixpath.join(state.config.workdir or "/", path))


def _write_file(root: Path, new: NewFile) -> None:
    target = resolve_in_root(root, new.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_bytes(new.contents)
    target.chmod(new.permissions)
