"""A thin async client for the OCI distribution API: pull and push images, over httpx.

Flow: ``Reference.parse`` normalises a name the way Docker does ("alpine" is
registry-1.docker.io/library/alpine:latest); ``RegistryClient.resolve`` finds what it points
to, per platform; ``download_blob`` and the push methods move the content, each verified
against its digest. One module per concept:

    reference.py   the name grammar: Reference, check_digest, HUB
    mediatypes.py  what OCI and Docker call each document
    manifests.py   indexes, manifests and configs read defensively; ResolvedImage
    digests.py     verifying content against its digest, pulled or pushed
    auth.py        401 challenges, tokens per scope, credentials from ~/.docker/config.json
    client.py      RegistryClient: the HTTP requests, their errors, pull and push

Only client.py imports httpx, which is slow to import: it loads on first use of a name from
it, so modules that need references or media types keep ``%load_ext`` fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import parse_challenge
from .manifests import ResolvedImage
from .reference import HUB, Reference, check_digest

if TYPE_CHECKING:
    from .client import RegistryClient

__all__ = ["HUB", "Reference", "RegistryClient", "ResolvedImage", "check_digest", "parse_challenge"]


def __getattr__(name: str) -> Any:
    # PEP 562: `from mpcontainer_magics.registry import RegistryClient` imports httpx only then.
    if name == "RegistryClient":
        from .client import RegistryClient

        return RegistryClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
