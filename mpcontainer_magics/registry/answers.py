"""What registries answer, and what it means: errors, rate limits, media types.

Distribution-spec error bodies (``{"errors": [{"code": ..., "message": ...}]}``) become one-line
errors saying what to do. A rate limit (HTTP 429, or Docker Hub's TOOMANYREQUESTS) says which
registry limited us and when it resets, read from ``Retry-After`` (seconds or an HTTP date),
``RateLimit-Reset``/``X-RateLimit-Reset``, or at least Docker Hub's window
(``ratelimit-limit: 100;w=21600``), and the two ways out: logging in, or a mirror.
"""

from __future__ import annotations

import email.utils
import os
import re
import time

import httpx

from ..errors import ImageNotFound, RateLimited, RegistryError
from .auth import login_command
from .manifests import json_object
from .mediatypes import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST
from .mirrors import MIRRORS_ENV
from .reference import Reference, display_host

#: A rate limit resetting within this many seconds (Retry-After) is waited for, once.
RATE_LIMIT_RETRY_S = 10.0
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})


def reason(exc: BaseException) -> str:
    """A short cause; async httpx says "All connection attempts failed" over the real one."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            reason = os.strerror(cause.errno)  # e.g. "Connection refused"
        cause = cause.__cause__ or cause.__context__
    return reason


def error_objects(resp: httpx.Response) -> list[dict[str, object]]:
    """The ``errors`` of a distribution-spec error body, if any (and if it was read)."""
    if resp.is_success:
        return []
    try:
        errors = resp.json().get("errors", [])
    except (ValueError, AttributeError, TypeError, httpx.ResponseNotRead):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def error_codes(resp: httpx.Response) -> set[str]:
    return {str(e.get("code")) for e in error_objects(resp)}


def raise_for_status(resp: httpx.Response, ref: Reference, what: str) -> None:
    if not resp.is_success:
        detail = ", ".join(sorted(error_codes(resp))) or resp.reason_phrase
        raise RegistryError(
            f"registry {display_host(ref.registry)} answered HTTP {resp.status_code} ({detail}) "
            f"for the {what} of {ref.familiar}; check the registry's logs or try again"
        )


def raise_for_push_status(
    resp: httpx.Response, ref: Reference, what: str, media_type: str = ""
) -> None:
    """Explain a failed push step, with the fix for error codes that have a known one."""
    codes = error_codes(resp)
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


def raise_for_blob_status(resp: httpx.Response, ref: Reference, digest: str) -> None:
    if resp.status_code == 404:
        raise RegistryError(
            f"registry {display_host(ref.registry)} lacks blob {digest} of {ref.familiar}; "
            "the image is incomplete there, re-push it"
        )
    raise_for_status(resp, ref, f"blob {digest}")


def manifest_media_type(body: bytes, header: str, ref: Reference) -> str:
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


def raise_for_manifest_status(resp: httpx.Response, ref: Reference) -> None:
    codes = error_codes(resp)
    if resp.status_code == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
        raise ImageNotFound(
            f"image {ref.familiar} not found in registry {display_host(ref.registry)}; "
            "check the name and tag (docker pull would fail too)"
        )
    raise_for_status(resp, ref, "manifest")


def error_messages(resp: httpx.Response) -> list[str]:
    return [str(e["message"]) for e in error_objects(resp) if e.get("message")]


class BrokenConnection(RegistryError):
    """A connection that broke (reset, cut short) or an answer worth asking again for (5xx)."""

    def __init__(self, registry: str, reason: str) -> None:
        super().__init__(
            f"lost the connection to registry {display_host(registry)}: {reason}; check the "
            "network and the registry, then try again"
        )
        self.reason = reason


def raise_if_transient(resp: httpx.Response, registry: str) -> None:
    """BrokenConnection for a 5xx answer of ``registry``: worth asking again."""
    if resp.status_code in TRANSIENT_STATUS:
        raise BrokenConnection(registry, f"HTTP {resp.status_code} {resp.reason_phrase}".strip())


class RateLimit:
    """What a rate-limited answer says: the reason, and when the limit resets if it says."""

    def __init__(self, detail: str, retry_after: float | None, window: float | None) -> None:
        self.detail = detail
        self.retry_after = retry_after
        self.window = window

    def error(self, registry: str) -> RateLimited:
        host = display_host(registry)
        if self.retry_after is not None:
            at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + self.retry_after))
            when = f"the limit resets in {duration(self.retry_after)} (at {at})"
        elif self.window is not None:
            when = f"it did not say when it resets (its window is {duration(self.window)})"
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


def is_rate_limit(resp: httpx.Response) -> bool:
    return resp.status_code == 429 or "TOOMANYREQUESTS" in {c.upper() for c in error_codes(resp)}


async def rate_limit(resp: httpx.Response) -> RateLimit | None:
    """The rate limit ``resp`` reports (HTTP 429, or a TOOMANYREQUESTS error body), if any."""
    if resp.status_code == 429:
        await resp.aread()  # small: a registry's error document
    if not is_rate_limit(resp):
        return None
    detail = f"HTTP {resp.status_code}"
    messages = error_messages(resp)
    if messages:
        detail += f": {messages[0]}"
    return RateLimit(detail, retry_after_of(resp.headers), window_of(resp.headers))


def retry_after_of(headers: httpx.Headers) -> float | None:
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


def window_of(headers: httpx.Headers) -> float | None:
    """Docker Hub's window: ``ratelimit-limit: 100;w=21600`` (a limit per 21600 s)."""
    found = re.search(r";\s*w=(\d+)", headers.get("RateLimit-Limit", ""))
    return float(found.group(1)) if found else None


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
