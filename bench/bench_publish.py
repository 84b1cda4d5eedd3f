"""Publish benchmark: pushing a 3-platform image index, against `skopeo copy --all`.

Run: .venv/bin/python bench/bench_publish.py [--rounds 7] [--megabytes 8] [--image IMG] [--quick]
(needs Docker with QEMU binfmt emulation and a registry on 127.0.0.1; the image defaults
to $MPC_TEST_IMAGE and the registry to $MPC_TEST_REGISTRY).

Every round makes three new variants (linux/amd64, linux/arm64, linux/s390x) of the image,
each with a new layer of --megabytes random bytes, and exports them once as an OCI layout
(which builds them: layers out of Docker, compressed). Then, timed: our publish of the
variants to a fresh repository, against `skopeo copy --all` of that layout (the same content)
to another fresh repository. Nobody has the new blobs yet, so both upload them; the base
layers both mount or skip. Then a re-publish of unchanged content (target: nothing
uploaded), and a publish to yet another repository, where we mount what we pushed before,
as skopeo's blob cache lets it do. Medians; targets print PASS or MISS, exit status 0.
--quick: one round of 1 MB layers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from common import machine, median, parse, parser, print_table, verdict

import mpcontainer_magics as mpc

THREE = ["linux/amd64", "linux/arm64", "linux/s390x"]
RATIO_TARGET = 1.0


def fresh(registry: str) -> str:
    return f"{registry}/bench/publish-{uuid.uuid4().hex[:10]}:v1"


def skopeo_copy(layout: Path, ref: str) -> None:
    command = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false"]
    subprocess.run([*command, f"oci:{layout}:v1", f"docker://{ref}"], check=True)


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {key: [] for key in ("ours", "peer", "again", "elsewhere")}
    found["again_bytes"] = []
    async with mpc.connect(engine="docker") as client:
        with tempfile.TemporaryDirectory() as scratch:
            for number in range(args.rounds):
                print(f"  round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
                # New random content every round: nobody has these blobs yet.
                seed = f"head -c {args.megabytes}000000 /dev/urandom > /payload-{number}"
                variants = [
                    client.container(platform=p).from_(args.image).with_exec(["sh", "-c", seed])
                    for p in THREE
                ]
                layout = Path(scratch) / f"layout-{number}"
                await client.export(layout, variants, tag="v1")  # builds the variants (untimed)
                started = time.perf_counter()
                ref = fresh(args.registry)
                first = await client.publish(ref, variants)
                found["ours"].append(time.perf_counter() - started)
                started = time.perf_counter()
                skopeo_copy(layout, fresh(args.registry))
                found["peer"].append(time.perf_counter() - started)
                started = time.perf_counter()
                second = await client.publish(ref, variants)
                found["again"].append(time.perf_counter() - started)
                found["again_bytes"].append(second.uploaded_bytes)
                if first.digest != second.digest:
                    raise SystemExit(f"publishing twice gave {first.digest}, {second.digest}")
                started = time.perf_counter()
                await client.publish(fresh(args.registry), variants)  # mounts, as skopeo would
                found["elsewhere"].append(time.perf_counter() - started)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=7)
    options.add_argument("--megabytes", type=int, default=8, help="new layer per platform")
    options.add_argument("--image", default=os.environ.get("MPC_TEST_IMAGE"))
    options.add_argument("--registry", default=os.environ.get("MPC_TEST_REGISTRY"))
    args = parse(options, argv, quick={"rounds": 1, "megabytes": 1})
    if not args.image or not args.registry:
        options.error("set MPC_TEST_IMAGE and MPC_TEST_REGISTRY (source the test env.sh)")
    print(f"image {args.image}; {args.rounds} rounds, medians; {machine()} at start", flush=True)
    found = asyncio.run(measure(args))
    med = {key: median(values) for key, values in found.items()}
    ratio = med["ours"] / med["peer"]
    uploaded = max(found["again_bytes"])
    print()
    print(f"3-platform index, {args.megabytes} MB of new layer per platform (medians):")
    print_table(
        [
            (
                "publish to a new repository (push)",
                f"{med['ours']:.2f} s",
                f"skopeo copy --all {med['peer']:.2f} s",
                f"ours/skopeo {ratio:.2f} (<= {RATIO_TARGET}) {verdict(ratio <= RATIO_TARGET)}",
            ),
            (
                "publish again, unchanged",
                f"{med['again']:.2f} s, {uploaded:.0f} B uploaded",
                "0 B uploaded",
                verdict(uploaded == 0),
            ),
            ("publish to another repository (mounts)", f"{med['elsewhere']:.2f} s", "", ""),
        ]
    )
    print(f"{machine()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
