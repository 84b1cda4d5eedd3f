"""The documents a registry serves, read defensively: image indexes, manifests and configs.

They come from the network, so every field used is checked for its type here, and a document
that lacks one is a RegistryError naming what is missing; any other exception is a bug of ours
and stays what it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ImageError, InvalidArgument, PlatformNotOffered, RegistryError
from ..platforms import Matcher, Platform
from .mediatypes import DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES
from .reference import Reference, check_digest, display_host


def _is_real(platform: Platform) -> bool:
    # buildx adds attestation manifests to an index under the platform "unknown/unknown".
    return "unknown" not in (platform.os, platform.architecture)


@dataclass(frozen=True)
class ResolvedImage:
    """What a tag points to, and the manifest digest of each platform it offers."""

    reference: Reference
    digest: str
    media_type: str
    manifests: tuple[tuple[Platform, str], ...]
    mirror: str | None = None  # the mirror (host[:port]) that answered; None: the registry

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def platforms(self) -> list[Platform]:
        return [p for p, _ in self.manifests if _is_real(p)]

    def select(self, platform: Platform, *, arm32: bool = False) -> tuple[Platform, str]:
        """The best entry for ``platform`` as containerd picks one (``platforms.Only``):
        (the platform the entry offers, its manifest digest).

        Best is the first of ``compatible(platform, arm32=arm32)`` offered (amd64/v2 takes
        amd64/v2, else amd64, else 386; arm/v7 takes v7, v6, v5), then the entry with more OS
        features, then (for a request with an OS version) the higher OS version; equal
        entries go by index order. A Windows request with an OS version takes only builds a
        host of that version runs (``windows(10.0.20348)/amd64`` takes 10.0.20348.x, not
        10.0.17763.x); without one, any.
        ``arm32`` lets an arm64 request take 32-bit arm entries: only when the CPU that runs
        them has a 32-bit mode (qemu-aarch64 has none).
        """
        ranked = Matcher.only(platform, arm32=arm32).ranked(self.platforms())
        if not ranked:
            raise PlatformNotOffered(self.reference.familiar, platform, self.platforms())
        return next((offered, digest) for offered, digest in self.manifests if offered == ranked[0])

    def manifest_digest(self, platform: Platform, *, arm32: bool = False) -> str:
        """The manifest digest of :meth:`select`'s entry."""
        return self.select(platform, arm32=arm32)[1]


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object; RegistryError if it is anything else."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(
            f"{what} is not a JSON object; check that the address names an OCI registry"
        )
    return doc


def malformed(ref: Reference, why: str, document: str = "manifest") -> RegistryError:
    return RegistryError(
        f"registry {display_host(ref.registry)} sent a malformed {document} for {ref.familiar} "
        f"({why}); re-push the image with a current tool"
    )


def index_entries(index: dict[str, Any], ref: Reference) -> tuple[tuple[Platform, str], ...]:
    """(platform, manifest digest) of each runnable image an index lists."""
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise malformed(ref, "the index has no 'manifests' list")
    entries = []
    for entry in manifests:
        if not isinstance(entry, dict):
            raise malformed(ref, "an entry of its 'manifests' is not an object")
        media_type = entry.get("mediaType", DOCKER_MANIFEST)
        # Nested indexes and entries without a platform are not runnable images.
        if not isinstance(media_type, str) or media_type not in MANIFEST_TYPES:
            continue
        if "platform" in entry:
            platform = platform_of(entry["platform"], ref, "an index entry's platform")
            entries.append((platform, _digest(entry.get("digest"), ref, "an index entry")))
    return tuple(entries)


def config_digest(manifest: dict[str, Any], ref: Reference) -> str:
    """The digest of the image config a manifest names."""
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise malformed(ref, "it has no 'config' object")
    return _digest(config.get("digest"), ref, "its config")


def platform_of(obj: object, ref: Reference, what: str, document: str = "manifest") -> Platform:
    """The platform an index entry's ``platform`` or an image config describes."""
    if not isinstance(obj, dict):
        raise malformed(ref, f"{what} is not an object", document)
    try:
        return Platform.from_oci(obj)
    except InvalidArgument as exc:  # InvalidPlatform: no architecture string
        raise malformed(ref, f"{what}: {exc}", document) from None


def _digest(value: object, ref: Reference, what: str) -> str:
    if not isinstance(value, str):
        raise malformed(ref, f"{what} has no 'digest' string")
    try:
        return check_digest(value)
    except InvalidArgument:
        raise malformed(ref, f"{what} has the invalid digest {value!r}") from None


# -- one platform's image manifest and config, as an unpacker or publisher reads them ---------


@dataclass(frozen=True)
class Descriptor:
    """A descriptor of a manifest (OCI image-spec: mediaType, digest, size are required)."""

    media_type: str
    digest: str
    size: int


def _malformed_document(image: str, document: str, problem: str) -> RegistryError:
    return RegistryError(
        f"the registry sent a malformed {document} for {image}: {problem}; re-push the image "
        "(e.g. with docker buildx or skopeo copy)"
    )


def _json_object(data: bytes, image: str, document: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError as exc:  # also bytes that are not UTF-8
        raise _malformed_document(image, document, f"it is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise _malformed_document(
            image, document, f"it is a JSON {type(parsed).__name__}, not an object"
        )
    return parsed


def _is_digest(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        check_digest(value)
    except ValueError:
        return False
    return True


def _blob(value: object, where: str, image: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _malformed_document(image, "manifest", f"{where} is not a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        problem = "has no 'mediaType' string"
    elif not _is_digest(digest):
        problem = f"has no valid 'digest' (sha256:<64 hex digits>), but {digest!r}"
    elif not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problem = f"has no 'size' in bytes, but {size!r}"
    else:
        return Descriptor(media_type, digest, size)
    raise _malformed_document(image, "manifest", f"{where} {problem}")


def image_manifest_blobs(
    body: bytes, media_type: str, image: str
) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest, bottom layer first."""
    if media_type not in MANIFEST_TYPES:
        raise _malformed_document(image, "manifest", f"it is a {media_type}, not an image manifest")
    manifest = _json_object(body, image, "manifest")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise _malformed_document(image, "manifest", "its 'layers' is not a list of descriptors")
    config = _blob(manifest.get("config"), "'config'", image)
    return config, [_blob(layer, f"layers[{n}]", image) for n, layer in enumerate(layers)]


def checked_image_config(
    data: bytes, image: str, platform: Platform, layers: int
) -> dict[str, Any]:
    """The image config, checked: its platform is one ``platform`` runs, one diff ID per layer."""
    config = _json_object(data, image, "config")
    architecture, os_name = config.get("architecture"), config.get("os")
    if not (isinstance(architecture, str) and architecture and isinstance(os_name, str)):
        raise _malformed_document(image, "config", "it has no 'architecture' and 'os' strings")
    if not isinstance(config.get("config") or {}, dict):
        raise _malformed_document(image, "config", "its 'config' is not an object")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not (isinstance(diff_ids, list) and len(diff_ids) == layers):
        raise _malformed_document(
            image, "config", f"its rootfs.diff_ids is not a list of {layers} digests"
        )
    if not all(_is_digest(diff_id) for diff_id in diff_ids):
        raise _malformed_document(
            image, "config", "its rootfs.diff_ids holds something not a digest"
        )
    offered = Platform.from_oci(config)
    # The entry chosen for `platform` may be one it runs (arm/v6 for arm/v7, 386 for amd64).
    # Older arm images omit the variant from their config; the index entry then decides it.
    # OS features are the index entry's to declare (selection used them), not the config's.
    runs, described = Matcher.only(platform), replace(offered, os_features=())
    if not (
        runs.match(described)
        or (not config.get("variant") and runs.match(replace(described, variant=platform.variant)))
    ):
        raise ImageError(
            f"the manifest of {image} describes an image for {offered}; the index is "
            "inconsistent, re-push the image"
        )
    return config
