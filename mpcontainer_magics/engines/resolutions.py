"""What names resolved to, kept in the cache for when their registry cannot be reached.

    refs/<sha256 of the name>.json    the last resolution of a name as the user wrote it

Both engines keep them (in the cache directory, ``engines.store.default_cache_dir()`` by
default) and both run from one when the registry is down, as Docker runs a local image
then: the embedded engine when its cache holds the platform's image, Docker when its daemon
holds the pinned digest. The digests pin the content, so a kept resolution can be stale (the
tag moved since) but never wrong about what it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RateLimited, RegistryError
from ..platforms import Platform
from ..registry import Reference, ResolvedImage
from ..registry.cache import write_atomically
from ..registry.reference import display_host


@dataclass(frozen=True)
class Recalled:
    """A resolution kept earlier, and when it was made (seconds since the epoch)."""

    resolved: ResolvedImage
    at: float

    def note(self, reference: str, failure: RegistryError) -> str:
        """What the user is told when a run uses it instead of asking the registry, which
        failed with ``failure``."""
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at))
        registry = display_host(self.resolved.reference.registry)
        why = "is rate-limiting us" if isinstance(failure, RateLimited) else "is unreachable"
        return (
            f"registry {registry} {why}: using the cached resolution of {reference} "
            f"({self.resolved.digest}, from {when})"
        )

    def prefetched_note(self, reference: str) -> str:
        """What the user is told when the cache is asked first (``resolve_from="cache"``)."""
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at))
        return (
            f"{reference}: the cache's resolution ({self.resolved.digest}, from {when}); "
            "the registry was not asked (MPC_RESOLVE=cache)"
        )


class Resolutions:
    """The ``refs/`` part of the cache at ``cache_dir``, shared by the kernels using it."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "refs"

    def _file(self, reference: str) -> Path:
        return self.root / f"{hashlib.sha256(reference.encode()).hexdigest()}.json"

    def remember(self, reference: str, resolved: ResolvedImage) -> None:
        """Keep what ``reference`` resolved to just now."""
        saved = {
            "digest": resolved.digest,
            "media_type": resolved.media_type,
            "manifests": [(str(p), d) for p, d in resolved.manifests],
            "mirror": resolved.mirror,
            "at": time.time(),
        }
        # Only for when the registry is down: a read-only cache must not stop a pull.
        with contextlib.suppress(OSError):
            write_atomically(self._file(reference), json.dumps(saved).encode())

    def recall(self, reference: str) -> Recalled | None:
        """What ``reference`` resolved to last time, if this cache knows."""
        known = self._file(reference)
        try:
            saved = json.loads(known.read_text())
            at = float(saved.get("at") or known.stat().st_mtime)  # older files: no "at"
        except (OSError, ValueError):
            return None
        resolved = ResolvedImage(
            Reference.parse(reference),
            saved["digest"],
            saved["media_type"],
            tuple((Platform.parse(p), d) for p, d in saved["manifests"]),
            mirror=saved.get("mirror"),
        )
        return Recalled(resolved, at)
