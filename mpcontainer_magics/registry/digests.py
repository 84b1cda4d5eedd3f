"""Content addressing: verify bytes against the digest that names them, both ways.

Every manifest and blob pulled is hashed and compared to the digest that named it before
anything uses it; every blob or manifest pushed is hashed first, and a file is hashed again
while it streams out, so a registry never receives a complete blob that is not what it claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from .._aio import in_thread
from ..errors import DigestMismatch
from .reference import DIGEST_HEX, Reference, display_host

# Read size when hashing and uploading files: big enough that per-chunk overhead is noise.
_CHUNK = 1 << 20


def hashes_to(data: bytes, digest: str) -> bool:
    """Whether ``data`` hashes to ``digest`` (False for an algorithm we cannot verify)."""
    algo = digest.partition(":")[0]
    return algo in DIGEST_HEX and f"{algo}:{hashlib.new(algo, data).hexdigest()}" == digest


def verify(data: bytes, expected: str, ref: Reference, what: str) -> None:
    """Raise DigestMismatch unless ``data`` hashes to ``expected`` (also if we cannot hash it)."""
    if not hashes_to(data, expected):
        raise mismatch(ref, what, expected)


def mismatch(ref: Reference, what: str, expected: str) -> DigestMismatch:
    """Pulled content that is not what its digest names."""
    return DigestMismatch(
        f"the {what} of {ref.familiar} from registry {display_host(ref.registry)} does not hash "
        f"to {expected}; refusing to use it (the registry or a proxy altered it: pull again, "
        "or check the proxy)"
    )


def oversized(ref: Reference, what: str, limit: int) -> DigestMismatch:
    """Pulled content longer than its descriptor (or our limit) says: reading stopped there."""
    return DigestMismatch(
        f"the {what} of {ref.familiar} from registry {display_host(ref.registry)} is longer "
        f"than the {limit} bytes it may be; stopped reading and refused it (the registry or a "
        "proxy sends more than the image's manifest says: pull again, or check the proxy)"
    )


def source_mismatch(ref: Reference, what: str, expected: str) -> DigestMismatch:
    """Content to push that is not what its digest names."""
    return DigestMismatch(
        f"the {what} to push to {ref.familiar} does not hash to {expected}; refusing to push it "
        "(the digest is wrong or the source changed after it was computed: compute it again)"
    )


def stored_mismatch(ref: Reference, what: str, stored: str) -> DigestMismatch:
    """A registry that says it stored other bytes than the ones sent."""
    return DigestMismatch(
        f"registry {display_host(ref.registry)} stored the {what} of {ref.familiar} as {stored}, "
        "which is not the digest of the bytes sent (the registry or a proxy altered them: "
        "push again, or check the proxy)"
    )


def hash_file(path: Path, algo: str) -> tuple[str, int]:
    """The digest and size of a file, read in chunks (layers need not fit in memory)."""
    hasher = hashlib.new(algo)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{algo}:{hasher.hexdigest()}", size


async def read_verified(
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
        while chunk := await in_thread(f.read, min(_CHUNK, left)):
            if held:
                yield held
            hasher.update(chunk)
            held = chunk
            left -= len(chunk)
    if f"{algo}:{hasher.hexdigest()}" != digest:
        raise fail()
    yield held
