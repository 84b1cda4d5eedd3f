"""Probe benchmark: what learning a node's platforms costs (target: under 1 s a node).

Run: .venv/bin/python bench/bench_probe.py [--repeat 5] [--quick]
(needs a Docker engine; with QEMU binfmt emulation the probe finds the foreign platforms).

``engine.probe()`` runs a tiny program of each architecture on the engine (see
``mpcontainer_magics/engines/probe.py``). Timed, each a median of --repeat: a probe with its
image loaded already (what every new client of a node pays: the image is kept), a first
probe that loads the image too (once per node and version of the programs), and the way
daemons without a runner program (neither amd64 nor arm64) are probed: one container per
program, concurrently. The peer is one ``docker run --rm`` of one probe program (the CLI):
the cheapest single container. --quick: one repetition.
Targets print PASS or MISS; the exit status is 0 either way (this is a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence

from common import machine, median, parse, parser, print_table, timed, verdict

import mpcontainer_magics as mpc
from mpcontainer_magics.engines import probe
from mpcontainer_magics.engines.base import owner_labels
from mpcontainer_magics.engines.docker import DockerEngine

TARGET_S = 1.0  # a probe per node, image loaded


async def measure(args: argparse.Namespace) -> tuple[dict[str, list[float]], mpc.Platform]:
    """The probe's times, and the node's native platform."""
    found: dict[str, list[float]] = {"warm": [], "load": [], "each": []}
    async with mpc.connect(engine="docker") as client:
        engine = client.engine
        if not isinstance(engine, DockerEngine):
            raise SystemExit("the probe is the Docker engine's")
        image = probe.probe_image(await engine.native_platform())
        report = await engine.probe()  # untimed: the image is there from now on
        print(f"found: {', '.join(map(str, report.runs))}; amd64 level {report.amd64_level}")
        for number in range(args.repeat):
            print(f"  round {number + 1}/{args.repeat}", file=sys.stderr, flush=True)
            found["warm"].append((await engine.probe(refresh=True)).took_s)
            engine._api.remove_image(image.image_id, force=True)
            found["load"].append((await engine.probe(refresh=True)).took_s)
            started = time.perf_counter()
            await probe.exit_codes(
                engine._api, engine._docker, image.image_id, owner_labels(), None
            )
            found["each"].append(time.perf_counter() - started)
    return found, report.native


def docker_run(native: mpc.Platform) -> float:
    """Wall seconds of the CLI running the native probe program in a container of its own."""
    image = probe.probe_image(native).tag
    argv = ["docker", "run", "--rm", "--network", "none", image, f"/{native.architecture}"]
    return timed(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=60))


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--repeat", type=int, default=5)
    args = parse(options, argv, quick={"repeat": 1})
    print(f"{args.repeat} repetitions, medians; {machine()} at start", flush=True)
    found, native = asyncio.run(measure(args))
    peer = median([docker_run(native) for _ in range(args.repeat)])
    med = {key: median(values) for key, values in found.items()}
    count = len(probe.PROGRAMS)
    print()
    print(f"probing one node ({count} programs):")
    print_table(
        [
            (
                "probe, image there",
                f"{med['warm']:.2f} s",
                f"< {TARGET_S:.1f} s",
                f"{med['warm'] / TARGET_S:.2f} {verdict(med['warm'] < TARGET_S)}",
            ),
            ("probe, loading the image first", f"{med['load']:.2f} s", "", ""),
            (
                "one container per program (no runner)",
                f"{med['each']:.2f} s",
                f"{med['warm']:.2f} s (runner)",
                f"{med['each'] / med['warm']:.1f}",
            ),
            (
                "peer: docker run --rm of one program",
                f"{med['warm']:.2f} s",
                f"{peer:.2f} s",
                f"{med['warm'] / peer:.2f}",
            ),
        ]
    )
    print(f"{machine()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
