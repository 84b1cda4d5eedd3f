"""Embedded-engine benchmark: proot + qemu-user containers from the image cache, against peers.

Run: .venv/bin/python bench/bench_embedded.py [--repeat 10] [--big-repeat 3] [--image IMG]
     [--golang-image IMG] [--registry HOST:PORT] [--megabytes 100] [--files 4500]
     [--scratch-base DIR] [--tmpfs DIR] [--keep-image]
(needs proot, qemu-user-static, the Docker CLI with QEMU binfmt emulation, skopeo, and the
local test registry; the images default to $MPC_TEST_IMAGE and $MPC_GOLANG_IMAGE, the
registry to $MPC_TEST_REGISTRY: source /var/lib/mpcontainer-test/env.sh).

Four targets, measured side by side in one run, every number a median:

1. a cold ``uname -m`` on linux/arm64 (``client.run``: a fresh container per run, image
   cached) against ``docker run --rm --platform linux/arm64 REPO@DIGEST uname -m``
   (the CLI, the image already pulled by digest); target docker / ours >= 5;
2. a second pull of the same image and platform by a new client: 0 blob bytes, < 50 ms;
3. pull + unpack of $MPC_GOLANG_IMAGE for linux/amd64 into an empty cache, against
   ``skopeo copy docker://... oci:DIR:tag`` of the same platform into an empty directory:
   MB/s of compressed bytes transferred; target ours / skopeo >= 1;
4. the private rootfs copy a container (and so a session) gets, for a ~100 MB image of
   a few thousand real host files that this script builds and pushes as
   REGISTRY/bench/rootfs100:1 (deleted again at the end unless --keep-image); target < 100 ms.

The cache is a new temporary directory under --scratch-base (default: the system's temporary
directory; $MPC_CACHE_DIR is pointed there), so what is measured is that filesystem. Parts 1,
3 and 4 are repeated with a second cache on --tmpfs (default /dev/shm) to show how much of
the time is the filesystem's. Everything (caches, containers, sessions, layouts) is removed
at the end. See bench/README.md for what each row means. Targets print PASS or MISS; the exit
status is 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import inspect
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from timing import median, timed

import mpcontainer_magics as mpc
from mpcontainer_magics.engines import rootfs as rootfs_module
from mpcontainer_magics.engines.proot import (
    SYSTEM_BINDS,
    find_proot,
    find_qemu,
    proot_command,
    proot_env,
)
from mpcontainer_magics.engines.tree import LinkedFiles, clone_tree, remove_tree, walk
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import Reference
from mpcontainer_magics.registry.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

ARM = "linux/arm64"
AMD = "linux/amd64"
RUN_TARGET = 5.0  # docker run / our cold run: at least this
REPULL_TARGET_S = 0.050  # a second pull: under this, and no blob byte
THROUGHPUT_TARGET = 1.0  # our pull+unpack MB/s / skopeo copy MB/s: at least this
CREATE_TARGET_S = 0.100  # the private rootfs copy of a ~100 MB image: under this
MAX_FILE = 4_000_000  # the biggest host file put into the 100 MB image
MAX_DIR_FILES = 200  # host directories with more files are left out,
MIN_DIR_FILES = 5  # and those with fewer (real images have ~5-10 files per directory)
HOST_TREES = ("/usr/share", "/usr/lib")
FIXED_MTIME = 1_700_000_000  # directories we add to the 100 MB image
MB = 1e6


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- instrumentation (of this process's objects only; nothing is changed on disk) ------------


class Probe:
    """Wall seconds of every call of some methods of one object, replaced on that object."""

    def __init__(self, target: Any, *names: str) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        for name in names:
            setattr(target, name, self._wrap(name, getattr(target, name)))

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(function):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    self.seconds[name].append(time.perf_counter() - started)

            return timed_async

        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name].append(time.perf_counter() - started)

        return timed_sync

    def last(self, name: str) -> float:
        return self.seconds[name][-1] if self.seconds[name] else 0.0

    def total(self, name: str) -> float:
        return sum(self.seconds[name])


class BlobMeter:
    """Blob bytes a RegistryClient fetched, and when its downloads ran.

    The registry client counts requests (``registry.requests``) but not bytes, so its two
    blob readers are wrapped on the instance: ``download_blob`` (layers and configs into the
    blob cache; it returns the byte count) and ``get_blob`` (a config read into memory).
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.bytes = 0
        self.spans: list[tuple[float, float]] = []
        download, get = registry.download_blob, registry.get_blob

        async def download_blob(ref: Any, digest: str, dest: Any) -> int:
            started = time.perf_counter()
            size = await download(ref, digest, dest)
            self.spans.append((started, time.perf_counter()))
            self.bytes += size
            return size

        async def get_blob(ref: Any, digest: str) -> bytes:
            data = await get(ref, digest)
            self.bytes += len(data)
            return data

        registry.download_blob, registry.get_blob = download_blob, get_blob

    @property
    def blob_requests(self) -> int:
        return self.registry.requests["GET blob"]

    def download_span(self) -> float:
        """Seconds from the first download's start to the last one's end (they overlap)."""
        if not self.spans:
            return 0.0
        return max(end for _, end in self.spans) - min(start for start, _ in self.spans)


@contextlib.contextmanager
def timed_apply_layer() -> Iterator[list[float]]:
    """Seconds of each ``apply_layer`` call the unpacker makes (patched in this process)."""
    seconds: list[float] = []
    original = rootfs_module.apply_layer

    def apply_layer(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    rootfs_module.apply_layer = apply_layer  # type: ignore[assignment]
    try:
        yield seconds
    finally:
        rootfs_module.apply_layer = original  # type: ignore[assignment]


# -- helpers -----------------------------------------------------------------------------------


async def embedded(cache: Path) -> Any:
    """A new client of the embedded engine over ``cache`` (via $MPC_CACHE_DIR, as users set it)."""
    os.environ["MPC_CACHE_DIR"] = str(cache)
    client = await mpc.connect(engine="embedded")
    if client.engine.cache_dir != cache:
        await client.aclose()
        raise SystemExit(f"the engine uses {client.engine.cache_dir}, not {cache}")
    return client


def image_rootfs(client: Any, pulled: Any) -> Path:
    """The unpacked rootfs of a pulled image in the cache (images/<manifest hex>/rootfs)."""
    return client.engine.cache_dir / "images" / pulled.image_id.removeprefix("sha256:") / "rootfs"


def tree_stats(root: Path) -> tuple[int, int, int]:
    """(bytes of regular files, regular files, all entries) under ``root``."""
    size = files = entries = 0
    for _, st in walk(root):
        entries += 1
        if stat.S_ISREG(st.st_mode):
            size += st.st_size
            files += 1
    return size, files, entries


def repository_of(image: str) -> str:
    repo = image.split("@", 1)[0]
    if repo.rfind(":") > repo.rfind("/"):  # drop the tag, keep a registry's :port
        repo = repo[: repo.rfind(":")]
    return repo


def run_quiet(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, check=True, timeout=600, **kwargs)


# -- 1. cold uname -m on linux/arm64 ---------------------------------------------------------


class ColdRunner:
    """``client.run`` of ``uname -m`` on linux/arm64, with the engine's create/remove timed."""

    def __init__(self, client: Any, image: str) -> None:
        self.client = client
        self.image = image
        self.probe = Probe(client.engine, "create", "remove")

    async def run(self, command: str | list[str]) -> tuple[float, Any]:
        started = time.perf_counter()
        result = await self.client.run(command, image=self.image, platforms=ARM)
        wall = time.perf_counter() - started
        if not result.ok or result[0].stdout.strip() != "aarch64":
            raise SystemExit(f"client.run failed: {result.to_frame().to_dict('records')}")
        return wall, result

    async def sample(self, found: dict[str, Any], key: str) -> None:
        wall, result = await self.run("uname -m")
        found[key].append(wall)
        found[f"{key}:create"].append(self.probe.last("create"))
        found[f"{key}:remove"].append(self.probe.last("remove"))
        found[f"{key}:start_exit"].append(result[0].duration_s)


async def cold_runs(
    args: argparse.Namespace, cache: Path, scratch: Path, fast_cache: Path | None
) -> dict[str, Any]:
    print(f"1. cold `uname -m` on {ARM}: client.run vs docker run", flush=True)
    found: dict[str, Any] = defaultdict(list)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(await embedded(cache))
        (pulled,) = await client.pull(args.image, platforms=ARM)
        runners = {"ours": ColdRunner(client, args.image)}
        if fast_cache is not None:
            fast = await stack.enter_async_context(await embedded(fast_cache))
            await fast.pull(args.image, platforms=ARM)
            runners["tmpfs"] = ColdRunner(fast, args.image)

        pinned = f"{repository_of(args.image)}@{pulled.digest}"
        had = subprocess.run(["docker", "image", "inspect", pinned], capture_output=True)
        if had.returncode != 0:
            args.leftovers["docker_image"] = pinned  # removed at the end, even after errors
            run_quiet(["docker", "pull", "-q", pinned])
        docker_argv = ["docker", "run", "--rm", "--platform", ARM, pinned, "uname", "-m"]

        # The floor: proot + qemu on a copy of the image's rootfs, started as the engine does.
        bare_root = scratch / "bare-arm64-rootfs"
        shutil.copytree(image_rootfs(client, pulled), bare_root, symlinks=True)
        binds = [(path, path) for path in SYSTEM_BINDS if os.path.exists(path)]
        bare_argv = proot_command(
            find_proot(),
            bare_root,
            ["uname", "-m"],
            workdir="/",
            qemu=find_qemu(Platform.parse(ARM)),
            binds=binds,
            user=None,
        )
        bare_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **proot_env()}

        def docker() -> float:
            return timed(lambda: run_quiet(docker_argv))

        def bare() -> float:
            return timed(lambda: run_quiet(bare_argv, env=bare_env, cwd="/"))

        for _ in range(2):  # warm-up: page cache, qemu, the daemon
            for runner in runners.values():
                await runner.run("uname -m")
            await runners["ours"].run(["uname", "-m"])
            docker()
            bare()
        for number in range(args.repeat):
            print(f"  round {number + 1}/{args.repeat}", file=sys.stderr, flush=True)
            for key, runner in runners.items():
                await runner.sample(found, key)
            found["ours_argv"].append((await runners["ours"].run(["uname", "-m"]))[0])
            found["docker"].append(docker())
            found["bare"].append(bare())
    return found


# -- 2. second pull ----------------------------------------------------------------------------


async def second_pulls(
    args: argparse.Namespace, cache: Path, targets: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    print("2. second pull of the same image and platform by a new client", flush=True)
    found: dict[str, Any] = {}
    for image, platform in targets:
        async with await embedded(cache) as client:  # the first pull fills the cache
            first_meter = BlobMeter(client.engine.registry)
            started = time.perf_counter()
            await client.pull(image, platforms=platform)
            first = time.perf_counter() - started
        walls, connects, blob_bytes, blob_gets, requests = [], [], [], [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            client = await embedded(cache)
            connects.append(time.perf_counter() - started)
            try:
                meter = BlobMeter(client.engine.registry)
                started = time.perf_counter()
                await client.pull(image, platforms=platform)
                walls.append(time.perf_counter() - started)
                blob_bytes.append(meter.bytes)
                blob_gets.append(meter.blob_requests)
                requests.append(sum(client.engine.registry.requests.values()))
            finally:
                await client.aclose()
        found[f"{image} {platform}"] = {
            "first": first,
            "first_bytes": first_meter.bytes,
            "wall": walls,
            "connect": connects,
            "bytes": blob_bytes,
            "blob_gets": blob_gets,
            "requests": requests,
            "short": image.rsplit("/", 1)[-1],
            "platform": platform,
        }
    return found


# -- 3. pull + unpack throughput against skopeo copy -----------------------------------------


def skopeo_copy(image: str, platform: Platform, dest: Path) -> tuple[float, int]:
    """Wall seconds of ``skopeo copy`` of one platform into a new OCI layout; bytes of blobs."""
    argv = [
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--override-os",
        platform.os,
        "--override-arch",
        platform.architecture,
        *(["--override-variant", platform.variant] if platform.variant else []),
        f"docker://{image}",
        f"oci:{dest}:bench",
    ]
    wall = timed(lambda: run_quiet(argv))
    index = json.loads((dest / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].partition(":")[2]
    manifest = json.loads((dest / "blobs" / "sha256" / manifest_digest).read_text())
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    return wall, size


async def our_pull(image: str, platform: Platform, cache: Path) -> dict[str, Any]:
    """Pull + unpack into the empty cache ``cache`` by a new client; timings and bytes."""
    client = await embedded(cache)
    try:
        meter = BlobMeter(client.engine.registry)
        seal = Probe(client.engine, "_seal")
        with timed_apply_layer() as applied:
            started = time.perf_counter()
            (pulled,) = await client.pull(image, platforms=str(platform))
            wall = time.perf_counter() - started
        return {
            "wall": wall,
            "bytes": meter.bytes,
            "download_span": meter.download_span(),
            "after_download": started + wall - max(end for _, end in meter.spans),
            "apply": sum(applied),
            "layers": len(applied),
            "seal": seal.total("_seal"),
            "unpacked": tree_stats(image_rootfs(client, pulled)),
        }
    finally:
        await client.aclose()
        remove_tree(cache)


async def throughput(
    args: argparse.Namespace, scratch: Path, fast_scratch: Path | None
) -> dict[str, Any]:
    image, platform = args.golang_image, Platform.parse(AMD)
    print(f"3. pull + unpack of {image} ({platform}) vs skopeo copy", flush=True)
    found: dict[str, Any] = defaultdict(list)
    warm = scratch / "skopeo-warm"
    skopeo_copy(image, platform, warm)  # untimed: the registry's files into the page cache
    shutil.rmtree(warm)
    for number in range(args.big_repeat):
        print(f"  round {number + 1}/{args.big_repeat}", file=sys.stderr, flush=True)

        async def ours(key: str, base: Path, number: int = number) -> None:
            for name, value in (await our_pull(image, platform, base / f"cache-{number}")).items():
                found[f"{key}:{name}"].append(value)

        async def peer(number: int = number) -> None:
            dest = scratch / f"skopeo-{number}"
            try:
                wall, size = skopeo_copy(image, platform, dest)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            found["skopeo"].append(wall)
            found["skopeo_bytes"].append(size)

        steps = [lambda: ours("ours", scratch), peer]
        if fast_scratch is not None:
            steps.append(lambda: ours("tmpfs", fast_scratch))
        shift = number % len(steps)  # rotate who goes first
        for step in steps[shift:] + steps[:shift]:
            await step()
    return found


# -- 4. the private rootfs copy of a ~100 MB image -------------------------------------------


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
    """A write-only stream that hashes and counts what goes through it."""

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
    entries: dict[str, str | None] = {rel: str(base / rel) for rel, _ in walk(base)}
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


async def push_rootfs_image(
    client: Any, reference: str, layer: Path, diff_id: str
) -> tuple[str, list[str]]:
    """Push a one-layer linux/amd64 image; its manifest digest and blob digests."""
    registry = client.engine.registry
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
    await registry.push_blob(ref, layer_digest, layer)
    await registry.push_blob(ref, config_digest, config)
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
    digest = await registry.push_manifest(ref, manifest, OCI_MANIFEST)
    return digest, [layer_digest, config_digest]


def delete_image(reference: str, manifest: str, blobs: Sequence[str]) -> list[str]:
    """Delete what we pushed (manifest, then our blob links); the problems, if any."""
    import httpx

    ref = Reference.parse(reference)
    host = ref.registry.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        return [f"not deleting from {ref.registry}: only a loopback registry is cleaned up"]
    problems = []
    with httpx.Client(base_url=f"http://{ref.registry}/v2/{ref.repository}") as http:
        for path in [f"/manifests/{manifest}", *(f"/blobs/{d}" for d in blobs)]:
            answer = http.delete(path)
            if answer.status_code not in (202, 404):
                problems.append(f"DELETE {path}: HTTP {answer.status_code}")
    return problems


def tree_steps(image_dir: Path, dest: Path) -> dict[str, float]:
    """Where create's time goes: its file-tree steps called alone, and cp for reference."""
    root = image_dir / "rootfs"
    found = {}
    started = time.perf_counter()
    linked = LinkedFiles.load(image_dir)
    found["load"] = time.perf_counter() - started
    found["check"] = timed(lambda: linked.written_in_place(root))
    found["clone"] = timed(lambda: clone_tree(root, dest, link=linked))
    found["rm"] = timed(lambda: remove_tree(dest))
    # Peers: GNU cp making a hard-link farm, and a full copy.
    for key, flags in (("cp_al", "-al"), ("cp_a", "-a")):
        found[key] = timed(lambda flags=flags: run_quiet(["cp", flags, root, dest]))
        shutil.rmtree(dest)
    return found


async def rootfs_copies(
    args: argparse.Namespace, cache: Path, scratch: Path, fast_cache: Path | None
) -> dict[str, Any]:
    reference = f"{args.registry}/bench/rootfs100:1"
    print(f"4. private rootfs copy of a ~{args.megabytes} MB image ({reference})", flush=True)
    found: dict[str, Any] = defaultdict(list)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(await embedded(cache))
        started = time.perf_counter()
        (busybox,) = await client.pull(args.image, platforms=AMD)
        files = await asyncio.to_thread(pick_host_files, args.megabytes, args.files)
        layer = scratch / "rootfs100.tar.gz"
        diff_id = await asyncio.to_thread(build_layer, image_rootfs(client, busybox), files, layer)
        digest, blobs = await push_rootfs_image(client, reference, layer, diff_id)
        args.leftovers["pushed"] = (reference, digest, blobs)
        found["layer_mb"] = layer.stat().st_size / MB
        layer.unlink()
        found["build"] = time.perf_counter() - started

        clients = {"ours": client}
        if fast_cache is not None:
            clients["tmpfs"] = await stack.enter_async_context(await embedded(fast_cache))
        pulled, probes = {}, {}
        for key, each in clients.items():
            probes[key] = Probe(each.engine, "create")
            started = time.perf_counter()
            pulled[key] = await each.engine.pull(reference, Platform.parse(AMD))
            found[f"{key}:first_pull"] = time.perf_counter() - started
        root = image_rootfs(client, pulled["ours"])
        found["stats"] = tree_stats(root)
        kinds = [st.st_mode for _, st in walk(root)]
        found["kinds"] = (
            sum(stat.S_ISDIR(mode) for mode in kinds),
            sum(stat.S_ISLNK(mode) for mode in kinds),
        )

        # A sanity check: a session of it works (sh, sleep, mkdir from busybox).
        check = await client.session("bench-check", image=reference, platforms=AMD)
        result = await check.run("ls /usr/share | wc -l")
        if not result.ok:
            raise SystemExit(f"a session of {reference} failed: {result.to_frame()}")
        await client.stop("bench-check")

        for number in range(args.repeat):
            print(f"  round {number + 1}/{args.repeat}", file=sys.stderr, flush=True)
            for key, each in clients.items():
                started = time.perf_counter()
                container = await each.engine.create(pulled[key], ["true"])
                found[f"{key}:create"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await each.engine.remove(container)
                found[f"{key}:remove"].append(time.perf_counter() - started)

                name = f"bench-{number}"
                started = time.perf_counter()
                await each.session(name, image=reference, platforms=AMD)
                found[f"{key}:session"].append(time.perf_counter() - started)
                found[f"{key}:session_create"].append(probes[key].last("create"))
                started = time.perf_counter()
                await each.stop(name)
                found[f"{key}:session_stop"].append(time.perf_counter() - started)
            for key, each in clients.items():
                image_dir = image_rootfs(each, pulled[key]).parent
                work = scratch if key == "ours" else each.engine.cache_dir.parent
                for step, seconds in tree_steps(image_dir, work / "clone").items():
                    found[f"{key}:{step}"].append(seconds)
        found["linked"] = len(LinkedFiles.load(root.parent).entries)
    return found


def inode_costs(base: Path, count: int = 300) -> dict[str, float]:
    """Seconds per mkdir, symlink, new empty file and hard link on ``base``'s filesystem."""
    work = Path(tempfile.mkdtemp(prefix="inodes-", dir=base))
    try:
        (work / "file").touch()
        costs = {
            "mkdir": timed(lambda: [os.mkdir(work / f"d{i}") for i in range(count)]),
            "symlink": timed(lambda: [os.symlink("x", work / f"d{i}/s") for i in range(count)]),
            "file": timed(lambda: [(work / f"d{i}/f").touch() for i in range(count)]),
            "link": timed(lambda: [os.link(work / "file", work / f"d{i}/l") for i in range(count)]),
        }
    finally:
        shutil.rmtree(work)
    return {key: seconds / count for key, seconds in costs.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


# -- the run ---------------------------------------------------------------------------------


def table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    header = ("row", "ours", "peer/target", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if row is header:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def report(
    args: argparse.Namespace,
    cold: dict[str, Any],
    repull: dict[str, Any],
    pull: dict[str, Any],
    copies: dict[str, Any],
    inodes: dict[str, dict[str, float]],
) -> None:
    fast = "tmpfs" if args.tmpfs else None
    med = {k: median(v) for k, v in cold.items()}
    rows: list[tuple[str, str, str, str]] = []
    docker = med["docker"]
    ratio = docker / med["ours"]
    rows.append(
        (
            f"cold `uname -m`, {ARM} (client.run)",
            ms(med["ours"]),
            f"docker run {ms(docker)}",
            f"docker/ours {ratio:.2f} (>= {RUN_TARGET:g}) {verdict(ratio >= RUN_TARGET)}",
        )
    )
    rows.append(
        (
            "  argv form: client.run(['uname', '-m'])",
            ms(med["ours_argv"]),
            f"docker run {ms(docker)}",
            f"docker/ours {docker / med['ours_argv']:.2f}",
        )
    )
    if fast:
        rows.append(
            (
                f"  same, cache on {args.tmpfs} (tmpfs)",
                ms(med[fast]),
                f"docker run {ms(docker)}",
                f"docker/ours {docker / med[fast]:.2f}",
            )
        )
    rows.append(
        (
            "  peer: bare proot -q qemu-aarch64-static",
            ms(med["bare"]),
            f"docker run {ms(docker)}",
            f"docker/bare {docker / med['bare']:.2f} (the floor)",
        )
    )
    for found in repull.values():
        wall, worst = median(found["wall"]), max(found["wall"])
        fetched = max(found["bytes"])
        ok = fetched == 0 and max(found["blob_gets"]) == 0 and wall < REPULL_TARGET_S
        rows.append(
            (
                f"second pull, {found['short']} {found['platform']}",
                f"{ms(wall)} (max {ms(worst)}), {fetched} B",
                f"< {ms(REPULL_TARGET_S)}, 0 B",
                f"{wall / REPULL_TARGET_S:.2f} of target {verdict(ok)}",
            )
        )

    def rate(key: str) -> float:
        """Median MB/s of compressed blob bytes over wall time."""
        pairs = zip(pull[f"{key}:bytes"], pull[f"{key}:wall"], strict=True)
        return median([size / wall / MB for size, wall in pairs])

    peer_pairs = zip(pull["skopeo_bytes"], pull["skopeo"], strict=True)
    peer_mbs = median([size / wall / MB for size, wall in peer_pairs])
    peer = f"skopeo copy {peer_mbs:.1f} MB/s ({median(pull['skopeo']):.2f} s)"
    ratio = rate("ours") / peer_mbs
    rows.append(
        (
            f"pull+unpack {args.golang_image.rsplit('/', 1)[-1]} {AMD}",
            f"{rate('ours'):.1f} MB/s ({median(pull['ours:wall']):.2f} s)",
            peer,
            f"ours/skopeo {ratio:.2f} (>= {THROUGHPUT_TARGET:g}) "
            f"{verdict(ratio >= THROUGHPUT_TARGET)}",
        )
    )
    if fast:
        rows.append(
            (
                f"  same, cache on {args.tmpfs} (tmpfs)",
                f"{rate(fast):.1f} MB/s ({median(pull[f'{fast}:wall']):.2f} s)",
                peer,
                f"ours/skopeo {rate(fast) / peer_mbs:.2f}",
            )
        )
    size, files, _ = copies["stats"]
    create = median(copies["ours:create"])
    rows.append(
        (
            f"rootfs copy (engine.create), {size / MB:.0f} MB / {files} files",
            ms(create),
            f"< {ms(CREATE_TARGET_S)}",
            f"{create / CREATE_TARGET_S:.2f} of target {verdict(create < CREATE_TARGET_S)}",
        )
    )
    if fast:
        fast_create = median(copies[f"{fast}:create"])
        rows.append(
            (
                f"  same, cache on {args.tmpfs} (tmpfs)",
                ms(fast_create),
                f"< {ms(CREATE_TARGET_S)}",
                f"{fast_create / CREATE_TARGET_S:.2f} of target",
            )
        )
    for key, where in (("ours", ""), (fast, f", cache on {args.tmpfs}")):
        if key is None:
            continue
        start = median(copies[f"{key}:session"])
        rows.append(
            (
                f"  client.session() start{where}",
                ms(start),
                f"< {ms(CREATE_TARGET_S)} (reference)",
                f"{start / CREATE_TARGET_S:.2f} of target",
            )
        )
    for key, where in (("ours", ""), (fast, f", on {args.tmpfs}")):
        if key is None:
            continue
        link_farm = median(copies[f"{key}:cp_al"])
        rows.append(
            (
                f"  peer: cp -al (hard-link farm){where}",
                ms(link_farm),
                f"cp -a (full copy) {ms(median(copies[f'{key}:cp_a']))}",
                f"create/cp -al {median(copies[f'{key}:create']) / link_farm:.2f}",
            )
        )
    print()
    print(
        f"medians of {args.repeat} rounds ({args.big_repeat} for pull+unpack); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end"
    )
    table(rows)

    print()
    print("where the time goes (medians):")
    for where, costs in inodes.items():
        print(
            f"  one new inode on {where}: mkdir {us(costs['mkdir'])}, symlink "
            f"{us(costs['symlink'])}, empty file {us(costs['file'])}; a hard link "
            f"{us(costs['link'])}"
        )
    for key in ("ours", fast):
        if key is None:
            continue
        parts = zip(
            *(cold[f"{key}{part}"] for part in ("", ":create", ":start_exit", ":remove")),
            strict=True,
        )
        rest = median([wall - made - ran - removed for wall, made, ran, removed in parts])
        print(
            f"  cold run{'' if key == 'ours' else ' (tmpfs)'} {ms(med[key])} = create (rootfs "
            f"copy) {ms(med[f'{key}:create'])} + proot start->exit "
            f"{ms(med[f'{key}:start_exit'])} + remove {ms(med[f'{key}:remove'])} + the rest "
            f"{ms(rest)}"
        )
    print(f"  bare proot + qemu `uname -m`, nothing else: {ms(med['bare'])}")
    for found in repull.values():
        filled = (
            f"the first pull fetched {found['first_bytes'] / MB:.1f} MB in {found['first']:.2f} s"
            if found["first_bytes"]
            else "the cache was filled by part 1"
        )
        print(
            f"  second pull {found['short']} {found['platform']}: "
            f"{median(found['requests']):.0f} registry request(s), "
            f"{max(found['blob_gets'])} blob GETs; new client {ms(median(found['connect']))} "
            f"(not timed); {filled}"
        )
    for key in ("ours", fast):
        if key is None:
            continue

        def m(name: str, key: str = key) -> float:
            return median(pull[f"{key}:{name}"])

        usize, ufiles, _ = pull[f"{key}:unpacked"][0]
        print(
            f"  pull+unpack{'' if key == 'ours' else ' (tmpfs)'} {m('wall'):.2f} s for "
            f"{m('bytes') / MB:.1f} MB compressed ({pull[f'{key}:layers'][0]} layers; unpacked "
            f"{usize / MB:.0f} MB / {ufiles} files): downloads {m('download_span'):.2f} s "
            f"({m('bytes') / MB / m('download_span'):.0f} MB/s), apply_layer "
            f"{m('apply'):.2f} s in all, after the last download {m('after_download'):.2f} s "
            f"(of which the linked-file scan {m('seal'):.2f} s)"
        )
    print(f"  skopeo copy: {median(pull['skopeo_bytes']) / MB:.1f} MB, no unpacking")
    for key in ("ours", fast):
        if key is None:
            continue

        def c(name: str, key: str = key) -> str:
            return ms(median(copies[f"{key}:{name}"]))

        print(
            f"  rootfs copy{'' if key == 'ours' else ' (tmpfs)'} {c('create')}: its steps "
            f"called alone: LinkedFiles.load {c('load')} ({copies['linked']} linked files) + "
            f"clone_tree {c('clone')}; remove {c('remove')} (the written_in_place check "
            f"{c('check')} + remove_tree {c('rm')})"
        )
    dirs, links = copies["kinds"]
    print(
        f"  a copy of this rootfs makes {dirs} directories (new inodes) and hard links to "
        f"{links} symlinks and {files} files (real copies under /etc, /root, /tmp, ...); "
        "GNU `cp -al` makes the same link farm in C: the floor for a private tree there"
    )
    for key in ("ours", fast):
        if key is None:
            continue
        starts, made = copies[f"{key}:session"], copies[f"{key}:session_create"]
        rest = median([a - b for a, b in zip(starts, made, strict=True)])
        print(
            f"  session start{'' if key == 'ours' else ' (tmpfs)'} {ms(median(starts))} = its "
            f"rootfs copy {ms(median(made))} + proot keep-alive and shell start {ms(rest)}; "
            f"stop {ms(median(copies[f'{key}:session_stop']))}"
        )
    print(
        f"  image: {size / MB:.1f} MB in {files} regular files; one {copies['layer_mb']:.1f} MB "
        f"gzip layer; built and pushed in {copies['build']:.1f} s, first pull+unpack "
        f"{copies['ours:first_pull']:.2f} s"
    )


async def main_async(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.scratch_base))
    fast_scratch = (
        Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.tmpfs)) if args.tmpfs else None
    )
    cache = scratch / "cache"
    fast_cache = fast_scratch / "cache" if fast_scratch else None
    saved_cache_env = os.environ.get("MPC_CACHE_DIR")
    args.leftovers = {}
    try:
        inodes = {str(args.scratch_base): inode_costs(scratch)}
        if fast_scratch:
            inodes[args.tmpfs] = inode_costs(fast_scratch)
        cold = await cold_runs(args, cache, scratch, fast_cache)
        repull = await second_pulls(args, cache, [(args.image, ARM), (args.golang_image, AMD)])
        pull = await throughput(args, scratch, fast_scratch)
        copies = await rootfs_copies(args, cache, scratch, fast_cache)
        report(args, cold, repull, pull, copies, inodes)
    finally:
        if "docker_image" in args.leftovers:
            docker_image = args.leftovers["docker_image"]
            subprocess.run(["docker", "image", "rm", docker_image], capture_output=True)
        if "pushed" in args.leftovers and not args.keep_image:
            for problem in delete_image(*args.leftovers["pushed"]):
                print(f"cleanup: {problem}", file=sys.stderr)
        for path in (scratch, fast_scratch):
            if path is not None:
                remove_tree(path)
        if saved_cache_env is None:
            os.environ.pop("MPC_CACHE_DIR", None)
        else:
            os.environ["MPC_CACHE_DIR"] = saved_cache_env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="rounds of the quick measures")
    parser.add_argument("--big-repeat", type=int, default=3, help="rounds of pull+unpack")
    parser.add_argument("--image", default=os.environ.get("MPC_TEST_IMAGE"))
    parser.add_argument("--golang-image", default=os.environ.get("MPC_GOLANG_IMAGE"))
    parser.add_argument("--registry", default=os.environ.get("MPC_TEST_REGISTRY"))
    parser.add_argument("--megabytes", type=int, default=100, help="size of the rootfs image")
    parser.add_argument("--files", type=int, default=4500, help="host files in that image")
    parser.add_argument(
        "--scratch-base",
        default=tempfile.gettempdir(),
        help="where the temporary cache goes (its filesystem is what is measured)",
    )
    parser.add_argument(
        "--tmpfs",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else "",
        help="also measure with the cache on this tmpfs ('' to skip; default /dev/shm)",
    )
    parser.add_argument(
        "--keep-image", action="store_true", help="leave REGISTRY/bench/rootfs100:1 pushed"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.big_repeat < 1:
        parser.error("--repeat and --big-repeat must be at least 1")
    if not (args.image and args.golang_image and args.registry):
        parser.error("source /var/lib/mpcontainer-test/env.sh (or give the images, registry)")
    print(
        f"images {args.image}, {args.golang_image}; registry {args.registry}; cache under "
        f"{args.scratch_base}{f' and {args.tmpfs}' if args.tmpfs else ''}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
