"""Platform variants → OCI images → one image index, pushed to a registry or written to disk.

    ref = await client.container().publish("registry.example/hello:1", platform_variants=[
        amd64_container, arm64_container, s390x_container])

Each variant is a snapshot of a container (or of a session's container) for one platform.
Its image is built the way a registry expects it: the layers (gzip-compressed tars), a config
that records the platform and the base's Env/WorkingDir/Entrypoint/Cmd, a manifest naming
them, and finally an OCI image index naming one manifest per platform.

Layers that came unchanged from a base image pulled from a registry are not compressed
again: their original blobs (same digest) are reused, mounted from the base's repository
when it is on the same registry, copied otherwise. Everything else is compressed
deterministically (gzip with no name and no time), so publishing the same content twice
produces the same digests and uploads nothing the second time.

Pushing follows the order registries require: blobs, then manifests, then the index.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._aio import in_thread
from .compressed_layers import CompressedLayer, CompressedLayers
from .engines.base import LABEL_MANAGED, Engine, ImageConfig, PulledImage, file_digest
from .errors import ImageError, InvalidArgument
from .hostpaths import absolute, host_destination
from .platforms import Platform
from .registry import Reference
from .registry.manifests import checked_image_config, image_manifest_blobs
from .registry.mediatypes import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

if TYPE_CHECKING:
    import pandas as pd

    from .registry import RegistryClient

# A base image's layers keep their bytes; Docker's media types have these OCI twins.
OCI_LAYER_TYPES = {
    OCI_LAYER_GZIP: OCI_LAYER_GZIP,
    OCI_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER: OCI_LAYER,
}
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Blob:
    """Content named by its digest: a file here, or a blob in a base image's repository."""

    media_type: str
    digest: str
    size: int
    path: Path | None = None
    source: Reference | None = None

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Variant:
    """One platform's image: config, layers and the manifest that names them."""

    platform: Platform
    config: Blob
    layers: tuple[Blob, ...]
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return _digest(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": OCI_MANIFEST,
            "digest": self.manifest_digest,
            "size": len(self.manifest),
            "platform": self.platform.to_oci(),
        }


@dataclass(frozen=True)
class Snapshot:
    """What a variant is made from: an engine image and how its containers should run."""

    platform: Platform
    image: PulledImage
    config: ImageConfig
    origin: PulledImage | None  # the registry image it started from, if any


@dataclass(frozen=True, repr=False)
class Published:
    """The outcome of a publish or export: where it went, and what each platform got."""

    reference: str  # "host/repo@sha256:…" (publish) or the path written (export)
    digest: str  # of the index (several variants) or of the manifest (one)
    media_type: str
    document: bytes  # the exact index or manifest JSON
    variants: tuple[Variant, ...]
    uploaded_bytes: int = 0

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "platform": str(v.platform),
                "manifest_digest": v.manifest_digest,
                "config_digest": v.config.digest,
                "layers": len(v.layers),
                "size": sum(layer.size for layer in v.layers) + v.config.size,
            }
            for v in self.variants
        ]
        return pd.DataFrame(
            rows, columns=["platform", "manifest_digest", "config_digest", "layers", "size"]
        )

    def __repr__(self) -> str:
        kind = "index" if self.media_type == OCI_INDEX else "manifest"
        return (
            f"{self.to_frame().to_string(index=False)}\n{kind}:\n"
            f"{json.dumps(json.loads(self.document), indent=2)}\n{self.reference}"
        )


def check_variants(snapshots: Sequence[Snapshot]) -> None:
    """At least one variant, and one per platform."""
    if not snapshots:
        raise InvalidArgument("nothing to publish: give at least one container")
    platforms = [s.platform for s in snapshots]
    for index, platform in enumerate(platforms):
        if any(platform.matches(other) for other in platforms[:index]):
            raise InvalidArgument(
                f"{platform} is given twice; an image index holds one variant per platform: "
                "give each platform once"
            )


async def build_variant(engine: Engine, snapshot: Snapshot, work: Path) -> Variant:
    """The blobs and manifest of one variant, written under ``work`` (a new directory).

    Only what no one has yet is read from the engine: layers of the registry base image are
    its blobs, and layers compressed before (:mod:`.compressed_layers`) are found again by
    their diff_id, so publishing an unchanged session again exports nothing.
    """
    work.mkdir(parents=True)
    diff_ids = await engine.layer_ids(snapshot.image)
    reused = await _base_layers(engine.registry, snapshot.origin, diff_ids)
    kept = CompressedLayers()
    found = {i: kept.find(diff_ids[i]) for i in range(len(reused), len(diff_ids))}
    missing = [i for i, layer in found.items() if layer is None]
    if missing:
        saved = await engine.save_layers(snapshot.image, work / "layers", only=missing)
        made = await asyncio.gather(*(asyncio.to_thread(_compress, kept, f) for f in saved))
        for index, (diff_id, layer) in zip(missing, made, strict=True):
            diff_ids[index], found[index] = diff_id, layer  # the engine's word, checked
    layers = (*reused, *(_fresh(found[i]) for i in sorted(found)))
    config_json = _canonical(
        {
            **snapshot.platform.to_oci(),
            "config": _oci_config(snapshot.config),
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }
    )
    config = _write_blob(work, OCI_CONFIG, config_json)
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
    )
    return Variant(snapshot.platform, config, layers, manifest)


async def _base_layers(
    registry: RegistryClient, origin: PulledImage | None, diff_ids: Sequence[str]
) -> list[Blob]:
    """The leading layers that are the base image's own, as its registry stores them."""
    if origin is None or origin.digest is None:
        return []
    ref = Reference.parse(origin.reference).with_digest(origin.digest)
    image = f"{ref.familiar} ({origin.platform})"
    try:
        body, media_type, _ = await registry.get_manifest(ref)
        config_blob, layers = image_manifest_blobs(body, media_type, image)
        config_bytes = await registry.get_blob(ref, config_blob.digest)
        config = checked_image_config(config_bytes, image, origin.platform, len(layers))
    except ImageError:  # unreachable, or malformed: compress its layers like the others
        return []
    reused = []
    base_diff_ids = config["rootfs"]["diff_ids"]
    for diff_id, base_diff_id, layer in zip(diff_ids, base_diff_ids, layers, strict=False):
        media_type = OCI_LAYER_TYPES.get(layer.media_type)
        if diff_id != base_diff_id or media_type is None:
            break
        reused.append(Blob(media_type, layer.digest, layer.size, source=ref))
    return reused


def _oci_config(config: ImageConfig) -> dict[str, Any]:
    # Our clean-up labels name this process; they mean nothing in a published image.
    ours = LABEL_MANAGED.rpartition(".")[0] + "."
    labels = {k: v for k, v in config.labels.items() if not k.startswith(ours)}
    return replace(config, labels=labels).to_oci()


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _compress(kept: CompressedLayers, layer: Path) -> tuple[str, CompressedLayer]:
    """The layer's diff_id and its blob, kept for later: gzip with no file name and time 0,
    so the same layer always gives the same blob. The tar is gone afterwards."""
    packed = layer.with_suffix(".tar.gz")
    tar_digest = hashlib.sha256()
    with (
        open(layer, "rb") as source,
        open(packed, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        while chunk := source.read(1 << 20):
            tar_digest.update(chunk)
            gz.write(chunk)
    layer.unlink()
    diff_id = f"sha256:{tar_digest.hexdigest()}"
    return diff_id, kept.keep(diff_id, packed, file_digest(packed))


def _fresh(layer: CompressedLayer | None) -> Blob:
    assert layer is not None
    return Blob(OCI_LAYER_GZIP, layer.digest, layer.size, path=layer.path)


def _write_blob(work: Path, media_type: str, data: bytes) -> Blob:
    path = work / _digest(data).replace(":", "-")
    path.write_bytes(data)
    return Blob(media_type, _digest(data), len(data), path=path)


def _top_document(variants: Sequence[Variant]) -> tuple[bytes, str]:
    """One variant publishes its manifest; several publish an index of them."""
    if len(variants) == 1:
        return variants[0].manifest, OCI_MANIFEST
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [v.descriptor() for v in variants],
    }
    return _canonical(index), OCI_INDEX


# -- to a registry ---------------------------------------------------------------------------


async def push(
    registry: RegistryClient,
    address: str,
    variants: Sequence[Variant],
    homes: dict[str, Reference],
) -> Published:
    """Push blobs, then manifests, then the index (or the single manifest) as ``address``.

    ``homes`` remembers a repository each blob was pushed to (as skopeo's blob cache does):
    publishing to a new repository of the same registry then mounts instead of uploading.
    """
    target = Reference.parse(address)
    if target.digest:
        raise InvalidArgument(
            f"publish to a tag, not a digest: {address}; name a tag such as "
            f"{address.partition('@')[0]}:1 (the digest is what publishing returns)"
        )
    blobs = {b.digest: b for v in variants for b in (*v.layers, v.config)}
    uploaded = await asyncio.gather(
        *(_push_blob(registry, target, b, homes.get(b.digest)) for b in blobs.values())
    )
    homes.update(dict.fromkeys(blobs, Reference(target.registry, target.repository, None, None)))
    if len(variants) > 1:
        await asyncio.gather(
            *(
                registry.push_manifest(
                    target.with_digest(v.manifest_digest), v.manifest, OCI_MANIFEST
                )
                for v in variants
            )
        )
    document, media_type = _top_document(variants)
    digest = await registry.push_manifest(target, document, media_type)
    # Pinned by digest, in the form Docker and skopeo accept ("name:tag@digest" they refuse).
    return Published(
        target.with_digest(digest).pull_name,
        digest,
        media_type,
        document,
        tuple(variants),
        sum(uploaded),
    )


async def _push_blob(
    registry: RegistryClient, target: Reference, blob: Blob, home: Reference | None
) -> int:
    """Bytes uploaded for ``blob`` (0 when the registry had it or could mount it)."""
    if await registry.blob_exists(target, blob.digest):
        return 0
    for source in (home, blob.source):
        if (
            source is not None
            and source.registry == target.registry
            and source.repository != target.repository
            and await registry.mount_blob(target, blob.digest, source)
        ):
            return 0
    local = await _local_file(registry, blob)
    return blob.size if await registry.push_blob(target, blob.digest, local) else 0


async def _local_file(registry: RegistryClient, blob: Blob) -> Path:
    """The blob as a file here: built here, or a base layer fetched through the blob cache."""
    if blob.path is not None:
        return blob.path
    from .engines.store import BlobStore

    assert blob.source is not None
    return await BlobStore().fetch(registry, blob.source, blob.digest)


# -- to disk ---------------------------------------------------------------------------------


async def write_layout(
    registry: RegistryClient, path: str | os.PathLike[str], variants: Sequence[Variant], tag: str
) -> Published:
    """Write an OCI image layout: a directory, or a tar archive when ``path`` ends in .tar."""
    dest = absolute(path)
    as_tar = dest.suffix == ".tar"
    document, media_type = _top_document(variants)
    with host_destination(dest, what="export") as scratch:
        if dest.exists() and (as_tar or any(dest.iterdir())):
            raise InvalidArgument(f"{dest} already exists; remove it or export elsewhere")
        layout = scratch / "layout"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in {b.digest: b for v in variants for b in (*v.layers, v.config)}.values():
            target = blobs / blob.digest.partition(":")[2]
            await in_thread(shutil.copyfile, await _local_file(registry, blob), target)
        documents = [document] + ([v.manifest for v in variants] if len(variants) > 1 else [])
        for data in documents:
            (blobs / _digest(data).partition(":")[2]).write_bytes(data)
        top = {"mediaType": media_type, "digest": _digest(document), "size": len(document)}
        top["annotations"] = {REF_NAME: tag}
        (layout / "index.json").write_bytes(
            _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
        )
        (layout / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        if as_tar:  # written whole beside dest, then renamed: never a half-written tar
            await in_thread(_tar, layout, scratch / "layout.tar")
            os.replace(scratch / "layout.tar", dest)
        else:
            dest.mkdir(exist_ok=True)
            for entry in layout.iterdir():
                entry.rename(dest / entry.name)
    return Published(str(dest), _digest(document), media_type, document, tuple(variants))


def _tar(layout: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
