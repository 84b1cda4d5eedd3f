"""Pull benchmark: the embedded engine's pull + unpack against skopeo, and where its time goes.

Run: .venv/bin/python bench/bench_pull.py [--repeat 3] [--image IMG] [--multi-image IMG]
     [--scratch-base DIR] [--quick]
(needs skopeo and the local test registry; the images default to $MPC_GOLANG_IMAGE and
$MPC_TEST_IMAGE: source /var/lib/mpcontainer-test/env.sh).

Targets, measured side by side in one run, every number a median:

1. pull + unpack of IMG for linux/amd64 by a new embedded client into an empty cache,
   against ``skopeo copy docker://IMG oci:DIR`` of the same platform into an empty
   directory (which unpacks nothing); target skopeo seconds / ours >= 1 (ours no slower);
2. a pull of all the platforms of IMG, and of the 5 platforms of --multi-image, each into
   an empty cache, against the slowest of its platforms pulled alone; target <= 1.5.

Then the split of one cold unpack (engines.rootfs.unpack_image, the pull's own path, with
its counters): when the last blob byte arrived (network); on the thread reading each layer,
inflating and waiting for bytes; on the unpacking thread, tar parsing and file writes
(unpack) and waiting for the reading thread; and a ``sync`` after it (the writeback the pull left;
not part of the pull's time, and measured for skopeo too). The unpack's share grows with the
file count: creating a file costs ~15 us here, and up to 0.5 ms just after many were deleted.

--quick: one round, --image the test image (small). The caches are new temporary
directories under --scratch-base ($MPC_CACHE_DIR is pointed there), all removed at the end,
not after each round: an ext4 without a journal (this VM's root) skips, for every inode it
allocates, the inodes freed in the last minute or more, so a pull right after removing the
previous round's thousands of files paid 0.2-0.5 ms a file for the bench's own clean-up.
Targets print PASS or MISS; the exit status is 0 either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    MB,
    machine,
    median,
    parse,
    parser,
    print_table,
    run_quiet,
    skopeo_copy_argv,
    timed,
    verdict,
)

import mpcontainer_magics as mpc
from mpcontainer_magics.engines import layers
from mpcontainer_magics.engines.rootfs import unpack_image
from mpcontainer_magics.engines.store import BlobStore
from mpcontainer_magics.engines.tree import remove_tree
from mpcontainer_magics.registry import RegistryClient

AMD = mpc.Platform.parse("linux/amd64")
SKOPEO_TARGET = 1.0  # skopeo copy seconds / our pull+unpack seconds: at least this
MULTI_TARGET = 1.5  # all platforms at once / the slowest alone: at most this


async def our_pull(image: str, platforms: Sequence[mpc.Platform], cache: Path) -> float:
    """Wall seconds of ``client.pull`` of ``platforms`` by a new client into empty ``cache``."""
    os.environ["MPC_CACHE_DIR"] = str(cache)
    async with mpc.connect(engine="embedded") as client:
        started = time.perf_counter()
        await client.pull(image, platforms=[str(p) for p in platforms])
        return time.perf_counter() - started


def skopeo_copy(image: str, platform: mpc.Platform, dest: Path) -> tuple[float, float]:
    """Wall seconds of ``skopeo copy`` of one platform into a new OCI layout; then of sync."""
    argv = skopeo_copy_argv(image, platform, dest)
    try:
        wall = timed(lambda: run_quiet(argv))
        return wall, timed(os.sync)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def platforms_of(image: str) -> list[mpc.Platform]:
    """The platforms of ``image``'s index, as skopeo reads them."""
    raw = run_quiet(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"])
    return [mpc.Platform.from_oci(m["platform"]) for m in json.loads(raw.stdout)["manifests"]]


async def split(image: str, cache: Path) -> dict[str, float]:
    """One cold unpack of ``image`` (linux/amd64) with its counters, and the sync after it."""
    arrived: list[float] = []

    def on_progress(done: int, total: int | None) -> None:
        if total and done >= total and not arrived:
            arrived.append(time.perf_counter())

    async with RegistryClient() as registry:
        started = time.perf_counter()
        unpacked = await unpack_image(
            registry, image, AMD, cache / "rootfs", BlobStore(cache), on_progress=on_progress
        )
        wall = time.perf_counter() - started
    stats = unpacked.stats
    return {
        "wall": wall,
        "network": arrived[0] - started,
        "inflate": stats.inflate_s,
        "wait": stats.wait_s,
        "unpack": stats.unpack_s,
        "behind": stats.behind_s,
        "sync": timed(os.sync),
        "compressed": stats.compressed,
        "written": stats.written,
        "files": stats.files,
    }


async def measure(args: object, scratch: Path) -> tuple[list[tuple[str, ...]], list[str]]:
    image, multi, repeat = args.image, args.multi_image, args.repeat  # type: ignore[attr-defined]
    rows, notes = [], []
    count = iter(range(1 << 30))

    def new_cache() -> Path:
        return scratch / f"cache-{next(count)}"

    # 1. one platform, against skopeo copy (the registry's files warm first, untimed)
    skopeo_copy(image, AMD, scratch / "warm")
    ours, peer, peer_sync = [], [], []
    for _ in range(repeat):
        ours.append(await our_pull(image, [AMD], new_cache()))
        wall, synced = skopeo_copy(image, AMD, scratch / "skopeo")
        peer.append(wall)
        peer_sync.append(synced)
    ratio = median(peer) / median(ours)
    name = image.rsplit("/", 1)[-1]
    rows.append((
        f"pull+unpack {name} {AMD}, empty cache",
        f"{median(ours):.2f} s",
        f"skopeo copy {median(peer):.2f} s",
        f"skopeo/ours {ratio:.2f} (>= {SKOPEO_TARGET:g}) {verdict(ratio >= SKOPEO_TARGET)}",
    ))  # fmt: skip

    # 2. all platforms at once, against the slowest alone
    for multi_image in dict.fromkeys([image, multi]):
        platforms = platforms_of(multi_image)[:5]
        alone = {p: [] for p in platforms}
        together = []
        for _ in range(repeat):
            for platform in platforms:
                alone[platform].append(await our_pull(multi_image, [platform], new_cache()))
            together.append(await our_pull(multi_image, platforms, new_cache()))
        slowest = max(alone, key=lambda p: median(alone[p]))
        ratio = median(together) / median(alone[slowest])
        rows.append((
            f"{len(platforms)}-platform pull {multi_image.rsplit('/', 1)[-1]}",
            f"{median(together):.2f} s",
            f"slowest alone ({slowest}) {median(alone[slowest]):.2f} s",
            f"all/slowest {ratio:.2f} (<= {MULTI_TARGET:g}) {verdict(ratio <= MULTI_TARGET)}",
        ))  # fmt: skip

    # the split of one cold unpack
    found = [await split(image, new_cache()) for _ in range(repeat)]
    m = {key: median([f[key] for f in found]) for key in found[0]}
    notes.append(
        f"split of a cold unpack of {name} {AMD} ({m['compressed'] / MB:.0f} MB compressed, "
        f"{m['written'] / MB:.0f} MB written in {m['files']:.0f} entries), {m['wall']:.2f} s: "
        f"network (last blob byte) {m['network']:.2f} s; on the reading thread: inflate "
        f"{m['inflate']:.2f} s ({layers._inflate_lib.__name__}), waiting for bytes "
        f"{m['wait']:.2f} s; on the unpacking thread: tar + file writes {m['unpack']:.2f} s, "
        f"waiting for the reading thread {m['behind']:.2f} s; sync after {m['sync']:.2f} s "
        f"(skopeo's sync after its copy: {median(peer_sync):.2f} s)"
    )
    return rows, notes


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--image", default=os.environ.get("MPC_GOLANG_IMAGE"))
    options.add_argument("--multi-image", default=os.environ.get("MPC_TEST_IMAGE"))
    options.add_argument("--scratch-base", default=None, help="where the caches go (a disk)")
    args = parse(options, argv, quick={"repeat": 1, "image": os.environ.get("MPC_TEST_IMAGE")})
    if not args.image or not args.multi_image:
        options.error("set MPC_GOLANG_IMAGE and MPC_TEST_IMAGE (source the test env.sh)")
    print(f"image {args.image}; {args.repeat} rounds, medians; {machine()} at start", flush=True)
    saved = os.environ.get("MPC_CACHE_DIR")
    scratch = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=args.scratch_base))
    try:
        rows, notes = asyncio.run(measure(args, scratch))
    finally:
        remove_tree(scratch)
        if saved is None:
            os.environ.pop("MPC_CACHE_DIR", None)
        else:
            os.environ["MPC_CACHE_DIR"] = saved
    print()
    print_table(rows)
    for note in notes:
        print(f"- {note}")
    print(f"({machine()} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
