"""Emulation benchmark: real distro workloads through our cells, against ``docker run``.

Run: .venv/bin/python bench/bench_emulation.py [--repeat 5] [--fib 35] [--loop 300000]
     [--shell-loop 100000] [--quick]
(needs the Docker engine with QEMU binfmt emulation, proot and qemu-user-static, and the
images .ci/distro_images builds: source /var/lib/mpcontainer-test/env.sh).

On both engines (Docker, embedded), every number a median of --repeat rounds:

1. ``fib-pac N`` on linux/arm64: a static program built with -mbranch-protection=standard,
   as Debian 13, Ubuntu and Fedora build their arm64 packages; ours ÷ ``docker run
   --platform linux/arm64 REPO@DIGEST fib-pac N``; target <= 0.3 (our cells run arm64
   under QEMU's CPU model max,pauth-impdef=on, Docker under its default, QARMA);
2. a Python loop of --loop iterations in Debian 13's python3 (arm64), the same way;
3. a dash loop of --shell-loop iterations on linux/s390x, ppc64le and arm/v7 (Debian 12):
   no model is set for those, so they must not be slower: ours ÷ docker run <= 1.05;
4. publishing a session again, unchanged, over the 420 MB gcc + python3 image (one
   platform): target <= 0.3 s and 0 bytes uploaded;
5. a warm one-off ``uname -m`` cell on five platforms of the Debian image: embedded ÷
   Docker <= 1.5.

--quick: one round of small sizes (fib 25, 20k and 5k iterations), every row still printed.
The embedded engine's cache is a new temporary directory, removed at the end. Targets
print PASS or MISS; the exit status is 0 either way. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import (
    MagicShell,
    Row,
    docker_pull_pinned,
    machine,
    median,
    parse,
    parser,
    print_table,
    timed,
    verdict,
)

import mpcontainer_magics as mpc

ENGINES = ("docker", "embedded")
PAC_TARGET = 0.3  # ours / docker run, arm64 code that authenticates pointers
OTHERS_TARGET = 1.05  # ours / docker run, platforms whose CPU model we leave alone
PUBLISH_TARGET_S = 0.3
WARM_TARGET = 1.5  # embedded / Docker, warm one-off cell on five platforms
FIVE = "linux/amd64,linux/arm64,linux/s390x,linux/ppc64le,linux/arm/v7"
OTHERS = ("linux/s390x", "linux/ppc64le", "linux/arm/v7")


def docker_run(pinned: str, platform: str, argv: Sequence[str]) -> float:
    """Wall seconds of ``docker run --rm --platform P REPO@DIGEST ARGV`` (the CLI)."""
    command = ["docker", "run", "--rm", "--platform", platform, pinned, *argv]
    return timed(lambda: subprocess.run(command, capture_output=True, check=True, timeout=600))


def pinned_for(image: str, platform: str) -> str:
    """``REPO@DIGEST`` of ``platform`` of ``image``, pulled into Docker for the peer."""

    async def digest() -> str:
        async with mpc.connect(engine="docker") as client:
            (pulled,) = await client.pull(image, platforms=platform)
            assert pulled.digest is not None
            return pulled.digest

    return docker_pull_pinned(image, asyncio.run(digest()))[0]


def workloads(args: argparse.Namespace) -> list[tuple[str, str, str, list[str], float]]:
    """(row, image, platform, argv, target): what runs in a cell and in ``docker run``."""
    python = f"i = 0\nwhile i < {args.loop}:\n    i += 1\n"
    dash = f"i=0; while [ $i -lt {args.shell_loop} ]; do i=$((i+1)); done"
    rows = [
        (f"fib-pac {args.fib}", args.trixie, "linux/arm64", ["fib-pac", str(args.fib)],
         PAC_TARGET),
        (f"python3.13 loop {args.loop}", args.trixie, "linux/arm64", ["python3", "-c", python],
         PAC_TARGET),
    ]  # fmt: skip
    for platform in OTHERS:
        name = f"dash loop {args.shell_loop}"
        rows.append((name, args.debian, platform, ["sh", "-c", dash], OTHERS_TARGET))
    return rows


def use(shell: MagicShell, engine: str, image: str) -> None:
    """Make ``shell``'s cells run ``image`` on ``engine`` (the client reconnects)."""
    shell.ip.run_line_magic("config", f"ContainerMagics.engine = {engine!r}")
    shell.image = image


def measure_workloads(shell: MagicShell, args: argparse.Namespace) -> list[Row]:
    """Each workload in our cell and in ``docker run``, round by round (the peer measured
    beside each engine's cells, so that the machine's load moves both alike)."""
    rows: list[Row] = []
    for name, image, platform, argv, target in workloads(args):
        pinned = pinned_for(image, platform)
        docker_run(pinned, platform, argv)  # untimed: the first start loads the image
        line, body = f"--platform {platform}", shlex.join(argv)
        for engine in ENGINES:
            use(shell, engine, image)
            shell.cell(line, body)  # untimed: pulls, proves the CPU model
            ours, peer = [], []
            for _ in range(args.repeat):
                peer.append(docker_run(pinned, platform, argv))
                ours.append(shell.cell(line, body)[0])
            ratio = median(ours) / median(peer)
            rows.append(
                (
                    f"{name} on {platform}, {engine}",
                    f"{median(ours):.2f} s",
                    f"docker run {median(peer):.2f} s; target <= {target}",
                    f"{ratio:.2f} {verdict(ratio <= target)}",
                )
            )
            print(" | ".join(rows[-1]), flush=True)
    return rows


def measure_publish(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for engine in ENGINES:

        async def publish_again(engine: str = engine) -> tuple[list[float], int]:
            ref = f"{args.registry}/bench/dev-session-{engine}:1"
            async with mpc.connect(engine=engine) as client:
                session = await client.session(
                    "bench", image=args.debian_dev, platforms="linux/arm64"
                )
                await session.run("echo built > /srv/out")
                await client.publish(ref, session)  # untimed: the first one
                times, uploaded = [], 0
                for _ in range(args.repeat):
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    published = await client.publish(ref, session)
                    times.append(loop.time() - started)
                    uploaded += published.uploaded_bytes
                return times, uploaded

        times, uploaded = asyncio.run(publish_again())
        took = median(times)
        ok = took <= PUBLISH_TARGET_S and uploaded == 0
        rows.append(
            (
                f"publish again, unchanged, over the gcc image, {engine}",
                f"{took:.3f} s, {uploaded} bytes uploaded",
                f"target <= {PUBLISH_TARGET_S} s, 0 bytes",
                verdict(ok),
            )
        )
        print(" | ".join(rows[-1]), flush=True)
    return rows


def measure_warm_cells(shell: MagicShell, args: argparse.Namespace) -> list[Row]:
    took = {}
    for engine in ENGINES:
        use(shell, engine, args.debian)
        shell.cell(f"--platform {FIVE}", "uname -m")  # untimed: pulls, first containers
        took[engine] = median(
            [shell.cell(f"--platform {FIVE}", "uname -m")[0] for _ in range(args.repeat)]
        )
    ratio = took["embedded"] / took["docker"]
    return [
        (
            "warm one-off cell, five platforms of Debian 12",
            f"embedded {took['embedded']:.2f} s",
            f"Docker {took['docker']:.2f} s; target <= {WARM_TARGET}",
            f"{ratio:.2f} {verdict(ratio <= WARM_TARGET)}",
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--repeat", type=int, default=5, help="rounds of each measure")
    options.add_argument("--fib", type=int, default=35, help="fib-pac's N")
    options.add_argument("--loop", type=int, default=300_000, help="Python loop iterations")
    options.add_argument("--shell-loop", type=int, default=100_000, help="dash loop iterations")
    options.add_argument("--debian", default=os.environ.get("MPC_TEST_DEBIAN_IMAGE"))
    options.add_argument("--debian-dev", default=os.environ.get("MPC_TEST_DEBIAN_DEV_IMAGE"))
    options.add_argument("--trixie", default=os.environ.get("MPC_TEST_TRIXIE_IMAGE"))
    options.add_argument("--registry", default=os.environ.get("MPC_TEST_REGISTRY"))
    quick = {"repeat": 1, "fib": 25, "loop": 20_000, "shell_loop": 5_000}
    args = parse(options, argv, quick)
    if not (args.debian and args.debian_dev and args.trixie and args.registry):
        options.error("source /var/lib/mpcontainer-test/env.sh (or give the images, registry)")
    print(f"images {args.debian}, {args.debian_dev}, {args.trixie}; {machine()} at start")
    cache = Path(tempfile.mkdtemp(prefix="bench-emulation-", dir="/var/tmp"))
    previous = os.environ.get("MPC_CACHE_DIR")
    os.environ["MPC_CACHE_DIR"] = str(cache)
    shell = MagicShell(args.debian)
    try:
        rows = measure_workloads(shell, args)
        rows += measure_publish(args)
        rows += measure_warm_cells(shell, args)
    finally:
        shell.close()
        if previous is None:
            os.environ.pop("MPC_CACHE_DIR", None)
        else:
            os.environ["MPC_CACHE_DIR"] = previous
        shutil.rmtree(cache, ignore_errors=True)
    print()
    print_table(rows)
    print(f"\n{machine()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
