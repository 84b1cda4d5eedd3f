"""A thin async client for the OCI distribution API, over httpx: pull and push.

Flow: ``Reference.parse`` normalises a name the way Docker does ("alpine" is
registry-1.docker.io/library/alpine:latest). ``RegistryClient.resolve`` GETs the manifest the
tag points to, with an Accept list naming all four manifest types so that a registry hands
back an index rather than picking one platform for us. For an index, each entry's platform
comes from the index itself; for a single manifest, from its config blob. Every manifest and
blob is hashed and compared to the digest that named it before anything uses it.

Auth follows the registry's challenge: a request without credentials gets a 401 carrying
``WWW-Authenticate``; a Bearer challenge makes us fetch a token from its realm for the
scope ``repository:<repo>:<actions>`` (cached per registry and scope; a push will ask for a
wider scope and get its own token), a Basic challenge makes us send the user's credentials.
Credentials come from the Docker config (``auths``, ``credHelpers``, ``credsStore``), so a
``docker login`` is all a user needs. They never appear in messages.

Push (for publishing a multi-platform image; the caller goes blobs → manifests → index):
``push_blob`` HEADs first so an existing blob is never re-sent, mounts a blob from another
repository of the same registry instead of uploading it when it can, else uploads it in one
PUT; ``push_manifest`` PUTs the exact bytes with Content-Type = their mediaType, so the digest
the registry stores is the one the caller computed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from .errors import DigestMismatch, ImageError, ImageNotFound, PlatformNotOffered, RegistryError
from .mediatypes import (
    ACCEPT,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
)
from .platforms import Platform

HUB = "registry-1.docker.io"
# Docker stores Hub credentials under this legacy key, not under the registry's host name.
HUB_AUTH_KEY = "https://index.docker.io/v1/"

# The grammar of distribution/reference (github.com/distribution/reference, regexp.go).
_DOMAIN = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
# Only the algorithms OCI registers; anything else could not be verified.
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
# Read size when hashing and uploading files: big enough that per-chunk overhead is noise.
_CHUNK = 1 << 20
# A request body: bytes, or a factory of a fresh stream (so a retry after 401 can re-send it).
_Body = bytes | Callable[[], AsyncIterator[bytes]] | None


def check_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if _DIGEST_HEX.get(algo) != len(hexpart) or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise ValueError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def _verify(data: bytes, expected: str, ref: Reference, what: str) -> None:
    """Raise DigestMismatch unless ``data`` hashes to ``expected`` (also if we cannot hash it)."""
    algo = expected.partition(":")[0]
    if algo in _DIGEST_HEX and f"{algo}:{hashlib.new(algo, data).hexdigest()}" == expected:
        return
    raise _mismatch(ref, what, expected)


def _mismatch(ref: Reference, what: str, expected: str) -> DigestMismatch:
    return DigestMismatch(
        f"the {what} of {ref.familiar} from registry {_host(ref.registry)} does not hash to "
        f"{expected}; refusing to use it (the registry or a proxy altered it)"
    )


def _source_mismatch(ref: Reference, what: str, expected: str) -> DigestMismatch:
    return DigestMismatch(
        f"the {what} to push to {ref.familiar} does not hash to {expected}; refusing to push it "
        "(the digest is wrong or the source changed after it was computed)"
    )


def _hash_file(path: Path, algo: str) -> tuple[str, int]:
    """The digest and size of a file, read in chunks (layers need not fit in memory)."""
    hasher = hashlib.new(algo)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{algo}:{hasher.hexdigest()}", size


async def _read_verified(
    path: Path, digest: str, size: int, fail: Callable[[], DigestMismatch]
) -> AsyncIterator[bytes]:
    """Yield the file's first ``size`` bytes, holding the last chunk back until they hashed right.

    The file was hashed before the upload began; this catches it changing meanwhile. As the
    final chunk is never sent then, the registry never receives a complete wrong blob.
    """
    algo = digest.partition(":")[0]
    hasher = hashlib.new(algo)
    held = b""
    left = size  # never more than the Content-Length sent
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, min(_CHUNK, left)):
            if held:
                yield held
            hasher.update(chunk)
            held = chunk
            left -= len(chunk)
    if f"{algo}:{hasher.hexdigest()}" != digest:
        raise fail()
    yield held


def _host(registry: str) -> str:
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
            except ValueError:
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
            if not _DOMAIN.fullmatch(registry):
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
        """The name as ``docker images`` shows it: "alpine:3.16", "ghcr.io/o/r:1"."""
        return self._familiar_name + self._suffix()

    @property
    def pull_name(self) -> str:
        """What to hand ``docker pull`` to get exactly ``self.digest``: "alpine@sha256:..."."""
        if self.digest is None:
            raise ValueError(f"{self} has no digest; resolve it first")
        return f"{self._familiar_name}@{self.digest}"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=check_digest(digest))

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}{self._suffix()}"


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


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``Bearer realm="https://a",scope="repository:x:pull,push"`` into scheme, params.

    Quoted values may contain commas and backslash escapes, so a plain split would break them.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in re.finditer(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        quoted = m.group(2)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3)
        params[m.group(1).lower()] = value
    return scheme.lower(), params


def _is_insecure(registry: str) -> bool:
    """Docker talks plain http to loopback registries only (unless told otherwise); so do we."""
    host = urlsplit(f"//{registry}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object; is this really an OCI registry?")
    return doc


class RegistryClient:
    """Pull from and push to OCI registries; use ``async with RegistryClient() as c``.

    ``docker_config`` is the directory holding config.json (as ``$DOCKER_CONFIG``); by
    default ``$DOCKER_CONFIG`` or ``~/.docker``. ``insecure_registries`` lists host[:port]
    names to talk plain http to, besides loopback ones (Docker's "insecure-registries").

    ``requests`` counts the HTTP requests sent, keyed "<METHOD> <kind>" with kind one of
    manifest, blob, upload, mount, token (e.g. "HEAD blob", "POST upload", "PUT upload",
    "DELETE upload", "POST mount", "PUT manifest", "GET token"); a retry after an auth
    challenge counts again. It lets callers and tests
    check what was sent, e.g. that publishing twice uploads no blob the second time.
    """

    @property
    def config_file(self) -> Path:
        """The Docker config file credentials are read from."""
        return self._config_file

    @property
    def insecure_registries(self) -> frozenset[str]:
        """Registries (host[:port]) reached over plain HTTP, besides loopback ones."""
        return self._insecure

    @insecure_registries.setter
    def insecure_registries(self, registries: Iterable[str]) -> None:
        # Users may paste "http://host:port/"; the registry part is what we compare.
        self._insecure = frozenset(
            re.sub(r"^[a-z]+://", "", r.strip().lower()).rstrip("/") for r in registries
        )

    def __init__(
        self,
        *,
        docker_config: str | os.PathLike[str] | None = None,
        insecure_registries: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        config_dir = docker_config or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
        self._config_file = Path(config_dir) / "config.json"
        self.insecure_registries = insecure_registries
        self._timeout = timeout
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
        # (registry, scopes) -> Authorization value: a pull token is never used for a push.
        self._auth: dict[tuple[str, tuple[str, ...]], str] = {}
        self._credentials: dict[str, tuple[str, str] | None] = {}
        self.requests: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return (
            f"RegistryClient(docker_config={str(self._config_file.parent)!r}, "
            f"insecure_registries={sorted(self._insecure)!r})"
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def resolve(self, ref: str | Reference) -> ResolvedImage:
        """Find what ``ref`` points to and the per-platform manifest digests."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        body, media_type, digest = await self.get_manifest(ref)
        doc = _json(body, f"the manifest of {ref.familiar}")
        try:
            if media_type in INDEX_TYPES:
                # Nested indexes and entries without a platform are not runnable images.
                entries = tuple(
                    (Platform.from_oci(m["platform"]), check_digest(m["digest"]))
                    for m in doc["manifests"]
                    if m.get("mediaType", DOCKER_MANIFEST) in MANIFEST_TYPES and "platform" in m
                )
                return ResolvedImage(ref, digest, media_type, entries)
            config_digest = check_digest(doc["config"]["digest"])
            config = _json(await self.get_blob(ref, config_digest), f"the config of {ref.familiar}")
            platform = Platform.from_oci(config)
        # ValueError covers a malformed digest and an invalid platform object.
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _malformed(ref, exc) from exc
        return ResolvedImage(ref, digest, media_type, ((platform, digest),))

    async def get_manifest(self, ref: Reference) -> tuple[bytes, str, str]:
        """The exact manifest bytes, their media type and digest (verified when knowable)."""
        url = self._url(ref, f"manifests/{ref.digest or ref.tag}")
        resp = await self._request("GET", ref, "manifest", url, headers={"Accept": ACCEPT})
        codes = _error_codes(resp)
        if resp.status_code == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
            host = _host(ref.registry)
            raise ImageNotFound(
                f"image {ref.familiar} not found in registry {host}; "
                "check the name and tag (docker pull would fail too)"
            )
        _raise_for_status(resp, ref, "manifest")
        body = resp.content
        for expected in (ref.digest, resp.headers.get("Docker-Content-Digest")):
            if expected:
                _verify(body, expected, ref, "manifest")
        digest = ref.digest or f"sha256:{hashlib.sha256(body).hexdigest()}"
        media_type = resp.headers.get("Content-Type", "").partition(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            # Some registries answer a generic content type; the document names its own.
            media_type = str(_json(body, f"the manifest of {ref.familiar}").get("mediaType"))
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            raise RegistryError(
                f"{ref.familiar} has a manifest of unsupported type {media_type!r}; "
                "only OCI and Docker schema 2 images are supported (re-push it with a current tool)"
            )
        return body, media_type, digest

    async def get_blob(self, ref: Reference, digest: str) -> bytes:
        """The blob named ``digest`` in ``ref``'s repository, verified against the digest."""
        resp = await self._request(
            "GET", ref, "blob", self._url(ref, f"blobs/{check_digest(digest)}")
        )
        _raise_for_blob_status(resp, ref, digest)
        _verify(resp.content, digest, ref, f"blob {digest}")
        return resp.content

    async def download_blob(
        self,
        ref: Reference,
        digest: str,
        dest: BinaryIO,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Stream blob ``digest`` into ``dest``, hashing as it goes; the number of bytes.

        For layers, which need not fit in memory. ``on_bytes(n)`` is called on the event loop
        with the size of each piece written (for progress bars). On DigestMismatch ``dest``
        holds the bad bytes: the caller discards it.
        """
        algo = check_digest(digest).partition(":")[0]
        resp = await self._request(
            "GET", ref, "blob", self._url(ref, f"blobs/{digest}"), stream=True
        )
        try:
            if not resp.is_success:
                await resp.aread()  # the error body names the cause
                _raise_for_blob_status(resp, ref, digest)
            hasher = hashlib.new(algo)
            size = 0
            async for chunk in resp.aiter_bytes():
                hasher.update(chunk)
                dest.write(chunk)
                size += len(chunk)
                if on_bytes is not None and chunk:
                    on_bytes(len(chunk))
        except httpx.TransportError as exc:
            raise RegistryError(
                f"lost the connection to registry {_host(ref.registry)} while downloading blob "
                f"{digest} of {ref.familiar}: {_reason(exc)}; try again"
            ) from exc
        finally:
            await resp.aclose()
        if f"{algo}:{hasher.hexdigest()}" != digest:
            raise _mismatch(ref, f"blob {digest}", digest)
        return size

    async def blob_exists(self, ref: Reference, digest: str) -> bool:
        """Whether ``ref``'s repository already holds blob ``digest`` (HEAD, pull scope)."""
        url = self._url(ref, f"blobs/{check_digest(digest)}")
        resp = await self._request("HEAD", ref, "blob", url)
        if resp.status_code == 404:
            return False
        _raise_for_status(resp, ref, f"blob {digest}")
        return True

    async def push_blob(
        self,
        ref: Reference,
        digest: str,
        source: bytes | os.PathLike[str],
        *,
        mount_from: Reference | None = None,
    ) -> bool:
        """Make blob ``digest`` exist in ``ref``'s repository; True if its bytes were uploaded.

        A blob already there is never re-sent (HEAD first). With ``mount_from`` in the same
        registry the registry is asked to link the blob from that repository, which costs no
        upload; if it cannot, it starts a normal upload instead. ``source`` (bytes or a file,
        streamed from disk) is read only when an upload is needed, and is verified against
        ``digest`` before any of it is sent: DigestMismatch, nothing pushed.
        """
        check_digest(digest)
        if await self.blob_exists(ref, digest):
            return False
        resp: httpx.Response | None = None
        scopes = _push_scopes(ref)
        if mount_from is not None:
            # On a 202 the registry started a normal upload: continue it, with the same token.
            resp, scopes = await self._mount(ref, digest, mount_from)
            if resp is not None and resp.status_code == 201:
                return False
        body, size = await self._blob_body(ref, digest, source)
        if resp is None:
            uploads = self._url(ref, "blobs/uploads/")
            resp = await self._request("POST", ref, "upload", uploads, scopes=scopes)
            if resp.status_code != 202:
                _raise_for_push_status(resp, ref, f"upload of blob {digest}")
        resp = await self._request(
            "PUT",
            ref,
            "upload",
            self._location(resp, ref).copy_merge_params({"digest": digest}),
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
        )
        if resp.status_code != 201:
            _raise_for_push_status(resp, ref, f"upload of blob {digest}")
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise _stored_mismatch(ref, f"blob {digest}", stored)
        return True

    async def mount_blob(self, ref: Reference, digest: str, source: Reference) -> bool:
        """Link blob ``digest`` from ``source``'s repository into ``ref``'s; True if done.

        This costs no upload. False when the registry cannot: another registry, no read access
        to ``source``, or the blob is not there (the upload the registry then starts is
        cancelled, so the caller can push the bytes its own way).
        """
        resp, scopes = await self._mount(ref, check_digest(digest), source)
        if resp is None or resp.status_code == 201:
            return resp is not None
        # Best effort: a registry that cannot cancel expires the session by itself.
        cancel = await self._request(
            "DELETE", ref, "upload", self._location(resp, ref), scopes=scopes, refuse=False
        )
        await cancel.aclose()
        return False

    async def _mount(
        self, ref: Reference, digest: str, source: Reference
    ) -> tuple[httpx.Response | None, tuple[str, ...]]:
        """Ask for a cross-repository mount: the 201/202 response and its scopes, or None.

        None (with plain push scopes) when a mount cannot work: ``source`` is in another
        registry or is ``ref``'s own repository, or we may not read it (401/403).
        """
        push = _push_scopes(ref)
        if source.registry != ref.registry or source.repository == ref.repository:
            return None, push
        scopes = (*push, f"repository:{source.repository}:pull")
        resp = await self._request(
            "POST",
            ref,
            "mount",
            self._url(ref, "blobs/uploads/"),
            scopes=scopes,
            params={"mount": digest, "from": source.repository},
            refuse=False,
        )
        if resp.status_code in (401, 403):
            return None, push
        if resp.status_code not in (201, 202):
            _raise_for_push_status(resp, ref, f"mount of blob {digest}")
        return resp, scopes

    async def push_manifest(self, ref: Reference, body: bytes, media_type: str) -> str:
        """PUT ``body`` as the manifest of ``ref`` (by its digest if it has one, else its tag).

        The exact bytes go out with Content-Type = ``media_type`` (which must equal the
        document's mediaType), so the digest the registry stores, and which this returns, is
        the sha256 of ``body``.
        """
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if ref.digest:
            algo = ref.digest.partition(":")[0]
            if f"{algo}:{hashlib.new(algo, body).hexdigest()}" != ref.digest:
                raise _source_mismatch(ref, "manifest", ref.digest)
        # By digest first, as for a GET: "repo:tag@digest" names the content, not the tag.
        url = self._url(ref, f"manifests/{ref.digest or ref.tag}")
        resp = await self._request(
            "PUT",
            ref,
            "manifest",
            url,
            scopes=_push_scopes(ref),
            headers={"Content-Type": media_type},
            content=body,
        )
        if resp.status_code != 201:
            _raise_for_push_status(resp, ref, "manifest", media_type)
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored not in (digest, ref.digest):
            raise _stored_mismatch(ref, "manifest", stored)
        return digest

    async def _blob_body(
        self, ref: Reference, digest: str, source: bytes | os.PathLike[str]
    ) -> tuple[_Body, int]:
        """The request body for ``source`` and its size, after checking it hashes to digest."""
        algo = digest.partition(":")[0]

        def fail() -> DigestMismatch:
            return _source_mismatch(ref, f"blob {digest}", digest)

        if isinstance(source, bytes):
            if f"{algo}:{hashlib.new(algo, source).hexdigest()}" != digest:
                raise fail()
            return source, len(source)
        path = Path(source)
        actual, size = await asyncio.to_thread(_hash_file, path, algo)
        if actual != digest:
            raise fail()
        return (lambda: _read_verified(path, digest, size, fail)), size

    def _location(self, resp: httpx.Response, ref: Reference) -> httpx.URL:
        """The upload session's URL from its Location header (relative or absolute)."""
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(
                f"registry {_host(ref.registry)} started an upload to {ref.familiar} without "
                "saying where to send it (no Location header); is it a working OCI registry?"
            )
        url = resp.url.join(location)
        if url.scheme == "http" and self._scheme(_netloc(url)) != "http":
            # Never the URL itself: upload URLs may carry signed credentials in the query.
            raise RegistryError(
                f"registry {_host(ref.registry)} asked to upload to {ref.familiar} via "
                f"{url.scheme}://{_netloc(url)}, which is not https; refusing (list it in "
                "insecure_registries if plain http is intended)"
            )
        return url

    def _scheme(self, registry: str) -> str:
        return "http" if _is_insecure(registry) or registry.lower() in self._insecure else "https"

    def _url(self, ref: Reference, path: str) -> httpx.URL:
        return httpx.URL(
            f"{self._scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}/{path}"
        )

    async def _request(
        self,
        method: str,
        ref: Reference,
        kind: str,
        url: httpx.URL,
        *,
        scopes: tuple[str, ...] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: _Body = None,
        stream: bool = False,
        refuse: bool = True,
    ) -> httpx.Response:
        """``method`` ``url``, answering one auth challenge; then a 401/403 is fatal.

        ``scopes`` are the token scopes the request needs (default: pull of ``ref``'s
        repository). Credentials go only to the registry itself, never to another host an
        upload Location points at. With ``stream`` the body is left unread and the caller must
        ``aclose()`` the response. With ``refuse=False`` a final 401/403 is returned instead.
        """
        scopes = scopes or (f"repository:{ref.repository}:pull",)
        ours = _origin(url) == _origin(self._url(ref, ""))
        auth = self._auth.get((ref.registry, scopes)) if ours else None
        resp = await self._send(
            method, ref.registry, url, kind, headers, auth, params, content, stream=stream
        )
        if resp.status_code == 401 and ours:
            await resp.aclose()
            # A cached token may have expired: always ask afresh after a 401.
            challenges = resp.headers.get_list("WWW-Authenticate")
            auth = await self._authorize(ref.registry, scopes, challenges)
            if auth:
                resp = await self._send(
                    method, ref.registry, url, kind, headers, auth, params, content, stream=stream
                )
        if resp.status_code in (401, 403) and refuse:
            await resp.aclose()
            login = _login(ref.registry)
            if resp.status_code == 401 and auth and auth.startswith("Basic "):
                raise self._credentials_refused(ref.registry, 401)
            if any(s.endswith(",push") for s in scopes):
                raise RegistryError(
                    f"registry {_host(ref.registry)} refused to let us push to {ref.familiar} "
                    f"(HTTP {resp.status_code}); run `{login}` with an account that may push "
                    "to that repository"
                )
            raise RegistryError(
                f"registry {_host(ref.registry)} refused access to {ref.familiar} "
                f"(HTTP {resp.status_code}); if the image exists, run `{login}` "
                "with an account that may pull it"
            )
        return resp

    async def _send(
        self,
        method: str,
        registry: str,
        url: httpx.URL | str,
        kind: str,
        headers: dict[str, str] | None,
        auth: str | None,
        params: dict[str, str] | list[tuple[str, str]] | None = None,
        content: _Body = None,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = auth
        body = content() if callable(content) else content
        request = self._http.build_request(
            method, url, headers=headers, params=params, content=body
        )
        self.requests[f"{method} {kind}"] += 1
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise RegistryError(
                f"cannot reach registry {_host(registry)}: {_reason(exc)}; "
                "check the registry address and that it is running"
            ) from exc

    async def _authorize(
        self, registry: str, scopes: tuple[str, ...], challenges: list[str]
    ) -> str | None:
        """Answer a 401's challenges; the Authorization value to retry with, or None."""
        parsed = dict(parse_challenge(c) for c in challenges)
        creds = await self._get_credentials(registry)
        basic = "Basic " + base64.b64encode(":".join(creds).encode()).decode() if creds else None
        bearer = parsed.get("bearer", {})
        if "realm" in bearer:
            # Distribution reads every `scope` parameter: one token for, e.g., a mount's two.
            params = [("scope", s) for s in scopes]
            if "service" in bearer:
                params.append(("service", bearer["service"]))
            resp = await self._send("GET", registry, bearer["realm"], "token", {}, basic, params)
            if resp.status_code in (401, 403):
                if basic:
                    raise self._credentials_refused(registry, resp.status_code)
                raise RegistryError(
                    f"registry {_host(registry)} requires a login (its token service answered "
                    f"HTTP {resp.status_code}); run `{_login(registry)}`"
                )
            doc = _json(resp.content, f"the token from {_host(registry)}")
            token = doc.get("token") or doc.get("access_token")
            if not resp.is_success or not isinstance(token, str):
                raise RegistryError(
                    f"registry {_host(registry)} gave no token (HTTP {resp.status_code}); "
                    "check that it is a working OCI registry"
                )
            self._auth[registry, scopes] = f"Bearer {token}"
        elif "basic" in parsed and basic:
            self._auth[registry, scopes] = basic
        else:
            return None
        return self._auth[registry, scopes]

    def _credentials_refused(self, registry: str, status: int) -> RegistryError:
        return RegistryError(
            f"registry {_host(registry)} refused the credentials stored for it in the Docker "
            f"config {self._config_file} (HTTP {status}); run `{_login(registry)}` again"
        )

    async def _get_credentials(self, registry: str) -> tuple[str, str] | None:
        """(user, secret) for ``registry`` from the Docker config, as the docker CLI finds them."""
        if registry in self._credentials:
            return self._credentials[registry]
        try:
            config = json.loads(self._config_file.read_text())
        except FileNotFoundError:
            config = {}
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot read Docker config {self._config_file}: {type(exc).__name__}; "
                "fix or remove it"
            ) from None
        server = HUB_AUTH_KEY if registry == HUB else registry
        helper = config.get("credHelpers", {}).get(server) or config.get("credsStore")
        creds = await self._run_helper(helper, server) if helper else None
        entry = config.get("auths", {}).get(server) or {}
        if creds is None and entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError; never show the value
                raise RegistryError(
                    f"the auth entry for {server} in {self._config_file} is not base64 of "
                    f"user:password; run `docker login` for {_host(registry)} again"
                ) from None
            creds = (user, secret)
        self._credentials[registry] = creds
        return creds

    async def _run_helper(self, helper: str, server: str) -> tuple[str, str] | None:
        # The credential-helper protocol: server URL on stdin, JSON {Username, Secret} out.
        try:
            proc = await asyncio.create_subprocess_exec(
                f"docker-credential-{helper}",
                "get",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:  # helper not installed: Docker too would have no credentials
            return None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(server.encode()), self._timeout)
        except asyncio.TimeoutError:  # e.g. waiting for a keyring unlock prompt
            proc.kill()
            await proc.wait()
            return None
        try:
            doc = json.loads(out) if proc.returncode == 0 else {}
            return (doc["Username"], doc["Secret"]) if doc.get("Secret") else None
        except (ValueError, KeyError, AttributeError):
            return None


def _push_scopes(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:pull,push",)


def _login(registry: str) -> str:
    return "docker login" + ("" if registry == HUB else f" {registry}")


def _netloc(url: httpx.URL) -> str:
    return url.netloc.decode("ascii")


def _reason(exc: BaseException) -> str:
    """A short cause; async httpx says "All connection attempts failed" over the real one."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            reason = os.strerror(cause.errno)  # e.g. "Connection refused"
        cause = cause.__cause__ or cause.__context__
    return reason


def _error_codes(resp: httpx.Response) -> set[str]:
    """The ``errors[].code`` values of a distribution-spec error body, if any."""
    try:
        return {str(e.get("code")) for e in resp.json().get("errors", [])}
    except (ValueError, AttributeError, TypeError):
        return set()


def _raise_for_status(resp: httpx.Response, ref: Reference, what: str) -> None:
    if not resp.is_success:
        detail = ", ".join(sorted(_error_codes(resp))) or resp.reason_phrase
        raise RegistryError(
            f"registry {_host(ref.registry)} answered HTTP {resp.status_code} ({detail}) for the "
            f"{what} of {ref.familiar}; check the registry's logs or try again"
        )


def _raise_for_push_status(
    resp: httpx.Response, ref: Reference, what: str, media_type: str = ""
) -> None:
    """Explain a failed push step, with the fix for error codes that have a known one."""
    codes = _error_codes(resp)
    if codes & {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"}:
        hint = "it names a blob or manifest the repository lacks; push those first"
    elif "MANIFEST_INVALID" in codes:
        hint = f"check that it is valid JSON whose mediaType equals its Content-Type ({media_type})"
    else:
        hint = "check the registry's logs or try again"
    detail = ", ".join(sorted(codes)) or resp.reason_phrase
    raise RegistryError(
        f"registry {_host(ref.registry)} refused the {what} of {ref.familiar} "
        f"(HTTP {resp.status_code} {detail}); {hint}"
    )


def _stored_mismatch(ref: Reference, what: str, stored: str) -> DigestMismatch:
    return DigestMismatch(
        f"registry {_host(ref.registry)} stored the {what} of {ref.familiar} as {stored}, which "
        "is not the digest of the bytes sent (the registry or a proxy altered them)"
    )


def _raise_for_blob_status(resp: httpx.Response, ref: Reference, digest: str) -> None:
    if resp.status_code == 404:
        raise RegistryError(
            f"registry {_host(ref.registry)} lacks blob {digest} of {ref.familiar}; "
            "the image is incomplete there, re-push it"
        )
    _raise_for_status(resp, ref, f"blob {digest}")


def _malformed(ref: Reference, exc: Exception) -> RegistryError:
    return RegistryError(
        f"registry {_host(ref.registry)} sent a malformed manifest for {ref.familiar} "
        f"({type(exc).__name__}: {exc}); re-push the image"
    )
