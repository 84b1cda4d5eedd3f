"""Embedded-engine benchmark: proot + qemu-user containers from the image cache, against peers.

Run: .venv/bin/python bench/bench_embedded.py [--repeat 10] [--big-repeat 3] [--image IMG]
     [--golang-image IMG] [--registry HOST:PORT] [--megabytes 100] [--files 4500]
     [--scratch-base DIR] [--tmpfs DIR] [--keep-image] [--quick]
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

--quick: one round each, the test image instead of the golang one, a 10 MB / 500-file image.
The cache is a new temporary directory under --scratch-base ($MPC_CACHE_DIR is pointed
there), so what is measured is that filesystem; parts 1, 3 and 4 are repeated with a cache on
--tmpfs (default /dev/shm). Everything made is removed at the end. See bench/README.md for
the rows. Targets print PASS or MISS; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    MB,
    Row,
    docker_pull_pinned,
    machine,
    median,
    ms,
    parse,
    parser,
    print_table,
    run_quiet,
    skopeo_copy_argv,
    timed,
    verdict,
)
from host_image import build_layer, delete_image, pick_host_files, push_image

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import ContainerSpec
from mpcontainer_magics.engines.proot import (
    SYSTEM_BINDS,
    find_proot,
    find_qemu,
    proot_command,
    proot_env,
)
from mpcontainer_magics.engines.rootfs import unpack_image
from mpcontainer_magics.engines.store import BlobStore
from mpcontainer_magics.engines.tree import remove_tree
from mpcontainer_magics.registry import RegistryClient

ARM = "linux/arm64"
AMD = "linux/amd64"
RUN_TARGET = 5.0  # docker run / our cold run: at least this
REPULL_TARGET_S = 0.050  # a second pull: under this, and no blob byte
THROUGHPUT_TARGET = 1.0  # our pull+unpack MB/s / skopeo copy MB/s: at least this
CREATE_TARGET_S = 0.100  # the private rootfs copy of a ~100 MB image: under this


@dataclass
class Part:
    """What one part measured: its rows of the table, and lines on where the time goes."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Setup:
    """The run's options, its scratch directories ("ours" under --scratch-base, "tmpfs" on
    --tmpfs), and what to undo at the end."""

    args: argparse.Namespace
    scratch: dict[str, Path]
    cleanup: contextlib.ExitStack

    def cache(self, key: str, name: str = "cache") -> Path:
        return self.scratch[key] / name

    def where(self, key: str) -> str:
        return "" if key == "ours" else f", cache on {self.args.tmpfs} (tmpfs)"


# -- helpers: the public API, with the cache where $MPC_CACHE_DIR says -------------------------


async def embedded(cache: Path) -> mpc.Client:
    """A new client of the embedded engine over ``cache`` (via $MPC_CACHE_DIR, as users set it)."""
    os.environ["MPC_CACHE_DIR"] = str(cache)
    return await mpc.connect(engine="embedded")


def blob_bytes(cache: Path) -> int:
    """Bytes in the cache's blob store (``blobs/<algorithm>/<hex>``): what pulls fetched."""
    return sum(p.stat().st_size for p in (cache / "blobs").rglob("*") if p.is_file())


def blob_gets(client: mpc.Client) -> int:
    """Blob GETs the engine's registry client sent (its documented request counter)."""
    return client.engine.registry.requests["GET blob"]


async def export_rootfs(client: mpc.Client, image: str, platform: str, dest: Path) -> Path:
    """The files of ``image`` for ``platform``, copied to ``dest`` (Container.rootfs)."""
    await client.container(platform=platform).from_(image).rootfs().export(dest)
    return dest


def tree_stats(root: Path) -> dict[str, int]:
    """Bytes of regular files, and the counts of files, directories and symlinks."""
    found = {"bytes": 0, "files": 0, "dirs": 0, "links": 0}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            found["dirs"] += stat.S_ISDIR(st.st_mode)
            found["links"] += stat.S_ISLNK(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                found["files"] += 1
                found["bytes"] += st.st_size
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


def rounds(count: int) -> Iterator[int]:
    for number in range(count):
        print(f"  round {number + 1}/{count}", file=sys.stderr, flush=True)
        yield number


async def seconds_of(work: Awaitable[object]) -> float:
    """Wall seconds until ``work`` is done."""
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


@contextlib.contextmanager
def cache_env_restored() -> Iterator[None]:
    """$MPC_CACHE_DIR as it was before this script pointed it at its caches."""
    saved = os.environ.get("MPC_CACHE_DIR")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MPC_CACHE_DIR", None)
        else:
            os.environ["MPC_CACHE_DIR"] = saved


# -- 1. cold uname -m on linux/arm64 ---------------------------------------------------------


async def cold_run(client: mpc.Client, image: str, command: str | list[str]) -> tuple[float, float]:
    """Wall seconds of ``client.run`` of ``uname -m`` on arm64, and its proot start->exit."""
    started = time.perf_counter()
    result = await client.run(command, image=image, platforms=ARM)
    wall = time.perf_counter() - started
    if not result.ok or result[0].stdout.strip() != "aarch64":
        raise SystemExit(f"client.run failed: {result.to_frame().to_dict('records')}")
    return wall, result[0].duration_s


def bare_proot(root: Path) -> list[str]:
    """The proot command the engine starts for ``uname -m`` (same options and binds)."""
    binds = [(path, path) for path in SYSTEM_BINDS if os.path.exists(path)]
    qemu = find_qemu(mpc.Platform.parse(ARM))
    return proot_command(
        find_proot(), root, ["uname", "-m"], workdir="/", qemu=qemu, binds=binds, user=None
    )


async def cold_runs(setup: Setup) -> Part:
    args = setup.args
    print(f"1. cold `uname -m` on {ARM}: client.run vs docker run", flush=True)
    found: dict[str, list[float]] = defaultdict(list)
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for key in setup.scratch:
            clients[key] = await stack.enter_async_context(await embedded(setup.cache(key)))
            (pulled,) = await clients[key].pull(args.image, platforms=ARM)
        pinned, pulled_now = docker_pull_pinned(args.image, pulled.digest)
        if pulled_now:
            setup.cleanup.callback(run_quiet, ["docker", "image", "rm", pinned])
        docker = ["docker", "run", "--rm", "--platform", ARM, pinned, "uname", "-m"]
        root = await export_rootfs(clients["ours"], args.image, ARM, setup.scratch["ours"] / "arm")
        bare, env = bare_proot(root), {"PATH": os.environ.get("PATH", "/bin"), **proot_env()}
        for number in rounds(args.warmup + args.repeat):
            for key, client in clients.items():
                wall, start_exit = await cold_run(client, args.image, "uname -m")
                found[key].append(wall)
                found[f"{key}:start_exit"].append(start_exit)
            found["argv"].append((await cold_run(clients["ours"], args.image, ["uname", "-m"]))[0])
            found["docker"].append(timed(lambda: run_quiet(docker)))
            found["bare"].append(timed(lambda: run_quiet(bare, env=env, cwd="/")))
            if number < args.warmup:  # page cache, qemu, the daemon
                found.clear()
    med = {key: median(values) for key, values in found.items()}
    part = Part()
    labels = {
        "ours": f"cold `uname -m`, {ARM} (client.run)",
        "argv": "  argv form: client.run(['uname', '-m'])",
        "tmpfs": f"  same{setup.where('tmpfs')}",
        "bare": "  peer: bare proot -q qemu-aarch64-static",
    }
    for key, label in labels.items():
        if key in med:
            ratio = med["docker"] / med[key]
            judged = {"ours": f" (>= {RUN_TARGET:g}) {verdict(ratio >= RUN_TARGET)}",
                      "bare": " (the floor)"}.get(key, "")  # fmt: skip
            ratio_of = f"docker/{'bare' if key == 'bare' else 'ours'} {ratio:.2f}{judged}"
            part.rows.append((label, ms(med[key]), f"docker run {ms(med['docker'])}", ratio_of))
    for key in clients:
        parts = zip(found[key], found[f"{key}:start_exit"], strict=True)
        rest = median([wall - start_exit for wall, start_exit in parts])
        part.notes.append(
            f"cold run{setup.where(key)} {ms(med[key])} = proot start->exit "
            f"{ms(med[f'{key}:start_exit'])} + the rest (rootfs copy, removal, client) {ms(rest)}"
        )
    part.notes.append(f"bare proot + qemu `uname -m`, nothing else: {ms(med['bare'])}")
    return part


# -- 2. second pull ----------------------------------------------------------------------------


async def second_pull(setup: Setup, image: str, platform: str) -> tuple[Row, str]:
    """The row and note of pulling ``image`` for ``platform`` again, by new clients."""
    cache = setup.cache("ours")
    async with await embedded(cache) as client:  # the first pull fills the cache (if needed)
        before = blob_bytes(cache)
        started = time.perf_counter()
        await client.pull(image, platforms=platform)
        first, first_bytes = time.perf_counter() - started, blob_bytes(cache) - before
    found: dict[str, list[float]] = defaultdict(list)
    for _ in range(setup.args.repeat):
        started = time.perf_counter()
        client = await embedded(cache)
        found["connect"].append(time.perf_counter() - started)
        try:
            before = blob_bytes(cache)
            started = time.perf_counter()
            await client.pull(image, platforms=platform)
            found["wall"].append(time.perf_counter() - started)
            found["bytes"].append(blob_bytes(cache) - before)
            found["gets"].append(blob_gets(client))
            found["requests"].append(sum(client.engine.registry.requests.values()))
        finally:
            await client.aclose()
    wall, fetched, gets = median(found["wall"]), max(found["bytes"]), max(found["gets"])
    ok = fetched == 0 and gets == 0 and wall < REPULL_TARGET_S
    short = image.rsplit("/", 1)[-1]
    row = (
        f"second pull, {short} {platform}",
        f"{ms(wall)} (max {ms(max(found['wall']))}), {fetched:.0f} B",
        f"< {ms(REPULL_TARGET_S)}, 0 B",
        f"{wall / REPULL_TARGET_S:.2f} of target {verdict(ok)}",
    )
    filled = f"the first pull fetched {first_bytes / MB:.1f} MB in {first:.2f} s"
    note = (
        f"second pull {short} {platform}: {median(found['requests']):.0f} registry request(s), "
        f"{gets:.0f} blob GETs; new client {ms(median(found['connect']))} (not timed); "
        + (filled if first_bytes else "the cache was filled by part 1")
    )
    return row, note


async def second_pulls(setup: Setup) -> Part:
    print("2. second pull of the same image and platform by a new client", flush=True)
    part = Part()
    for image, platform in ((setup.args.image, ARM), (setup.args.golang_image, AMD)):
        row, note = await second_pull(setup, image, platform)
        part.rows.append(row)
        part.notes.append(note)
    return part


# -- 3. pull + unpack throughput against skopeo copy -----------------------------------------


def skopeo_copy(image: str, platform: mpc.Platform, dest: Path) -> tuple[float, int]:
    """Wall seconds of ``skopeo copy`` of one platform into a new OCI layout; bytes of blobs."""
    argv = skopeo_copy_argv(image, platform, dest)
    try:
        wall = timed(lambda: run_quiet(argv))
        index = json.loads((dest / "index.json").read_text())
        digest = index["manifests"][0]["digest"].partition(":")[2]
        manifest = json.loads((dest / "blobs" / "sha256" / digest).read_text())
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return wall, manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


async def our_pull(image: str, platform: mpc.Platform, cache: Path) -> dict[str, Any]:
    """Pull + unpack into the empty ``cache`` by a new client; then the unpack alone."""
    client = await embedded(cache)
    downloaded: list[float] = []

    def on_progress(_: mpc.Platform, done: int, total: int | None) -> None:
        if total and done >= total and not downloaded:
            downloaded.append(time.perf_counter())  # the last blob byte arrived

    try:
        started = time.perf_counter()
        await client.pull(image, platforms=str(platform), on_progress=on_progress)
        wall = time.perf_counter() - started
    finally:
        await client.aclose()
    try:
        # The same unpack again from the (now warm) blob cache: the unpacking alone.
        dest = cache.parent / f"{cache.name}-unpacked"
        async with RegistryClient() as registry:
            unpack = time.perf_counter()
            await unpack_image(registry, image, platform, dest, BlobStore(cache))
            unpack = time.perf_counter() - unpack
        return {
            "wall": wall,
            "bytes": blob_bytes(cache),
            "download": downloaded[0] - started,
            "unpack": unpack,
            "tree": tree_stats(dest),
        }
    finally:
        remove_tree(cache)
        remove_tree(cache.parent / f"{cache.name}-unpacked")


async def throughput(setup: Setup) -> Part:
    image, platform = setup.args.golang_image, mpc.Platform.parse(AMD)
    print(f"3. pull + unpack of {image} ({platform}) vs skopeo copy", flush=True)
    found: dict[str, list[Any]] = defaultdict(list)
    skopeo_copy(image, platform, setup.scratch["ours"] / "skopeo")  # the registry's files warm
    for number in rounds(setup.args.big_repeat):

        async def ours(key: str, number: int = number) -> None:
            pulled = await our_pull(image, platform, setup.cache(key, f"cache-{number}"))
            for name, value in pulled.items():
                found[f"{key}:{name}"].append(value)

        async def peer(number: int = number) -> None:
            wall, size = skopeo_copy(image, platform, setup.scratch["ours"] / f"skopeo-{number}")
            found["skopeo:wall"].append(wall)
            found["skopeo:bytes"].append(size)

        steps = [peer, *(lambda key=key: ours(key) for key in setup.scratch)]
        shift = number % len(steps)  # rotate who goes first
        for step in steps[shift:] + steps[:shift]:
            await step()

    def rate(key: str) -> float:
        """Median MB/s of compressed blob bytes over wall time."""
        pairs = zip(found[f"{key}:bytes"], found[f"{key}:wall"], strict=True)
        return median([size / wall / MB for size, wall in pairs])

    peer = f"skopeo copy {rate('skopeo'):.1f} MB/s ({median(found['skopeo:wall']):.2f} s)"
    part = Part()
    for key in setup.scratch:
        ratio = rate(key) / rate("skopeo")
        judged = f" (>= {THROUGHPUT_TARGET:g}) {verdict(ratio >= THROUGHPUT_TARGET)}"
        label = f"pull+unpack {image.rsplit('/', 1)[-1]} {AMD}" if key == "ours" else "  same"
        part.rows.append(
            (
                f"{label}{setup.where(key)}",
                f"{rate(key):.1f} MB/s ({median(found[f'{key}:wall']):.2f} s)",
                peer,
                f"ours/skopeo {ratio:.2f}{judged if key == 'ours' else ''}",
            )
        )

        def m(name: str, key: str = key) -> float:
            return median(found[f"{key}:{name}"])

        tree = found[f"{key}:tree"][0]
        part.notes.append(
            f"pull+unpack{setup.where(key)} {m('wall'):.2f} s for {m('bytes') / MB:.1f} MB "
            f"compressed (unpacked {tree['bytes'] / MB:.0f} MB / {tree['files']} files): "
            f"downloads done after {m('download'):.2f} s "
            f"({m('bytes') / MB / m('download'):.0f} MB/s), then {m('wall') - m('download'):.2f} s "
            f"more; the unpack alone, from the warm blob cache: {m('unpack'):.2f} s"
        )
    part.notes.append(f"skopeo copy: {median(found['skopeo:bytes']) / MB:.1f} MB, no unpacking")
    return part


# -- 4. the private rootfs copy of a ~100 MB image -------------------------------------------


async def build_image(setup: Setup, client: mpc.Client, reference: str) -> str:
    """Build and push the ~100 MB image (busybox's rootfs + host files); a line about it."""
    args, scratch = setup.args, setup.scratch["ours"]
    started = time.perf_counter()
    base = await export_rootfs(client, args.image, AMD, scratch / "busybox-amd64")
    files = await asyncio.to_thread(pick_host_files, args.megabytes, args.files)
    layer = scratch / "rootfs-image.tar.gz"
    diff_id = await asyncio.to_thread(build_layer, base, files, layer)
    digest, blobs = await push_image(reference, layer, diff_id)
    if not args.keep_image:
        setup.cleanup.callback(delete_image, reference, digest, blobs)
    layer_mb = layer.stat().st_size / MB
    layer.unlink()
    seconds = time.perf_counter() - started
    return f"one {layer_mb:.1f} MB gzip layer; built and pushed in {seconds:.1f} s"


def cp_seconds(flags: str, tree: Path) -> float:
    """Wall seconds of GNU ``cp FLAGS TREE COPY`` next to ``tree`` (the copy is removed)."""
    copy = tree.parent / f"copy{flags}"
    try:
        return timed(lambda: run_quiet(["cp", flags, str(tree), str(copy)]))
    finally:
        shutil.rmtree(copy, ignore_errors=True)


async def settled(cache: Path) -> None:
    """Once the trees of containers removed before are handed on or removed: the engine does
    that in the background (``spares/`` of the cache: a tree still being looked at keeps
    its ``ready`` stamp, one being removed is named ``.gone-*``), and a copy timed meanwhile
    would share the machine with it."""
    spares = cache / "spares"
    while spares.is_dir() and any(
        e.name.startswith(".") or (e / "ready").exists() for e in spares.iterdir()
    ):
        await asyncio.sleep(0.01)


async def copy_round(
    client: mpc.Client, pulled: Any, reference: str, tree: Path, cache: Path
) -> dict:
    """One round on one cache: the rootfs copy and its removal, a session, the cp peers."""
    await settled(cache)
    started = time.perf_counter()
    container = await client.engine.create(ContainerSpec(pulled, ("true",)))
    found = {"create": time.perf_counter() - started}
    found["remove"] = await seconds_of(client.engine.remove(container))
    started = time.perf_counter()
    await client.session("bench-round", image=reference, platforms=AMD)
    found["session"] = time.perf_counter() - started
    found["session_rest"] = found["session"] - found["create"]  # paired: the same round
    found["stop"] = await seconds_of(client.stop("bench-round"))
    await settled(cache)
    found["cp_al"], found["cp_a"] = cp_seconds("-al", tree), cp_seconds("-a", tree)
    return found


def copy_rows(setup: Setup, key: str, med: dict[str, float], stats: dict[str, int]) -> Part:
    where, create, session, farm = (setup.where(key), med["create"], med["session"], med["cp_al"])
    size = f"{stats['bytes'] / MB:.0f} MB / {stats['files']} files"
    judged = f" {verdict(create < CREATE_TARGET_S)}" if key == "ours" else ""
    target, reference = f"< {ms(CREATE_TARGET_S)}", f"< {ms(CREATE_TARGET_S)} (reference)"
    rows: list[Row] = [
        (f"rootfs copy (engine.create), {size}" if key == "ours" else f"rootfs copy{where}",
         ms(create), target,
         f"{create / CREATE_TARGET_S:.2f} of target{judged}"),
        (f"  client.session() start{where}", ms(session), reference,
         f"{session / CREATE_TARGET_S:.2f} of target"),
        (f"  peer: cp -al (hard-link farm){where}", ms(farm),
         f"cp -a (full copy) {ms(med['cp_a'])}", f"create/cp -al {create / farm:.2f}"),
    ]  # fmt: skip
    note = (
        f"rootfs copy{where} {ms(create)}, remove {ms(med['remove'])}; session start "
        f"{ms(session)} = the copy + proot keep-alive and shell start {ms(med['session_rest'])}; "
        f"stop {ms(med['stop'])}; first pull+unpack {med['first_pull']:.2f} s"
    )
    return Part(rows, [note])


async def rootfs_copies(setup: Setup) -> Part:
    args = setup.args
    reference = f"{args.registry}/bench/rootfs{args.megabytes}:1"
    print(f"4. private rootfs copy of a ~{args.megabytes} MB image ({reference})", flush=True)
    found: dict[str, dict[str, list[float]]] = {key: defaultdict(list) for key in setup.scratch}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for key in setup.scratch:
            clients[key] = await stack.enter_async_context(await embedded(setup.cache(key)))
        built = await build_image(setup, clients["ours"], reference)
        pulled, trees = {}, {}
        for key, client in clients.items():
            started = time.perf_counter()
            (pulled[key],) = await client.pull(reference, platforms=AMD)
            found[key]["first_pull"].append(time.perf_counter() - started)
            # The same tree, as real files on the same filesystem: what GNU cp copies.
            trees[key] = await export_rootfs(client, reference, AMD, setup.scratch[key] / "tree")
        check = await clients["ours"].session("bench-check", image=reference, platforms=AMD)
        if not (await check.run("ls /usr/share | wc -l")).ok:  # sh, ls, wc from busybox
            raise SystemExit(f"a session of {reference} failed")
        await clients["ours"].stop("bench-check")
        for _ in rounds(args.repeat):
            for key, client in clients.items():
                for name, seconds in (
                    await copy_round(client, pulled[key], reference, trees[key], setup.cache(key))
                ).items():
                    found[key][name].append(seconds)
    stats = tree_stats(trees["ours"])
    part = Part()
    for key, samples in found.items():
        rows = copy_rows(setup, key, {name: median(v) for name, v in samples.items()}, stats)
        part.rows += rows.rows
        part.notes += rows.notes
    part.notes.append(
        f"a copy of this rootfs makes {stats['dirs']} directories (new inodes) and hard links to "
        f"{stats['links']} symlinks and {stats['files']} files (real copies under /etc, /root, "
        "/tmp, ...); GNU `cp -al` makes the same link farm in C: the floor for a private tree"
    )
    part.notes.append(f"image: {stats['bytes'] / MB:.1f} MB in {stats['files']} files; {built}")
    return part


# -- the run ---------------------------------------------------------------------------------


async def run(setup: Setup) -> list[Part]:
    inodes = Part()
    for scratch in setup.scratch.values():
        costs = {k: f"{v * 1e6:.0f} us" for k, v in inode_costs(scratch).items()}
        inodes.notes.append(
            f"one new inode on {scratch.parent}: mkdir {costs['mkdir']}, symlink "
            f"{costs['symlink']}, empty file {costs['file']}; a hard link {costs['link']}"
        )
    return [
        await cold_runs(setup),
        await second_pulls(setup),
        await throughput(setup),
        await rootfs_copies(setup),
        inodes,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--repeat", type=int, default=10, help="rounds of the quick measures")
    options.add_argument("--warmup", type=int, default=2, help="untimed rounds of part 1")
    options.add_argument("--big-repeat", type=int, default=3, help="rounds of pull+unpack")
    options.add_argument("--image", default=os.environ.get("MPC_TEST_IMAGE"))
    options.add_argument("--golang-image", default=os.environ.get("MPC_GOLANG_IMAGE"))
    options.add_argument("--registry", default=os.environ.get("MPC_TEST_REGISTRY"))
    options.add_argument("--megabytes", type=int, default=100, help="size of the rootfs image")
    options.add_argument("--files", type=int, default=4500, help="host files in that image")
    options.add_argument(
        "--scratch-base",
        default=tempfile.gettempdir(),
        help="where the temporary cache goes (its filesystem is measured)",
    )
    options.add_argument(
        "--tmpfs",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else "",
        help="also measure with the cache on this tmpfs ('' to skip)",
    )
    options.add_argument("--keep-image", action="store_true", help="leave the rootfs image pushed")
    quick = {"repeat": 1, "warmup": 0, "big_repeat": 1, "megabytes": 10, "files": 500}
    args = parse(options, argv, quick)
    if args.quick:
        args.golang_image = args.image  # small: the point is that every row still runs
    if not (args.image and args.golang_image and args.registry):
        options.error("source /var/lib/mpcontainer-test/env.sh (or give the images, registry)")
    print(
        f"images {args.image}, {args.golang_image}; registry {args.registry}; cache under "
        f"{args.scratch_base}{f' and {args.tmpfs}' if args.tmpfs else ''}; {machine()} at start",
        flush=True,
    )
    with cache_env_restored(), contextlib.ExitStack() as cleanup:
        scratch = {"ours": Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.scratch_base))}
        cleanup.callback(remove_tree, scratch["ours"])
        if args.tmpfs:
            scratch["tmpfs"] = Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.tmpfs))
            cleanup.callback(remove_tree, scratch["tmpfs"])
        parts = asyncio.run(run(Setup(args, scratch, cleanup)))
    print()
    print(
        f"medians of {args.repeat} rounds ({args.big_repeat} for pull+unpack); {machine()} at end"
    )
    print_table([row for part in parts for row in part.rows])
    print()
    print("where the time goes (medians):")
    for part in parts:
        for note in part.notes:
            print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
