"""An image's files for one platform, unpacked into a directory without any container daemon.

This is what the embedded engine (proot + qemu-user) runs on, and what lets files of images
that cannot run here at all (Windows ones) be read. It is built only from parts that check
themselves: the registry client verifies every manifest and blob against its digest while
downloading, and ``layers.apply_layer`` refuses any layer that would write outside the root.

Layers come through the user's blob cache (``store.BlobStore``): downloaded once, to disk
(a layer never has to fit in memory), all at once, and applied in order. The layer to apply
next is inflated and unpacked from its partial file as its bytes arrive (a ``BlobTap``),
while the later ones download; nothing is read twice. A layer counts only once its digest
checked out: a mismatch fails the whole unpack, and ``dest`` is emptied again. Unpacking the
same image again fetches no blob.

What an image may unpack to is bounded (``layers.UnpackLimit``): ``max_size`` bytes of file
data (default ``$MPC_MAX_IMAGE_SIZE``, e.g. "20G"; unset: no set size), and never below 10 %
free on the disk of ``dest``; past that, ImageTooLarge.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._aio import finish_despite_cancel, in_thread
from ..errors import DigestMismatch, ImageError, ImageTooLarge, InvalidArgument, RegistryError
from ..platforms import Platform
from ..registry import Reference, RegistryClient
from ..registry.manifests import Descriptor, checked_image_config, image_manifest_blobs
from .base import ProgressCallback
from .layer_worker import LayerWorker
from .layers import LayerStats, UnpackLimit, apply_layer, parse_size
from .store import BlobStore, BlobTap, BlobUnavailable
from .tree import remove_tree

__all__ = ["MAX_IMAGE_SIZE_ENV", "UnpackedImage", "max_image_size", "unpack_image"]

MAX_IMAGE_SIZE_ENV = "MPC_MAX_IMAGE_SIZE"

#: Layers this big (compressed) unpack in a LayerWorker process while another one unpacks
#: on this process's thread; smaller ones do not pay for starting a process (~0.1 s) and
#: wait for the thread. One layer at a time unpacks on a thread: several, each making many
#: short system calls, convoy on the GIL (5 busybox layers ended later than one at a time).
WORKER_MIN_SIZE = 4 << 20
_THREAD_SLOT = threading.Lock()


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
    # where the unpack's time went (inflate, waiting for bytes, tar + writes), all layers
    stats: LayerStats = field(default_factory=LayerStats, compare=False)


def max_image_size() -> int | None:
    """``$MPC_MAX_IMAGE_SIZE`` in bytes ("20G", "500M", bytes); None when unset."""
    text = os.environ.get(MAX_IMAGE_SIZE_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise InvalidArgument(f"{MAX_IMAGE_SIZE_ENV}: {exc}") from None


async def unpack_image(
    registry: RegistryClient,
    reference: str,
    platform: Platform,
    dest: Path,
    store: BlobStore | None = None,
    *,
    manifest_digest: str | None = None,
    on_progress: ProgressCallback | None = None,
    max_size: int | None = None,
) -> UnpackedImage:
    """Download ``reference`` for ``platform`` and unpack its layers into ``dest``.

    Blobs come through ``store`` (default: the user's cache), so a second unpack of the same
    image fetches no blob. With ``manifest_digest`` (the platform's manifest, already
    resolved) the tag is not looked up again. ``dest`` must be missing or an empty
    directory; on error, what was unpacked into it is removed again.

    ``max_size``: bytes of file data the image may unpack to (holes of sparse files are
    free); default ``$MPC_MAX_IMAGE_SIZE``, else no set size. Whatever the size, an unpack
    that would leave ``dest``'s filesystem below 10 % free stops. Both raise ImageTooLarge.

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
    limit = UnpackLimit(
        max_size if max_size is not None else max_image_size(),
        None,
        image=image,
        how=f"raise {MAX_IMAGE_SIZE_ENV} (now {os.environ.get(MAX_IMAGE_SIZE_ENV) or 'unset'})"
        if max_size is None
        else f"pass a larger max_size than {max_size}",
    )
    stats = LayerStats()
    windows = platform.os == "windows"
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    limit.disk = dest
    try:
        await _apply_layers(
            store, registry, ref, image, layers, dest, meter, windows=windows, limit=limit,
            stats=stats,
        )  # fmt: skip
    except BaseException:
        await in_thread(_empty, dest, made)
        raise
    return UnpackedImage(
        name.familiar,
        platform,
        digest,
        config.get("config") or {},
        dest,
        config,
        tuple((layer.media_type, layer.digest) for layer in layers),
        meter.finish(),
        stats,
    )


def _empty(dest: Path, made: bool) -> None:
    """Nothing partial stays: remove ``dest`` if we made it, else what is in it."""
    if made:
        remove_tree(dest)
        return
    for child in dest.iterdir():
        remove_tree(child)


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
    limit: UnpackLimit,
    stats: LayerStats,
) -> None:
    """Every layer downloads at once; each is applied, in order, while its bytes arrive."""
    taps = [BlobTap(layer.digest) for layer in layers]
    fetches = [
        asyncio.ensure_future(
            _counted(
                meter,
                index,
                _fetch_layer(store, registry, ref, image, layer, meter.blob(index), tap),
            )
        )
        for index, (layer, tap) in enumerate(zip(layers, taps, strict=True), start=1)
    ]
    try:
        for fetch, layer, tap in zip(fetches, layers, taps, strict=True):
            limit.layer = layer.digest
            try:
                await _apply_tapped(tap, layer.size, dest, windows, limit, stats)
            except BlobUnavailable:
                await fetch  # its download failed: raise why
                raise
            except ImageError as exc:
                if fetch.done() and not fetch.cancelled() and fetch.exception() is not None:
                    await fetch  # the bytes were wrong (e.g. a digest mismatch): say that
                if isinstance(exc, ImageTooLarge):
                    raise  # it names the image and layer
                # Same class, message prefixed with which image and layer it was.
                raise type(exc)(f"{image}, layer {layer.digest}: {exc}") from exc
            await fetch  # verified: a digest mismatch fails the unpack here
    finally:
        for tap in taps:
            tap.abort()
            tap.close()
        for fetch in fetches:
            fetch.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)


async def _apply_tapped(
    tap: BlobTap, size: int, dest: Path, windows: bool, limit: UnpackLimit, stats: LayerStats
) -> None:
    """Apply the layer ``tap`` reads (``size`` bytes) on this process's unpacking thread, or,
    when that is busy and the layer is big, through a worker process; if we are cancelled,
    stop at once."""
    on_thread = _THREAD_SLOT.acquire(blocking=False)
    if not on_thread and size < WORKER_MIN_SIZE:
        await _take_thread_slot()
        on_thread = True
    worker = None if on_thread else LayerWorker(dest, windows=windows, limit=limit)

    def apply() -> None:
        # The worker counts its waits for bytes itself.
        if worker is not None and worker.run(lambda: tap.open(LayerStats()), stats):
            return
        with tap.open(stats) as source:
            apply_layer(source, dest, windows=windows, limit=limit, stats=stats)

    work = asyncio.ensure_future(asyncio.to_thread(apply))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        tap.abort()  # the thread's next read raises
        if worker is not None:
            worker.kill()
        with contextlib.suppress(BaseException):
            await finish_despite_cancel(work)
        raise
    finally:
        if on_thread:
            _THREAD_SLOT.release()


async def _take_thread_slot() -> None:
    # Polled: the slot is shared by every event loop of the process.
    while not _THREAD_SLOT.acquire(blocking=False):
        await asyncio.sleep(0.005)


async def _fetch_layer(
    store: BlobStore,
    registry: RegistryClient,
    ref: Reference,
    image: str,
    layer: Descriptor,
    on_bytes: Callable[[int], None] | None = None,
    tap: BlobTap | None = None,
) -> Path:
    try:
        return await _fetch_checked_layer(store, registry, ref, image, layer, on_bytes, tap)
    except BaseException as exc:
        if tap is not None:
            tap.finish(None, exc)  # its reader must not wait for it
        raise


async def _fetch_checked_layer(
    store: BlobStore,
    registry: RegistryClient,
    ref: Reference,
    image: str,
    layer: Descriptor,
    on_bytes: Callable[[int], None] | None,
    tap: BlobTap | None,
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
        return await store.fetch(registry, ref, digest, on_bytes, size=layer.size, tap=tap)
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
