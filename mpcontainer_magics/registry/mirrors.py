"""Registry mirrors: the places to pull a registry's content from before the registry itself.

As Docker's daemon.json "registry-mirrors", but for any registry, not only Docker Hub:
``{"docker.io": ["mirror.example:5000"], "ghcr.io": ["https://ghcr-cache.example"]}``.
A mirror written with ``http://`` is reached over plain HTTP, as Docker does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

from ..errors import InvalidArgument
from .reference import DOMAIN, HUB, display_host

#: The environment variable naming mirrors for a whole hub, as JSON: {"docker.io": ["m:5000"]}.
MIRRORS_ENV = "MPC_REGISTRY_MIRRORS"


def registry_name(text: object, what: str) -> str:
    """A registry or mirror as References name registries: "host[:port]", Hub as HUB."""
    name = re.sub(r"^[a-z]+://", "", str(text).strip().lower()).rstrip("/")
    if not isinstance(text, str) or not DOMAIN.fullmatch(name):
        raise InvalidArgument(
            f"{what}, {text!r}, is not a registry host[:port]; write it like "
            '"mirror.example:5000" or "https://mirror.example"'
        )
    return HUB if name in ("docker.io", "index.docker.io") else name


def mirrors_from_env() -> dict[str, list[str]]:
    """The mirrors ``$MPC_REGISTRY_MIRRORS`` names (JSON), e.g. for every kernel of a hub."""
    text = os.environ.get(MIRRORS_ENV, "").strip()
    if not text:
        return {}
    try:
        mirrors = json.loads(text)
    except ValueError:
        mirrors = None
    if not isinstance(mirrors, dict) or not all(
        isinstance(v, (str, list)) for v in mirrors.values()
    ):
        raise InvalidArgument(
            f"{MIRRORS_ENV} must be JSON mapping registries to lists of mirrors, like "
            '{"docker.io": ["mirror.example:5000"]}; fix or unset it'
        )
    return mirrors


def parse_mirrors(
    mirrors: Mapping[str, Sequence[str] | str],
) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """Registry -> its mirrors in order, and the mirrors to reach over plain HTTP."""
    parsed: dict[str, tuple[str, ...]] = {}
    plain: set[str] = set()
    for registry, listed in mirrors.items():
        key = registry_name(registry, "a registry named in registry_mirrors")
        hosts = []
        for mirror in [listed] if isinstance(listed, str) else listed:
            host = registry_name(mirror, f"a mirror of {display_host(key)}")
            if str(mirror).strip().lower().startswith("http://"):
                plain.add(host)
            hosts.append(host)
        parsed[key] = tuple(dict.fromkeys(h for h in hosts if h != key))
    return parsed, frozenset(plain)
