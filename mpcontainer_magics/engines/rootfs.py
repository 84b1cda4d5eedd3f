"""An image's files for one platform, unpacked into a directory without any container daemon.

This is what the embedded engine (proot + qemu-user) runs on, and what lets files of images
that cannot run here at all (Windows ones) be read. It is built only from parts that check
themselves: the registry client verifies every manifest and blob against its digest while
downloading, and ``layers.apply_layer`` refuses any layer that would write outside the root.

Layers come through the user's blob cache (``store.BlobStore``): downloaded once, to disk
(a layer never has to fit in memory), and used only after their digest checked out; then
applied in order. Unpacking the same image again fetches no blob.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._aio import in_thread
from ..errors import DigestMismatch, ImageError, InvalidArgument, RegistryError
from ..platforms import Platform
from ..registry import Reference, RegistryClient
from ..registry.manifests import Descriptor, checked_image_config, image_manifest_blobs
from .base import ProgressCallback
from .layers import apply_layer
from .store import BlobStore

__all__ = ["UnpackedImage", "unpack_image"]


# The layer types an unpacker must know (OCI image-spec, Docker schema 2). Foreign
# ("nondistributable") layers are ordinary tars that registries may decline to store.
_PLAIN_LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


@dataclass(frozen=True)
class UnpackedImage:
    """One platform of an image, unpacked at ``root``."""

    reference: str  # as users name it, e.g. "alpine:latest", "127.0.0.1:5055/mpc/busybox:1.35"
    platform: Platform
    digest: str  # the per-platform manifest digest
    config: dict[str, Any]  # the image config's "config" object (Env, WorkingDir, Cmd...)
    root: Path
    image_config: dict[str, Any]  # the whole image config (platform, rootfs.diff_ids...)
    layers: tuple[tuple[str, str], ...]  # (media type, digest) of each layer, bottom first
    size: int = 0  # bytes of its config and (compressed) layers, as fetched


async def unpack_image(
    registry: RegistryClient,
    reference: str,
    platform: Platform,
    dest: Path,
    store: BlobStore | None = None,
    *,
    manifest_digest: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> UnpackedImage:
    """Download ``reference`` for ``platform`` and unpack its layers into ``dest``.

    Blobs come through ``store`` (default: the user's cache), so a second unpack of the same
    image fetches no blob. With ``manifest_digest`` (the platform's manifest, already
    resolved) the tag is not looked up again. ``dest`` must be missing or an empty
    directory. On error it may hold a partial tree, which the caller (who owns ``dest``)
    removes.

    ``on_progress(done, total)`` (on the event loop) follows the bytes of the config and
    layers, ``total`` being their compressed sizes in the manifest; cached blobs count at
    once, and the last call is ``(total, total)``.
    """
    store = store or BlobStore()
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidArgument(
            f"cannot unpack {reference} into {dest}: it must be missing or an empty directory"
        )
    if manifest_digest is None:
        resolved = await registry.resolve(reference)
        name, manifest_digest = resolved.reference, resolved.manifest_digest(platform)
    else:  # already resolved (pinned) by the caller
        name = Reference.parse(reference)
    ref = name.with_digest(manifest_digest)
    image = f"{name.familiar} ({platform})"
    body, media_type, digest = await registry.get_manifest(ref)
    config_blob, layers = image_manifest_blobs(body, media_type, image)
    meter = _Meter(on_progress, [config_blob.size, *(layer.size for layer in layers)])
    config_path = await store.fetch(
        registry, ref, config_blob.digest, meter.blob(0), size=config_blob.size
    )
    meter.complete(0)
    config = checked_image_config(config_path.read_bytes(), image, platform, len(layers))
    dest.mkdir(parents=True, exist_ok=True)
    windows = platform.os == "windows"
    await _apply_layers(store, registry, ref, image, layers, dest, meter, windows=windows)
    return UnpackedImage(
        name.familiar,
        platform,
        digest,
        config.get("config") or {},
        dest,
        config,
        tuple((layer.media_type, layer.digest) for layer in layers),
        meter.finish(),
    )


# -- the layers ------------------------------------------------------------------------------


async def _apply_layers(
    store: BlobStore,
    registry: RegistryClient,
    ref: Reference,
    image: str,
    layers: Sequence[Descriptor],
    dest: Path,
    meter: _Meter,
    *,
    windows: bool,
) -> None:
    """Every layer downloads at once; each is applied, in order, as soon as it is ready."""
    fetches = [
        asyncio.ensure_future(
            _counted(
                meter,
                index,
                _fetch_layer(store, registry, ref, image, layer, meter.blob(index)),
            )
        )
        for index, layer in enumerate(layers, start=1)
    ]
    try:
        for fetch, layer in zip(fetches, layers, strict=True):
            blob = await fetch
            try:
                await in_thread(apply_layer, blob, dest, windows=windows)
            except ImageError as exc:
                # Same class, message prefixed with which image and layer it was.
                raise type(exc)(f"{image}, layer {layer.digest}: {exc}") from exc
    finally:
        for fetch in fetches:
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)


async def _fetch_layer(
    store: BlobStore,
    registry: RegistryClient,
    ref: Reference,
    image: str,
    layer: Descriptor,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    media_type, digest = layer.media_type, layer.digest
    if media_type.endswith("+zstd"):
        raise ImageError(
            f"{image} has a zstd-compressed layer {digest}, which is not supported; re-push the "
            "image with gzip layers (e.g. buildx --output compression=gzip,force-compression=true)"
        )
    if media_type not in _PLAIN_LAYERS:
        raise ImageError(
            f"{image} has a layer {digest} of unsupported type {media_type!r}; only tar and "
            "tar+gzip image layers can be unpacked"
        )
    foreign = "foreign" in media_type or "nondistributable" in media_type
    try:
        return await store.fetch(registry, ref, digest, on_bytes, size=layer.size)
    except RegistryError as exc:
        if not foreign or isinstance(exc, DigestMismatch):
            raise
        # Registries may refuse to store these; their `urls` point elsewhere (for old
        # Windows base layers, to Microsoft), and we fetch from registries only.
        raise ImageError(
            f"{image} needs the foreign (non-distributable) layer {digest}, which registry "
            f"{ref.registry} does not provide; re-push the image with all its layers "
            "(e.g. crane copy --allow-nondistributable-artifacts)"
        ) from exc


async def _counted(meter: _Meter, index: int, fetch: Awaitable[Path]) -> Path:
    path = await fetch
    meter.complete(index)
    return path


class _Meter:
    """Bytes of an image's blobs fetched so far, reported as ``on_progress(done, total)``.

    Blob 0 is the config, then the layers; ``total`` is the sum of the sizes the manifest
    gives them. A blob counts at most its size, and in full once it is complete (also when it
    came from the cache); ``done`` never decreases.
    """

    def __init__(self, on_progress: ProgressCallback | None, sizes: Sequence[int]) -> None:
        self._report = on_progress
        self._sizes = list(sizes)
        self.total = sum(self._sizes)
        self._got = [0] * len(self._sizes)
        self._done = -1  # what was reported last
        self._emit()

    def blob(self, index: int) -> Callable[[int], None] | None:
        """The ``on_bytes`` of blob ``index`` (None when nobody listens)."""
        if self._report is None:
            return None

        def count(n: int) -> None:
            self._got[index] += n
            self._emit()

        return count

    def complete(self, index: int) -> None:
        self._got[index] = max(self._got[index], self._sizes[index])
        self._emit()

    @property
    def done(self) -> int:
        return sum(min(got, size) for got, size in zip(self._got, self._sizes, strict=True))

    def _emit(self) -> None:
        done = self.done
        if self._report is not None and done > self._done:
            self._done = done
            self._report(done, self.total)

    def finish(self) -> int:
        """Every blob is fetched: report ``(total, total)``; returns ``total``."""
        if self._report is not None and self._done != self.total:
            self._done = self.total
            self._report(self.total, self.total)
        return self.total
