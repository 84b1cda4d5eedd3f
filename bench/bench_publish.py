"""Publish benchmark: pushing a 3-platform image index, against `skopeo copy --all`.

Run: .venv/bin/python bench/bench_publish.py [--rounds 7] [--megabytes 8] [--image IMG]
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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import mpcontainer_magics as mpc

THREE = ["linux/amd64", "linux/arm64", "linux/s390x"]
RATIO_TARGET = 1.0


def fresh(registry: str) -> str:
    return f"{registry}/bench/publish-{uuid.uuid4().hex[:10]}:v1"


def skopeo_copy(layout: Path, ref: str) -> None:
    command = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false"]
    subprocess.run([*command, f"oci:{layout}:v1", f"docker://{ref}"], check=True)


async def main_async(args: argparse.Namespace) -> None:
    timings: dict[str, list[float]] = {"ours": [], "peer": [], "again": [], "elsewhere": []}
    again_bytes = []
    async with mpc.connect() as client:
        with tempfile.TemporaryDirectory() as scratch:
            for number in range(args.rounds):
                print(f"  round {number + 1}", flush=True)
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
                timings["ours"].append(time.perf_counter() - started)
                started = time.perf_counter()
                skopeo_copy(layout, fresh(args.registry))
                timings["peer"].append(time.perf_counter() - started)
                started = time.perf_counter()
                second = await client.publish(ref, variants)
                timings["again"].append(time.perf_counter() - started)
                again_bytes.append(second.uploaded_bytes)
                assert first.digest == second.digest
                started = time.perf_counter()
                await client.publish(fresh(args.registry), variants)  # mounts, as skopeo would
                timings["elsewhere"].append(time.perf_counter() - started)
    med = {key: statistics.median(values) for key, values in timings.items()}
    ratio = med["ours"] / med["peer"]
    print()
    print(f"3-platform index, {args.megabytes} MB of new layer per platform (medians):")
    print(f"  publish to a new repository (push)         {med['ours']:7.2f} s")
    print(f"  skopeo copy --all of the same content      {med['peer']:7.2f} s")
    print(
        f"  ratio ours / skopeo (target <= {RATIO_TARGET})        {ratio:7.2f}   "
        f"{'PASS' if ratio <= RATIO_TARGET else 'MISS'}"
    )
    print(
        f"  publish again, unchanged                   {med['again']:7.2f} s, "
        f"{max(again_bytes)} bytes uploaded   {'PASS' if max(again_bytes) == 0 else 'MISS'}"
    )
    print(f"  publish to another repository (mounts)     {med['elsewhere']:7.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--megabytes", type=int, default=8)
    parser.add_argument("--image", default=os.environ.get("MPC_TEST_IMAGE"))
    parser.add_argument("--registry", default=os.environ.get("MPC_TEST_REGISTRY"))
    args = parser.parse_args()
    if not args.image or not args.registry:
        parser.error("set MPC_TEST_IMAGE and MPC_TEST_REGISTRY (source the test env.sh)")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
