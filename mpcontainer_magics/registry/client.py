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
- A broken connection or a 5xx answer is tried again, ``ATTEMPTS`` times in all (transfer.py) with
  doubling waits; a blob download resumes with ``Range`` from the bytes already written, and
  a blob upload starts that blob again. A refused connection is not retried: the next mirror,
  or a cached resolution, is the better answer then.
- A rate limit (HTTP 429, or Docker Hub's TOOMANYREQUESTS) becomes ``RateLimited``, saying
  when it resets and how to avoid it; a registry asking to wait a few seconds
  (``RATE_LIMIT_RETRY_S``, answers.py) is waited for and asked once more.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx

from .._aio import in_thread
from ..errors import DigestMismatch, ImageNotFound, InvalidArgument, RegistryError
from . import answers, transfer
from .answers import (
    TRANSIENT_STATUS,
    BrokenConnection,
    error_codes,
    is_rate_limit,
    manifest_media_type,
    raise_for_blob_status,
    raise_for_manifest_status,
    raise_for_push_status,
    raise_for_status,
    raise_if_transient,
    rate_limit,
    reason,
)
from .auth import RegistryAuth, TokenRequest, login_command
from .cache import ManifestCache
from .digests import (
    hash_file,
    hashes_to,
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
from .mediatypes import ACCEPT, INDEX_TYPES
from .mirrors import mirrors_from_env, parse_mirrors
from .reference import Reference, check_digest, display_host
from .transfer import Download, download_failed

#: The most a manifest, an index or an image config may be: containerd's limit (4 MiB).
MANIFEST_LIMIT = 4 << 20

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
        """Registry (as References name it: Docker Hub is "registry-1.docker.io") -> mirrors
        (those reached over plain HTTP written so, as they were given: it survives a copy)."""
        return _written(self._mirrors, self._plain_mirrors)

    @registry_mirrors.setter
    def registry_mirrors(self, mirrors: Mapping[str, Sequence[str] | str]) -> None:
        self._mirrors, self._plain_mirrors = parse_mirrors(mirrors)

    @property
    def daemon_mirrors(self) -> dict[str, tuple[str, ...]]:
        """Mirrors a Docker daemon is configured with (its "registry-mirrors"), tried after
        ``registry_mirrors``: what the engine set, apart from what the user configures."""
        return _written(self._daemon_mirrors, self._plain_daemon_mirrors)

    @daemon_mirrors.setter
    def daemon_mirrors(self, mirrors: Mapping[str, Sequence[str] | str]) -> None:
        self._daemon_mirrors, self._plain_daemon_mirrors = parse_mirrors(mirrors)

    def mirrors_of(self, registry: str) -> tuple[str, ...]:
        """Where ``registry``'s content is asked for before the registry itself, in order."""
        listed = (*self._mirrors.get(registry, ()), *self._daemon_mirrors.get(registry, ()))
        return tuple(dict.fromkeys(listed))

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
        self.daemon_mirrors = {}
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
            return cached, manifest_media_type(cached, header_type, ref), digest
        url = self._url(ref, f"manifests/{ref.digest or ref.tag}")
        resp = await self._bounded_get(ref, "manifest", url, MANIFEST_LIMIT, {"Accept": ACCEPT})
        raise_for_manifest_status(resp, ref)
        body = resp.content
        for expected in (ref.digest, resp.headers.get("Docker-Content-Digest")):
            if expected:
                verify(body, expected, ref, "manifest")
        digest = ref.digest or f"sha256:{hashlib.sha256(body).hexdigest()}"
        media_type = manifest_media_type(body, resp.headers.get("Content-Type", ""), ref)
        self._manifests.put(digest, body)
        return body, media_type, digest

    async def _head_manifest(self, ref: Reference) -> tuple[str | None, str]:
        """The digest and media type the registry names for tag ``ref`` (a HEAD, which
        registries do not count against pull limits); (None, "") when it does not say."""
        url = self._url(ref, f"manifests/{ref.tag}")
        resp = await self._request("HEAD", ref, "manifest", url, headers={"Accept": ACCEPT})
        raise_for_manifest_status(resp, ref)
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
            raise_for_blob_status(resp, at, digest)
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
        download = Download(digest, dest, on_bytes, size)
        await self._via_mirrors(ref, lambda at: self._download_from(at, download))
        return download.got

    async def _download_from(self, ref: Reference, download: Download) -> None:
        """``download`` from one registry (or mirror): ATTEMPTS tries, each resuming."""
        tried: list[str] = []
        resumed_at: list[int] = []
        while True:
            if download.got:
                resumed_at.append(download.got)
            failure = await self._download_once(ref, download)
            if failure is None:
                return
            tried.append(failure)
            if len(tried) == transfer.ATTEMPTS:
                raise download_failed(ref, download, tried, resumed_at)
            await transfer.backoff(len(tried))

    async def _download_once(self, ref: Reference, download: Download) -> str | None:
        """One try: None when the blob is all here and verified, else why it is not."""
        url = self._url(ref, f"blobs/{download.digest}")
        headers = {"Range": f"bytes={download.got}-"} if download.got else None
        try:
            resp = await self._request(
                "GET", ref, "blob", url, headers=headers, stream=True, retry=False
            )
        except BrokenConnection as exc:
            return exc.reason
        try:
            if not resp.is_success:
                await resp.aread()  # the error body names the cause
                if resp.status_code in TRANSIENT_STATUS:
                    detail = ", ".join(sorted(error_codes(resp))) or resp.reason_phrase
                    return f"HTTP {resp.status_code} ({detail})"
                raise_for_blob_status(resp, ref, download.digest)
            await download.take(resp, ref)
        except httpx.TransportError as exc:
            return reason(exc)
        finally:
            await resp.aclose()
        if not download.complete:
            return f"the connection closed after {download.got} of {download.size} bytes"
        download.check(ref)
        return None

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
        breaks off is asked for again (transfer.ATTEMPTS in all)."""
        kind = what.partition(" ")[0]  # "manifest" or "blob", for the request's messages
        for attempt in range(1, transfer.ATTEMPTS + 1):
            resp = await self._request("GET", ref, kind, url, headers=headers, stream=True)
            try:
                parts, got = [], 0
                async for chunk in resp.aiter_bytes():
                    got += len(chunk)
                    if got > limit:
                        raise oversized(ref, what, limit)
                    parts.append(chunk)
                break
            except httpx.TransportError as exc:  # the body broke off
                if attempt == transfer.ATTEMPTS:
                    raise RegistryError(
                        f"lost the connection to registry {display_host(ref.registry)} while "
                        f"reading the {what} of {ref.familiar}, {transfer.ATTEMPTS} times: "
                        f"{reason(exc)}; check the network and the registry, then try again"
                    ) from exc
            finally:
                await resp.aclose()
            await transfer.backoff(attempt)
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
        for mirror in self.mirrors_of(ref.registry):
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
        raise_for_status(resp, ref, f"blob {digest}")
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
            except BrokenConnection as exc:
                if attempt == transfer.ATTEMPTS:
                    raise RegistryError(
                        f"could not upload blob {digest} to {ref.familiar} at registry "
                        f"{display_host(ref.registry)}: {exc.reason}, {transfer.ATTEMPTS} times; "
                        "check the registry (its log, its free space) and publish again"
                    ) from exc
            resp, scopes = None, _push_scopes(ref)  # each try is a fresh upload of the blob
            await transfer.backoff(attempt)
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
            raise_if_transient(started, ref.registry)
            if started.status_code != 202:
                raise_for_push_status(started, ref, f"upload of blob {digest}")
        resp = await self._request(
            "PUT",
            ref,
            "upload",
            self._location(started, ref).copy_merge_params({"digest": digest}),
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
        )
        raise_if_transient(resp, ref.registry)
        if resp.status_code != 201:
            raise_for_push_status(resp, ref, f"upload of blob {digest}")
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
            raise_for_push_status(resp, ref, f"mount of blob {digest}")
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
            raise_for_push_status(resp, ref, "manifest", media_type)
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
        plain = registry.lower() in self._insecure or registry in (
            self._plain_mirrors | self._plain_daemon_mirrors
        )
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
        sent again, ATTEMPTS times in all (transfer.py), and the last answer returned. A rate
        limit raises RateLimited, after waiting once for one that resets within
        RATE_LIMIT_RETRY_S (answers.py).
        """
        retry = method in ("GET", "HEAD") if retry is None else retry
        waited = False
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._authorized(
                    method, ref, kind, url, scopes, headers, params, content, stream, refuse
                )
            except BrokenConnection as exc:
                if not retry:
                    raise
                if attempt == transfer.ATTEMPTS:
                    raise RegistryError(
                        f"lost the connection to registry {display_host(ref.registry)} "
                        f"({method} {kind} of {ref.familiar}, {attempt} times): {exc.reason}; "
                        "check the "
                        "network and the registry, then try again"
                    ) from exc
                await transfer.backoff(attempt)
                continue
            limit = await rate_limit(resp)
            if limit is not None:
                await resp.aclose()
                wait = limit.retry_after
                if wait is not None and wait <= answers.RATE_LIMIT_RETRY_S and not waited:
                    waited = True
                    await asyncio.sleep(wait)
                    continue
                raise limit.error(ref.registry)
            if retry and resp.status_code in TRANSIENT_STATUS and attempt < transfer.ATTEMPTS:
                await resp.aclose()
                await transfer.backoff(attempt)
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
        if resp.status_code in (401, 403) and refuse and not is_rate_limit(resp):
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
                f"cannot reach registry {display_host(registry)}: {reason(exc)}; "
                "check the registry address and that it is running"
            ) from exc
        except httpx.TransportError as exc:
            raise BrokenConnection(registry, reason(exc)) from exc


def _written(
    mirrors: dict[str, tuple[str, ...]], plain: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    return {r: tuple(f"http://{m}" if m in plain else m for m in ms) for r, ms in mirrors.items()}


def _push_scopes(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:pull,push",)


def _netloc(url: httpx.URL) -> str:
    return url.netloc.decode("ascii")
