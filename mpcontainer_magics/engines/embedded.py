"""The embedded engine: containers without a daemon, from unpacked images run with proot.

Where no Docker daemon answers (Binder, shared JupyterHubs, laptops without Docker) this engine
does the same jobs with parts a user can install without root: our registry client, the
user's cache directory, proot, and qemu-user for foreign platforms.

Layout of the cache (``$MPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mpcontainer_magics``)::

    blobs/sha256/<hex>        verified blobs (store.BlobStore), shared with publish/export
    images/                   unpacked images (embedded_images)
    refs/                     what names resolved to (resolutions, shared with Docker)
    containers/<id>/          a container: container.json (labels for reaping), rootfs/,
                              a private copy of the image's rootfs (tree.clone_tree), and
                              network/, its resolv.conf, hosts and hostname (host_network)
    spares/<id>/              trees of containers that went unchanged, for the next
                              container of their image (container_trees)
    layers/sha256/<hex>       blobs published layers were compressed to (compressed_layers)

Runs and sessions are proot processes over a container's rootfs (``proot.ProotProcess``).
Every container and snapshot is labelled with its owner process, as Docker ones are, so
what a killed kernel left (directories and still-running proot processes) is reaped later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._aio import finish_despite_cancel, in_thread
from ..errors import (
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    ExecUnsupported,
    InvalidArgument,
)
from ..platforms import Platform, host_platform
from ..registry import RegistryClient
from . import tiny_run
from .archives import write_layer
from .base import (
    EMULATION_CANDIDATES,
    LABEL_PID,
    LABEL_PID_START,
    AttachedProcess,
    ContainerSpec,
    ExecOutcome,
    ImageConfig,
    Mount,
    OutputCallback,
    ProgressCallback,
    PulledImage,
    file_digest,
    owner_is_gone,
    owner_labels,
)
from .cache_use import mark_used
from .common import EngineBase
from .container_trees import (
    ContainerTrees,
    changed_since,
    copy_into,
    copy_out,
    make_points,
    stamp,
)
from .embedded_images import ImageDirectories, snapshot_id, work_prefix
from .host_network import NETWORK_FILES, hostname, write_network_files
from .image_users import home_of, proot_user
from .proot import (
    MOUNT_POINTS,
    QEMU_MOUNT_POINTS,
    SYSTEM_BINDS,
    ProotProcess,
    find_proot,
    find_qemu,
    kill_proot,
    processes_using,
    proot_command,
    proot_env,
)
from .store import BlobStore, default_cache_dir
from .tree import (
    LinkedFiles,
    clone_tree,
    copy_tree,
    diff,
    remove_tree,
    resolve_in_root,
)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The version in `proot --version`'s banner (Debian 12: "... 5.1.0").
_PROOT_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?)\b")


@dataclass
class _Container:
    id: str
    path: Path
    image: PulledImage
    image_dir: Path
    argv: tuple[str, ...] | None
    env: dict[str, str]
    workdir: str
    user: str | None  # proot's -i "uid:gid"; None runs as (fake) root
    binds: list[tuple[str, str]]
    mount_points: frozenset[str] = frozenset()  # relative to the rootfs; contents not ours
    main: ProotProcess | None = None
    execs: set[ProotProcess] = field(default_factory=set)
    # The last commit: the image made, of which config, and its stamp's ctime.
    committed: tuple[PulledImage, dict[str, Any], int] | None = None

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


class EmbeddedEngine(EngineBase[_Container]):
    """Containers of proot processes; ``_live`` maps each one made to its directory."""

    name = "embedded"

    def __init__(self, registry: RegistryClient, proot: str, cache_dir: Path) -> None:
        super().__init__(registry, cache_dir)
        self._proot = proot
        self._cache = cache_dir
        self._images = ImageDirectories(cache_dir, BlobStore(cache_dir), registry)
        self._containers_dir = cache_dir / "containers"
        self._trees = ContainerTrees(cache_dir / "spares")
        self._creating: set[Path] = set()  # container directories not in _live yet
        self._linked_files: dict[Path, LinkedFiles] = {}  # per image directory

    @classmethod
    async def connect(
        cls, *, registry: RegistryClient | None = None, cache_dir: Path | None = None
    ) -> EmbeddedEngine:
        """The engine over this user's cache; EngineUnavailable when proot is missing."""
        try:
            proot = find_proot()
        except BaseException:
            if registry is not None:
                await registry.aclose()
            raise
        return cls(registry or RegistryClient(), proot, Path(cache_dir or default_cache_dir()))

    @property
    def cache_dir(self) -> Path:
        return self._cache

    # -- platforms ---------------------------------------------------------------------------

    async def native_platform(self) -> Platform:
        return host_platform()

    @property
    def proot(self) -> str:
        """The proot binary this engine runs."""
        return self._proot

    async def version(self) -> str:
        """proot's version, from ``proot --version`` (e.g. "proot 5.1.0")."""
        failed = EngineUnavailable(
            f"`{self._proot} --version` failed; reinstall proot (`apt-get install proot`) or "
            "set MPC_PROOT to a working proot"
        )
        try:
            process = await asyncio.create_subprocess_exec(
                self._proot,
                "--version",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError:
            raise failed from None
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 10)
        except asyncio.TimeoutError:
            raise failed from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        found = _PROOT_VERSION.search(out.decode("utf-8", "replace"))
        return f"proot {found.group(1) if found else '(version unknown)'}"

    async def _emulates(self, platform: Platform) -> bool:
        return _needs_qemu(platform)

    async def _try_cpu_model(self, platform: Platform, model: str) -> str | None:
        return await tiny_run.with_cpu_model(platform, model)

    async def try_platform(self, platform: Platform) -> None:
        """Run a tiny program of ``platform`` through proot, as a container's command runs
        (the doctor's proof that runs work here); raises what a run would."""
        qemu = find_qemu(platform) if _needs_qemu(platform) else None
        await tiny_run.under_proot(self._proot, platform, qemu, _needs_qemu(platform))

    async def emulated_platforms(self) -> list[Platform]:
        """Foreign platforms whose qemu-user binary is installed (proot runs it with -q)."""
        native = await self.native_platform()
        return [
            p
            for p in EMULATION_CANDIDATES
            if p.architecture != native.architecture and find_qemu(p) is not None
        ]

    # -- images ------------------------------------------------------------------------------

    async def _fetch(
        self, reference: str, platform: Platform, refresh: bool, on_progress: ProgressCallback
    ) -> tuple[PulledImage, int]:
        digest = (await self._resolve(reference, refresh)).manifest_digest(platform)
        image = PulledImage(reference, platform, digest, digest)
        image_dir = await self._images.ensure(image, on_progress)
        return image, self._images.size_of(image_dir)

    async def image_config(self, image: PulledImage) -> ImageConfig:
        return await self._images.config(image)

    async def layer_ids(self, image: PulledImage) -> list[str]:
        return await self._images.layer_ids(image)

    async def save_layers(
        self, image: PulledImage, dest: Path, only: Sequence[int] | None = None
    ) -> list[Path]:
        return await self._images.save_layers(image, dest, only)

    async def read_image(self, image: PulledImage, dest: Path) -> None:
        await self._images.read(image, dest)

    async def image_from_directory(
        self, root: Path, platform: Platform, config: ImageConfig
    ) -> PulledImage:
        image = PulledImage(f"rootfs for {platform}", platform, snapshot_id(), None)
        layer_name = "diff-0.tar"

        def make(work: Path) -> list[dict[str, Any]]:
            copy_tree(root, work / "rootfs")
            with open(work / layer_name, "wb") as layer:
                write_layer(layer, root)
            return [{"file": layer_name, "diff_id": file_digest(work / layer_name)}]

        oci = {**platform.to_oci(), "config": config.to_oci(), "rootfs": {"type": "layers"}}
        return self._made_here(await self._images.make(image, make, oci))

    # -- containers --------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        image = spec.image
        if image.platform.os != "linux":
            raise ExecUnsupported(image.platform)
        if spec.network not in (None, "host"):
            raise InvalidArgument(
                f"the embedded engine cannot give a container the network {spec.network!r}: "
                "proot shares this machine's network (as --network host does); for none, "
                "bridge or a named network use the Docker engine"
            )
        # A tree of the image being handed on is cheaper to wait for than to make (and
        # its container may have written into the image, which is then unpacked again).
        await self._trees.settled(self._images.path(image))
        image_dir = await self._images.ensure(image)
        mark_used(image_dir)
        defaults = ImageConfig.from_oci(self._images.meta(image_dir)["config"].get("config"))
        container_id = secrets.token_hex(32)
        path = self._containers_dir / container_id
        self._creating.add(path)
        meta = json.dumps({"image": image.image_id, "labels": {**owner_labels(), **spec.labels}})
        try:
            linked = await self._linked(image_dir)
            await in_thread(self._trees.make, image_dir, path, linked, meta)
            env = self._env(defaults, spec.env, path / "rootfs")
            container = _Container(
                container_id,
                path,
                image,
                image_dir,
                spec.argv,
                await self._with_cpu_model(image.platform, env) if spec.argv else env,
                spec.workdir or defaults.workdir or "/",
                await in_thread(proot_user, path / "rootfs", defaults.user),
                [],
            )
            if await in_thread(self._prepare, container, spec.mounts):
                await in_thread(self._trees.mark_ready, path)
        except BaseException:
            await in_thread(remove_tree, path)
            self._creating.discard(path)
            raise
        self._live[container_id] = container
        self._creating.discard(path)
        return container_id

    async def _linked(self, image_dir: Path) -> LinkedFiles:
        known = self._linked_files.get(image_dir)
        if known is None or not known.of(image_dir):  # pruned and unpacked again meanwhile
            known = self._linked_files[image_dir] = await in_thread(LinkedFiles.load, image_dir)
        return known

    def _check_shared_files(self, container: _Container, rootfs: Path) -> None:
        """When a container goes: did it write into a file it shares with its image?

        Then that image is no longer its layers: it is set aside (and deleted), so the next
        container of it is made from a fresh unpack of the cached layers.
        """
        image_dir = container.image_dir
        linked = self._linked_files.get(image_dir)
        if linked is None or not linked.written_in_place(rootfs):
            return
        log.warning(
            "a container of %s wrote into files it shares with the image; unpacking it again",
            container.image.reference,
        )
        with contextlib.suppress(OSError):
            trash = image_dir.with_name(f"{work_prefix()}damaged")
            os.rename(image_dir, trash)
            remove_tree(trash)
        self._trees.drop(image_dir)  # they link the same files
        self._linked_files.pop(image_dir, None)
        self._images.forget(container.image)

    @staticmethod
    def _env(defaults: ImageConfig, env: Mapping[str, str] | None, rootfs: Path) -> dict[str, str]:
        merged = {"PATH": DEFAULT_PATH, **defaults.env_dict(), **(env or {})}
        merged.setdefault("HOME", home_of(rootfs, defaults.user))
        merged.setdefault("HOSTNAME", hostname())  # proot shares it, as --network host does
        return merged

    def _prepare(self, container: _Container, mounts: Sequence[Mount]) -> bool:
        """Make the working directory and mount points; copy read-only mounts in; bind the
        network's files (resolv.conf, hosts, hostname) as Docker does. True when the tree is
        still a copy of the image's, but for proot's mount points (see container_trees)."""
        rootfs = container.rootfs
        workdir = resolve_in_root(rootfs, container.workdir)
        pristine = not mounts and workdir.is_dir()
        workdir.mkdir(parents=True, exist_ok=True)
        emulated = _needs_qemu(container.image.platform)
        make_points(
            rootfs,
            [*(p.lstrip("/") for p in SYSTEM_BINDS), *(["host-rootfs"] if emulated else [])],
            [*NETWORK_FILES, *(QEMU_MOUNT_POINTS if emulated else ())],
        )
        mounted = {posixpath.normpath(m.target) for m in mounts}
        for host, guest in write_network_files(container.path / "network"):
            if guest not in mounted:  # else the user's own file wins
                container.binds.append((host, guest))
        points = set()
        for mount in mounts:
            point = resolve_in_root(rootfs, mount.target)
            if mount.read_only:
                # proot cannot make a bind read-only: the container gets a copy, so the
                # host's files stay untouched whatever it does.
                copy_into(Path(mount.source), rootfs, mount.target)
            elif not point.exists():
                if os.path.isdir(mount.source):
                    point.mkdir(parents=True)
                else:
                    point.parent.mkdir(parents=True, exist_ok=True)
                    point.touch()
            points.add(str(point.relative_to(rootfs)))
            if not mount.read_only:
                container.binds.append((mount.source, "/" + str(point.relative_to(rootfs))))
        container.mount_points = frozenset(points)
        return pristine

    def _get(self, container_id: str) -> _Container:
        container = self._live.get(container_id)
        if container is None:
            raise EngineError(f"container {container_id[:12]} does not exist (any more)")
        return container

    def _command(self, container: _Container, argv: Sequence[str]) -> list[str]:
        platform = container.image.platform
        qemu = None
        if _needs_qemu(platform):
            qemu = find_qemu(platform)
            if qemu is None:
                name = f"qemu-{platform.qemu_arch or platform.architecture}-static"
                raise EmulationUnavailable(
                    platform,
                    f"the embedded engine found no {name} on PATH",
                    "`apt-get install qemu-user-static` (Debian/Ubuntu; on Binder list it in "
                    "binder/apt.txt), or put a qemu-user binary for it on PATH.",
                )
        binds = [(path, path) for path in SYSTEM_BINDS if os.path.exists(path)]
        return proot_command(
            self._proot,
            container.rootfs,
            argv,
            workdir=container.workdir,
            qemu=qemu,
            binds=[*binds, *container.binds],
            user=container.user,
        )

    async def _spawn(
        self,
        container: _Container,
        argv: Sequence[str],
        on_output: OutputCallback | None,
        *,
        stdin: bool = False,
        main: bool = True,
    ) -> ProotProcess:
        command = self._command(container, argv)
        return await ProotProcess.spawn(
            command,
            argv,
            {**proot_env(), **container.env},
            on_output,
            stdin=stdin,
            end_with_command=main,
        )

    async def start_and_wait(
        self, container_id: str, on_output: OutputCallback | None = None
    ) -> ExecOutcome:
        container = self._get(container_id)
        if container.argv is None:
            raise EngineError(f"container {container_id[:12]} was created without a command")
        started = time.perf_counter()
        process = container.main = await self._spawn(container, container.argv, on_output)
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await finish_despite_cancel(process.kill())
            raise
        return ExecOutcome(code, time.perf_counter() - started)

    async def start(self, container_id: str) -> None:
        container = self._get(container_id)
        if container.argv is None:
            raise EngineError(f"container {container_id[:12]} was created without a command")
        container.main = await self._spawn(container, container.argv, None)
        # As in Docker, a container whose command ended (or whose proot was killed) runs no
        # exec any more: a session's shell then fails, and the session says it stopped.
        container.main.when_ended(lambda: _kill_execs(container))

    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        container = self._get(container_id)
        if container.main is None or not container.main.command_running:
            raise EngineError(f"container {container_id[:12]} is not running")
        process = await self._spawn(container, argv, on_output, stdin=True, main=False)
        container.execs.add(process)
        process.exited.add_done_callback(lambda _: container.execs.discard(process))
        return _EmbeddedProcess(process)

    async def state(self, container_id: str) -> str:
        container = self._live.get(container_id)
        if container is None or not container.path.exists():
            return "gone"
        main = container.main
        if main is None:
            return "created"
        if main.command_running:
            return "running"
        return f"exited ({'?' if main.status is None else main.status})"

    async def remove(self, container_id: str) -> None:
        """Kill the container's processes and take its directory away; then, in the
        background (a cell's result need not wait), hand its tree on or remove it."""
        container = self._live.pop(container_id, None)
        if container is None:
            return
        for process in [p for p in (container.main, *container.execs) if p is not None]:
            await process.kill()
        await in_thread(_kill_all, container)
        await self._trees.retire(
            container.image_dir,
            container.path,
            _proot_points(container),
            functools.partial(self._check_shared_files, container),
        )

    def _remove_dir(self, container: _Container) -> None:
        _kill_all(container)
        self._check_shared_files(container, container.rootfs)
        remove_tree(container.path)

    async def aclose(self) -> None:
        await self._trees.wait()
        await super().aclose()

    # -- files and snapshots -----------------------------------------------------------------

    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        container = self._get(container_id)
        await in_thread(copy_into, source, container.rootfs, target)

    async def copy_from(self, container_id: str, path: str, dest: Path) -> bool:
        container = self._get(container_id)
        # As `docker cp`: proot's own mount points (the host's / among them) are not the
        # container's files.
        points = _proot_points(container)
        return await in_thread(copy_out, container.rootfs, path, dest, points)

    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        container = self._get(container_id)
        if await in_thread(self._unchanged_since_commit, container, config):
            assert container.committed is not None
            return container.committed[0]  # a session published again, say
        made = await self._commit(container, config)
        # After the commit, whose hard links change the ctimes of the files it links: a
        # command's write while a commit runs would land in neither, as with `docker commit`.
        committed = await in_thread(stamp, container.path / "committed")
        container.committed = (made, config.to_oci(), committed)
        return made

    def _unchanged_since_commit(self, container: _Container, config: ImageConfig) -> bool:
        """Whether the last commit of ``container`` (an image still here, of ``config``)
        is what a commit now would make: nothing in the tree changed since (see
        :mod:`.container_trees`; mounts' contents are never committed)."""
        if container.committed is None:
            return False
        image, committed_config, since = container.committed
        if committed_config != config.to_oci() or image.image_id not in self._made:
            return False
        skip = _proot_points(container) | container.mount_points
        return not changed_since(container.rootfs, since, skip)

    async def _commit(self, container: _Container, config: ImageConfig) -> PulledImage:
        container_id = container.id
        parent_dir = container.image_dir
        parent = self._images.meta(parent_dir)
        image = PulledImage(
            f"snapshot of {container_id[:12]}", container.image.platform, snapshot_id(), None
        )
        layer_name = f"diff-{len(parent['layers'])}.tar"

        def make(work: Path) -> list[dict[str, Any]]:
            linked = self._linked_files.get(parent_dir) or LinkedFiles.load(parent_dir)
            # Never walked, as Docker never commits a mount's contents: proot's own mount
            # points (the host's / at host-rootfs), and the container's mounts.
            proots = _proot_points(container)
            points = proots | container.mount_points
            clone_tree(container.rootfs, work / "rootfs", link=linked, skip=points)
            for rel in container.mount_points:  # in the image: what the mount hid
                point, original = work / "rootfs" / rel, parent_dir / "rootfs" / rel
                point.parent.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(original):  # the image's own, as the mount hid it
                    if original.is_dir() and not original.is_symlink():
                        copy_tree(original, point)
                    else:
                        shutil.copy2(original, point, follow_symlinks=False)
                elif (container.rootfs / rel).is_dir():  # a new mount point: kept, empty
                    point.mkdir()
                else:
                    point.touch()
            layer = work / layer_name
            diff(
                parent_dir / "rootfs",
                container.rootfs,
                layer,
                linked=linked,
                ignore=proots,
                mount_points=points,
            )
            return [{"file": layer_name, "diff_id": file_digest(layer)}]

        oci = {
            **{k: v for k, v in parent["config"].items() if k not in ("config", "rootfs")},
            **container.image.platform.to_oci(),
            "config": config.to_oci(),
        }
        diff_ids = parent["config"].get("rootfs", {}).get("diff_ids", [])
        made = await self._images.make(image, make, oci, parent["layers"], diff_ids)
        return self._made_here(made)

    # -- housekeeping ------------------------------------------------------------------------

    async def reap_orphans(self) -> int:
        """Remove containers (killing their proot processes) and snapshots of dead processes."""
        return await in_thread(self._reap)

    def _reap(self) -> int:
        reaped = 0
        # Half-made images of processes that died while unpacking or snapshotting.
        images = self._images.root
        for entry in images.glob(".work-*") if images.is_dir() else ():
            _, pid, ticks, _ = entry.name.split("-", 3)
            if owner_is_gone({**owner_labels(), LABEL_PID: pid, LABEL_PID_START: ticks}):
                remove_tree(entry)
                reaped += 1
        for base, meta_name in (
            (self._containers_dir, "container.json"),
            (self._trees.spares_dir, "container.json"),
            (images, "image.json"),
        ):
            if not base.is_dir():
                continue
            for entry in base.iterdir():
                try:
                    labels = json.loads((entry / meta_name).read_text()).get("labels") or {}
                except (OSError, ValueError):
                    continue
                if not owner_is_gone(labels):
                    continue
                for pid in processes_using(entry / "rootfs"):
                    kill_proot(pid)
                remove_tree(entry)
                reaped += 1
        return reaped

    def _remove_containers_now(self) -> None:
        for container in list(self._live.values()):
            with contextlib.suppress(OSError):
                self._remove_dir(container)
        for path in list(self._creating):  # e.g. the interpreter exits mid-create
            with contextlib.suppress(OSError):
                remove_tree(path)
        self._creating.clear()
        self._trees.clear()

    def _remove_image_now(self, image_id: str) -> None:
        remove_tree(self._images.root / image_id)
        self._made.pop(image_id, None)


class _EmbeddedProcess(AttachedProcess):
    def __init__(self, process: ProotProcess) -> None:
        self._process = process
        self.exited = process.exited

    async def write(self, data: bytes) -> None:
        await self._process.write(data)

    async def running(self) -> bool:
        return not self._process.exited.done()  # the command's end, whatever holds output

    async def interrupt(self, group: int) -> None:
        # The guest's processes share proot's process group (proot does not start new ones).
        await self._process.interrupt()


def _needs_qemu(platform: Platform) -> bool:
    return platform.architecture != host_platform().architecture


def _proot_points(container: _Container) -> frozenset[str]:
    """The mount points proot (or ``_prepare``) made in a container's rootfs: those its
    image lacks, which are never part of what the container wrote."""
    image_root = container.image_dir / "rootfs"
    emulated = _needs_qemu(container.image.platform)
    names = (*MOUNT_POINTS, *NETWORK_FILES, *(QEMU_MOUNT_POINTS if emulated else ()))
    return frozenset(name for name in names if not os.path.lexists(image_root / name))


def _kill_all(container: _Container) -> None:
    for process in [p for p in (container.main, *container.execs) if p is not None]:
        process.kill_now()


def _kill_execs(container: _Container) -> None:
    for process in list(container.execs):
        process.kill_now()
