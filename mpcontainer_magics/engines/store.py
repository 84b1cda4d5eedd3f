"""A content-addressed cache of image blobs on this machine, shared by all of a user's kernels.

Blobs live under their digest, ``blobs/sha256/<hex>``, in ``$MPC_CACHE_DIR`` or
``$XDG_CACHE_HOME/mpcontainer_magics`` (``~/.cache/mpcontainer_magics`` by default). A blob
enters the cache only after its digest checked out: the registry client verifies it while
downloading into a temporary file of the same directory, which is then renamed into place
atomically. So whatever the cache holds is right, a second pull of the same image fetches
no blob bytes, and kernels fetching the same blob at once both end up with one good copy.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry.cache import content_path, default_cache_dir

if TYPE_CHECKING:
    from ..registry import Reference, RegistryClient


class BlobStore:
    """Verified blobs on disk, fetched from a registry on first use."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, digest: str) -> Path:
        return content_path(self.root, digest)

    async def fetch(
        self,
        registry: RegistryClient,
        ref: Reference,
        digest: str,
        on_bytes: Callable[[int], None] | None = None,
        *,
        size: int | None = None,
    ) -> Path:
        """The cached file of blob ``digest`` of ``ref``'s repository, downloaded if missing
        (at most ``size`` bytes: its descriptor's).

        ``on_bytes(n)`` follows the bytes as they arrive; a cached blob counts at once.
        """
        path = self.path(digest)
        if path.is_file():
            if on_bytes is not None:
                on_bytes(path.stat().st_size)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                await registry.download_blob(ref, digest, out, on_bytes, size=size)
            os.replace(partial, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return path
