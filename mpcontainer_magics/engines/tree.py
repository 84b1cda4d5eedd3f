"""Root filesystems as host directory trees: cheap private copies, and what changed in them.

The embedded engine gives every container a private, writable copy of its image's rootfs.
Copying 100 MB per container would make a session cost seconds, so the copy is mostly hard
links: a new directory tree whose files are the image's own inodes. That is safe for what
commands normally do to files they did not create (replace them: package managers, compilers,
``sed -i``, ``mv``, ``rm``, which all write a new file or unlink the old), but not for a write
*into* an existing file, which would change the image's inode too. So:

- the directories where files are edited in place (``COPIED``: /etc, /root, /home, /tmp,
  /usr/local, logs...) are real copies, as small as they are in images; so are package
  managers' databases and caches (dpkg's, apt's, debconf's, apk's, rpm's...), whose lock
  files are locked and truncated in place: linked, two containers of one image would share
  a lock (the second ``apt-get`` fails "locked by another process"), and every run would
  count as a write into the image;
- every other file is linked, and each image records the size and mtime of its linked
  files (``LinkedFiles``), so a write into one is detected: a commit includes the file, and
  when the container ends the image is set aside to be unpacked again from its cached layers.
  Symlinks are made anew (``ls -l /bin/sh`` then counts one link, as in Docker).

``diff`` turns a container's tree into an OCI layer against its image's tree (new and changed
entries, ``.wh.`` whiteouts for deleted ones). A linked file that kept its inode and its
recorded size and mtime is unchanged without reading it; a copied file whose metadata is the
same is compared by content only when its mtime has whole seconds (as files from layers do).
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidArgument

#: Directories (relative to the rootfs) that containers get real copies of.
COPIED = (
    *("etc", "root", "home", "tmp", "run", "usr/local", "var/log", "var/tmp", "var/spool"),
    # Package managers' databases, caches and their lock files:
    *("var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/cache/debconf"),  # Debian, Ubuntu
    *("lib/apk/db", "var/cache/apk"),  # Alpine
    *("var/lib/rpm", "usr/lib/sysimage/rpm", "var/lib/dnf", "var/cache/dnf"),  # Fedora, RHEL
    *("var/lib/yum", "var/cache/yum", "var/lib/pacman"),  # older RHEL, Arch
)
MAX_LINKS = 40  # symlinks followed in one path (Linux's limit)


def is_copied(rel: str) -> bool:
    return any(rel == top or rel.startswith(top + "/") for top in COPIED)


def resolve_in_root(root: Path, path: str, *, max_links: int = MAX_LINKS) -> Path:
    """Where ``path`` lives in the tree ``root``, following its symlinks as a chroot would.

    Symlinks inside an unpacked image are written for that image's root (``/etc/localtime ->
    /usr/share/zoneinfo/UTC``), so they are read relative to ``root`` and ``..`` stops at
    ``root``: the result is always inside ``root``.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > max_links:
                raise InvalidArgument(f"too many symbolic links resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def resolve_parent_in_root(root: Path, path: str) -> Path:
    """``path`` in ``root`` with its directory resolved chroot-style and its last part kept
    as it is (a symlink there is the symlink itself, as ``docker cp`` gives it)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        return resolve_in_root(root, path)
    return resolve_in_root(root, parent) / name


class LinkedFiles:
    """An image's hard-linked files, as (inode, size, mtime_ns) when the image was made."""

    FILE = "linked.json"

    def __init__(self, entries: dict[str, tuple[int, int, int]], image_inode: int = 0) -> None:
        self.entries = entries
        self._image_inode = image_inode  # of the image directory they were read from

    def of(self, image_dir: Path) -> bool:
        """Whether these are still ``image_dir``'s (not an image unpacked again there)."""
        try:
            return os.stat(image_dir).st_ino == self._image_inode
        except OSError:
            return False

    @classmethod
    def scan(cls, root: Path) -> LinkedFiles:
        entries = {}
        for rel, st in walk(root):
            if stat.S_ISREG(st.st_mode) and not is_copied(rel):
                entries[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return cls(entries)

    @classmethod
    def load(cls, image_dir: Path) -> LinkedFiles:
        raw = json.loads((image_dir / cls.FILE).read_text())
        # An image unpacked before a directory joined COPIED lists its files: copied now.
        entries = {rel: (e[0], e[1], e[2]) for rel, e in raw.items() if not is_copied(rel)}
        return cls(entries, os.stat(image_dir).st_ino)

    def save(self, image_dir: Path) -> None:
        (image_dir / self.FILE).write_text(json.dumps(self.entries, separators=(",", ":")))

    def written_in_place(self, root: Path) -> list[str]:
        """Linked files of ``root`` (an image or a container of it) changed through the link."""
        changed = []
        for rel, (ino, size, mtime_ns) in self.entries.items():
            with contextlib.suppress(OSError):
                st = os.lstat(root / rel)
                if st.st_ino == ino and (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                    changed.append(rel)
        return changed


def walk(root: Path, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under ``root``, parents before children, sorted."""
    with os.scandir(root / rel if rel else root) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for entry in children:
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from walk(root, path)


def clone_tree(
    source: Path, dest: Path, *, link: LinkedFiles, skip: frozenset[str] = frozenset()
) -> None:
    """Make ``dest`` (new) a private copy of ``source``: hard links to the files ``link``
    names (while they are still those inodes), real copies of everything else.

    Files that are ``source``'s own (a container's writes) are thus copied, so an image made
    of a container never shares an inode the container may still write to. Paths in
    ``skip`` (relative) are neither copied nor walked: mount points, whose contents are not
    the tree's (proot makes its own with mode 000, which only root can list).
    """
    os.mkdir(dest)
    os.chmod(dest, stat.S_IMODE(os.lstat(source).st_mode) | stat.S_IRWXU)
    known = link.entries
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(source / rel if rel else source) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                if child in skip:
                    continue
                target = dest / child
                if entry.is_dir(follow_symlinks=False):
                    mode = entry.stat(follow_symlinks=False).st_mode
                    os.mkdir(target)
                    os.chmod(target, stat.S_IMODE(mode) | stat.S_IRWXU)  # exact: no umask
                    stack.append(child)
                elif entry.is_symlink():
                    # Made anew, not linked: `ls -l` would count the image's link too.
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_file(follow_symlinks=False):
                    recorded = known.get(child)
                    if recorded is not None and entry.inode() == recorded[0]:
                        os.link(entry.path, target)
                    else:
                        shutil.copy2(entry.path, target, follow_symlinks=False)


def copy_tree(source: Path, dest: Path, *, skip: frozenset[str] = frozenset()) -> None:
    """A full copy of ``source`` at the new path ``dest``, links kept as links; the paths in
    ``skip`` (relative to ``source``: mount points) are neither copied nor walked."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = os.path.relpath(directory, source)
        return {n for n in names if (n if rel == "." else f"{rel}/{n}") in skip}

    shutil.copytree(source, dest, symlinks=True, ignore=ignore if skip else None)


def remove_tree(path: Path) -> None:
    """Delete ``path`` even where a command left directories without write permission."""

    def unlock(_function: object, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed)
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=unlock)


def diff(
    lower: Path,
    upper: Path,
    out: Path,
    *,
    linked: LinkedFiles,
    ignore: frozenset[str] = frozenset(),
    mount_points: frozenset[str] = frozenset(),
) -> int:
    """Write the OCI layer turning tree ``lower`` into tree ``upper``; returns its entry count.

    ``linked`` is what ``upper`` shares with ``lower``; ``ignore`` names paths that are not
    part of the change when ``lower`` lacks them (proot's own mount points). What is under a
    ``mount_points`` path is never part of it (as with Docker, a new mount point is, empty).
    """
    as_root = os.geteuid() == 0
    count = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(rel: str, whole: bool) -> None:
            nonlocal count
            if any(rel.startswith(point + "/") for point in mount_points):
                return  # a mount's contents: the host's files, or a read-only copy of them
            info = tar.gettarinfo(str(upper / rel), arcname=rel)
            info.uname = info.gname = ""
            if not as_root:  # proot -0 shows the caller's files as root's
                info.uid = info.gid = 0
            if rel in mount_points:
                whole = False
                info.size = 0
                tar.addfile(info)
            elif info.isreg():
                with open(upper / rel, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
            count += 1
            if whole and info.isdir():
                for child, _ in walk(upper, rel):
                    add(child, False)

        def compare(rel: str) -> None:
            nonlocal count
            upper_names = set(os.listdir(upper / rel if rel else upper))
            lower_names = set(os.listdir(lower / rel if rel else lower))
            for name in sorted(lower_names - upper_names):
                whiteout = tarfile.TarInfo(f"{rel}/.wh.{name}" if rel else f".wh.{name}")
                tar.addfile(whiteout)
                count += 1
            for name in sorted(upper_names):
                child = f"{rel}/{name}" if rel else name
                new = os.lstat(upper / child)
                old = os.lstat(lower / child) if name in lower_names else None
                if (old is None and child in ignore) or (old is not None and child in mount_points):
                    continue
                if old is None or stat.S_IFMT(old.st_mode) != stat.S_IFMT(new.st_mode):
                    add(child, True)
                elif stat.S_ISDIR(new.st_mode):
                    if new.st_mode != old.st_mode:
                        add(child, False)
                    compare(child)
                elif _changed(lower / child, upper / child, old, new, linked.entries.get(child)):
                    add(child, False)

        compare("")
    return count


def _changed(
    old_path: Path,
    new_path: Path,
    old: os.stat_result,
    new: os.stat_result,
    recorded: tuple[int, int, int] | None,
) -> bool:
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(old_path) != os.readlink(new_path)
    if recorded is not None and new.st_ino == recorded[0]:
        return (new.st_size, new.st_mtime_ns) != recorded[1:]  # written through the link?
    if (new.st_mode, new.st_size, new.st_mtime_ns) != (old.st_mode, old.st_size, old.st_mtime_ns):
        return True
    if new.st_ino == old.st_ino:
        return False
    # Same metadata: a whole-second mtime (as files from layers have) may hide an edit.
    return new.st_mtime_ns % 1_000_000_000 == 0 and not filecmp.cmp(old_path, new_path, False)


def directory_size(root: Path) -> int | None:
    """Bytes in the files under ``root`` (hard links counted once; symlinks not followed)."""
    if not root.is_dir():
        return None
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
