"""The registry client: pull and push over httpx, following the OCI distribution API.

``RegistryClient.resolve`` GETs the manifest a tag points to, with an Accept list naming all
four manifest types so that a registry hands back an index rather than picking one platform
for us. For an index, each entry's platform comes from the index itself; for a single
manifest, from its config blob. Every manifest and blob is verified against its digest
(digests.py) before anything uses it; auth (auth.py) answers the registry's challenges.

Push (for publishing a multi-platform image; the caller goes blobs → manifests → index):
``push_blob`` HEADs first so an existing blob is never re-sent, mounts a blob from another
repository of the same registry instead of uploading it when it can, else uploads it in one
PUT; ``push_manifest`` PUTs the exact bytes with Content-Type = their mediaType, so the digest
the registry stores is the one the caller computed.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from .._aio import in_thread
from ..errors import DigestMismatch, ImageNotFound, RegistryError
from .auth import RegistryAuth, TokenRequest, login_command
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
from .mediatypes import ACCEPT, INDEX_TYPES, MANIFEST_TYPES
from .reference import Reference, check_digest, display_host

#: The most a manifest, an index or an image config may be: containerd's limit (4 MiB).
MANIFEST_LIMIT = 4 << 20

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

    def __init__(
        self,
        *,
        docker_config: str | os.PathLike[str] | None = None,
        insecure_registries: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        config_dir = docker_config or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
        self._auth = RegistryAuth(Path(config_dir) / "config.json", timeout)
        self.insecure_registries = insecure_registries
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
        self.requests: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return (
            f"RegistryClient(docker_config={str(self.config_file.parent)!r}, "
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
        doc = json_object(body, f"the manifest of {ref.familiar}")
        if media_type in INDEX_TYPES:
            return ResolvedImage(ref, digest, media_type, index_entries(doc, ref))
        config_blob = await self.get_blob(ref, config_digest(doc, ref))
        config = json_object(config_blob, f"the config of {ref.familiar}")
        platform = platform_of(config, ref, "its platform", "config")
        return ResolvedImage(ref, digest, media_type, ((platform, digest),))

    async def get_manifest(self, ref: Reference) -> tuple[bytes, str, str]:
        """The exact manifest bytes, their media type and digest (verified when knowable)."""
        url = self._url(ref, f"manifests/{ref.digest or ref.tag}")
        resp = await self._bounded_get(ref, "manifest", url, MANIFEST_LIMIT, {"Accept": ACCEPT})
        codes = _error_codes(resp)
        if resp.status_code == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
            host = display_host(ref.registry)
            raise ImageNotFound(
                f"image {ref.familiar} not found in registry {host}; "
                "check the name and tag (docker pull would fail too)"
            )
        _raise_for_status(resp, ref, "manifest")
        body = resp.content
        for expected in (ref.digest, resp.headers.get("Docker-Content-Digest")):
            if expected:
                verify(body, expected, ref, "manifest")
        digest = ref.digest or f"sha256:{hashlib.sha256(body).hexdigest()}"
        media_type = resp.headers.get("Content-Type", "").partition(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            # Some registries answer a generic content type; the document names its own.
            media_type = str(json_object(body, f"the manifest of {ref.familiar}").get("mediaType"))
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            raise RegistryError(
                f"{ref.familiar} has a manifest of unsupported type {media_type!r}; "
                "only OCI and Docker schema 2 images are supported (re-push it with a current tool)"
            )
        return body, media_type, digest

    async def get_blob(self, ref: Reference, digest: str, size: int | None = None) -> bytes:
        """The blob named ``digest`` in ``ref``'s repository (a config: small, in memory),
        verified against the digest; never more than ``size`` bytes (its descriptor's), nor
        than MANIFEST_LIMIT."""
        url = self._url(ref, f"blobs/{check_digest(digest)}")
        limit = MANIFEST_LIMIT if size is None else min(size, MANIFEST_LIMIT)
        resp = await self._bounded_get(ref, f"blob {digest}", url, limit)
        _raise_for_blob_status(resp, ref, digest)
        verify(resp.content, digest, ref, f"blob {digest}")
        return resp.content

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
        with the size of each piece written (for progress bars). ``size`` is what the blob's
        descriptor says: reading stops there, so a registry that sends more (an endless
        stream would fill the disk) is refused at once. On DigestMismatch ``dest`` holds
        the bad bytes: the caller discards it.
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
            got = 0
            async for chunk in resp.aiter_bytes():
                if size is not None and got + len(chunk) > size:
                    raise oversized(ref, f"blob {digest}", size)
                hasher.update(chunk)
                dest.write(chunk)
                got += len(chunk)
                if on_bytes is not None and chunk:
                    on_bytes(len(chunk))
        except httpx.TransportError as exc:
            host = display_host(ref.registry)
            raise RegistryError(
                f"lost the connection to registry {host} while downloading blob {digest} of "
                f"{ref.familiar}: {_reason(exc)}; try again"
            ) from exc
        finally:
            await resp.aclose()
        if f"{algo}:{hasher.hexdigest()}" != digest:
            raise mismatch(ref, f"blob {digest}", digest)
        return got

    async def _bounded_get(
        self,
        ref: Reference,
        what: str,
        url: httpx.URL,
        limit: int,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET a small document, reading at most ``limit`` bytes of its body (a registry that
        sends more is refused, as containerd refuses manifests over its limit)."""
        kind = what.partition(" ")[0]  # "manifest" or "blob", for the request's messages
        resp = await self._request("GET", ref, kind, url, headers=headers, stream=True)
        try:
            parts, got = [], 0
            async for chunk in resp.aiter_bytes():
                got += len(chunk)
                if got > limit:
                    raise oversized(ref, what, limit)
                parts.append(chunk)
        except httpx.TransportError as exc:
            raise RegistryError(
                f"lost the connection to registry {display_host(ref.registry)} while reading "
                f"the {what} of {ref.familiar}: {_reason(exc)}; try again"
            ) from exc
        finally:
            await resp.aclose()
        # The same answer, with the body we read (bounded) in memory.
        return httpx.Response(
            resp.status_code, headers=resp.headers, content=b"".join(parts), request=resp.request
        )

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
        if resp.status_code in (401, 403) and refuse:
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
        except httpx.TransportError as exc:
            raise RegistryError(
                f"cannot reach registry {display_host(registry)}: {_reason(exc)}; "
                "check the registry address and that it is running"
            ) from exc


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
