"""Image references: parse and normalise a name the way Docker does, and show it back.

"alpine" is registry-1.docker.io/library/alpine:latest; "ghcr.io/o/r:1@sha256:…" keeps both
its tag (for display) and its digest (which names the content). The grammar is the one of
distribution/reference (github.com/distribution/reference, regexp.go); a digest is
algorithm:hex for the algorithms OCI registers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import ImageError, InvalidArgument

HUB = "registry-1.docker.io"

#: A registry host[:port]: a DNS name, or an IPv6 address in brackets.
DOMAIN = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
# Only the algorithms OCI registers; anything else could not be verified.
DIGEST_HEX = {"sha256": 64, "sha512": 128}


def check_digest(digest: str) -> str:
    """``digest`` itself if it is a digest we can verify; else InvalidArgument (a ValueError)."""
    algo, _, hexpart = digest.partition(":")
    if DIGEST_HEX.get(algo) != len(hexpart) or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise InvalidArgument(
            f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits> (or "
            "sha512:<128>); copy it exactly as the registry or `docker images --digests` shows it"
        )
    return digest


def display_host(registry: str) -> str:
    """How users know the registry: Docker Hub is "docker.io"."""
    return "docker.io" if registry == HUB else registry


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        def bad(why: str) -> ImageError:
            return ImageError(f"invalid image reference {text!r}: {why}")

        name, at, digest = text.partition("@")
        if not name:
            raise bad("the repository name is empty")
        if at:
            try:
                check_digest(digest)
            except InvalidArgument:
                raise bad("the digest must look like sha256:<64 lowercase hex digits>") from None
        tag = None
        if name.rfind(":") > name.rfind("/"):
            name, _, tag = name.rpartition(":")
            if not _TAG.fullmatch(tag):
                raise bad("a tag is up to 128 letters, digits, '_', '.' or '-'")
        # Docker's rule: the first component is a registry only if it looks like a host.
        first, slash, rest = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
            if not DOMAIN.fullmatch(registry):
                raise bad(f"{registry!r} is not a valid registry host[:port]")
        else:
            registry, repository = "docker.io", name
        if registry in ("docker.io", "index.docker.io"):
            registry = HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        if repository != repository.lower():
            raise bad("repository names must be lowercase")
        if not _PATH.fullmatch(repository) or len(registry) + len(repository) >= 255:
            raise bad("a repository name is lowercase letters, digits and '/', '.', '_', '-'")
        return cls(registry, repository, tag or (None if at else "latest"), digest or None)

    @property
    def _familiar_name(self) -> str:
        if self.registry != HUB:
            return f"{self.registry}/{self.repository}"
        official = self.repository.startswith("library/") and self.repository.count("/") == 1
        return self.repository[len("library/") :] if official else self.repository

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def familiar(self) -> str:
        """The name as ``docker images`` shows it: "alpine:3.23", "ghcr.io/o/r:1"."""
        return self._familiar_name + self._suffix()

    @property
    def pull_name(self) -> str:
        """What to hand ``docker pull`` to get exactly ``self.digest``: "alpine@sha256:..."."""
        if self.digest is None:
            raise InvalidArgument(
                f"{self.familiar} has no digest, so it names no exact content; resolve it first "
                "(RegistryClient.resolve) or give it as NAME@sha256:<64 hex digits>"
            )
        return f"{self._familiar_name}@{self.digest}"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=check_digest(digest))

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}{self._suffix()}"
