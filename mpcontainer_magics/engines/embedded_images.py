"""The embedded engine's images: unpacked directories in the user's cache.

    images/<manifest hex>/    one platform of a pulled image, pinned by its manifest digest:
        rootfs/               its layers applied safely (layers.apply_layer)
        image.json            reference, platform, the whole image config, its layers
        linked.json           the files containers hard-link (tree.LinkedFiles)
    images/snap-<id>/         an image this process made (commit, image_from_directory);
        diff-<n>.tar          its own layers, stacked on its parent's

An image directory appears only complete (made under a temporary ``.work-PID-TICKS-`` name,
then renamed), so kernels sharing the cache never see half an image, a second pull fetches
no blob, and what a dead process left half-made can be told apart and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._aio import in_thread, once
from ..errors import EngineError
from .base import ImageConfig, ProgressCallback, PulledImage, owner_labels, process_start_ticks
from .rootfs import unpack_image
from .store import BlobStore
from .tree import LinkedFiles, copy_tree, remove_tree

if TYPE_CHECKING:
    from ..registry import RegistryClient

SNAPSHOT_PREFIX = "snap-"


def work_prefix() -> str:
    """Temporary image directories name their process, so a dead one's can be reaped."""
    pid = os.getpid()
    return f".work-{pid}-{process_start_ticks(pid)}-"


def snapshot_id() -> str:
    return f"{SNAPSHOT_PREFIX}{secrets.token_hex(16)}"


class ImageDirectories:
    """The ``images/`` part of the cache at ``cache_dir`` (``refs/`` is :mod:`.resolutions`)."""

    def __init__(self, cache_dir: Path, blobs: BlobStore, registry: RegistryClient) -> None:
        self.root = cache_dir / "images"
        self._cache = cache_dir
        self._blobs = blobs
        self._registry = registry
        self._unpacking: dict[str, asyncio.Task[Path]] = {}

    # -- pulled images -----------------------------------------------------------------------

    def path(self, image: PulledImage) -> Path:
        return self.root / image.image_id.removeprefix("sha256:")

    async def ensure(self, image: PulledImage, on_progress: ProgressCallback | None = None) -> Path:
        """The unpacked image, unpacked now (from cached blobs, if any) when missing.

        Concurrent callers share one unpacking; ``on_progress`` follows its bytes.
        """
        path = self.path(image)
        if (path / "image.json").is_file():
            return path
        if image.digest is None or image.image_id.startswith(SNAPSHOT_PREFIX):
            raise EngineError(
                f"image {image.reference} is gone (it was removed); make it again, e.g. by "
                "running the cell that built it"
            )
        done = self._unpacking.get(image.image_id)
        if done is not None and done.done():  # unpacked once, pruned since: again
            del self._unpacking[image.image_id]
        return await once(
            self._unpacking, image.image_id, lambda: self._unpack(image, path, on_progress)
        )

    def forget(self, image: PulledImage) -> None:
        """The image was set aside (damaged): the next ``ensure`` unpacks it again."""
        self._unpacking.pop(image.image_id, None)

    def size_of(self, image_dir: Path) -> int:
        """Bytes of an unpacked image's config and layers (recorded when it was unpacked;
        for older images, the cached layers' sizes)."""
        meta = self.meta(image_dir)
        if isinstance(meta.get("size"), int):
            return int(meta["size"])
        paths = [self._blobs.path(layer["digest"]) for layer in meta["layers"] if "digest" in layer]
        return sum(p.stat().st_size for p in paths if p.is_file())

    async def _unpack(
        self, image: PulledImage, path: Path, on_progress: ProgressCallback | None
    ) -> Path:
        assert image.digest is not None
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=work_prefix(), dir=self.root))
        try:
            unpacked = await unpack_image(
                self._registry,
                image.reference,
                image.platform,
                work / "rootfs",
                self._blobs,
                manifest_digest=image.digest,
                on_progress=on_progress,
            )
            layers = [{"mediaType": t, "digest": d} for t, d in unpacked.layers]
            await asyncio.to_thread(
                self._seal, work, image, unpacked.image_config, layers, unpacked.size
            )
            with contextlib.suppress(OSError):  # another kernel won the race: use theirs
                os.rename(work, path)
            return path
        finally:
            if work.exists():
                await in_thread(remove_tree, work)

    @staticmethod
    def _seal(
        work: Path,
        image: PulledImage,
        config: dict[str, Any],
        layers: list[dict[str, Any]],
        size: int | None = None,
    ) -> None:
        """Write what makes ``work`` a complete image: the linked files, then image.json.

        ``size``: the bytes of a pulled image's config and layers (what a pull reports).
        """
        LinkedFiles.scan(work / "rootfs").save(work)
        meta = {
            "reference": image.reference,
            "platform": str(image.platform),
            "digest": image.digest,
            "config": config,
            "layers": layers,
            "labels": owner_labels() if image.image_id.startswith(SNAPSHOT_PREFIX) else {},
        }
        if size is not None:
            meta["size"] = size
        (work / "image.json").write_text(json.dumps(meta))

    @staticmethod
    def meta(image_dir: Path) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((image_dir / "image.json").read_text())
        return meta

    async def config(self, image: PulledImage) -> ImageConfig:
        meta = self.meta(await self.ensure(image))
        return ImageConfig.from_oci(meta["config"].get("config"))

    # -- reading images ----------------------------------------------------------------------

    async def layer_ids(self, image: PulledImage) -> list[str]:
        """The image's diff_ids, from its config (pulled, or written when it was made)."""
        meta = self.meta(await self.ensure(image))
        return list(meta["config"].get("rootfs", {}).get("diff_ids") or [])

    async def save_layers(
        self, image: PulledImage, dest: Path, only: Sequence[int] | None = None
    ) -> list[Path]:
        """The image's layers as uncompressed tar files in ``dest``, bottom layer first
        (with ``only``, those of these indexes, in that order)."""
        image_dir = await self.ensure(image)
        layers = self.meta(image_dir)["layers"]

        def save() -> list[Path]:
            dest.mkdir(parents=True, exist_ok=True)
            saved = []
            for number in range(len(layers)) if only is None else only:
                layer = layers[number]
                saved.append(dest / f"layer-{number}.tar")
                if "file" in layer:
                    shutil.copyfile(image_dir / layer["file"], saved[-1])
                    continue
                blob = self._blobs.path(layer["digest"])
                if not blob.is_file():
                    raise EngineError(
                        f"layer {layer['digest']} of {image.reference} is no longer in the "
                        f"cache ({self._cache}); pull the image again"
                    )
                with open(blob, "rb") as raw, open(saved[-1], "wb") as out:
                    source = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
                    raw.seek(0)
                    shutil.copyfileobj(source, out, 1 << 20)
            return saved

        return await in_thread(save)

    async def read(self, image: PulledImage, dest: Path) -> None:
        """Copy the image's exact filesystem into the new host directory ``dest``."""
        rootfs = (await self.ensure(image)) / "rootfs"
        await in_thread(copy_tree, rootfs, dest)

    # -- images made here --------------------------------------------------------------------

    async def make(
        self,
        image: PulledImage,
        make: Callable[[Path], list[dict[str, Any]]],
        config: dict[str, Any],
        parent_layers: Sequence[dict[str, Any]] = (),
        parent_diff_ids: Sequence[str] = (),
    ) -> PulledImage:
        """A snapshot image: ``make(work)`` fills work/rootfs and returns its own layers."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(image)
        work = Path(tempfile.mkdtemp(prefix=work_prefix(), dir=self.root))
        try:

            def build() -> None:
                layers = make(work)
                diff_ids = [*parent_diff_ids, *(layer.pop("diff_id") for layer in layers)]
                config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
                self._seal(work, image, config, [*parent_layers, *layers])

            await in_thread(build)
            os.rename(work, path)
        finally:
            if work.exists():
                await in_thread(remove_tree, work)
        return image
