"""Layers compressed for publishing, found again by their diff_id: what did not change is
neither exported from the engine nor compressed a second time.

Publishing builds each new layer's blob deterministically (gzip with no name and no time),
so one tar always gives one blob. Every blob made is kept in the blob cache
(``blobs/sha256/<hex>``, shared by a user's kernels) and recorded under the digest of its
uncompressed tar, ``layers/sha256/<hex>`` (the blob's digest and size). A later publish of
an image holding that layer (a session published again unchanged, or a variant built on a
snapshot of ours) takes it from there: exporting a session over a 420 MB base image again
took 8-9 s, and now costs a look-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .engines.store import BlobStore
from .registry.cache import default_cache_dir, write_atomically
from .registry.reference import check_digest


@dataclass(frozen=True)
class CompressedLayer:
    """A layer's blob in the cache: its digest and size, and the file holding it."""

    digest: str
    size: int
    path: Path


class CompressedLayers:
    """The blobs made of layers, by the layers' diff_ids, in the cache at ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()
        self._blobs = BlobStore(self.root)

    def _entry(self, diff_id: str) -> Path:
        algorithm, _, encoded = check_digest(diff_id).partition(":")
        return self.root / "layers" / algorithm / encoded

    def find(self, diff_id: str) -> CompressedLayer | None:
        """The blob made of the layer ``diff_id`` before, if the cache still holds it whole."""
        try:
            recorded = json.loads(self._entry(diff_id).read_text())
            digest, size = str(recorded["digest"]), int(recorded["size"])
            path = self._blobs.path(digest)
            if path.stat().st_size != size:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return CompressedLayer(digest, size, path)

    def keep(self, diff_id: str, blob: Path, digest: str) -> CompressedLayer:
        """Keep ``blob`` (of digest ``digest``, made of the layer ``diff_id``) for later."""
        path = self._blobs.add(blob, digest)
        size = path.stat().st_size
        record = {"digest": digest, "size": size}
        write_atomically(self._entry(diff_id), json.dumps(record).encode())
        return CompressedLayer(digest, size, path)
