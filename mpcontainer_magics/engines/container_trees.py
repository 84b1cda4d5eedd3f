"""Containers' private rootfs trees: made from their image's tree, and handed on to the
next container when the command left them exactly as they were.

A container of the embedded engine gets a private copy of its image's rootfs, mostly hard
links (:func:`.tree.clone_tree`). For a Debian image that is 9,500-13,600 new directory
entries per platform per cell, and as many unlinks when the container goes, which took
longer still: most of a warm one-off cell (4.6 s on five platforms, against Docker's 1.2 s).
Yet most cells change no file of the tree (``uname -m``, a test, a build whose output goes to
a mount). So when a container goes, its tree becomes the next container's (of that image)
if nothing in it changed after the container was ready. Every create, write, rename,
unlink, chmod, chown or link changes the ctime of the inode or of its directory, also a
write through a hard link into the image: the tree is unchanged when no entry's ctime is
later than the ``ready`` stamp written once it was set up (both times come from the
filesystem that holds them). One stat per entry, instead of an unlink now and a link later;
GNU ``find -newercc`` does them, in a process of its own (5 trees of a Debian image were
0.35-0.8 s each in threads of ours, convoyed on the GIL; find takes 30-40 ms a tree).

A tree handed on is thus exactly what a fresh copy would be. Trees whose set-up changed
them (a mount point, a read-only mount's copy, a working directory the image lacks) are
never handed on, and spares of an image that a container wrote into are dropped with it.
Spares wait in ``spares/`` of the cache, their ``container.json`` naming their owner as a
container's does, so a dead kernel's are reaped like its containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from .._aio import in_thread
from .archives import write_copy
from .common import missing_path, not_a_directory
from .layers import extract_archive
from .tree import (
    LinkedFiles,
    clone_tree,
    copy_tree,
    remove_tree,
    resolve_in_root,
    resolve_parent_in_root,
)

log = logging.getLogger(__name__)

#: Trees kept per image: enough for a cell's containers of one platform to follow each other.
SPARES_PER_IMAGE = 2
#: The file marking when a container's tree was ready (in its directory, beside rootfs/).
READY = "ready"
#: How a retired directory that is being removed is named (in the spares' directory).
GONE = ".gone-"
#: Linux's CLOCK_REALTIME_COARSE: the clock inode times are taken from (not in ``time``).
_COARSE_CLOCK = 5


class ContainerTrees:
    """The trees of one engine's containers, and the spares it keeps in ``spares_dir``.

    The blocking calls are safe from several threads. A container's tree is handed on or
    removed in the background (``retire``), so a cell's result never waits for it; the
    next container of the same image waits for its hand-on (``settled``)."""

    def __init__(self, spares_dir: Path) -> None:
        self.spares_dir = spares_dir
        self._spares: dict[Path, list[Path]] = {}  # image directory -> spare directories
        self._lock = threading.Lock()
        self._settling: dict[Path, set[asyncio.Task[None]]] = {}  # per image directory
        self._removing: set[asyncio.Task[None]] = set()

    async def settled(self, image_dir: Path) -> None:
        """Once the trees of ``image_dir``'s containers that just went are handed on."""
        await asyncio.gather(*self._settling.get(image_dir, ()), return_exceptions=True)

    async def retire(
        self,
        image_dir: Path,
        path: Path,
        skip: Iterable[str],
        on_changed: Callable[[Path], None],
    ) -> None:
        """The container of the directory ``path`` is gone (its processes killed): take the
        directory away now; then, in the background, hand its tree on to the next container
        of ``image_dir``, or, if the tree changed, call ``on_changed(rootfs)`` (blocking: it
        runs on a thread) and remove it."""
        retired = await in_thread(self._move_away, path)
        settling = self._settling.setdefault(image_dir, set())
        _in_background(settling, self._settle(image_dir, retired, skip, on_changed))

    async def _settle(
        self,
        image_dir: Path,
        retired: Path,
        skip: Iterable[str],
        on_changed: Callable[[Path], None],
    ) -> None:
        if await in_thread(self._hand_on, image_dir, retired, skip):
            return
        await in_thread(on_changed, retired / "rootfs")
        gone = retired.with_name(f"{GONE}{retired.name}")  # never taken for a spare
        await in_thread(os.rename, retired, gone)
        _in_background(self._removing, in_thread(remove_tree, gone))

    async def wait(self) -> None:
        """Until nothing is under way in the background."""
        for under_way in (*self._settling.values(), self._removing):
            await asyncio.gather(*under_way, return_exceptions=True)

    def make(self, image_dir: Path, path: Path, linked: LinkedFiles, meta: str) -> None:
        """Make the container directory ``path`` (new): ``meta`` as its container.json (first,
        so that a half-made one can be reaped), and its ``rootfs``, a spare's if there is
        one, else a fresh copy of the image's."""
        while spare := self._take(image_dir):
            try:
                os.rename(spare, path)
            except OSError:  # gone meanwhile (a reaper, a full disk): try the next
                continue
            (path / "container.json").write_text(meta)
            return
        path.mkdir(parents=True)
        (path / "container.json").write_text(meta)
        clone_tree(image_dir / "rootfs", path / "rootfs", link=linked)

    def _take(self, image_dir: Path) -> Path | None:
        with self._lock:
            spares = self._spares.get(image_dir)
            return spares.pop() if spares else None

    @staticmethod
    def mark_ready(path: Path) -> None:
        """Stamp the container directory ``path``: its tree is set up, a command may run."""
        stamp(path / READY)

    def _move_away(self, path: Path) -> Path:
        self.spares_dir.mkdir(exist_ok=True)
        retired = self.spares_dir / path.name
        os.rename(path, retired)
        return retired

    def _hand_on(self, image_dir: Path, path: Path, skip: Iterable[str]) -> bool:
        """Keep the retired directory ``path`` as a spare of ``image_dir`` if its tree is as
        it was when marked ready (``skip``: paths that are not the tree's, such as proot's
        mount points); False when it must be removed instead."""
        with self._lock:
            if len(self._spares.get(image_dir, ())) >= SPARES_PER_IMAGE:
                return False
        ready = path / READY
        if not ready.exists() or changed_since(path / "rootfs", ready, skip):
            return False  # changed, or its set-up changed it (never marked)
        with contextlib.suppress(OSError):
            for name in (READY, f"{READY}{_AFTER}"):
                (path / name).unlink()  # a new container is marked anew
            with self._lock:
                self._spares.setdefault(image_dir, []).append(path)
            return True
        return False

    def drop(self, image_dir: Path) -> None:
        """Remove the spares of ``image_dir`` (a container wrote into the image's files)."""
        with self._lock:
            spares = self._spares.pop(image_dir, [])
        for spare in spares:
            with contextlib.suppress(OSError):
                remove_tree(spare)

    def clear(self) -> None:
        for image_dir in list(self._spares):
            self.drop(image_dir)


def _in_background(tasks: set[asyncio.Task[None]], work: Awaitable[None]) -> None:
    """Run ``work`` as a task kept in ``tasks`` until it ends (its failure logged)."""
    task = asyncio.ensure_future(work)
    tasks.add(task)

    def done(finished: asyncio.Task[None]) -> None:
        tasks.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            log.warning(
                "handing on or removing a container's tree failed: %s", finished.exception()
            )

    task.add_done_callback(done)


def make_points(rootfs: Path, directories: Iterable[str], files: Iterable[str]) -> None:
    """Make the mount points proot binds over (paths relative to ``rootfs``) that the tree
    lacks, before it runs: proot would make each as it starts, changing the tree under a
    command that changes nothing (and leave a mode-000 placeholder when killed)."""
    for point in (rootfs / p for p in directories):
        if not os.path.lexists(point):
            point.mkdir()
    for point in (rootfs / p for p in files):
        real_parent = point.parent.is_dir() and not point.parent.is_symlink()
        if real_parent and not os.path.lexists(point):
            point.touch()


#: The second file of a stamp (see :func:`stamp`).
_AFTER = ".after"


def stamp(path: Path) -> Path:
    """Mark this moment with the empty file ``path``: every change made before has an older
    ctime than it, every change made after a newer one; ``path``.

    Inode times come from the kernel's coarse clock, so a stamp first waits for its next
    tick (a few milliseconds at most). Since Linux 6.13 a change may instead get the last
    fine-grained time handed out, ahead of that clock; a change of an inode whose time was
    read gets a new fine-grained one, so the stamp is read, then changed once more. A change
    right after may still get that same time: a second stamp, ``path.after``, hands out a
    later one, so what comes after is strictly newer than ``path``."""
    for made in (path, path.with_name(path.name + _AFTER)):
        tick = time.clock_gettime_ns(_COARSE_CLOCK)
        while time.clock_gettime_ns(_COARSE_CLOCK) == tick:
            time.sleep(0.0005)
        made.write_bytes(b"")
        made.stat()
        made.chmod(0o600)
    return path


def changed_since(root: Path, reference: Path, skip: Iterable[str] = ()) -> bool:
    """Whether anything in the tree ``root`` (itself included) changed after the stamp
    ``reference`` (see :func:`stamp`); paths in ``skip`` (relative) are not looked into.

    When that cannot be told (no GNU find, an unreadable directory), it counts as changed:
    the tree is then made anew, never handed on wrongly."""
    pruned: list[str] = []
    for rel in sorted(skip):
        pruned += [
            *(["-o"] if pruned else []),
            "-path",
            f"{_glob_escaped(str(root))}/{_glob_escaped(rel)}",
        ]
    argv = ["find", str(root)]
    if pruned:
        argv += ["(", *pruned, ")", "-prune", "-o"]
    argv += ["-newercc", str(reference), "-print", "-quit"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return done.returncode != 0 or bool(done.stdout)


def _glob_escaped(path: str) -> str:
    """``path`` as a find -path pattern matching only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


def copy_into(source: Path, rootfs: Path, target: str) -> None:
    """Merge host ``source`` into ``target`` of ``rootfs``, safely, as ``docker cp`` does.

    Through a tar and the layer unpacker: whatever symlinks the container planted, nothing
    is written outside ``rootfs`` (a link to /etc is the container's /etc, not the host's).
    Unlike a layer, a copy never replaces a file by a directory: Docker refuses that too.
    """
    above = posixpath.normpath("/" + target)
    if not (source.is_dir() and not source.is_symlink()):
        above = posixpath.dirname(above)  # a file may replace a file
    path = "/"
    for part in (p for p in above.split("/") if p):
        path = posixpath.join(path, part)
        found = resolve_in_root(rootfs, path)
        if os.path.lexists(found) and not found.is_dir():
            raise not_a_directory(target, f"{path} is not a directory")
    with tempfile.TemporaryFile() as archive:
        write_copy(archive, source, target)
        archive.seek(0)
        extract_archive(archive, rootfs)  # type: ignore[arg-type]


def copy_out(root: Path, path: str, dest: Path, skip: Iterable[str]) -> bool:
    """Copy ``path`` of the tree ``root`` into the new host directory ``dest``, as ``docker
    cp`` does (a directory's contents land in ``dest``, a file as ``dest/<name>``); paths
    in ``skip`` (relative to ``root``: mount points) are left out. True for a directory."""
    found = resolve_parent_in_root(root, path)
    if not found.is_symlink() and not found.exists():
        raise missing_path(path)
    if found.is_dir() and not found.is_symlink():
        below = "" if found == root else found.relative_to(root).as_posix() + "/"
        copy_tree(
            found, dest, skip=frozenset(p.removeprefix(below) for p in skip if p.startswith(below))
        )
        return True
    dest.mkdir()
    shutil.copy2(found, dest / found.name, follow_symlinks=False)
    return False
