"""The ~100 MB image of bench_embedded.py's part 4: real host files, built and pushed here.

Whole directories of the host's /usr/share and /usr/lib (5 to 200 files each), picked
deterministically, on top of the busybox rootfs of the test image (for the session's sh);
one reproducible gzip layer, pushed with the package's registry client and deleted again
through the registry API.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import stat
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import MB

from mpcontainer_magics.registry import Reference, RegistryClient

# The OCI image-spec's media types (constants of the spec, not of the package).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

MAX_FILE = 4_000_000  # the biggest host file put into the image
MAX_DIR_FILES = 200  # host directories with more files are left out,
MIN_DIR_FILES = 5  # and those with fewer (real images have ~5-10 files per directory)
HOST_TREES = ("/usr/share", "/usr/lib")
FIXED_MTIME = 1_700_000_000  # directories we add to the image


def pick_host_files(megabytes: int, count: int) -> list[tuple[str, int]]:
    """About ``megabytes`` MB of real host files in about ``count`` files, deterministically.

    Whole directories (of MIN_DIR_FILES to MAX_DIR_FILES files), so the tree has about as
    many files per directory as real images do, taken in the order of a hash of their path.
    The running total follows the straight line from 0 to the budget: below it, only a
    directory of files bigger than the average wanted is taken; above it, only smaller ones.
    """
    by_dir: dict[str, list[tuple[str, int]]] = {}
    for top in HOST_TREES:
        for directory, _, names in os.walk(top):
            files = []
            for name in sorted(names):
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_FILE:
                        files.append((path, st.st_size))
            if MIN_DIR_FILES <= len(files) <= MAX_DIR_FILES:
                by_dir[directory] = files
    budget = megabytes * MB
    slope = budget / count
    chosen: list[tuple[str, int]] = []
    total = 0
    for directory in sorted(by_dir, key=lambda d: hashlib.sha1(d.encode()).digest()):
        if len(chosen) >= count:
            break
        files = by_dir[directory]
        size = sum(s for _, s in files)
        if total + size > budget or len(chosen) + len(files) > count * 1.1:
            continue
        behind = total < slope * len(chosen)
        if behind == (size / len(files) >= slope):
            chosen += files
            total += size
    return chosen


class _Hashing:
    """A write-only stream that hashes what goes through it."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)


def build_layer(base: Path, files: Sequence[tuple[str, int]], layer: Path) -> str:
    """A gzip layer of ``base`` (a rootfs) plus the host ``files`` at their own paths.

    Reproducible (sorted, fixed owners and directory times, gzip mtime 0), so a re-run pushes
    the same blobs. Returns the diff ID (the digest of the uncompressed tar).
    """
    entries: dict[str, str | None] = {}
    for directory, dirs, names in os.walk(base):
        for name in dirs + names:
            path = os.path.join(directory, name)
            entries[os.path.relpath(path, base)] = path
    for path, _ in files:
        rel = path.lstrip("/")
        parts = rel.split("/")
        for end in range(1, len(parts)):
            entries.setdefault("/".join(parts[:end]), None)  # a directory of ours
        entries[rel] = path

    def normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with (
        open(layer, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as packed,
    ):
        hashing = _Hashing(packed)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel in sorted(entries):
                source = entries[rel]
                if source is None:
                    info = tarfile.TarInfo(rel)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
                    tar.addfile(info)
                else:
                    tar.add(source, arcname=rel, recursive=False, filter=normal)
    return f"sha256:{hashing.sha.hexdigest()}"


async def push_image(reference: str, layer: Path, diff_id: str) -> tuple[str, list[str]]:
    """Push a one-layer linux/amd64 image; its manifest digest and blob digests."""
    ref = Reference.parse(reference)
    layer_digest = f"sha256:{hashlib.sha256(layer.read_bytes()).hexdigest()}"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.stat().st_size}
            ],
        },
        sort_keys=True,
    ).encode()
    async with RegistryClient() as registry:
        await registry.push_blob(ref, layer_digest, layer)
        await registry.push_blob(ref, config_digest, config)
        digest = await registry.push_manifest(ref, manifest, OCI_MANIFEST)
    return digest, [layer_digest, config_digest]


def delete_image(reference: str, manifest: str, blobs: Sequence[str]) -> None:
    """Delete what we pushed (manifest, then our blob links) through the registry API.

    Distribution cannot delete a repository: the empty name stays in ``_catalog``.
    """
    import httpx

    ref = Reference.parse(reference)
    if ref.registry.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
        print(
            f"cleanup: not deleting from {ref.registry}: only a loopback registry", file=sys.stderr
        )
        return
    with httpx.Client(base_url=f"http://{ref.registry}/v2/{ref.repository}") as http:
        for path in [f"/manifests/{manifest}", *(f"/blobs/{d}" for d in blobs)]:
            answer = http.delete(path)
            if answer.status_code not in (202, 404):
                print(f"cleanup: DELETE {path}: HTTP {answer.status_code}", file=sys.stderr)
