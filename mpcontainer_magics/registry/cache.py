"""Where a user's pulled content lives on this machine, and the manifests kept there.

Everything content-addressed goes under ``blobs/<algorithm>/<hex>`` of the cache directory
(``$MPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mpcontainer_magics``, else
``~/.cache/mpcontainer_magics``), shared by all of a user's kernels: layers and configs
(engines/store.py) and the manifests and indexes resolved here (``ManifestCache``). A file
there is always complete and right: it is written under a temporary name and renamed into
place only after its digest checked out.

Why manifests are kept: registries such as Docker Hub count each manifest GET against a pull
limit but not a HEAD. With the manifest a tag points to on disk, resolving that tag again (in
this kernel or the next one) is a HEAD that names a digest we already hold.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .digests import hashes_to
from .reference import check_digest


def default_cache_dir() -> Path:
    explicit = os.environ.get("MPC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mpcontainer_magics"


def content_path(root: Path, digest: str) -> Path:
    """The file of the content named ``digest`` in the cache at ``root``."""
    algorithm, _, encoded = check_digest(digest).partition(":")
    return root / "blobs" / algorithm / encoded


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that kernels sharing the cache never read half of it: a temporary
    file beside it, renamed onto it once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


class ManifestCache:
    """Verified manifests, indexes and configs by digest (small documents, read whole)."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        # Read when used, not when made: a kernel may point MPC_CACHE_DIR elsewhere first.
        return self._root if self._root is not None else default_cache_dir()

    def get(self, digest: str) -> bytes | None:
        """The bytes named ``digest``, if held; a damaged copy is dropped, not returned."""
        path = content_path(self.root, digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashes_to(data, digest):
            return data
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def put(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (already verified against ``digest``); a full disk is not an error."""
        path = content_path(self.root, digest)
        if path.is_file():
            return
        with contextlib.suppress(OSError):  # a read-only or full cache: the next resolve GETs
            write_atomically(path, data)
