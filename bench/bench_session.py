"""Session benchmark: is a warm session cell faster than ``docker exec``?

Run: .venv/bin/python bench/bench_session.py [--rounds 30] [--warmup 3] [--image IMG]
(needs a Docker engine with QEMU binfmt emulation; the image defaults to $MPC_TEST_IMAGE).

A session keeps one live container and shell per platform, so a warm cell is a write to
that shell's stdin; the peers start a process per command (``docker exec``).
This script starts sessions through the public API and through the ``%%container`` magic
in a real IPython shell, finds their containers, and interleaves rounds (in a shuffled order)
of: the ``docker exec`` CLI, a bare docker-py exec (what ``container.exec_run`` does), the
API's ``session.run`` (called through a private loop thread, as the magics do) and the
magic cell, all running ``true`` on the same containers; then cells of a 3-platform
session (amd64, arm64, s390x) against its one-platform cells. Every number is a median over
--rounds rounds.
See bench/README.md for what each row means. Targets print PASS or MISS; the exit status is
0 either way (this is a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from timing import median, timed

T = TypeVar("T")

ARM = "linux/arm64"
N3 = ["linux/amd64", "linux/arm64", "linux/s390x"]
RATIO_TARGET = 0.9  # warm session cell / `docker exec` CLI on the same container
OVERHEAD_TARGET_MS = 10.0  # warm session cell - bare docker-py exec of `true`, in ms
# "About the slowest platform, not the sum": the 3-platform cell over its slowest platform's
# cell, with the same bound as bench_fanout.py's fan-out target.
FANOUT_TARGET = 1.2
CELL = "true"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def cli_parallel(peers: Sequence[Peers]) -> float:
    """Wall seconds of one ``docker exec`` CLI per container, all started at once."""
    with ThreadPoolExecutor(len(peers)) as pool:
        return timed(lambda: list(pool.map(lambda p: p.cli(), peers)))


class Peers:
    """What the session competes with, on one container: the Docker CLI and bare docker-py."""

    def __init__(self, api: Any, container_id: str) -> None:
        self.api = api
        self.cid = container_id

    def cli(self) -> float:
        """Wall seconds of ``docker exec CID true`` (the CLI, started with an argv list)."""
        argv = ["docker", "exec", self.cid, CELL]
        return timed(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=60))

    def docker_py(self, cmd: Sequence[str] = (CELL,)) -> float:
        """Wall seconds of exec_create + exec_start + exec_inspect, as ``exec_run`` does."""

        def run() -> None:
            exec_id = self.api.exec_create(self.cid, list(cmd))["Id"]
            self.api.exec_start(exec_id)
            if self.api.exec_inspect(exec_id)["ExitCode"] != 0:
                raise SystemExit(f"bare docker-py exec of {cmd} failed")

        return timed(run)


class ApiSessions:
    """Sessions started through the public API, driven through a private loop thread."""

    def __init__(self, image: str) -> None:
        from mpcontainer_magics._loop import LoopThread

        self.image = image
        self.bridge = LoopThread("bench-session-loop")
        self.client: Any = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.bridge.run(coro)

    def start(self) -> None:
        import mpcontainer_magics as mpc

        async def connect() -> Any:
            return await mpc.connect()

        self.client = self.run(connect())
        self.one = self.run(self.client.session("bench", platforms=ARM, image=self.image))
        self.three = self.run(self.client.session("bench3", platforms=N3, image=self.image))
        # The container the cells run in: the session's member for the platform, checked
        # against the 12-character prefix that `client.sessions()` shows.
        cid = self.one.member(ARM).container_id
        frame = self.run(self.client.sessions())
        listed = frame[(frame["name"] == "bench") & (frame["platform"] == ARM)]["container"]
        if list(listed) != [cid[:12]]:
            raise SystemExit(f"sessions() lists {list(listed)}, the session runs {cid[:12]}")
        self.container_id = cid

    def cell(self, session: Any, platforms: Sequence[str] | None = None) -> tuple[float, float]:
        """(wall seconds through the loop thread, seconds inside the loop) of one cell."""
        from mpcontainer_magics import parse_platforms

        wanted = parse_platforms(list(platforms)) if platforms else None

        async def cell() -> float:
            started = time.perf_counter()
            result = await session.run(CELL, platforms=wanted)
            inside = time.perf_counter() - started
            if not result.ok:
                raise SystemExit(f"a session cell failed: {result.results}")
            return inside

        started = time.perf_counter()
        inside = self.run(cell())
        return time.perf_counter() - started, inside

    def close(self) -> None:
        try:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.run(self.client.stop())
                self.run(self.client.aclose())
        finally:
            self.bridge.close()


class MagicShell:
    """A real IPython shell with the extension loaded: the user-facing cell."""

    def __init__(self, image: str) -> None:
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
        from IPython.testing.globalipapp import start_ipython

        self.image = image
        self.ip = start_ipython() or TerminalInteractiveShell.instance()
        self.loaded = False

    def load(self) -> None:
        self.ip.run_line_magic("load_ext", "mpcontainer_magics")
        self.loaded = True
        magics = self.ip.magics_manager.registry["ContainerMagics"]
        if magics.startup is not None:
            magics.startup.result(60)  # connected, orphans reaped: not part of any timing

    def cell(self, line: str) -> tuple[float, Any]:
        """Wall seconds of ``%%container LINE`` running ``true``, output captured; its result."""
        from IPython.utils.capture import capture_output

        full = f"{line} --image {self.image} --out _bench_session"
        with capture_output():
            started = time.perf_counter()
            self.ip.run_cell_magic("container", full, CELL)
            wall = time.perf_counter() - started
        result = self.ip.user_ns.pop("_bench_session")
        if not result.ok:
            raise SystemExit(f"%%container {full} failed: {result.results}")
        return wall, result

    def container_id(self, name: str, platform: str) -> str:
        """The 12-character container prefix that ``%container sessions`` shows."""
        from IPython.utils.capture import capture_output

        with capture_output():
            frame = self.ip.run_line_magic("container", "sessions")
        found = frame[(frame["name"] == name) & (frame["platform"] == platform)]["container"]
        if len(found) != 1:
            raise SystemExit(f"%container sessions shows no {name} on {platform}:\n{frame}")
        return str(found.iloc[0])

    def close(self) -> None:
        if self.loaded:
            self.loaded = False
            self.ip.run_line_magic("unload_ext", "mpcontainer_magics")


# -- the run ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (medians shown)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument(
        "--image",
        default=os.environ.get("MPC_TEST_IMAGE") or os.environ.get("MPC_DEMO_IMAGE"),
        help="a multi-platform image with a POSIX sh (default: $MPC_TEST_IMAGE)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1, --warmup at least 0")
    if not args.image:
        parser.error("give --image, or source /var/lib/mpcontainer-test/env.sh")

    import docker

    print(
        f"image {args.image}; {args.rounds} rounds after {args.warmup} warm-up rounds, medians; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    api = ApiSessions(args.image)
    shell = MagicShell(args.image)
    docker_api = docker.from_env().api
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        api.start()
        shell.load()
        # First cells start the magic's sessions (and pull): untimed.
        shell.cell(f"--session b --platform {ARM}")
        shell.cell(f"--session b3 --platform {','.join(N3)}")
        magic_cid = docker_api.inspect_container(shell.container_id("b", ARM))["Id"]
        on_api, on_magic = Peers(docker_api, api.container_id), Peers(docker_api, magic_cid)

        def api_cell() -> None:
            wall, inside = api.cell(api.one)
            samples["api"].append(wall)
            samples["api_inside"].append(inside)

        def magic_cell() -> None:
            wall, result = shell.cell(f"--session b --platform {ARM}")
            samples["magic"].append(wall)
            samples["magic_run"].append(result.wall_s)

        single: list[tuple[str, Callable[[], None]]] = [
            ("cli@api", lambda: samples["cli@api"].append(on_api.cli())),
            ("py@api", lambda: samples["py@api"].append(on_api.docker_py())),
            ("api", api_cell),
            ("cli@magic", lambda: samples["cli@magic"].append(on_magic.cli())),
            ("py@magic", lambda: samples["py@magic"].append(on_magic.docker_py())),
            ("magic", magic_cell),
        ]

        def fan_api(key: str, platforms: Sequence[str]) -> Callable[[], None]:
            return lambda: samples[key].append(api.cell(api.three, platforms)[0])

        def fan_magic(key: str, platforms: Sequence[str]) -> Callable[[], None]:
            def run() -> None:
                wall, result = shell.cell(f"--session b3 --platform {','.join(platforms)}")
                samples[key].append(wall)
                samples[f"{key}:run"].append(result.wall_s)

            return run

        # The Docker CLI on the API's 3-platform session: one platform, and all three at once.
        on3 = {p: Peers(docker_api, api.three.member(p).container_id) for p in N3}
        fan = [(f"cli3:{p}", lambda p=p: samples[f"cli3:{p}"].append(on3[p].cli())) for p in N3]
        fan.append(
            ("cli3:all", lambda: samples["cli3:all"].append(cli_parallel(list(on3.values()))))
        )
        fan += [(f"api3:{p}", fan_api(f"api3:{p}", [p])) for p in N3]
        fan += [(f"magic3:{p}", fan_magic(f"magic3:{p}", [p])) for p in N3]
        fan += [("api3:all", fan_api("api3:all", N3)), ("magic3:all", fan_magic("magic3:all", N3))]

        shuffle = random.Random(20261127)
        for index in range(args.warmup + args.rounds):
            warm = index < args.warmup
            what = "warm-up" if warm else "round"
            number = index + 1 if warm else index - args.warmup + 1
            print(f"  {what} {number}", file=sys.stderr, flush=True)
            steps = single + fan
            shuffle.shuffle(steps)
            for _, step in steps:
                step()
            if warm:
                samples.clear()
    finally:
        try:
            shell.close()
        finally:
            try:
                api.close()
            finally:
                docker_api.close()

    med = {key: median(values) for key, values in samples.items()}

    def paired(ours: str, peer: str) -> float:
        return median([a - b for a, b in zip(samples[ours], samples[peer], strict=True)])

    print()
    print(f"warm session cell: {CELL!r} on {ARM} (emulated), median ms")
    print(f"  {'measure':<48} {'API session':>12} {'magic session':>14}")
    rows = [
        ("docker exec CID true (CLI)", ms(med["cli@api"]), ms(med["cli@magic"])),
        ("bare docker-py exec (exec_run)", ms(med["py@api"]), ms(med["py@magic"])),
        ("session.run via LoopThread (API)", ms(med["api"]), "-"),
        ("  of which inside the event loop", ms(med["api_inside"]), "-"),
        ("%%container --session b (magic, output captured)", "-", ms(med["magic"])),
        ("  of which session.run (RunResult.wall_s)", "-", ms(med["magic_run"])),
    ]
    for label, a, m in rows:
        print(f"  {label:<48} {a:>12} {m:>14}")

    print()
    targets: list[tuple[str, str, str, str]] = []
    for label, ours, on in (("API", "api", "api"), ("magic", "magic", "magic")):
        ratio = med[ours] / med[f"cli@{on}"]
        targets.append(
            (
                f"{label} cell / docker exec CLI",
                f"{ratio:.2f}",
                f"<= {RATIO_TARGET:.2f}",
                verdict(ratio <= RATIO_TARGET),
            )
        )
        over = (med[ours] - med[f"py@{on}"]) * 1000
        targets.append(
            (
                f"{label} cell - bare docker-py (ms)",
                f"{over:.1f} (paired {paired(ours, f'py@{on}') * 1000:.1f})",
                f"<= {OVERHEAD_TARGET_MS:.0f}",
                verdict(over <= OVERHEAD_TARGET_MS),
            )
        )
    fanned = (
        ("API 3-platform cell / slowest single", "api3"),
        ("magic 3-platform cell / slowest single", "magic3"),
        ("  peer: 3 parallel docker exec / slowest", "cli3"),
    )
    for label, key in fanned:
        singles = [med[f"{key}:{p}"] for p in N3]
        ratio = med[f"{key}:all"] / max(singles)
        targets.append(
            (
                label,
                f"{ratio:.2f} (the sum: {sum(singles) / max(singles):.2f})",
                f"<= {FANOUT_TARGET:.2f}",
                verdict(ratio <= FANOUT_TARGET) if key != "cli3" else "(what Docker allows)",
            )
        )
    header = ("target", "value", "target", "verdict")
    widths = [max(len(r[i]) for r in [header, *targets]) for i in range(4)]
    for row in [header, *targets]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if row is header:
            print("  " + "  ".join("-" * w for w in widths))

    print()
    print("3-platform session, cells on one platform and on all three (median ms):")
    print(f"  {'platforms':<14} {'API':>7} {'magic':>7} {'CLI':>7}")
    for p in [*N3, "all"]:
        keys = ("api3", "magic3", "cli3")
        print(f"  {p:<14} " + " ".join(f"{ms(med[f'{k}:{p}']):>7}" for k in keys))
    print(
        f"  (the 3-platform magic cell: session.run {ms(med['magic3:all:run'])} ms, the rest "
        "is the magic and its table; CLI 'all' = three `docker exec` started together)"
    )
    print()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
