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
as late as the ``ready`` stamp written once it was set up (both times come from the
filesystem that holds them). One stat per entry, instead of an unlink now and a link later.

A tree handed on is thus exactly what a fresh copy would be. Trees whose set-up changed
them (a mount point, a read-only mount's copy, a working directory the image lacks) are
never handed on, and spares of an image that a container wrote into are dropped with it.
Spares wait in ``spares/`` of the cache, their ``container.json`` naming their owner as a
container's does, so a dead kernel's are reaped like its containers.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from .tree import LinkedFiles, clone_tree, remove_tree

#: Trees kept per image: enough for a cell's containers of one platform to follow each other.
SPARES_PER_IMAGE = 2
#: The file marking when a container's tree was ready (in its directory, beside rootfs/).
READY = "ready"
#: Linux's CLOCK_REALTIME_COARSE: the clock inode times are taken from (not in ``time``).
_COARSE_CLOCK = 5


class ContainerTrees:
    """The trees of one engine's containers, and the spares it keeps in ``spares_dir``
    (blocking calls)."""

    def __init__(self, spares_dir: Path) -> None:
        self.spares_dir = spares_dir
        self._spares: dict[Path, list[Path]] = {}  # image directory -> spare directories

    def make(self, image_dir: Path, path: Path, linked: LinkedFiles, meta: str) -> None:
        """Make the container directory ``path`` (new): ``meta`` as its container.json (first,
        so that a half-made one can be reaped), and its ``rootfs``, a spare's if there is
        one, else a fresh copy of the image's."""
        spares = self._spares.get(image_dir, [])
        while spares:
            try:
                os.rename(spares.pop(), path)
            except OSError:  # reaped meanwhile (its kernel seemed gone): try the next
                continue
            (path / READY).unlink()
            (path / "container.json").write_text(meta)
            return
        path.mkdir(parents=True)
        (path / "container.json").write_text(meta)
        clone_tree(image_dir / "rootfs", path / "rootfs", link=linked)

    @staticmethod
    def mark_ready(path: Path) -> None:
        """Stamp the container directory ``path``: its tree is set up, a command may run."""
        stamp(path / READY)

    def hand_on(self, image_dir: Path, path: Path, skip: Iterable[str]) -> bool:
        """Keep the container directory ``path`` as a spare of ``image_dir`` if its tree is
        as it was when marked ready (``skip``: paths that are not the tree's, such as proot's
        mount points); False when it must be removed instead."""
        spares = self._spares.setdefault(image_dir, [])
        if len(spares) >= SPARES_PER_IMAGE:
            return False
        try:
            ready = os.stat(path / READY).st_ctime_ns
        except OSError:
            return False  # never marked: its set-up changed the tree
        if changed_since(path / "rootfs", ready, frozenset(skip)):
            return False
        self.spares_dir.mkdir(exist_ok=True)
        spare = self.spares_dir / path.name
        os.rename(path, spare)
        spares.append(spare)
        return True

    def drop(self, image_dir: Path) -> None:
        """Remove the spares of ``image_dir`` (a container wrote into the image's files)."""
        for spare in self._spares.pop(image_dir, []):
            with contextlib.suppress(OSError):
                remove_tree(spare)

    def clear(self) -> None:
        for image_dir in list(self._spares):
            self.drop(image_dir)


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


def stamp(path: Path) -> int:
    """(Re)write the empty file ``path``, whose ctime is then later than that of every
    change made before and no later than that of any change made after; that ctime.

    Inode times come from the kernel's coarse clock, so first wait for its next tick (a few
    milliseconds at most). Since Linux 6.13 a change may get the last fine-grained time
    handed out instead, ahead of that clock, and a change of an inode whose time was read
    gets a new fine-grained one: so the stamp is read, then changed once more."""
    tick = time.clock_gettime_ns(_COARSE_CLOCK)
    while time.clock_gettime_ns(_COARSE_CLOCK) == tick:
        time.sleep(0.0005)
    path.write_bytes(b"")
    path.stat()
    path.chmod(0o600)
    return path.stat().st_ctime_ns


def changed_since(root: Path, ctime_ns: int, skip: frozenset[str]) -> bool:
    """Whether anything in the tree ``root`` (itself included) has a ctime of ``ctime_ns``
    or later; paths in ``skip`` (relative) are not looked into."""
    if os.lstat(root).st_ctime_ns >= ctime_ns:
        return True
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                if child in skip:
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_ctime_ns >= ctime_ns:
                    return True
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return False
