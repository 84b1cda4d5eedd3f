"""The documents a registry serves, read defensively: image indexes, manifests and configs.

They come from the network, so every field used is checked for its type here, and a document
that lacks one is a RegistryError naming what is missing; any other exception is a bug of ours
and stays what it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, PlatformNotOffered, RegistryError
from ..platforms import Platform
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

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def platforms(self) -> list[Platform]:
        return [p for p, _ in self.manifests if _is_real(p)]

    def manifest_digest(self, platform: Platform) -> str:
        for offered, digest in self.manifests:
            if _is_real(offered) and offered.matches(platform):
                return digest
        raise PlatformNotOffered(self.reference.familiar, platform, self.platforms())


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
