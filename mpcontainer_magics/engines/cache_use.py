"""What the cache holds, image by image, and pruning it (``mpcontainer-magics cache``).

The embedded engine's cache grows with every image and platform pulled: the verified blobs
(``blobs/``) and each platform's unpacked rootfs (``images/<manifest hex>/``). An image is
*in use* while a container, a spare tree or a snapshot of a running process (a kernel)
was made from it, or while one unpacks it: those are never pruned. Each image records when
a container last used it (``images/<hex>/used``), so it can be pruned by age, by whether
it is in use at all, or least recently used first down to a size.

Pruning removes the unpacked image and the layer blobs no other image needs; manifests and
configs (small) stay, as do what names resolved to (``refs/``). A kernel that later needs a
pruned image unpacks it again (its blobs, fetched again, are verified as always).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import owner_is_gone
from .embedded_images import SNAPSHOT_PREFIX
from .store import BlobStore
from .tree import directory_size, remove_tree

#: The file whose mtime says when a container last used an image (in its directory).
USED = "used"


@dataclass(frozen=True)
class CachedImage:
    """One platform of an image in the cache."""

    path: Path
    reference: str
    platform: str
    digest: str
    unpacked_bytes: int
    layers: tuple[str, ...]  # the digests of its layer blobs
    last_used: float  # seconds since the epoch (when it was unpacked, if never used since)
    in_use: bool

    @property
    def name(self) -> str:
        return self.path.name


def mark_used(image_dir: Path) -> None:
    """Record that a container is being made from the image in ``image_dir``."""
    with contextlib.suppress(OSError):  # a read-only cache still runs containers
        (image_dir / USED).touch()


def cached_images(cache_dir: Path) -> list[CachedImage]:
    """The pulled images in the cache at ``cache_dir``, least recently used first."""
    root = cache_dir / "images"
    in_use = images_in_use(cache_dir)
    found = []
    for meta_file in root.glob("*/image.json") if root.is_dir() else ():
        image_dir = meta_file.parent
        if image_dir.name.startswith((SNAPSHOT_PREFIX, ".")):
            continue  # a process's own snapshot, or one being made
        try:
            meta = json.loads(meta_file.read_text())
            used = max(_mtime(image_dir / USED), meta_file.stat().st_mtime)
        except (OSError, ValueError):
            continue
        layers = tuple(layer["digest"] for layer in meta.get("layers", []) if "digest" in layer)
        found.append(
            CachedImage(
                path=image_dir,
                reference=str(meta.get("reference", "?")),
                platform=str(meta.get("platform", "?")),
                digest=str(meta.get("digest", "")),
                unpacked_bytes=directory_size(image_dir) or 0,
                layers=layers,
                last_used=used,
                in_use=image_dir.name in in_use,
            )
        )
    return sorted(found, key=lambda image: image.last_used)


def images_in_use(cache_dir: Path) -> set[str]:
    """Image directory names that something of a running process was made from."""
    names: set[str] = set()
    for holder in ("containers", "spares"):
        for meta_file in (cache_dir / holder).glob("*/container.json"):
            meta = _json(meta_file)
            if meta and not owner_is_gone(meta.get("labels") or {}):
                names.add(str(meta.get("image", "")).removeprefix("sha256:"))
    return names


def prune(
    cache_dir: Path,
    *,
    older_than_s: float | None = None,
    unused: bool = False,
    max_bytes: int | None = None,
) -> list[CachedImage]:
    """Remove the images that are not in use and are older than ``older_than_s`` (seconds
    since last used), or all of them (``unused``), or the least recently used ones until the
    cache takes at most ``max_bytes``; the images removed."""
    images = cached_images(cache_dir)
    candidates = [image for image in images if not image.in_use]
    if older_than_s is not None:
        cutoff = time.time() - older_than_s
        chosen = [image for image in candidates if image.last_used < cutoff]
    elif unused:
        chosen = candidates
    else:
        chosen = []
        total = directory_size(cache_dir) or 0
        for image in candidates:  # least recently used first
            if max_bytes is None or total <= max_bytes:
                break
            chosen.append(image)
            total -= image.unpacked_bytes + _freed_blob_bytes(cache_dir, image, images, chosen)
    for image in chosen:
        remove_tree(image.path)
    _remove_blobs(cache_dir, chosen, [i for i in images if i not in chosen])
    return chosen


def _remove_blobs(
    cache_dir: Path, removed: Iterable[CachedImage], kept: Iterable[CachedImage]
) -> None:
    """The layer blobs of ``removed`` that no kept image, snapshot (a process's own: its
    layers are its parent's and its own) or published layer needs."""
    needed = {digest for image in kept for digest in image.layers} | _published(cache_dir)
    for meta_file in (cache_dir / "images").glob(f"{SNAPSHOT_PREFIX}*/image.json"):
        meta = _json(meta_file) or {}
        needed.update(str(layer["digest"]) for layer in meta.get("layers", []) if "digest" in layer)
    blobs = BlobStore(cache_dir)
    for digest in {d for image in removed for d in image.layers} - needed:
        with contextlib.suppress(OSError):
            blobs.path(digest).unlink()


def _freed_blob_bytes(
    cache_dir: Path, image: CachedImage, images: list[CachedImage], chosen: list[CachedImage]
) -> int:
    """What removing ``image`` frees of blobs, once every image of ``chosen`` is gone."""
    needed = {d for other in images if other not in chosen for d in other.layers}
    blobs = BlobStore(cache_dir)
    return sum(_size(blobs.path(d)) for d in set(image.layers) - needed)


def _published(cache_dir: Path) -> set[str]:
    """Blobs that publishing compressed layers to (``layers/``): kept for the next publish."""
    found = set()
    for entry in (cache_dir / "layers").glob("*/*"):
        meta = _json(entry)
        if meta and "digest" in meta:
            found.add(str(meta["digest"]))
    return found


def _json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
