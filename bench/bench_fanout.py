"""Fan-out benchmark: does an N-platform cell cost about as much as its slowest platform?

Run: .venv/bin/python bench/bench_fanout.py [--repeat 5] [--image IMG]
(needs a Docker engine with QEMU binfmt emulation; the image defaults to $MPC_DEMO_IMAGE).

Every number is a median over --repeat repetitions, measured through the real
``%%container`` magic in an IPython InteractiveShell (output captured), with the image
pulled for every platform first (warm images) and a fresh container per platform per cell
(cold containers). See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from timing import median, timed

N3 = ["linux/amd64", "linux/arm64", "linux/s390x"]
N5 = [*N3, "linux/ppc64le", "linux/arm/v7"]
FANOUT_TARGET = 1.2  # N=3 cell wall / slowest single-platform cell wall
LOAD_TARGET = 0.15  # seconds for %load_ext mpcontainer_magics

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


WAITING_CELL = "uname -m; sleep 1\n"


def fresh_python(code: str) -> float:
    """Run ``code`` in a fresh interpreter; it prints one float (seconds)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.strip().splitlines()[-1])


class Shell:
    """An IPython InteractiveShell with the extension loaded; runs cells with output captured."""

    def __init__(self, image: str) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        self.image = image
        self.ip = InteractiveShell.instance()
        self.ip.run_line_magic("load_ext", "mpcontainer_magics")
        magics = self.ip.magics_manager.registry["ContainerMagics"]
        if magics.startup is not None:
            magics.startup.result(60)  # connected, orphans reaped: not part of any timing

    def magic(self, line: str, cell: str | None = None) -> object:
        from IPython.utils.capture import capture_output

        with capture_output() as captured:
            if cell is None:
                result = self.ip.run_line_magic("container", line)
            else:
                result = self.ip.run_cell_magic("container", line, cell)
        if "Error" in captured.stderr:
            raise SystemExit(f"%container {line} failed: {captured.stderr.strip()}")
        return result

    def cell(self, platforms: Sequence[str], body: str = "uname -m\n") -> tuple[float, object]:
        """Wall seconds of ``%%container --platform ...`` running ``body``, and its RunResult."""
        line = f"--platform {','.join(platforms)} --image {self.image} --out _bench"
        wall = timed(lambda: self.magic(line, body))
        result = self.ip.user_ns.pop("_bench")
        bad = [r for r in result if not r.ok]
        if bad:
            raise SystemExit(f"a cell failed: {bad}")
        return wall, result

    def pull(self, platforms: Sequence[str]) -> None:
        self.magic(f"pull {self.image} --platform {','.join(platforms)}")

    def close(self) -> None:
        self.ip.run_line_magic("unload_ext", "mpcontainer_magics")


def pinned_references(image: str, platforms: Sequence[str]) -> dict[str, str]:
    """platform -> ``repo@sha256:...`` of that platform's manifest (via the public API).

    The CLI peer runs by this pinned name: with a plain tag, Docker's classic image store
    holds one platform per tag, so ``docker run --platform P IMG:tag`` would re-pull whenever
    the tag last pointed at another platform, and the peer would not be warm.
    """
    import asyncio

    import mpcontainer_magics as mpc

    async def pull() -> list:
        async with mpc.connect() as client:
            return await client.pull(image, platforms=list(platforms))

    repo = image.split("@", 1)[0]
    if repo.rfind(":") > repo.rfind("/"):  # drop the tag, keep a registry's :port
        repo = repo[: repo.rfind(":")]
    return {
        str(p.platform): f"{repo}@{p.digest}" if p.digest else p.image_id
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median is shown)")
    parser.add_argument("--image", default=os.environ.get("MPC_DEMO_IMAGE", "alpine:3.16"))
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    print(
        f"image {args.image}; {args.repeat} repetitions, medians; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    shell = Shell(args.image)
    try:
        shell.pull(N5)
        pinned = pinned_references(args.image, N5)
        # One untimed round so page caches, QEMU binaries and the daemon are warm.
        for platform in N5:
            shell.cell([platform])
            docker_cli(platform, pinned[platform])
        shell.cell(N3)
        shell.cell(N5)

        single: dict[str, list[float]] = {p: [] for p in N5}
        single_run: dict[str, list[float]] = {p: [] for p in N5}
        peer: dict[str, list[float]] = {p: [] for p in N5}
        peer_fan: dict[int, list[float]] = {3: [], 5: []}
        fan: dict[int, list[float]] = {3: [], 5: []}
        client_wall: dict[int, list[float]] = {3: [], 5: []}
        run_s: dict[int, list[float]] = {3: [], 5: []}
        # A command that waits (I/O, network, a 1 s sleep) rather than one that is all
        # container start-up: shows the fan-out itself once 2 CPUs are not the bottleneck.
        waiting: dict[str, list[float]] = {"single": [], "fan": []}
        for rep in range(args.repeat):
            print(f"  repetition {rep + 1}/{args.repeat}", file=sys.stderr)
            for platform in N5:
                wall, result = shell.cell([platform])
                single[platform].append(wall)
                single_run[platform].append(result[0].duration_s)
                peer[platform].append(docker_cli(platform, pinned[platform]))
            for n, platforms in ((3, N3), (5, N5)):
                wall, result = shell.cell(platforms)
                fan[n].append(wall)
                peer_fan[n].append(docker_cli_parallel(pinned, platforms))
                client_wall[n].append(result.wall_s)
                run_s[n].append(max(r.duration_s for r in result))
            waiting["single"].append(max(shell.cell([p], WAITING_CELL)[0] for p in N3))
            waiting["fan"].append(shell.cell(N3, WAITING_CELL)[0])
    finally:
        shell.close()

    load = [fresh_python(LOAD_EXT_CODE) for _ in range(args.repeat)]
    pandas_s = [fresh_python(IMPORT_PANDAS_CODE) for _ in range(args.repeat)]

    rows: list[tuple[str, str, str, str]] = []
    for platform in N5:
        ours, theirs = median(single[platform]), median(peer[platform])
        rows.append(
            (
                f"1-platform cell {platform}",
                f"{ours:.3f} s",
                f"docker run {theirs:.3f} s",
                f"{ours / theirs:.2f}",
            )
        )
    for n, platforms in ((3, N3), (5, N5)):
        slowest = max(platforms, key=lambda p: median(single[p]))
        ours, base = median(fan[n]), median(single[slowest])
        ratio = ours / base
        verdict = ""
        if n == 3:
            ok = "ok" if ratio <= FANOUT_TARGET else "ABOVE TARGET"
            verdict = f"  target <= {FANOUT_TARGET:.2f}: {ok}"
        rows.append(
            (
                f"{n}-platform cell / slowest single",
                f"{ours:.3f} s",
                f"{slowest} {base:.3f} s",
                f"{ratio:.2f}{verdict}",
            )
        )
        cli_slowest = max(median(peer[p]) for p in platforms)
        cli_fan = median(peer_fan[n])
        rows.append(
            (
                f"  peer: {n} parallel docker run / slowest",
                f"{cli_fan:.3f} s",
                f"docker run {cli_slowest:.3f} s",
                f"{cli_fan / cli_slowest:.2f}  (Docker CLI fan-out)",
            )
        )
    ours, base = median(waiting["fan"]), median(waiting["single"])
    rows.append(
        (
            "3-platform 'sleep 1' cell / slowest",
            f"{ours:.3f} s",
            f"slowest single {base:.3f} s",
            f"{ours / base:.2f}",
        )
    )
    ours, pandas_med = median(load), median(pandas_s)
    ok = "ok" if ours < LOAD_TARGET else "ABOVE TARGET"
    rows.append(
        (
            "%load_ext mpcontainer_magics",
            f"{ours:.3f} s",
            f"target < {LOAD_TARGET:.3f} s",
            f"{ours / LOAD_TARGET:.2f}  {ok}",
        )
    )
    rows.append(
        (
            "  vs import pandas (fresh process)",
            f"{ours:.3f} s",
            f"import pandas {pandas_med:.3f} s",
            f"{ours / pandas_med:.2f}",
        )
    )

    header = ("measure", "ours", "peer/target", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if row is header:
            print("  ".join("-" * w for w in widths))

    print()
    print("where an N-platform cell's time goes (medians):")
    for n, platforms in ((3, N3), (5, N5)):
        cell, client, run = median(fan[n]), median(client_wall[n]), median(run_s[n])
        alone = max(median(single_run[p]) for p in platforms)
        print(
            f"  N={n}: cell {cell:.3f} s = client.run {client:.3f} s + magic/table "
            f"{cell - client:.3f} s; client.run = slowest container start->exit {run:.3f} s "
            f"(alone: {alone:.3f} s) + create/remove/other {client - run:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
