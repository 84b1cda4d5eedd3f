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

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .tree import LinkedFiles, clone_tree, remove_tree

#: Trees kept per image: enough for a cell's containers of one platform to follow each other.
SPARES_PER_IMAGE = 2
#: The file marking when a container's tree was ready (in its directory, beside rootfs/).
READY = "ready"
#: How a retired directory that is being removed is named (in the spares' directory).
GONE = ".gone-"
#: Linux's CLOCK_REALTIME_COARSE: the clock inode times are taken from (not in ``time``).
_COARSE_CLOCK = 5


class ContainerTrees:
    """The trees of one engine's containers, and the spares it keeps in ``spares_dir``
    (blocking calls, safe from several threads)."""

    def __init__(self, spares_dir: Path) -> None:
        self.spares_dir = spares_dir
        self._spares: dict[Path, list[Path]] = {}  # image directory -> spare directories
        self._lock = threading.Lock()

    def make(self, image_dir: Path, path: Path, linked: LinkedFiles, meta: str) -> None:
        """Make the container directory ``path`` (new): ``meta`` as its container.json (first,
        so that a half-made one can be reaped), and its ``rootfs``, a spare's if there is
        one, else a fresh copy of the image's."""
        while spare := self._take(image_dir):
            try:
                os.rename(spare, path)
            except OSError:  # reaped meanwhile (its kernel seemed gone): try the next
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

    def retire(self, path: Path) -> Path:
        """Move the container directory ``path`` out of the containers (its container is
        gone) to where it waits for :meth:`hand_on`; its path there."""
        self.spares_dir.mkdir(exist_ok=True)
        retired = self.spares_dir / path.name
        os.rename(path, retired)
        return retired

    def hand_on(self, image_dir: Path, path: Path, skip: Iterable[str]) -> bool:
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

    def discard(self, path: Path) -> Path:
        """Rename the retired directory ``path`` for removal (a tree that changed): a spare
        never looks like one being removed."""
        gone = path.with_name(f"{GONE}{path.name}")
        os.rename(path, gone)
        return gone

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
