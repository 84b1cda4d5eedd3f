"""The embedded engine: containers without a daemon, from unpacked images run with proot.

Where no Docker daemon answers (Binder, shared JupyterHubs, laptops without Docker) this engine
does the same jobs with parts a user can install without root: our registry client, the
user's cache directory, proot, and qemu-user for foreign platforms.

Layout of the cache (``$MPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mpcontainer_magics``)::

    blobs/sha256/<hex>        verified blobs (store.BlobStore), shared with publish/export
    refs/<sha256 of name>.json  what a name resolved to last (used when its registry is down)
    images/<manifest hex>/    one platform of a pulled image, pinned by its manifest digest:
        rootfs/               its layers applied safely (layers.apply_layer)
        image.json            reference, platform, the whole image config, its layers
        linked.json           the files containers hard-link (tree.LinkedFiles)
    images/snap-<id>/         an image this process made (commit, image_from_directory);
        diff-<n>.tar          its own layers, stacked on its parent's
    containers/<id>/          a container: container.json (labels for reaping) and rootfs/,
                              a private copy of the image's rootfs (tree.clone_tree)

An image directory appears only complete (unpacked under a temporary name, then renamed), so
kernels sharing the cache never see half an image, and a second pull fetches no blob. Runs
and sessions are proot processes over a container's rootfs (``proot.ProotProcess``).
Every container and snapshot is labelled with its owner process, as Docker ones are, so
what a killed kernel left (directories and still-running proot processes) is reaped later.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._aio import finish_despite_cancel, in_thread, once
from ..errors import (
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    ExecUnsupported,
    InvalidArgument,
    RegistryError,
)
from ..platforms import Platform, host_platform
from ..registry import Reference, RegistryClient, ResolvedImage
from .base import (
    EMULATION_CANDIDATES,
    LABEL_PID,
    LABEL_PID_START,
    AttachedProcess,
    Engine,
    ExecOutcome,
    ImageConfig,
    Mount,
    OutputCallback,
    ProgressCallback,
    PulledImage,
    file_digest,
    owner_is_gone,
    owner_labels,
    process_start_ticks,
)
from .layers import extract_archive
from .proot import (
    MOUNT_POINTS,
    SYSTEM_BINDS,
    ProotProcess,
    find_proot,
    find_qemu,
    kill_proot,
    processes_using,
    proot_command,
    proot_env,
)
from .rootfs import unpack_image
from .store import BlobStore, default_cache_dir
from .tree import (
    LinkedFiles,
    clone_tree,
    copy_tree,
    diff,
    remove_tree,
    resolve_in_root,
    resolve_parent_in_root,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SNAPSHOT_PREFIX = "snap-"
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

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


class _PullProgress:
    """The byte counts of one image's unpacking, passed on to every pull waiting for it."""

    def __init__(self) -> None:
        self.listeners: list[ProgressCallback] = []
        self.last: tuple[int, int | None] | None = None

    def add(self, listener: ProgressCallback) -> None:
        self.listeners.append(listener)
        if self.last is not None:  # joined an unpacking under way: where it is
            listener(*self.last)

    def __call__(self, done: int, total: int | None) -> None:
        self.last = (done, total)
        for listener in list(self.listeners):
            listener(done, total)


class EmbeddedEngine(Engine):
    name = "embedded"

    def __init__(self, registry: RegistryClient, proot: str, cache_dir: Path) -> None:
        self.registry = registry
        self._proot = proot
        self._cache = cache_dir
        self._blobs = BlobStore(cache_dir)
        self._images = cache_dir / "images"
        self._containers_dir = cache_dir / "containers"
        self._resolved: dict[str, ResolvedImage] = {}
        self._pulled: dict[tuple[str, Platform], PulledImage] = {}
        self._unpacking: dict[str, asyncio.Task[Path]] = {}
        self._progress: dict[str, _PullProgress] = {}  # image ID -> its unpacking's bytes
        self._live: dict[str, _Container] = {}
        self._creating: set[Path] = set()  # container directories not in _live yet
        self._linked_files: dict[Path, LinkedFiles] = {}  # per image directory
        self._made: dict[str, None] = {}  # snapshot image IDs, oldest first

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

    async def emulated_platforms(self) -> list[Platform]:
        """Foreign platforms whose qemu-user binary is installed (proot runs it with -q)."""
        native = await self.native_platform()
        return [
            p
            for p in EMULATION_CANDIDATES
            if p.architecture != native.architecture and find_qemu(p) is not None
        ]

    async def image_platforms(self, reference: str) -> list[Platform]:
        return (await self._resolve(reference)).platforms()

    # -- images ------------------------------------------------------------------------------

    async def _resolve(self, reference: str, refresh: bool = False) -> ResolvedImage:
        """What ``reference`` points to; when its registry cannot be reached, what it pointed
        to last time (as Docker runs a local image then), if this cache knows."""
        if refresh or reference not in self._resolved:
            known = self._cache / "refs" / f"{hashlib.sha256(reference.encode()).hexdigest()}.json"
            try:
                resolved = await self.registry.resolve(reference)
            except RegistryError:
                if not known.is_file():
                    raise
                saved = json.loads(known.read_text())
                resolved = ResolvedImage(
                    Reference.parse(reference),
                    saved["digest"],
                    saved["media_type"],
                    tuple((Platform.parse(p), d) for p, d in saved["manifests"]),
                )
            else:
                known.parent.mkdir(parents=True, exist_ok=True)
                saved = {
                    "digest": resolved.digest,
                    "media_type": resolved.media_type,
                    "manifests": [(str(p), d) for p, d in resolved.manifests],
                }
                _write_atomically(known, json.dumps(saved))
            self._resolved[reference] = resolved
        return self._resolved[reference]

    async def pull(
        self,
        reference: str,
        platform: Platform,
        *,
        refresh: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
        key = (reference, platform)
        if refresh or key not in self._pulled:
            resolved = await self._resolve(reference, refresh)
            digest = resolved.manifest_digest(platform)
            image = PulledImage(reference, platform, digest, digest)
            await self._image_dir(image, on_progress)
            self._pulled[key] = image
        elif on_progress is not None:
            await self._image_dir(self._pulled[key], on_progress)
        return self._pulled[key]

    def _dir_of(self, image: PulledImage) -> Path:
        return self._images / image.image_id.removeprefix("sha256:")

    async def _image_dir(
        self, image: PulledImage, on_progress: ProgressCallback | None = None
    ) -> Path:
        """The unpacked image, unpacked now (from cached blobs, if any) when missing.

        ``on_progress`` follows the bytes fetched; (total, total) at once when unpacked.
        """
        path = self._dir_of(image)
        if (path / "image.json").is_file():
            if on_progress is not None:
                size = self._size_of(path)
                on_progress(size, size)
            return path
        if image.digest is None or image.image_id.startswith(SNAPSHOT_PREFIX):
            raise EngineError(f"image {image.reference} is gone (it was removed)")
        # Concurrent pulls of one image share its unpacking, and each sees its progress.
        progress = self._progress.setdefault(image.image_id, _PullProgress())
        if on_progress is not None:
            progress.add(on_progress)
        try:
            return await once(
                self._unpacking, image.image_id, lambda: self._unpack(image, path, progress)
            )
        finally:
            if on_progress is not None:
                progress.listeners.remove(on_progress)
            if not progress.listeners and self._progress.get(image.image_id) is progress:
                del self._progress[image.image_id]

    def _size_of(self, image_dir: Path) -> int:
        """Bytes of an unpacked image's config and layers (recorded when it was unpacked;
        for older images, the cached layers' sizes)."""
        meta = self._meta(image_dir)
        if isinstance(meta.get("size"), int):
            return int(meta["size"])
        paths = [self._blobs.path(layer["digest"]) for layer in meta["layers"] if "digest" in layer]
        return sum(p.stat().st_size for p in paths if p.is_file())

    async def _unpack(self, image: PulledImage, path: Path, progress: _PullProgress) -> Path:
        assert image.digest is not None
        progress.last = None  # a new attempt starts from zero
        self._images.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=_work_prefix(), dir=self._images))
        try:
            unpacked = await unpack_image(
                self.registry,
                image.reference,
                image.platform,
                work / "rootfs",
                self._blobs,
                manifest_digest=image.digest,
                on_progress=progress,
            )
            layers = [{"mediaType": t, "digest": d} for t, d in unpacked.layers]
            await asyncio.to_thread(
                self._seal, work, image, unpacked.image_config, layers, unpacked.size
            )
            with contextlib.suppress(OSError):  # another kernel won the race: use theirs
                os.rename(work, path)
            return path
        finally:
            if work.exists():
                await in_thread(remove_tree, work)

    @staticmethod
    def _seal(
        work: Path,
        image: PulledImage,
        config: dict[str, Any],
        layers: list[dict[str, Any]],
        size: int | None = None,
    ) -> None:
        """Write what makes ``work`` a complete image: the linked files, then image.json.

        ``size``: the bytes of a pulled image's config and layers (what a pull reports).
        """
        LinkedFiles.scan(work / "rootfs").save(work)
        meta = {
            "reference": image.reference,
            "platform": str(image.platform),
            "digest": image.digest,
            "config": config,
            "layers": layers,
            "labels": owner_labels() if image.image_id.startswith(SNAPSHOT_PREFIX) else {},
        }
        if size is not None:
            meta["size"] = size
        (work / "image.json").write_text(json.dumps(meta))

    @staticmethod
    def _meta(image_dir: Path) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((image_dir / "image.json").read_text())
        return meta

    async def image_config(self, image: PulledImage) -> ImageConfig:
        meta = self._meta(await self._image_dir(image))
        return ImageConfig.from_oci(meta["config"].get("config"))

    async def remove_image(self, image: PulledImage) -> None:
        """Remove a snapshot; pulled images stay cached for every kernel of this user."""
        if image.image_id.startswith(SNAPSHOT_PREFIX):
            await in_thread(remove_tree, self._dir_of(image))
            self._made.pop(image.image_id, None)

    async def save_layers(self, image: PulledImage, dest: Path) -> list[Path]:
        image_dir = await self._image_dir(image)
        layers = self._meta(image_dir)["layers"]

        def save() -> list[Path]:
            dest.mkdir(parents=True, exist_ok=True)
            saved = []
            for number, layer in enumerate(layers):
                saved.append(dest / f"layer-{number}.tar")
                if "file" in layer:
                    shutil.copyfile(image_dir / layer["file"], saved[-1])
                    continue
                blob = self._blobs.path(layer["digest"])
                if not blob.is_file():
                    raise EngineError(
                        f"layer {layer['digest']} of {image.reference} is no longer in the "
                        f"cache ({self._cache}); pull the image again"
                    )
                with open(blob, "rb") as raw, open(saved[-1], "wb") as out:
                    source = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
                    raw.seek(0)
                    shutil.copyfileobj(source, out, 1 << 20)
            return saved

        return await in_thread(save)

    async def read_image(self, image: PulledImage, dest: Path) -> None:
        rootfs = (await self._image_dir(image)) / "rootfs"
        await in_thread(copy_tree, rootfs, dest)

    async def image_from_directory(
        self, root: Path, platform: Platform, config: ImageConfig
    ) -> PulledImage:
        image = PulledImage(f"rootfs for {platform}", platform, _snapshot_id(), None)
        layer_name = "diff-0.tar"

        def make(work: Path) -> list[dict[str, Any]]:
            copy_tree(root, work / "rootfs")
            with tarfile.open(work / layer_name, "w", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(root.iterdir()):
                    tar.add(entry, arcname=entry.name)
            return [{"file": layer_name, "diff_id": file_digest(work / layer_name)}]

        oci = {**platform.to_oci(), "config": config.to_oci(), "rootfs": {"type": "layers"}}
        return await self._make_image(image, make, oci)

    async def _make_image(
        self,
        image: PulledImage,
        make: Callable[[Path], list[dict[str, Any]]],
        config: dict[str, Any],
        parent_layers: Sequence[dict[str, Any]] = (),
        parent_diff_ids: Sequence[str] = (),
    ) -> PulledImage:
        """A snapshot image: ``make(work)`` fills work/rootfs and returns its own layers."""
        self._images.mkdir(parents=True, exist_ok=True)
        path = self._dir_of(image)
        work = Path(tempfile.mkdtemp(prefix=_work_prefix(), dir=self._images))
        try:

            def build() -> None:
                layers = make(work)
                diff_ids = [*parent_diff_ids, *(layer.pop("diff_id") for layer in layers)]
                config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
                self._seal(work, image, config, [*parent_layers, *layers])

            await in_thread(build)
            os.rename(work, path)
        finally:
            if work.exists():
                await in_thread(remove_tree, work)
        self._made[image.image_id] = None
        return image

    # -- containers --------------------------------------------------------------------------

    async def create(
        self,
        image: PulledImage,
        argv: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
    ) -> str:
        if image.platform.os != "linux":
            raise ExecUnsupported(image.platform)
        image_dir = await self._image_dir(image)
        defaults = ImageConfig.from_oci(self._meta(image_dir)["config"].get("config"))
        container_id = secrets.token_hex(32)
        path = self._containers_dir / container_id
        path.mkdir(parents=True)
        self._creating.add(path)
        (path / "container.json").write_text(
            json.dumps({"image": image.image_id, "labels": {**owner_labels(), **(labels or {})}})
        )
        try:
            linked = await self._linked(image_dir)
            await in_thread(clone_tree, image_dir / "rootfs", path / "rootfs", link=linked)
            container = _Container(
                container_id,
                path,
                image,
                image_dir,
                tuple(argv) if argv else None,
                self._env(defaults, env, path / "rootfs"),
                workdir or defaults.workdir or "/",
                await in_thread(_proot_user, path / "rootfs", defaults.user),
                [],
            )
            await in_thread(self._prepare, container, mounts)
        except BaseException:
            await in_thread(remove_tree, path)
            self._creating.discard(path)
            raise
        self._live[container_id] = container
        self._creating.discard(path)
        return container_id

    async def _linked(self, image_dir: Path) -> LinkedFiles:
        if image_dir not in self._linked_files:
            self._linked_files[image_dir] = await in_thread(LinkedFiles.load, image_dir)
        return self._linked_files[image_dir]

    def _check_shared_files(self, container: _Container) -> None:
        """Before a container goes: did it write into a file it shares with its image?

        Then that image is no longer its layers: it is set aside (and deleted), so the next
        container of it is made from a fresh unpack of the cached layers.
        """
        image_dir = container.image_dir
        linked = self._linked_files.get(image_dir)
        if linked is None or not linked.written_in_place(container.rootfs):
            return
        log.warning(
            "a container of %s wrote into files it shares with the image; unpacking it again",
            container.image.reference,
        )
        with contextlib.suppress(OSError):
            trash = image_dir.with_name(f"{_work_prefix()}damaged")
            os.rename(image_dir, trash)
            remove_tree(trash)
        self._linked_files.pop(image_dir, None)
        self._unpacking.pop(container.image.image_id, None)

    @staticmethod
    def _env(defaults: ImageConfig, env: Mapping[str, str] | None, rootfs: Path) -> dict[str, str]:
        merged = {"PATH": DEFAULT_PATH, **defaults.env_dict(), **(env or {})}
        merged.setdefault("HOME", _home_of(rootfs, defaults.user))
        merged.setdefault("HOSTNAME", "mpc-embedded")
        return merged

    def _prepare(self, container: _Container, mounts: Sequence[Mount]) -> None:
        """Make the working directory and mount points; copy read-only mounts in."""
        rootfs = container.rootfs
        resolve_in_root(rootfs, container.workdir).mkdir(parents=True, exist_ok=True)
        points = set()
        for mount in mounts:
            point = resolve_in_root(rootfs, mount.target)
            if mount.read_only:
                # proot cannot make a bind read-only: the container gets a copy, so the
                # host's files stay untouched whatever it does.
                _copy_into(Path(mount.source), rootfs, mount.target)
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

    def _get(self, container_id: str) -> _Container:
        container = self._live.get(container_id)
        if container is None:
            raise EngineError(f"container {container_id[:12]} does not exist (any more)")
        return container

    def _command(self, container: _Container, argv: Sequence[str]) -> list[str]:
        platform = container.image.platform
        qemu = None
        if platform.architecture != host_platform().architecture:
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
        container.main.exited.add_done_callback(lambda _: _kill_execs(container))

    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        container = self._get(container_id)
        if container.main is None or container.main.exited.done():
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
        if not main.exited.done():
            return "running"
        return f"exited ({'?' if main.exited.exception() else main.exited.result()})"

    async def remove(self, container_id: str) -> None:
        container = self._live.pop(container_id, None)
        if container is None:
            return
        for process in [p for p in (container.main, *container.execs) if p is not None]:
            await process.kill()
        await in_thread(self._remove_dir, container)

    def _remove_dir(self, container: _Container) -> None:
        for process in [p for p in (container.main, *container.execs) if p is not None]:
            process.kill_now()
        self._check_shared_files(container)
        remove_tree(container.path)

    # -- files and snapshots -----------------------------------------------------------------

    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        container = self._get(container_id)
        await in_thread(_copy_into, source, container.rootfs, target)

    async def copy_from(self, container_id: str, path: str, dest: Path) -> bool:
        container = self._get(container_id)

        def copy() -> bool:
            root = container.rootfs
            found = resolve_parent_in_root(root, path)
            if not found.is_symlink() and not found.exists():
                raise InvalidArgument(
                    f"{path} does not exist in the container; check the name, e.g. list "
                    f"{os.path.dirname(path.rstrip('/')) or '/'} with ls"
                )
            if found.is_dir() and not found.is_symlink():
                # As `docker cp` of /: proot's own mount points (the host's / among them)
                # are not the container's files.
                skip = _proot_points(container) if found == root else frozenset()
                copy_tree(found, dest, skip=skip)
                return True
            dest.mkdir()
            shutil.copy2(found, dest / found.name, follow_symlinks=False)
            return False

        return await in_thread(copy)

    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        container = self._get(container_id)
        parent_dir = container.image_dir
        parent = self._meta(parent_dir)
        image = PulledImage(
            f"snapshot of {container_id[:12]}", container.image.platform, _snapshot_id(), None
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
        return await self._make_image(image, make, oci, parent["layers"], diff_ids)

    # -- housekeeping ------------------------------------------------------------------------

    async def reap_orphans(self) -> int:
        """Remove containers (killing their proot processes) and snapshots of dead processes."""
        return await in_thread(self._reap)

    def _reap(self) -> int:
        reaped = 0
        # Half-made images of processes that died while unpacking or snapshotting.
        for entry in self._images.glob(".work-*") if self._images.is_dir() else ():
            _, pid, ticks, _ = entry.name.split("-", 3)
            if owner_is_gone({**owner_labels(), LABEL_PID: pid, LABEL_PID_START: ticks}):
                remove_tree(entry)
                reaped += 1
        for base, meta_name in (
            (self._containers_dir, "container.json"),
            (self._images, "image.json"),
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

    async def aclose(self) -> None:
        # Synchronous on purpose, as DockerEngine's: at interpreter exit no thread pool runs.
        try:
            for container in list(self._live.values()):
                with contextlib.suppress(OSError):
                    self._remove_dir(container)
            self._live.clear()
            for path in list(self._creating):  # e.g. the interpreter exits mid-create
                with contextlib.suppress(OSError):
                    remove_tree(path)
            self._creating.clear()
            for image_id in reversed(list(self._made)):
                with contextlib.suppress(OSError):
                    remove_tree(self._images / image_id)
            self._made.clear()
        finally:
            await self.registry.aclose()


class _EmbeddedProcess(AttachedProcess):
    def __init__(self, process: ProotProcess) -> None:
        self._process = process
        self.exited = process.exited

    async def write(self, data: bytes) -> None:
        await self._process.write(data)

    async def interrupt(self, group: int) -> None:
        # The guest's processes share proot's process group (proot does not start new ones).
        await self._process.interrupt()


def _proot_points(container: _Container) -> frozenset[str]:
    """The mount points proot made in a container's rootfs (those its image lacks)."""
    image_root = container.image_dir / "rootfs"
    return frozenset(name for name in MOUNT_POINTS if not os.path.lexists(image_root / name))


def _kill_execs(container: _Container) -> None:
    for process in list(container.execs):
        process.kill_now()


def _write_atomically(path: Path, text: str) -> None:
    """Kernels sharing the cache never read half a file."""
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(partial, path)


def _work_prefix() -> str:
    """Temporary image directories name their process, so a dead one's can be reaped."""
    pid = os.getpid()
    return f".work-{pid}-{process_start_ticks(pid)}-"


def _snapshot_id() -> str:
    return f"{SNAPSHOT_PREFIX}{secrets.token_hex(16)}"


def _copy_into(source: Path, rootfs: Path, target: str) -> None:
    """Merge host ``source`` into ``target`` of ``rootfs``, safely, as ``docker cp`` does.

    Through a tar and the layer unpacker: whatever symlinks the container planted, nothing
    is written outside ``rootfs`` (a link to /etc is the container's /etc, not the host's).
    """
    top = target.strip("/")
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if source.is_dir() and not source.is_symlink():
                for child in sorted(source.iterdir()):
                    tar.add(child, f"{top}/{child.name}" if top else child.name)
                if top and not any(source.iterdir()):
                    tar.add(source, top, recursive=False)
            else:
                tar.add(source, top or source.name)
        archive.seek(0)
        extract_archive(archive, rootfs)  # type: ignore[arg-type]


def _passwd_entry(rootfs: Path, user: str) -> list[str] | None:
    with contextlib.suppress(OSError):
        for line in resolve_in_root(rootfs, "/etc/passwd").read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and user in (fields[0], fields[2]):
                return fields
    return None


def _home_of(rootfs: Path, user: str) -> str:
    entry = _passwd_entry(rootfs, user.partition(":")[0] or "root")
    return entry[5] if entry and entry[5] else "/root" if not user else "/"


def _proot_user(rootfs: Path, user: str) -> str | None:
    """proot's ``-i uid:gid`` for an image's User ("name", "uid", "uid:gid"); None for root."""
    name, _, group = user.partition(":")
    if name in ("", "root", "0") and group in ("", "root", "0"):
        return None
    entry = _passwd_entry(rootfs, name)
    if name.isdigit():
        uid = name
    elif entry is not None:
        uid = entry[2]
    else:
        raise EngineError(
            f"unable to find user {name}: no matching entries in the image's /etc/passwd"
        )
    if group.isdigit():
        gid = group
    elif group:
        gid = _group_id(rootfs, group)
    else:
        gid = entry[3] if entry is not None else "0"
    return f"{uid}:{gid}"


def _group_id(rootfs: Path, group: str) -> str:
    with contextlib.suppress(OSError):
        for line in resolve_in_root(rootfs, "/etc/group").read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == group:
                return fields[2]
    raise EngineError(
        f"unable to find group {group}: no matching entries in the image's /etc/group"
    )
