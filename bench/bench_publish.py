"""Publish benchmark: pushing a 3-platform image index, against `skopeo copy --all`.

Run: .venv/bin/python bench/bench_publish.py [--rounds 7] [--megabytes 8] [--image IMG]
(needs Docker with QEMU binfmt emulation and a registry on 127.0.0.1; the image defaults
to $MPC_TEST_IMAGE and the registry to $MPC_TEST_REGISTRY).

Three variants (linux/amd64, linux/arm64, linux/s390x) of the image, each with a layer of
--megabytes random bytes added by a `with_exec`, are published to a fresh repository every
round: our time includes exporting each variant's layers from Docker, compressing the new
ones and pushing. The peer copies the same content (exported once as an OCI layout) with
`skopeo copy --all` to a fresh repository. A second publish to the same repository shows
what a re-publish of unchanged content uploads (target: nothing). Medians; targets print
PASS or MISS, the exit status is 0 either way.
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


async def main_async(args: argparse.Namespace) -> None:
    async with mpc.connect() as client:
        variants = [
            client.container(platform=p)
            .from_(args.image)
            .with_exec(["sh", "-c", f"head -c {args.megabytes}000000 /dev/urandom > /payload"])
            for p in THREE
        ]
        print("building the variants (first evaluation, not timed)...", flush=True)
        await asyncio.gather(*(v.sync() for v in variants))
        with tempfile.TemporaryDirectory() as scratch:
            layout = Path(scratch) / "layout"
            await client.export(layout, variants, tag="v1")
            ours, peer, again, again_bytes = [], [], [], []
            for number in range(args.rounds):
                print(f"  round {number + 1}", flush=True)
                ref = fresh(args.registry)
                started = time.perf_counter()
                first = await client.publish(ref, variants)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                second = await client.publish(ref, variants)
                again.append(time.perf_counter() - started)
                again_bytes.append(second.uploaded_bytes)
                assert first.digest == second.digest
                started = time.perf_counter()
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--all",
                        "--dest-tls-verify=false",
                        f"oci:{layout}:v1",
                        f"docker://{fresh(args.registry)}",
                    ],
                    check=True,
                )
                peer.append(time.perf_counter() - started)
    ratio = statistics.median(ours) / statistics.median(peer)
    print()
    print(f"3-platform index, {args.megabytes} MB of new layer per platform (medians):")
    print(f"  publish (export layers, compress, push)    {statistics.median(ours):7.2f} s")
    print(f"  skopeo copy --all of the same content      {statistics.median(peer):7.2f} s")
    print(
        f"  ratio ours / skopeo (target <= {RATIO_TARGET})        {ratio:7.2f}   "
        f"{'PASS' if ratio <= RATIO_TARGET else 'MISS'}"
    )
    print(
        f"  publish again, unchanged                   {statistics.median(again):7.2f} s, "
        f"{max(again_bytes)} bytes uploaded   {'PASS' if max(again_bytes) == 0 else 'MISS'}"
    )


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
