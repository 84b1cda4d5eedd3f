"""Writing to a host path the user gave: checked first, all or nothing, errors in our tree.

``cp SESSION:/x DEST``, ``export(DEST)`` and OCI layouts all write where the user said. That
place may be under a regular file, inside /proc, read-only, not ours, or on a full disk; the
user should then read one line saying which and what to do, never an ``OSError`` traceback,
and find nothing half-written there::

    with host_destination(dest, what="export") as scratch:
        ...write into scratch (same filesystem as dest)...
        os.replace(scratch / "result", dest)

The scratch directory is removed on the way out; on failure, so are the parent directories
that were created for ``dest``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import HostPathError

#: Kernel filesystems that hold no files of their own.
VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` expanded, made absolute (symlinks kept)."""
    return Path(path).expanduser().absolute()


@contextlib.contextmanager
def host_destination(dest: Path, *, what: str) -> Iterator[Path]:
    """Check that ``dest`` can be written, create its missing parents and yield a scratch
    directory beside it. Any ``OSError`` (from here or from the body) becomes a
    :class:`HostPathError` saying what is wrong with ``dest`` and how to fix it."""
    created: list[Path] = []
    scratch: Path | None = None
    try:
        check_writable(dest, what)
        created = _make_parents(dest.parent)
        scratch = Path(tempfile.mkdtemp(prefix=".mpc-", dir=dest.parent))
        yield scratch
    except OSError as exc:
        _undo(scratch, created)
        raise HostPathError(explain(dest, exc, what)) from None
    except BaseException:
        _undo(scratch, created)
        raise
    else:
        _undo(scratch, [])


def check_writable(dest: Path, what: str) -> None:
    """Refuse, before anything is written, a ``dest`` that can never be written."""
    existing = _nearest_existing(dest.parent)
    real = existing.resolve()
    for root in VIRTUAL_ROOTS:
        if real == root or root in real.parents:
            raise HostPathError(
                f"cannot {what} to {dest}: {root} is a kernel filesystem, not storage; "
                "give a destination on disk, e.g. ./out"
            )
    if not existing.is_dir():
        raise HostPathError(
            f"cannot {what} to {dest}: {existing} is a file, not a directory; "
            f"give a destination inside a directory, e.g. {existing.parent / dest.name}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HostPathError(explain(dest, OSError(_unwritable_errno(existing), ""), what))


def explain(dest: Path, exc: OSError, what: str) -> str:
    """One line: what is wrong with writing ``dest`` (from ``exc``) and how to fix it."""
    where = _nearest_existing(dest.parent)
    code = _errno(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(where).free
        return (
            f"cannot {what} to {dest}: the filesystem holding {where} is full ({free} bytes "
            "free); free some space there or give a destination on another filesystem"
        )
    if code == errno.EROFS:
        return (
            f"cannot {what} to {dest}: {where} is on a read-only filesystem; "
            "give a destination you can write, e.g. ./out"
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"cannot {what} to {dest}: this user may not write in {where}; "
            "give a destination you can write, e.g. ./out"
        )
    if code == errno.ENOTDIR:
        return (
            f"cannot {what} to {dest}: a part of that path is a file, not a directory; "
            "give a destination inside a directory"
        )
    reason = exc.strerror or type(exc).__name__
    return f"cannot {what} to {dest}: {reason}; give another destination, e.g. ./out"


def _errno(exc: OSError) -> int | None:
    """The error number, also of a ``shutil.Error`` (copytree gathers its failures into one,
    keeping only their text)."""
    if exc.errno is None and isinstance(exc, shutil.Error):
        found = re.search(r"\[Errno (\d+)\]", str(exc))
        return int(found.group(1)) if found else None
    return exc.errno


def _unwritable_errno(directory: Path) -> int:
    stats = os.statvfs(directory)
    return errno.EROFS if stats.f_flag & os.ST_RDONLY else errno.EACCES


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a file, a directory or a link)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    # A file in the middle (``/etc/hostname/x``) makes everything below it not exist.
    return path


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns what was created, deepest first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    created = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.insert(0, path)
    except OSError:
        _undo(None, created)
        raise
    return created


def _undo(scratch: Path | None, created: list[Path]) -> None:
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    for path in created:  # deepest first: each is empty once its child is gone
        with contextlib.suppress(OSError):
            path.rmdir()
