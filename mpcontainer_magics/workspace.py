"""Where a client keeps the files it makes: one temporary directory per client, named after
its process so that those of dead kernels can be reaped, and the copies made in it."""

from __future__ import annotations

import errno
import itertools
import posixpath
import shutil
import tempfile
from pathlib import Path

from .engines.base import owned_prefix, owner_is_gone, owner_of_name
from .engines.tree import resolve_in_root
from .errors import InvalidArgument

WORKSPACE_PREFIX = "mpcontainer-magics-"


class Workspace:
    """A temporary directory, made on first use, deleted by ``close()``."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._names = itertools.count()

    def scratch(self, kind: str) -> Path:
        """A new path in the workspace (not created)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=workspace_prefix()))
        return self._root / f"{kind}-{next(self._names)}"

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def workspace_prefix() -> str:
    """Workspaces are named after their process, so those of dead kernels can be reaped."""
    return owned_prefix(WORKSPACE_PREFIX)


def reap_workspaces() -> int:
    """Delete the workspaces of processes of this machine that no longer exist."""
    reaped = 0
    for path in Path(tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*-*-*"):
        if path.is_dir() and owner_is_gone(owner_of_name(path.name, WORKSPACE_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
            reaped += 1
    return reaped


# -- copies ----------------------------------------------------------------------------------


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


def copy_out(root: Path, path: str, dest: Path, as_file: bool) -> None:
    """Copy ``path`` of the tree ``root`` (resolved inside it) to the new directory ``dest``:
    the directory's contents, or (``as_file``) the file under its own name."""
    found = resolve_in_root(root, path)
    if as_file:
        if not found.is_file():
            raise InvalidArgument(f"{path} is not a file; use directory() for a directory")
        dest.mkdir(parents=True)
        shutil.copy2(found, dest / posixpath.basename(path), follow_symlinks=False)
    else:
        if not found.is_dir():
            raise InvalidArgument(f"{path} is not a directory; use file() for a file")
        copy_tree(found, dest)
