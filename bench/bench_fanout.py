"""Fan-out benchmark: does an N-platform cell cost about as much as its slowest platform?

Run: .venv/bin/python bench/bench_fanout.py [--repeat 5] [--image IMG] [--quick]
(needs a Docker engine with QEMU binfmt emulation; the image defaults to $MPC_DEMO_IMAGE).

Every number is a median over --repeat repetitions, measured through the real
``%%container`` magic in an IPython shell (output captured), with the image pulled for
every platform first (warm images) and a fresh container per platform per cell (cold
containers). --quick: one repetition, no warm-up round. See bench/README.md for the rows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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

N3 = ["linux/amd64", "linux/arm64", "linux/s390x"]
N5 = [*N3, "linux/ppc64le", "linux/arm/v7"]
FANOUT_TARGET = 1.2  # N=3 cell wall / slowest single-platform cell wall
LOAD_TARGET = 0.15  # seconds for %load_ext mpcontainer_magics
# A command that waits (I/O, network, a 1 s sleep) rather than one that is all container
# start-up: shows the fan-out itself once 2 CPUs are not the bottleneck.
WAITING_CELL = "uname -m; sleep 1\n"

LOAD_EXT_CODE = """\
import time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t = time.perf_counter()
ip.run_line_magic("load_ext", "mpcontainer_magics")
print(time.perf_counter() - t)
"""
IMPORT_PANDAS_CODE = """\
import time
t = time.perf_counter()
import pandas
print(time.perf_counter() - t)
"""


def fresh_python(code: str) -> float:
    """Run ``code`` in a fresh interpreter; it prints one float (seconds)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.strip().splitlines()[-1])


def pinned_references(image: str, platforms: Sequence[str]) -> dict[str, str]:
    """platform -> ``repo@sha256:...`` of that platform's manifest, in Docker."""

    async def pull() -> list:
        async with mpc.connect(engine="docker") as client:
            return await client.pull(image, platforms=list(platforms))

    return {
        str(p.platform): docker_pull_pinned(image, p.digest)[0] if p.digest else p.image_id
        for p in asyncio.run(pull())
    }


def docker_cli(platform: str, reference: str) -> float:
    """Wall seconds of ``docker run --rm --platform P REF uname -m`` (the CLI, no shell)."""
    argv = ["docker", "run", "--rm", "--platform", platform, reference, "uname", "-m"]
    return timed(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=300))


def docker_cli_parallel(pinned: dict[str, str], platforms: Sequence[str]) -> float:
    """Wall seconds of one ``docker run`` per platform, all started at once."""
    with ThreadPoolExecutor(len(platforms)) as pool:
        return timed(lambda: list(pool.map(lambda p: docker_cli(p, pinned[p]), platforms)))


def cell(shell: MagicShell, platforms: Sequence[str], body: str = "uname -m\n") -> tuple:
    return shell.cell(f"--platform {','.join(platforms)}", body)


def measure(shell: MagicShell, pinned: dict[str, str], repeat: int) -> dict[str, list[float]]:
    """Samples, keyed "single:P", "run:P", "cli:P", "fan:N", "cli_fan:N", "client:N", ..."""
    found: dict[str, list[float]] = defaultdict(list)
    for rep in range(repeat):
        print(f"  repetition {rep + 1}/{repeat}", file=sys.stderr)
        for platform in N5:
            wall, result = cell(shell, [platform])
            found[f"single:{platform}"].append(wall)
            found[f"run:{platform}"].append(result[0].duration_s)
            found[f"cli:{platform}"].append(docker_cli(platform, pinned[platform]))
        for platforms in (N3, N5):
            n = len(platforms)
            wall, result = cell(shell, platforms)
            found[f"fan:{n}"].append(wall)
            found[f"cli_fan:{n}"].append(docker_cli_parallel(pinned, platforms))
            found[f"client:{n}"].append(result.wall_s)
            found[f"run:{n}"].append(max(r.duration_s for r in result))
        found["waiting_single"].append(max(cell(shell, [p], WAITING_CELL)[0] for p in N3))
        found["waiting_fan"].append(cell(shell, N3, WAITING_CELL)[0])
    return found


def rows(med: dict[str, float], load: float, pandas_s: float) -> list[Row]:
    table: list[Row] = []
    for p in N5:
        ours, cli = med[f"single:{p}"], med[f"cli:{p}"]
        table.append(
            (
                f"1-platform cell {p}",
                f"{ours:.3f} s",
                f"docker run {cli:.3f} s",
                f"{ours / cli:.2f}",
            )
        )
    for platforms in (N3, N5):
        n = len(platforms)
        slowest = max(platforms, key=lambda p: med[f"single:{p}"])
        ratio = med[f"fan:{n}"] / med[f"single:{slowest}"]
        target = f" (<= {FANOUT_TARGET}) {verdict(ratio <= FANOUT_TARGET)}" if n == 3 else ""
        table.append(
            (
                f"{n}-platform cell / slowest single",
                f"{med[f'fan:{n}']:.3f} s",
                f"{slowest} {med[f'single:{slowest}']:.3f} s",
                f"{ratio:.2f}{target}",
            )
        )
        cli_slowest = max(med[f"cli:{p}"] for p in platforms)
        table.append(
            (
                f"  peer: {n} parallel docker run / slowest",
                f"{med[f'cli_fan:{n}']:.3f} s",
                f"docker run {cli_slowest:.3f} s",
                f"{med[f'cli_fan:{n}'] / cli_slowest:.2f} (Docker CLI fan-out)",
            )
        )
    ours, base = med["waiting_fan"], med["waiting_single"]
    table.append(
        (
            "3-platform 'sleep 1' cell / slowest",
            f"{ours:.3f} s",
            f"slowest single {base:.3f} s",
            f"{ours / base:.2f}",
        )
    )
    table.append(
        (
            "%load_ext mpcontainer_magics",
            f"{load:.3f} s",
            f"< {LOAD_TARGET:.3f} s",
            f"{load / LOAD_TARGET:.2f} {verdict(load < LOAD_TARGET)}",
        )
    )
    table.append(
        (
            "  vs import pandas (fresh process)",
            f"{load:.3f} s",
            f"import pandas {pandas_s:.3f} s",
            f"{load / pandas_s:.2f}",
        )
    )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--repeat", type=int, default=5, help="repetitions (median is shown)")
    options.add_argument("--image", default=os.environ.get("MPC_DEMO_IMAGE", "alpine:3.23"))
    args = parse(options, argv, quick={"repeat": 1})
    print(f"image {args.image}; {args.repeat} repetitions, medians; {machine()} at start")
    os.environ["MPC_ENGINE"] = "docker"  # what `docker run` is compared with
    shell = MagicShell(args.image)
    try:
        shell.line(f"pull {args.image} --platform {','.join(N5)}")
        pinned = pinned_references(args.image, N5)
        if not args.quick:  # an untimed round: page caches, QEMU binaries, the daemon warm
            for platform in N5:
                cell(shell, [platform])
                docker_cli(platform, pinned[platform])
            cell(shell, N3)
            cell(shell, N5)
        samples = measure(shell, pinned, args.repeat)
    finally:
        shell.close()
    load = median([fresh_python(LOAD_EXT_CODE) for _ in range(args.repeat)])
    pandas_s = median([fresh_python(IMPORT_PANDAS_CODE) for _ in range(args.repeat)])

    med = {key: median(values) for key, values in samples.items()}
    print_table(rows(med, load, pandas_s), ("measure", "ours", "peer/target", "ratio"))
    print()
    print("where an N-platform cell's time goes (medians):")
    for platforms in (N3, N5):
        n = len(platforms)
        wall, client, run = med[f"fan:{n}"], med[f"client:{n}"], med[f"run:{n}"]
        alone = max(med[f"run:{p}"] for p in platforms)
        print(
            f"  N={n}: cell {wall:.3f} s = client.run {client:.3f} s + magic/table "
            f"{wall - client:.3f} s; client.run = slowest container start->exit {run:.3f} s "
            f"(alone: {alone:.3f} s) + create/remove/other {client - run:.3f} s"
        )
    print(f"{machine()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
