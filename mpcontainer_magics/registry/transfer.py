"""Moving blobs across a network that breaks: retries with backoff, downloads that resume.

A try that fails on a broken connection or a 5xx answer is repeated, ``ATTEMPTS`` times in
all, the first repeat after ``RETRY_BACKOFF_S`` and each next one after twice as long. A
``Download`` keeps what arrived across tries (and across mirrors): the next try asks for the
rest with ``Range``, and a registry that cannot resume makes it start over, hashing afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from typing import BinaryIO

import httpx

from ..errors import RegistryError
from .digests import mismatch, oversized
from .reference import Reference, check_digest, display_host

#: Tries of one request, blob download or blob upload when the connection breaks or the
#: registry answers 5xx; the first retry waits RETRY_BACKOFF_S, each next one twice as long.
ATTEMPTS = 5
RETRY_BACKOFF_S = 0.2


async def backoff(attempt: int) -> None:
    """Wait before try ``attempt + 1``: RETRY_BACKOFF_S, then twice as long each time."""
    await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))


class Download:
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
        if resp.status_code != 206 or range_start(resp) != self.got:
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


def range_start(resp: httpx.Response) -> int | None:
    """Where a 206's ``Content-Range: bytes START-END/TOTAL`` starts."""
    found = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def download_failed(
    ref: Reference, download: Download, tried: list[str], resumed_at: list[int]
) -> RegistryError:
    resumed = f", resuming at byte {', '.join(str(n) for n in resumed_at)}" if resumed_at else ""
    return RegistryError(
        f"could not download blob {download.digest} of {ref.familiar} from registry "
        f"{display_host(ref.registry)}: tried {len(tried)} times{resumed}; last: {tried[-1]}; "
        "check the network and the registry (or configure a mirror), then pull again"
    )
