"""The registry client: pull and push over httpx, following the OCI distribution API.

``RegistryClient.resolve`` HEADs the tag first and GETs the manifest it points to only when
that digest is not in the manifest cache (cache.py): registries such as Docker Hub count GETs
against a pull limit, not HEADs. It asks with an Accept list naming all
four manifest types so that a registry hands back an index rather than picking one platform
for us. For an index, each entry's platform comes from the index itself; for a single
manifest, from its config blob. Every manifest and blob is verified against its digest
(digests.py) before anything uses it; auth (auth.py) answers the registry's challenges.

Push (for publishing a multi-platform image; the caller goes blobs → manifests → index):
``push_blob`` HEADs first so an existing blob is never re-sent, mounts a blob from another
repository of the same registry instead of uploading it when it can, else uploads it in one
PUT; ``push_manifest`` PUTs the exact bytes with Content-Type = their mediaType, so the digest
the registry stores is the one the caller computed.

What goes wrong on the way, and what is done about it:

- Mirrors (``registry_mirrors``, Docker's "registry-mirrors" for any registry): every
  pull-side request tries the registry's mirrors in order, then the registry itself. The
  digest check makes a mirror unable to change content. Pushes never go to a mirror.
- A broken connection or a 5xx answer is tried again, ``ATTEMPTS`` times in all with
  doubling waits; a blob download resumes with ``Range`` from the bytes already written, and
  a blob upload starts that blob again. A refused connection is not retried: the next mirror,
  or a cached resolution, is the better answer then.
- A rate limit (HTTP 429, or Docker Hub's TOOMANYREQUESTS) becomes ``RateLimited``, saying
  when it resets and how to avoid it; a registry asking to wait a few seconds
  (``RATE_LIMIT_RETRY_S``) is waited for and asked once more.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx

from .._aio import in_thread
from ..errors import DigestMismatch, ImageNotFound, InvalidArgument, RateLimited, RegistryError
from .auth import RegistryAuth, TokenRequest, login_command
from .cache import ManifestCache
from .digests import (
    hash_file,
    hashes_to,
    mismatch,
    oversized,
    read_verified,
    source_mismatch,
    stored_mismatch,
    verify,
)
from .manifests import (
    ResolvedImage,
    config_digest,
    index_entries,
    json_object,
    platform_of,
)
from .mediatypes import ACCEPT, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST
from .reference import DOMAIN, HUB, Reference, check_digest, display_host

#: The most a manifest, an index or an image config may be: containerd's limit (4 MiB).
MANIFEST_LIMIT = 4 << 20

#: Tries of one request, blob download or blob upload when the connection breaks or the
#: registry answers 5xx; the first retry waits RETRY_BACKOFF_S, each next one twice as long.
ATTEMPTS = 5
RETRY_BACKOFF_S = 0.2
#: A rate limit resetting within this many seconds (Retry-After) is waited for, once.
RATE_LIMIT_RETRY_S = 10.0
#: The environment variable naming mirrors for a whole hub, as JSON: {"docker.io": ["m:5000"]}.
MIRRORS_ENV = "MPC_REGISTRY_MIRRORS"

_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_T = TypeVar("_T")

# A request body: bytes, or a factory of a fresh stream (so a retry after 401 can re-send it).
_Body = bytes | Callable[[], AsyncIterator[bytes]] | None


def _is_insecure(registry: str) -> bool:
    """Docker talks plain http to loopback registries only (unless told otherwise); so do we."""
    host = urlsplit(f"//{registry}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


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

    ``registry_mirrors`` maps a registry ("docker.io", "ghcr.io", "host:port") to the
    mirrors (host[:port], or an http(s):// URL as Docker's daemon.json has them) to try
    first, in order; by default the JSON of ``$MPC_REGISTRY_MIRRORS``. ``cache_dir`` is
    where manifests are kept (default: the user's cache, see cache.py).
    """

    @property
    def config_file(self) -> Path:
        """The Docker config file credentials are read from."""
        return self._auth.config_file

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

    @property
    def registry_mirrors(self) -> dict[str, tuple[str, ...]]:
        """Registry (as References name it: Docker Hub is "registry-1.docker.io") -> mirrors."""
        return dict(self._mirrors)

    @registry_mirrors.setter
    def registry_mirrors(self, mirrors: Mapping[str, Sequence[str] | str]) -> None:
        parsed: dict[str, tuple[str, ...]] = {}
        plain: set[str] = set()
        for registry, listed in mirrors.items():
            key = _registry_name(registry, "a registry named in registry_mirrors")
            hosts = []
            for mirror in [listed] if isinstance(listed, str) else listed:
                host = _registry_name(mirror, f"a mirror of {display_host(key)}")
                if str(mirror).strip().lower().startswith("http://"):
                    plain.add(host)  # as Docker: a mirror written with http:// is reached so
                hosts.append(host)
            parsed[key] = tuple(dict.fromkeys(h for h in hosts if h != key))
        self._mirrors, self._plain_mirrors = parsed, frozenset(plain)

    def __init__(
        self,
        *,
        docker_config: str | os.PathLike[str] | None = None,
        insecure_registries: Iterable[str] = (),
        registry_mirrors: Mapping[str, Sequence[str] | str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        config_dir = docker_config or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
        self._auth = RegistryAuth(Path(config_dir) / "config.json", timeout)
        self.insecure_registries = insecure_registries
        self.registry_mirrors = mirrors_from_env() if registry_mirrors is None else registry_mirrors
        self._manifests = ManifestCache(Path(cache_dir) if cache_dir is not None else None)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
        self.requests: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return (
            f"RegistryClient(docker_config={str(self.config_file.parent)!r}, "
            f"insecure_registries={sorted(self._insecure)!r}, "
            f"registry_mirrors={self._mirrors!r})"
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
        (body, media_type, digest), mirror = await self._via_mirrors(ref, self._manifest)
        doc = json_object(body, f"the manifest of {ref.familiar}")
        if media_type in INDEX_TYPES:
            return ResolvedImage(ref, digest, media_type, index_entries(doc, ref), mirror)
        config_blob = await self.get_blob(ref, config_digest(doc, ref))
        config = json_object(config_blob, f"the config of {ref.familiar}")
        platform = platform_of(config, ref, "its platform", "config")
        return ResolvedImage(ref, digest, media_type, ((platform, digest),), mirror)

    async def get_manifest(self, ref: Reference) -> tuple[bytes, str, str]:
        """The exact manifest bytes, their media type and digest (verified when knowable).

        A manifest held in the cache costs no GET: by digest, none at all; by tag, a HEAD.
        """
        return (await self._via_mirrors(ref, self._manifest))[0]

    async def _manifest(self, ref: Reference) -> tuple[bytes, str, str]:
        """``get_manifest`` from one registry (or mirror)."""
        digest, header_type = ref.digest, ""
        if digest is None:
            digest, header_type = await self._head_manifest(ref)
        cached = self._manifests.get(digest) if digest else None
        if cached is not None and digest is not None:
            return cached, _media_type(cached, header_type, ref), digest
        url = self._url(ref, f"manifests/{ref.digest or ref.tag}")
        resp = await self._bounded_get(ref, "manifest", url, MANIFEST_LIMIT, {"Accept": ACCEPT})
        _raise_for_manifest_status(resp, ref)
        body = resp.content
        for expected in (ref.digest, resp.headers.get("Docker-Content-Digest")):
            if expected:
                verify(body, expected, ref, "manifest")
        digest = ref.digest or f"sha256:{hashlib.sha256(body).hexdigest()}"
        media_type = _media_type(body, resp.headers.get("Content-Type", ""), ref)
        self._manifests.put(digest, body)
        return body, media_type, digest

    async def _head_manifest(self, ref: Reference) -> tuple[str | None, str]:
        """The digest and media type the registry names for tag ``ref`` (a HEAD, which
        registries do not count against pull limits); (None, "") when it does not say."""
        url = self._url(ref, f"manifests/{ref.tag}")
        resp = await self._request("HEAD", ref, "manifest", url, headers={"Accept": ACCEPT})
        _raise_for_manifest_status(resp, ref)
        named = resp.headers.get("Docker-Content-Digest", "")
        try:
            digest = check_digest(named) if resp.is_success else None
        except InvalidArgument:
            digest = None  # an answer we cannot use: the GET will tell
        return digest, resp.headers.get("Content-Type", "")

    async def get_blob(self, ref: Reference, digest: str, size: int | None = None) -> bytes:
        """The blob named ``digest`` in ``ref``'s repository (a config: small, in memory),
        verified against the digest; never more than ``size`` bytes (its descriptor's), nor
        than MANIFEST_LIMIT. A blob in the cache is not fetched again."""
        cached = self._manifests.get(check_digest(digest))
        if cached is not None:
            return cached

        async def fetch(at: Reference) -> bytes:
            url = self._url(at, f"blobs/{digest}")
            limit = MANIFEST_LIMIT if size is None else min(size, MANIFEST_LIMIT)
            resp = await self._bounded_get(at, f"blob {digest}", url, limit)
            _raise_for_blob_status(resp, at, digest)
            verify(resp.content, digest, at, f"blob {digest}")
            return resp.content

        blob, _ = await self._via_mirrors(ref, fetch)
        self._manifests.put(digest, blob)
        return blob

    async def download_blob(
        self,
        ref: Reference,
        digest: str,
        dest: BinaryIO,
        on_bytes: Callable[[int], None] | None = None,
        *,
        size: int | None = None,
    ) -> int:
        """Stream blob ``digest`` into ``dest``, hashing as it goes; the number of bytes.

        For layers, which need not fit in memory. ``on_bytes(n)`` is called on the event loop
        with the size of each new piece (for progress bars; bytes written again after a
        restart are not counted twice). ``size`` is what the blob's descriptor says: reading
        stops there, so a registry that sends more (an endless stream would fill the disk) is
        refused at once. A download that breaks off resumes where it stopped (``Range``);
        a registry that cannot resume starts over: ``dest`` must be seekable, and is
        truncated then. On DigestMismatch ``dest`` holds the bad bytes: the caller discards it.
        """
        download = _Download(digest, dest, on_bytes, size)
        await self._via_mirrors(ref, lambda at: self._download_from(at, download))
        return download.got

    async def _download_from(self, ref: Reference, download: _Download) -> None:
        """``download`` from one registry (or mirror): tried ATTEMPTS times, resuming."""
        url = self._url(ref, f"blobs/{download.digest}")
        tried: list[str] = []
        resumed_at: list[int] = []
        while True:
            headers = {"Range": f"bytes={download.got}-"} if download.got else None
            if download.got:
                resumed_at.append(download.got)
            resp = await self._request(
                "GET", ref, "blob", url, headers=headers, stream=True, retry=False
            )
            try:
                if resp.status_code not in _TRANSIENT_STATUS and not resp.is_success:
                    await resp.aread()  # the error body names the cause
                    _raise_for_blob_status(resp, ref, download.digest)
                if resp.is_success:
                    await download.take(resp, ref)
                    if download.complete:
                        download.check(ref)
                        return
                    failure = f"the connection closed after {download.got} of {download.size} bytes"
                else:
                    failure = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
            except (httpx.TransportError, _Broken) as exc:
                failure = _reason(exc)
            finally:
                await resp.aclose()
            tried.append(failure)
            if len(tried) == ATTEMPTS:
                raise _download_failed(ref, download, tried, resumed_at)
            await _backoff(len(tried))

    async def _bounded_get(
        self,
        ref: Reference,
        what: str,
        url: httpx.URL,
        limit: int,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET a small document, reading at most ``limit`` bytes of its body (a registry that
        sends more is refused, as containerd refuses manifests over its limit). A body that
        breaks off is asked for again (ATTEMPTS in all)."""
        kind = what.partition(" ")[0]  # "manifest" or "blob", for the request's messages
        for attempt in range(1, ATTEMPTS + 1):
            resp = await self._request("GET", ref, kind, url, headers=headers, stream=True)
            try:
                parts, got = [], 0
                async for chunk in resp.aiter_bytes():
                    got += len(chunk)
                    if got > limit:
                        raise oversized(ref, what, limit)
                    parts.append(chunk)
                break
            except (httpx.TransportError, _Broken) as exc:
                if attempt == ATTEMPTS:
                    raise RegistryError(
                        f"lost the connection to registry {display_host(ref.registry)} while "
                        f"reading the {what} of {ref.familiar}, {ATTEMPTS} times: "
                        f"{_reason(exc)}; check the network and the registry, then try again"
                    ) from exc
            finally:
                await resp.aclose()
            await _backoff(attempt)
        # The same answer, with the body we read (bounded) in memory.
        return httpx.Response(
            resp.status_code, headers=resp.headers, content=b"".join(parts), request=resp.request
        )

    async def _via_mirrors(
        self, ref: Reference, fetch: Callable[[Reference], Awaitable[_T]]
    ) -> tuple[_T, str | None]:
        """``fetch(ref)`` from ``ref``'s mirrors in order, then from its registry: the result
        and the mirror that gave it (None: the registry). A mirror failing in any way (down,
        lacking the content, limiting us, serving wrong bytes) only means trying the next."""
        for mirror in self._mirrors.get(ref.registry, ()):
            try:
                return await fetch(replace(ref, registry=mirror)), mirror
            except (RegistryError, ImageNotFound):
                continue
        return await fetch(ref), None

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
        attempt = 1
        while True:
            try:
                return await self._upload(ref, digest, body, size, resp, scopes)
            except _Broken as exc:
                if attempt == ATTEMPTS:
                    raise RegistryError(
                        f"could not upload blob {digest} to {ref.familiar} at registry "
                        f"{display_host(ref.registry)}: {exc.reason}, {ATTEMPTS} times; check "
                        "the registry (its log, its free space) and publish again"
                    ) from exc
            resp, scopes = None, _push_scopes(ref)  # each try is a fresh upload of the blob
            await _backoff(attempt)
            attempt += 1

    async def _upload(
        self,
        ref: Reference,
        digest: str,
        body: _Body,
        size: int,
        started: httpx.Response | None,
        scopes: tuple[str, ...],
    ) -> bool:
        """One try of an upload: start it (unless ``started``), then PUT the whole blob."""
        if started is None:
            uploads = self._url(ref, "blobs/uploads/")
            started = await self._request("POST", ref, "upload", uploads, scopes=scopes)
            _raise_if_transient(started)
            if started.status_code != 202:
                _raise_for_push_status(started, ref, f"upload of blob {digest}")
        resp = await self._request(
            "PUT",
            ref,
            "upload",
            self._location(started, ref).copy_merge_params({"digest": digest}),
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
        )
        _raise_if_transient(resp)
        if resp.status_code != 201:
            _raise_for_push_status(resp, ref, f"upload of blob {digest}")
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise stored_mismatch(ref, f"blob {digest}", stored)
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
        if ref.digest and not hashes_to(body, ref.digest):
            raise source_mismatch(ref, "manifest", ref.digest)
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
            retry=True,  # the same bytes to the same name: safe to send again
        )
        if resp.status_code != 201:
            _raise_for_push_status(resp, ref, "manifest", media_type)
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored not in (digest, ref.digest):
            raise stored_mismatch(ref, "manifest", stored)
        return digest

    async def _blob_body(
        self, ref: Reference, digest: str, source: bytes | os.PathLike[str]
    ) -> tuple[_Body, int]:
        """The request body for ``source`` and its size, after checking it hashes to digest."""

        def fail() -> DigestMismatch:
            return source_mismatch(ref, f"blob {digest}", digest)

        if isinstance(source, bytes):
            if not hashes_to(source, digest):
                raise fail()
            return source, len(source)
        path = Path(source)
        actual, size = await in_thread(hash_file, path, digest.partition(":")[0])
        if actual != digest:
            raise fail()
        return (lambda: read_verified(path, digest, size, fail)), size

    def _location(self, resp: httpx.Response, ref: Reference) -> httpx.URL:
        """The upload session's URL from its Location header (relative or absolute)."""
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(
                f"registry {display_host(ref.registry)} started an upload to {ref.familiar} "
                "without saying where to send it (no Location header); check that the address "
                "names an OCI registry and not a proxy in front of one"
            )
        url = resp.url.join(location)
        if url.scheme == "http" and self._scheme(_netloc(url)) != "http":
            # Never the URL itself: upload URLs may carry signed credentials in the query.
            raise RegistryError(
                f"registry {display_host(ref.registry)} asked to upload to {ref.familiar} via "
                f"{url.scheme}://{_netloc(url)}, which is not https; refusing (list it in "
                "insecure_registries if plain http is intended)"
            )
        return url

    def _scheme(self, registry: str) -> str:
        plain = registry.lower() in self._insecure or registry in self._plain_mirrors
        return "http" if _is_insecure(registry) or plain else "https"

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
        retry: bool | None = None,
    ) -> httpx.Response:
        """``method`` ``url``, answering one auth challenge; then a 401/403 is fatal.

        ``scopes`` are the token scopes the request needs (default: pull of ``ref``'s
        repository). Credentials go only to the registry itself, never to another host an
        upload Location points at. With ``stream`` the body is left unread and the caller must
        ``aclose()`` the response. With ``refuse=False`` a final 401/403 is returned instead.

        With ``retry`` (default: for GET and HEAD) a broken connection or a 5xx answer is
        sent again, ATTEMPTS times in all, and the last answer returned. A rate limit raises
        RateLimited, after waiting once for one that resets within RATE_LIMIT_RETRY_S.
        """
        retry = method in ("GET", "HEAD") if retry is None else retry
        waited_for_limit = False
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._authorized(
                    method, ref, kind, url, scopes, headers, params, content, stream, refuse
                )
            except _Broken as exc:
                if not retry:
                    raise
                if attempt == ATTEMPTS:
                    raise RegistryError(
                        f"lost the connection to registry {display_host(ref.registry)} "
                        f"({method} {kind} of {ref.familiar}"
                        f"{f', {attempt} times' if retry else ''}): {exc.reason}; check the "
                        "network and the registry, then try again"
                    ) from exc
                await _backoff(attempt)
                continue
            limit = await _rate_limit(resp)
            if limit is not None:
                await resp.aclose()
                soon = limit.retry_after is not None and limit.retry_after <= RATE_LIMIT_RETRY_S
                if soon and not waited_for_limit:
                    waited_for_limit = True
                    await asyncio.sleep(limit.retry_after or 0.0)
                    continue
                raise limit.error(ref.registry)
            if retry and resp.status_code in _TRANSIENT_STATUS and attempt < ATTEMPTS:
                await resp.aclose()
                await _backoff(attempt)
                continue
            return resp

    async def _authorized(
        self,
        method: str,
        ref: Reference,
        kind: str,
        url: httpx.URL,
        scopes: tuple[str, ...] | None,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        content: _Body,
        stream: bool,
        refuse: bool,
    ) -> httpx.Response:
        """One try of ``_request``: the request, and the answer to one auth challenge."""
        scopes = scopes or (f"repository:{ref.repository}:pull",)
        ours = _origin(url) == _origin(self._url(ref, ""))
        auth = self._auth.cached(ref.registry, scopes) if ours else None
        resp = await self._send(
            method, ref.registry, url, kind, headers, auth, params, content, stream=stream
        )
        if resp.status_code == 401 and ours:
            await resp.aclose()
            # A cached token may have expired: always ask afresh after a 401.
            challenges = resp.headers.get_list("WWW-Authenticate")
            auth = await self._auth.answer(
                ref.registry, scopes, challenges, self._token_request(ref.registry)
            )
            if auth:
                resp = await self._send(
                    method, ref.registry, url, kind, headers, auth, params, content, stream=stream
                )
        if resp.status_code == 403 and stream:
            await resp.aread()  # a 403 may be a rate limit, which its body says
        if resp.status_code in (401, 403) and refuse and not _is_rate_limit(resp):
            await resp.aclose()
            login = login_command(ref.registry)
            if resp.status_code == 401 and auth and auth.startswith("Basic "):
                raise self._auth.credentials_refused(ref.registry, 401)
            if any(s.endswith(",push") for s in scopes):
                raise RegistryError(
                    f"registry {display_host(ref.registry)} refused to let us push to "
                    f"{ref.familiar} (HTTP {resp.status_code}); run `{login}` with an account "
                    "that may push to that repository"
                )
            raise RegistryError(
                f"registry {display_host(ref.registry)} refused access to {ref.familiar} "
                f"(HTTP {resp.status_code}); if the image exists, run `{login}` "
                "with an account that may pull it"
            )
        return resp

    def _token_request(self, registry: str) -> TokenRequest:
        """How auth asks ``registry``'s token service (counted as "GET token")."""

        async def request(realm: str, params: list[tuple[str, str]], basic: str | None):
            realm_url = httpx.URL(realm)
            if basic and realm_url.scheme != "https" and self._scheme(registry) == "https":
                # The password would cross the network in clear text: refuse, as for a
                # registry itself, which is plain HTTP only when loopback or listed insecure.
                raise RegistryError(
                    f"registry {display_host(registry)} sends us to a token service over "
                    f"plain HTTP ({realm_url.host}), which would receive your credentials "
                    "unencrypted; fix the registry's token realm to use https, or list "
                    f"{display_host(registry)} in insecure_registries if it is a trusted one"
                )
            return await self._send("GET", registry, realm, "token", {}, basic, params)

        return request

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
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Not retried: a mirror, or what the cache knows, is the better answer then.
            raise RegistryError(
                f"cannot reach registry {display_host(registry)}: {_reason(exc)}; "
                "check the registry address and that it is running"
            ) from exc
        except httpx.TransportError as exc:
            raise _Broken(registry, _reason(exc)) from exc


def _push_scopes(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:pull,push",)


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


def _errors(resp: httpx.Response) -> list[dict[str, object]]:
    """The ``errors`` of a distribution-spec error body, if any (and if it was read)."""
    if resp.is_success:
        return []
    try:
        errors = resp.json().get("errors", [])
    except (ValueError, AttributeError, TypeError, httpx.ResponseNotRead):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _error_codes(resp: httpx.Response) -> set[str]:
    return {str(e.get("code")) for e in _errors(resp)}


def _raise_for_status(resp: httpx.Response, ref: Reference, what: str) -> None:
    if not resp.is_success:
        detail = ", ".join(sorted(_error_codes(resp))) or resp.reason_phrase
        raise RegistryError(
            f"registry {display_host(ref.registry)} answered HTTP {resp.status_code} ({detail}) "
            f"for the {what} of {ref.familiar}; check the registry's logs or try again"
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
        f"registry {display_host(ref.registry)} refused the {what} of {ref.familiar} "
        f"(HTTP {resp.status_code} {detail}); {hint}"
    )


def _raise_for_blob_status(resp: httpx.Response, ref: Reference, digest: str) -> None:
    if resp.status_code == 404:
        raise RegistryError(
            f"registry {display_host(ref.registry)} lacks blob {digest} of {ref.familiar}; "
            "the image is incomplete there, re-push it"
        )
    _raise_for_status(resp, ref, f"blob {digest}")


# -- retries ---------------------------------------------------------------------------------


class _Broken(RegistryError):
    """A connection that broke (reset, cut short) or an answer worth asking again for (5xx)."""

    def __init__(self, registry: str, reason: str) -> None:
        super().__init__(
            f"lost the connection to registry {display_host(registry)}: {reason}; check the "
            "network and the registry, then try again"
        )
        self.reason = reason


def _raise_if_transient(resp: httpx.Response) -> None:
    if resp.status_code in _TRANSIENT_STATUS:
        raise _Broken(resp.url.host, f"HTTP {resp.status_code} {resp.reason_phrase}".strip())


async def _backoff(attempt: int) -> None:
    """Wait before try ``attempt + 1``: RETRY_BACKOFF_S, then twice as long each time."""
    await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))


class _Download:
    """One blob on its way into ``dest``: what arrived, hashed as it came, across tries."""

    def __init__(
        self,
        digest: str,
        dest: BinaryIO,
        on_bytes: Callable[[int], None] | None,
        size: int | None,
    ) -> None:
        self.digest = digest
        self.size = size
        self._dest = dest
        self._on_bytes = on_bytes
        self._algo = check_digest(digest).partition(":")[0]
        self._hasher = hashlib.new(self._algo)
        self.got = 0
        self._reported = 0  # the most bytes ever reported: progress never goes back

    @property
    def complete(self) -> bool:
        return self.size is None or self.got == self.size

    def restart(self) -> None:
        self._dest.seek(0)
        self._dest.truncate()
        self._hasher = hashlib.new(self._algo)
        self.got = 0

    async def take(self, resp: httpx.Response, ref: Reference) -> None:
        """Append the body of ``resp`` (a 200: from the start; a 206: from ``got``)."""
        if resp.status_code != 206 or _range_start(resp) != self.got:
            if self.got:
                self.restart()  # the registry cannot resume: from the start
            if resp.status_code == 206:
                return  # a range we did not ask for: the next try asks for all of it
        async for chunk in resp.aiter_bytes():
            if self.size is not None and self.got + len(chunk) > self.size:
                self.restart()
                raise oversized(ref, f"blob {self.digest}", self.size)
            self._hasher.update(chunk)
            self._dest.write(chunk)
            self.got += len(chunk)
            if self._on_bytes is not None and self.got > self._reported:
                self._on_bytes(self.got - self._reported)
                self._reported = self.got

    def check(self, ref: Reference) -> None:
        """DigestMismatch unless what arrived is the blob (then a next source starts over)."""
        if f"{self._algo}:{self._hasher.hexdigest()}" != self.digest:
            self.restart()
            raise mismatch(ref, f"blob {self.digest}", self.digest)


def _range_start(resp: httpx.Response) -> int | None:
    """Where a 206's ``Content-Range: bytes START-END/TOTAL`` starts."""
    found = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _download_failed(
    ref: Reference, download: _Download, tried: list[str], resumed_at: list[int]
) -> RegistryError:
    resumed = f", resuming at byte {', '.join(str(n) for n in resumed_at)}" if resumed_at else ""
    return RegistryError(
        f"could not download blob {download.digest} of {ref.familiar} from registry "
        f"{display_host(ref.registry)}: tried {len(tried)} times{resumed}; last: {tried[-1]}; "
        "check the network and the registry (or configure a mirror), then pull again"
    )


# -- rate limits -----------------------------------------------------------------------------


class _Limit:
    """What a rate-limited answer says: the reason, and when the limit resets if it says."""

    def __init__(self, detail: str, retry_after: float | None, window: float | None) -> None:
        self.detail = detail
        self.retry_after = retry_after
        self.window = window

    def error(self, registry: str) -> RateLimited:
        host = display_host(registry)
        if self.retry_after is not None:
            at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + self.retry_after))
            when = f"the limit resets in {_duration(self.retry_after)} (at {at})"
        elif self.window is not None:
            when = f"it did not say when it resets (its window is {_duration(self.window)})"
        else:
            when = "it did not say when the limit resets"
        return RateLimited(
            f"registry {host} limited our requests ({self.detail}); {when}; log in "
            f"(`{login_command(registry)}`) for a higher limit, or pull through a mirror: "
            f'%config ContainerMagics.registry_mirrors = {{"{host}": ["MIRROR:PORT"]}} '
            f"(or {MIRRORS_ENV} for a whole hub)",
            host,
            self.retry_after,
        )


def _is_rate_limit(resp: httpx.Response) -> bool:
    return resp.status_code == 429 or "TOOMANYREQUESTS" in {c.upper() for c in _error_codes(resp)}


async def _rate_limit(resp: httpx.Response) -> _Limit | None:
    """The rate limit ``resp`` reports (HTTP 429, or a TOOMANYREQUESTS error body), if any."""
    if resp.status_code == 429:
        await resp.aread()  # small: a registry's error document
    if not _is_rate_limit(resp):
        return None
    detail = f"HTTP {resp.status_code}"
    messages = _error_messages(resp)
    if messages:
        detail += f": {messages[0]}"
    return _Limit(detail, _retry_after(resp.headers), _window(resp.headers))


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds until the limit resets: ``Retry-After`` (seconds or an HTTP date), else a
    ``RateLimit-Reset``/``X-RateLimit-Reset`` (seconds, or a Unix time as GitHub sends)."""
    value = headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    for name in ("RateLimit-Reset", "X-RateLimit-Reset"):
        reset = headers.get(name, "").strip()
        if reset.isdigit():
            seconds = float(reset)
            return max(0.0, seconds - time.time()) if seconds > 1e9 else seconds
    return None


def _window(headers: httpx.Headers) -> float | None:
    """Docker Hub's window: ``ratelimit-limit: 100;w=21600`` (a limit per 21600 s)."""
    found = re.search(r";\s*w=(\d+)", headers.get("RateLimit-Limit", ""))
    return float(found.group(1)) if found else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


# -- mirrors ---------------------------------------------------------------------------------


def _registry_name(text: object, what: str) -> str:
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


# -- answers ---------------------------------------------------------------------------------


def _media_type(body: bytes, header: str, ref: Reference) -> str:
    """A manifest's media type: the Content-Type, else what the document says it is."""
    media_type = header.partition(";")[0].strip()
    if media_type in INDEX_TYPES | MANIFEST_TYPES:
        return media_type
    # Some registries answer a generic content type (and a HEAD may say nothing).
    doc = json_object(body, f"the manifest of {ref.familiar}")
    named = doc.get("mediaType")
    if named is None and not header and doc.get("schemaVersion") == 2:
        # Read from the cache, whose files carry no Content-Type; mediaType is optional in
        # OCI, and this document was accepted when fetched: its shape tells.
        named = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if named not in INDEX_TYPES | MANIFEST_TYPES:
        raise RegistryError(
            f"{ref.familiar} has a manifest of unsupported type {named!r}; "
            "only OCI and Docker schema 2 images are supported (re-push it with a current tool)"
        )
    return str(named)


def _raise_for_manifest_status(resp: httpx.Response, ref: Reference) -> None:
    codes = _error_codes(resp)
    if resp.status_code == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
        raise ImageNotFound(
            f"image {ref.familiar} not found in registry {display_host(ref.registry)}; "
            "check the name and tag (docker pull would fail too)"
        )
    _raise_for_status(resp, ref, "manifest")


def _error_messages(resp: httpx.Response) -> list[str]:
    return [str(e["message"]) for e in _errors(resp) if e.get("message")]
