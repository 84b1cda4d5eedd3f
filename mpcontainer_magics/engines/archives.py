"""The tar archives both engines build from host files: a copy into a container, a layer.

Docker takes them through its archive and image APIs; the embedded engine unpacks them with
the layer unpacker (``layers.extract_archive``), so whatever symlinks a container planted,
nothing lands outside its root. Copied entries belong to root, as with ``docker cp`` and
Dagger, not to the host user who ran the copy.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from pathlib import Path
from typing import IO


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_copy(archive: IO[bytes], source: Path, target: str) -> None:
    """A tar that puts host ``source`` at container path ``target``, as ``docker cp`` does.

    Entries carry the target path, so unpacking at "/" creates missing parents. A directory's
    contents are merged into ``target``; its own entry is left out (unless it is empty), so
    an existing target keeps its mode and owner (/tmp stays 1777).
    """
    top = posixpath.normpath("/" + target).lstrip("/")
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not (source.is_dir() and not source.is_symlink()):
            tar.add(source, top or source.name, filter=_owned_by_root)
            return
        children = sorted(source.iterdir())
        for child in children:
            tar.add(child, posixpath.join(top, child.name), filter=_owned_by_root)
        if not children and top:
            tar.add(source, top, recursive=False, filter=_owned_by_root)


def write_layer(archive: IO[bytes], root: Path) -> None:
    """An image layer whose filesystem is exactly the host directory ``root``."""
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)


def stream_digest(stream: IO[bytes]) -> str:
    """The sha256 digest of what is left to read in ``stream``, read in blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return f"sha256:{digest.hexdigest()}"
