"""Immutable, lazily evaluated containers and directories, named after Dagger's Python SDK.

    ctr = client.container(platform="linux/arm64").from_("alpine:3.16")
    out = await ctr.with_exec(["uname", "-m"]).stdout()

Builder calls (``from_``, ``with_exec``, ``with_env_variable``…) only record what to do and
return a new object; nothing runs until a terminal call (``stdout()``, ``entries()``,
``export()``…) is awaited. Then the chain is evaluated once per client and remembered, so
``ctr.stdout()`` followed by ``ctr.stderr()`` runs the command once, and two containers
sharing a prefix share its work.

How a chain is evaluated (``Evaluator``):

- Linux platforms run on the engine. Each ``with_exec`` runs in a fresh container of the
  previous step's snapshot and is itself snapshotted (``commit``), so every object keeps the
  exact filesystem its chain describes.
- Other platforms (say ``windows/amd64``) cannot run anywhere here, but their files can be
  read: the image's layers are fetched from the registry and unpacked on the host.
- A ``Directory`` is materialised as a read-only host directory in the client's workspace.
  That is what lets a directory made in an amd64 container be mounted in an arm64 one, or a
  git checkout become a rootfs.
- Mounted directories are copies (as in Dagger): commands may write to them, later steps of
  the chain see the writes, and neither the host nor the image changes.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import posixpath
import shlex
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from ._aio import in_thread, once
from .engines.base import (
    LABEL_HOST,
    LABEL_PID,
    LABEL_PID_START,
    Engine,
    ImageConfig,
    Mount,
    PulledImage,
    owner_is_gone,
    process_start_ticks,
)
from .engines.tree import resolve_in_root
from .errors import ExecUnsupported, InvalidArgument, NonZeroExit
from .hostpaths import absolute, host_destination
from .platforms import Platform
from .publish import Snapshot, Variant, build_variant

if TYPE_CHECKING:
    from .client import Client

K = TypeVar("K")
V = TypeVar("V")


# -- what a Directory is made of -------------------------------------------------------------


@dataclass(frozen=True)
class _Empty:
    pass


@dataclass(frozen=True)
class _HostPath:
    path: str  # absolute


@dataclass(frozen=True)
class _GitTree:
    url: str
    kind: Literal["branch", "tag", "commit", "head"]
    ref: str
    keep_git_dir: bool


@dataclass(frozen=True)
class _ContainerPath:
    container: Container
    path: str  # absolute or relative to the container's workdir
    as_file: bool = False  # a file: the materialised directory holds just that file


@dataclass(frozen=True)
class _NewFile:
    base: DirSource
    path: str
    contents: bytes
    permissions: int


@dataclass(frozen=True)
class _Merged:
    base: DirSource
    path: str
    other: DirSource


@dataclass(frozen=True)
class _Subdirectory:
    base: DirSource
    path: str


DirSource = _Empty | _HostPath | _GitTree | _ContainerPath | _NewFile | _Merged | _Subdirectory


@dataclass(frozen=True)
class Directory:
    """A directory tree: built on the host, checked out from git, or taken from a container."""

    _client: Client = field(repr=False, compare=False)
    _source: DirSource

    def with_new_file(
        self, path: str, contents: str | bytes, permissions: int = 0o644
    ) -> Directory:
        """This directory plus a file at ``path`` (parents created)."""
        data = contents.encode() if isinstance(contents, str) else bytes(contents)
        return self._derive(_NewFile(self._source, _relative(path), data, permissions))

    def with_directory(self, path: str, directory: Directory) -> Directory:
        """This directory with ``directory``'s contents merged in at ``path``."""
        return self._derive(_Merged(self._source, _relative(path), directory._source))

    def directory(self, path: str) -> Directory:
        """The subdirectory at ``path``."""
        return self._derive(_Subdirectory(self._source, _relative(path)))

    def file(self, path: str) -> File:
        """The file at ``path``."""
        return File(self, _relative(path))

    async def entries(self, path: str = ".") -> list[str]:
        """Names in the directory at ``path``, sorted."""
        target = resolve_in_root(await self._materialise(), path)
        if not target.is_dir():
            raise InvalidArgument(f"{path} is not a directory here; entries() lists directories")
        return sorted(os.listdir(target))

    async def export(self, path: str | os.PathLike[str]) -> str:
        """Copy the tree to the host ``path`` (merged into what is there); returns the path.

        All or nothing: the copy is made beside ``path`` first, then moved in."""
        dest = absolute(path)
        tree = await self._materialise()
        with host_destination(dest, what="export") as scratch:
            await in_thread(copy_tree, tree, scratch / "tree")
            await in_thread(move_into, scratch / "tree", dest)
        return str(dest)

    def _derive(self, source: DirSource) -> Directory:
        return Directory(self._client, source)

    async def _materialise(self) -> Path:
        return await self._client._evaluator.materialise(self._source)


@dataclass(frozen=True)
class File:
    """One file of a :class:`Directory`."""

    _directory: Directory
    _path: str

    async def contents(self) -> str:
        """The file's text (UTF-8; undecodable bytes replaced)."""
        return (await self._read()).decode(errors="replace")

    async def contents_bytes(self) -> bytes:
        return await self._read()

    async def export(self, path: str | os.PathLike[str]) -> str:
        """Copy the file to the host ``path``; returns the path."""
        dest = absolute(path)
        found = await self._located()
        with host_destination(dest, what="export") as scratch:
            await in_thread(shutil.copyfile, found, scratch / "file")
            os.replace(scratch / "file", dest)
        return str(dest)

    async def _located(self) -> Path:
        found = resolve_in_root(await self._directory._materialise(), self._path)
        if not found.is_file():
            raise InvalidArgument(f"{self._path} is not a file in this directory")
        return found

    async def _read(self) -> bytes:
        return (await self._located()).read_bytes()


@dataclass(frozen=True)
class Host:
    """The machine the notebook runs on; ``client.host()``."""

    _client: Client = field(repr=False, compare=False)

    def directory(self, path: str | os.PathLike[str]) -> Directory:
        """A snapshot of the host directory ``path``, taken when first used."""
        return Directory(self._client, _HostPath(os.path.abspath(os.path.expanduser(path))))


@dataclass(frozen=True)
class GitRepository:
    """A git repository by URL or local path; ``client.git(url)``."""

    _client: Client = field(repr=False, compare=False)
    url: str
    keep_git_dir: bool = False

    def branch(self, name: str) -> GitRef:
        return self._ref("branch", name)

    def tag(self, name: str) -> GitRef:
        return self._ref("tag", name)

    def commit(self, sha: str) -> GitRef:
        return self._ref("commit", sha)

    def head(self) -> GitRef:
        """The remote's default branch."""
        return self._ref("head", "HEAD")

    def _ref(self, kind: Literal["branch", "tag", "commit", "head"], name: str) -> GitRef:
        if not name:
            raise InvalidArgument(f"git {kind} name is empty")
        return GitRef(self._client, _GitTree(self.url, kind, name, self.keep_git_dir))


@dataclass(frozen=True)
class GitRef:
    _client: Client = field(repr=False, compare=False)
    _source: _GitTree

    def tree(self) -> Directory:
        """The checked-out files (without .git unless the repository asked to keep it)."""
        return Directory(self._client, self._source)


# -- Container -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FromImage:
    reference: str


@dataclass(frozen=True)
class _Rootfs:
    directory: DirSource


@dataclass(frozen=True)
class _SetEnv:
    name: str
    value: str


@dataclass(frozen=True)
class _SetWorkdir:
    path: str


@dataclass(frozen=True)
class _MountDir:
    path: str
    directory: DirSource


@dataclass(frozen=True)
class _CopyDir:
    path: str
    directory: DirSource


@dataclass(frozen=True)
class _Exec:
    args: tuple[str, ...]
    expect: Literal["success", "any"]


Step = _SetEnv | _SetWorkdir | _MountDir | _CopyDir | _Exec


@dataclass(frozen=True)
class Container:
    """A container for one platform, described step by step; see the module docstring."""

    _client: Client = field(repr=False, compare=False)
    _platform: Platform | None  # None: the engine's native platform
    _base: _FromImage | _Rootfs = _Rootfs(_Empty())
    _steps: tuple[Step, ...] = ()

    def from_(self, address: str) -> Container:
        """Start from the image ``address`` (its variant for this container's platform)."""
        if not address or not address.strip():
            raise InvalidArgument("from_() needs an image reference such as alpine:3.16")
        return replace(self, _base=_FromImage(address.strip()), _steps=())

    def with_rootfs(self, directory: Directory) -> Container:
        """A container whose filesystem is exactly ``directory``, for this platform."""
        return replace(self, _base=_Rootfs(directory._source), _steps=())

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
        if self._platform is not None and self._platform.os != "linux":
            raise ExecUnsupported(self._platform)
        return self._then(_Exec(tuple(map(str, args)), expect))

    def with_env_variable(self, name: str, value: str) -> Container:
        if not name or "=" in name:
            raise InvalidArgument(f"bad environment variable name {name!r}")
        return self._then(_SetEnv(name, str(value)))

    def with_workdir(self, path: str) -> Container:
        """Later commands start in ``path`` (relative paths extend the current workdir)."""
        return self._then(_SetWorkdir(path))

    def with_mounted_directory(self, path: str, directory: Directory) -> Container:
        """``directory`` mounted at ``path`` for later commands; not part of the rootfs."""
        return self._then(_MountDir(path, directory._source))

    def with_directory(self, path: str, directory: Directory) -> Container:
        """``directory``'s contents copied into the filesystem at ``path``."""
        return self._then(_CopyDir(path, directory._source))

    def directory(self, path: str) -> Directory:
        """The directory at ``path`` after every step (mounts included)."""
        return Directory(self._client, _ContainerPath(self, path))

    def file(self, path: str) -> File:
        """The file at ``path`` after every step."""
        parent = Directory(self._client, _ContainerPath(self, path, as_file=True))
        return File(parent, posixpath.basename(posixpath.normpath(path)))

    def rootfs(self) -> Directory:
        """The whole filesystem (without mounts)."""
        return Directory(self._client, _ContainerPath(self, "/"))

    async def platform(self) -> Platform:
        return self._platform or await self._client.engine.native_platform()

    async def stdout(self) -> str:
        """What the last ``with_exec`` printed on stdout."""
        return (await self._last()).stdout

    async def stderr(self) -> str:
        return (await self._last()).stderr

    async def exit_code(self) -> int:
        return (await self._last()).exit_code

    async def publish(self, address: str, *, platform_variants: Sequence[Container] = ()) -> str:
        """Push this container (and ``platform_variants``, one per platform) as ``address``.

        Several variants make an OCI image index. Returns the repository pinned to what was
        pushed, ``host/repo@sha256:<digest>`` (the tag points there too).
        """
        published = await self._client.publish(address, self._with_variants(platform_variants))
        return published.reference

    async def export(
        self,
        path: str | os.PathLike[str],
        *,
        platform_variants: Sequence[Container] = (),
        tag: str = "latest",
    ) -> str:
        """Write the same as ``publish`` would push, as an OCI image layout (a directory, or
        a tar archive when ``path`` ends in .tar); returns the path."""
        published = await self._client.export(path, self._with_variants(platform_variants), tag=tag)
        return published.reference

    def _with_variants(self, platform_variants: Sequence[Container]) -> list[Container]:
        # `client.container().publish(ref, platform_variants=[...])`: the empty receiver is
        # only the handle, as in Dagger; a container that has content is a variant itself.
        bare = self._base == _Rootfs(_Empty()) and not self._steps
        return [*([] if bare else [self]), *platform_variants]

    async def sync(self) -> Container:
        """Evaluate every step now (errors surface here); returns self."""
        await self._client._evaluator.evaluate(self)
        return self

    def _then(self, step: Step) -> Container:
        return replace(self, _steps=(*self._steps, step))

    async def _last(self) -> ExecResult:
        state = await self._client._evaluator.evaluate(self)
        if state.last is None:
            raise InvalidArgument("nothing has run yet: call with_exec([...]) before stdout()")
        return state.last


# -- evaluation ------------------------------------------------------------------------------


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
    """Evaluates containers and directories for one client; remembers every result."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._workspace: Path | None = None
        self._names = itertools.count()
        self._states: dict[Container, asyncio.Task[_State]] = {}
        self._dirs: dict[DirSource, asyncio.Task[Path]] = {}
        self._variants: dict[Snapshot, asyncio.Task[Variant]] = {}

    @property
    def engine(self) -> Engine:
        return self._client.engine

    def scratch(self, kind: str) -> Path:
        """A new path in the workspace (not created)."""
        if self._workspace is None:
            self._workspace = Path(tempfile.mkdtemp(prefix=workspace_prefix()))
        return self._workspace / f"{kind}-{next(self._names)}"

    def close(self) -> None:
        """Forget every result and delete the workspace."""
        self._states.clear()
        self._dirs.clear()
        self._variants.clear()
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    # -- containers --------------------------------------------------------------------------

    async def evaluate(self, container: Container) -> _State:
        return await once(self._states, container, lambda: self._evaluate(container))

    async def _evaluate(self, container: Container) -> _State:
        if not container._steps:
            return await self._base(container)
        parent = replace(container, _steps=container._steps[:-1])
        return await self._step(await self.evaluate(parent), container._steps[-1])

    async def _base(self, container: Container) -> _State:
        platform = await container.platform()
        base = container._base
        if isinstance(base, _FromImage):
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
        if isinstance(step, _SetEnv):
            return replace(state, config=state.config.with_env(step.name, step.value))
        if isinstance(step, _SetWorkdir):
            workdir = posixpath.normpath(posixpath.join(state.config.workdir or "/", step.path))
            return replace(state, config=replace(state.config, workdir=workdir))
        if isinstance(step, _MountDir):
            path = _absolute(state, step.path)
            mounts = tuple((p, d) for p, d in state.mounts if p != path)
            return replace(state, mounts=(*mounts, (path, await self.materialise(step.directory))))
        if isinstance(step, _CopyDir):
            return await self._copy_in(state, _absolute(state, step.path), step.directory)
        return await self._exec(state, step)

    async def _copy_in(self, state: _State, path: str, directory: DirSource) -> _State:
        source = await self.materialise(directory)
        if state.image is None:
            assert state.files is not None
            files = self.scratch("rootfs")
            await asyncio.to_thread(copy_tree, state.files, files)
            await asyncio.to_thread(copy_tree, source, resolve_in_root(files, path))
            return replace(state, files=files)
        async with self.engine.container(state.image) as container_id:
            await self.engine.copy_to(container_id, source, path)
            image = await self.engine.commit(container_id, state.config)
        return replace(state, image=image)

    async def _exec(self, state: _State, step: _Exec) -> _State:
        if state.image is None:
            raise ExecUnsupported(state.platform)
        # Fresh copies: the command may write to its mounts, and earlier results must not
        # change under their feet.
        mounts = []
        for path, source in state.mounts:
            copy = self.scratch("mount")
            await asyncio.to_thread(copy_tree, source, copy)
            mounts.append((path, copy))
        output: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        async with self.engine.container(
            state.image,
            step.args,
            env=state.config.env_dict(),
            workdir=state.config.workdir or None,
            mounts=[Mount(str(copy), path) for path, copy in mounts],
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

    async def snapshot(self, container: Container) -> Snapshot:
        """The engine image and config a published variant of ``container`` is made from."""
        state = await self.evaluate(container)
        if state.image is None:
            raise InvalidArgument(
                f"cannot publish a {state.platform} variant: only Linux variants can be "
                "published (their files come from a container engine)"
            )
        return Snapshot(state.platform, state.image, state.config, state.origin)

    # -- directories -------------------------------------------------------------------------

    async def materialise(self, source: DirSource) -> Path:
        """The host directory holding ``source``'s tree; treat it as read-only."""
        return await once(self._dirs, source, lambda: self._materialise(source))

    async def _materialise(self, source: DirSource) -> Path:
        if isinstance(source, _Subdirectory):
            found = resolve_in_root(await self.materialise(source.base), source.path)
            if not found.is_dir():
                raise InvalidArgument(f"{source.path} is not a directory")
            return found
        dest = self.scratch("dir")
        if isinstance(source, _Empty):
            dest.mkdir()
        elif isinstance(source, _HostPath):
            if not os.path.isdir(source.path):
                what = "is not a directory" if os.path.exists(source.path) else "does not exist"
                raise InvalidArgument(f"host path {source.path} {what}")
            await asyncio.to_thread(copy_tree, Path(source.path), dest)
        elif isinstance(source, _GitTree):
            from .git import checkout

            ref = {} if source.kind == "head" else {source.kind: source.ref}
            await checkout(source.url, dest, keep_git_dir=source.keep_git_dir, **ref)
        elif isinstance(source, _ContainerPath):
            await self._from_container(source, dest)
        elif isinstance(source, _NewFile):
            await asyncio.to_thread(copy_tree, await self.materialise(source.base), dest)
            target = resolve_in_root(dest, source.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.write_bytes(source.contents)
            target.chmod(source.permissions)
        else:
            base, other = await self.materialise(source.base), await self.materialise(source.other)
            await asyncio.to_thread(copy_tree, base, dest)
            await asyncio.to_thread(copy_tree, other, resolve_in_root(dest, source.path))
        return dest

    async def _from_container(self, source: _ContainerPath, dest: Path) -> None:
        state = await self.evaluate(source.container)
        path = _absolute(state, source.path)
        for mount_path, mount_dir in state.mounts:
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                inside = posixpath.relpath(path, mount_path)
                await asyncio.to_thread(_copy_out, mount_dir, inside, dest, source.as_file)
                return
        if state.files is not None:
            await asyncio.to_thread(_copy_out, state.files, path, dest, source.as_file)
            return
        assert state.image is not None
        if _touches_docker_files(path):
            # A container's view adds Docker's own files; read the image's exact layers.
            whole = self.scratch("rootfs")
            await self.engine.read_image(state.image, whole)
            await asyncio.to_thread(_copy_out, whole, path, dest, source.as_file)
            await asyncio.to_thread(shutil.rmtree, whole, ignore_errors=True)
            return
        name = posixpath.basename(path)
        async with self.engine.container(state.image) as container_id:
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
                raise InvalidArgument(f"too many symbolic links resolving {source.path}")
        if is_dir == source.as_file:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidArgument(
                f"{path} is {'a directory' if is_dir else 'a file'} in the container; "
                f"use {'directory' if is_dir else 'file'}() for it"
            )
        if not is_dir:  # under the name asked for, not the name a symlink led to
            (dest / posixpath.basename(path)).rename(dest / name)


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


def _relative(path: str) -> str:
    """A path inside a directory ("a/b"); a leading "/" means the directory's top."""
    if ".." in path.split("/"):
        raise InvalidArgument(f"bad path {path!r}: '..' may not leave the directory")
    return posixpath.normpath("/" + path).lstrip("/") or "."


def _copy_out(root: Path, path: str, dest: Path, as_file: bool) -> None:
    found = resolve_in_root(root, path)
    if as_file:
        if not found.is_file():
            raise InvalidArgument(f"{path} is not a file")
        dest.mkdir(parents=True)
        shutil.copy2(found, dest / posixpath.basename(path), follow_symlinks=False)
    else:
        if not found.is_dir():
            raise InvalidArgument(f"{path} is not a directory")
        copy_tree(found, dest)


def copy_tree(source: Path, dest: Path) -> None:
    """Merge the contents of ``source`` into ``dest``, keeping symlinks as links (never
    following them on the host). An existing ``dest`` keeps its own mode."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.copytree(child, dest / child.name, symlinks=True, dirs_exist_ok=True)
        else:
            target = dest / child.name
            if target.is_symlink() or target.is_file():
                target.unlink()
            shutil.copy2(child, target, follow_symlinks=False)


def move_into(source: Path, dest: Path) -> None:
    """Move the tree ``source`` into ``dest`` (merging with what is there) by renames only,
    so that it cannot run out of space half-way; both are on one filesystem."""
    if not dest.exists():
        source.rename(dest)
        return
    if not _is_real_dir(dest):
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(dest))
    for child in source.iterdir():
        target = dest / child.name
        if _is_real_dir(child) and _is_real_dir(target):
            move_into(child, target)
            continue
        if _is_real_dir(target):
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.unlink()
        child.rename(target)


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


WORKSPACE_PREFIX = "mpcontainer-magics-"


def workspace_prefix() -> str:
    """Workspaces are named after their process, so those of dead kernels can be reaped."""
    return f"{WORKSPACE_PREFIX}{os.getpid()}-{process_start_ticks(os.getpid())}-"


def reap_workspaces() -> int:
    """Delete the workspaces of processes of this machine that no longer exist."""
    reaped = 0
    for path in Path(tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*-*-*"):
        pid, _, rest = path.name.removeprefix(WORKSPACE_PREFIX).partition("-")
        owner = {
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: pid,
            LABEL_PID_START: rest.partition("-")[0],
        }
        if path.is_dir() and owner_is_gone(owner):
            shutil.rmtree(path, ignore_errors=True)
            reaped += 1
    return reaped
