"""Session benchmark: is a warm session cell faster than ``docker exec``?

Run: .venv/bin/python bench/bench_session.py [--rounds 30] [--warmup 3] [--image IMG] [--quick]
(needs a Docker engine with QEMU binfmt emulation; the image defaults to $MPC_TEST_IMAGE).

A session keeps one live container and shell per platform, so a warm cell is a write to
that shell's stdin; the peers start a process per command (``docker exec``).
This script starts sessions through the public API and through the ``%%container`` magic
in a real IPython shell, finds their containers, and interleaves rounds (in a shuffled order)
of: the ``docker exec`` CLI, a bare docker-py exec (what ``container.exec_run`` does), the
API's ``session.run`` (called through a loop thread of our own, as the magics do) and the
magic cell, all running ``true`` on the same containers; then cells of a 3-platform
session (amd64, arm64, s390x) against its one-platform cells. Every number is a median over
--rounds rounds (--quick: one round, no warm-up).
See bench/README.md for what each row means. Targets print PASS or MISS; the exit status is
0 either way (this is a measurement).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import (
    LoopThread,
    MagicShell,
    Row,
    machine,
    median,
    parse,
    parser,
    print_table,
    timed,
    verdict,
)

import mpcontainer_magics as mpc

ARM = "linux/arm64"
N3 = ["linux/amd64", "linux/arm64", "linux/s390x"]
RATIO_TARGET = 0.9  # warm session cell / `docker exec` CLI on the same container
OVERHEAD_TARGET_MS = 10.0  # warm session cell - bare docker-py exec of `true`, in ms
# "About the slowest platform, not the sum": the 3-platform cell over its slowest platform's
# cell, with the same bound as bench_fanout.py's fan-out target.
FANOUT_TARGET = 1.2
CELL = "true"


def in_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def container_id(frame: Any, name: str, platform: str) -> str:
    """The 12-character container prefix the sessions table shows for ``name`` on ``platform``."""
    found = frame[(frame["name"] == name) & (frame["platform"] == platform)]["container"]
    if len(found) != 1:
        raise SystemExit(f"the sessions table shows no {name} on {platform}:\n{frame}")
    return str(found.iloc[0])


class Peers:
    """What the session competes with, on one container: the Docker CLI and bare docker-py."""

    def __init__(self, api: Any, container: str) -> None:
        self.api = api
        self.cid = api.inspect_container(container)["Id"]

    def cli(self) -> float:
        """Wall seconds of ``docker exec CID true`` (the CLI, started with an argv list)."""
        argv = ["docker", "exec", self.cid, CELL]
        return timed(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=60))

    def docker_py(self) -> float:
        """Wall seconds of exec_create + exec_start + exec_inspect, as ``exec_run`` does."""

        def run() -> None:
            exec_id = self.api.exec_create(self.cid, [CELL])["Id"]
            self.api.exec_start(exec_id)
            if self.api.exec_inspect(exec_id)["ExitCode"] != 0:
                raise SystemExit("bare docker-py exec of true failed")

        return timed(run)


def cli_parallel(peers: Sequence[Peers]) -> float:
    """Wall seconds of one ``docker exec`` CLI per container, all started at once."""
    with ThreadPoolExecutor(len(peers)) as pool:
        return timed(lambda: list(pool.map(lambda p: p.cli(), peers)))


class ApiSessions:
    """Sessions started through the public API, driven from sync code through a loop thread."""

    def __init__(self, image: str) -> None:
        async def connect() -> mpc.Client:
            return await mpc.connect(engine="docker")

        self.bridge = LoopThread()
        self.client = self.bridge.run(connect())
        self.one = self.bridge.run(self.client.session("bench", platforms=ARM, image=image))
        self.three = self.bridge.run(self.client.session("bench3", platforms=N3, image=image))

    def sessions(self) -> Any:
        return self.bridge.run(self.client.sessions())

    def cell(self, session: mpc.Session, platforms: Sequence[str] | None = None) -> float:
        """Wall seconds of one cell, through the loop thread."""
        wanted = mpc.parse_platforms(list(platforms)) if platforms else None

        async def cell() -> None:
            result = await session.run(CELL, platforms=wanted)
            if not result.ok:
                raise SystemExit(f"a session cell failed: {result.results}")

        return timed(lambda: self.bridge.run(cell()))

    def close(self) -> None:
        try:
            self.bridge.run(self.client.aclose())  # stops the sessions too
        finally:
            self.bridge.close()


def steps(
    api: ApiSessions, shell: MagicShell, docker_api: Any, samples: dict[str, list[float]]
) -> list[Callable[[], None]]:
    """One round's measurements (each appends one sample), to be run in a shuffled order."""
    frame = api.sessions()
    on_api = Peers(docker_api, container_id(frame, "bench", ARM))
    on_magic = Peers(docker_api, container_id(shell.line("sessions"), "b", ARM))
    on3 = [Peers(docker_api, container_id(frame, "bench3", p)) for p in N3]

    def sample(key: str, measure: Callable[[], float]) -> Callable[[], None]:
        return lambda: samples[key].append(measure())

    def magic(key: str, session: str, platforms: Sequence[str]) -> Callable[[], None]:
        def run() -> None:
            wall, result = shell.cell(f"--session {session} --platform {','.join(platforms)}", CELL)
            samples[key].append(wall)
            samples[f"{key}:run"].append(result.wall_s)

        return run

    made = [
        sample("cli@api", on_api.cli),
        sample("py@api", on_api.docker_py),
        sample("api", lambda: api.cell(api.one)),
        sample("cli@magic", on_magic.cli),
        sample("py@magic", on_magic.docker_py),
        magic("magic", "b", [ARM]),
        sample("cli3:all", lambda: cli_parallel(on3)),
        sample("api3:all", lambda: api.cell(api.three, N3)),
        magic("magic3:all", "b3", N3),
    ]
    for platform, peer in zip(N3, on3, strict=True):
        made.append(sample(f"cli3:{platform}", peer.cli))
        made.append(sample(f"api3:{platform}", lambda p=platform: api.cell(api.three, [p])))
        made.append(magic(f"magic3:{platform}", "b3", [platform]))
    return made


def targets(samples: dict[str, list[float]]) -> list[Row]:
    med = {key: median(values) for key, values in samples.items()}

    def paired(ours: str, peer: str) -> float:
        return median([a - b for a, b in zip(samples[ours], samples[peer], strict=True)])

    rows: list[Row] = []
    for label, key in (("API", "api"), ("magic", "magic")):
        ratio = med[key] / med[f"cli@{key}"]
        rows.append(
            (
                f"{label} cell / docker exec CLI",
                f"{ratio:.2f}",
                f"<= {RATIO_TARGET:.2f}",
                verdict(ratio <= RATIO_TARGET),
            )
        )
        over = (med[key] - med[f"py@{key}"]) * 1000
        rows.append(
            (
                f"{label} cell - bare docker-py (ms)",
                f"{over:.1f} (paired {paired(key, f'py@{key}') * 1000:.1f})",
                f"<= {OVERHEAD_TARGET_MS:.0f}",
                verdict(over <= OVERHEAD_TARGET_MS),
            )
        )
    for label, key in (
        ("API 3-platform cell / slowest single", "api3"),
        ("magic 3-platform cell / slowest single", "magic3"),
        ("  peer: 3 parallel docker exec / slowest", "cli3"),
    ):
        singles = [med[f"{key}:{p}"] for p in N3]
        ratio = med[f"{key}:all"] / max(singles)
        judged = verdict(ratio <= FANOUT_TARGET) if key != "cli3" else "(what Docker allows)"
        rows.append(
            (
                label,
                f"{ratio:.2f} (the sum: {sum(singles) / max(singles):.2f})",
                f"<= {FANOUT_TARGET:.2f}",
                judged,
            )
        )
    return rows


def report(samples: dict[str, list[float]]) -> None:
    med = {key: median(values) for key, values in samples.items()}
    print()
    print(f"warm session cell: {CELL!r} on {ARM} (emulated), median ms")
    print_table(
        [
            ("docker exec CID true (CLI)", in_ms(med["cli@api"]), in_ms(med["cli@magic"])),
            ("bare docker-py exec (exec_run)", in_ms(med["py@api"]), in_ms(med["py@magic"])),
            ("session.run through a loop thread (API)", in_ms(med["api"]), "-"),
            ("%%container --session b (output captured)", "-", in_ms(med["magic"])),
            ("  of which session.run (RunResult.wall_s)", "-", in_ms(med["magic:run"])),
        ],
        ("measure", "API session", "magic session"),
    )
    print()
    print_table(targets(samples), ("target", "value", "target", "verdict"))
    print()
    print("3-platform session, cells on one platform and on all three (median ms):")
    print_table(
        [(p, *(in_ms(med[f"{k}:{p}"]) for k in ("api3", "magic3", "cli3"))) for p in [*N3, "all"]],
        ("platforms", "API", "magic", "CLI"),
    )
    print(
        f"(the 3-platform magic cell: session.run {in_ms(med['magic3:all:run'])} ms, the rest "
        "is the magic and its table; CLI 'all' = three `docker exec` started together)"
    )
    print(f"{machine()} at the end")


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=30, help="timed rounds (medians shown)")
    options.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    options.add_argument(
        "--image",
        default=os.environ.get("MPC_TEST_IMAGE") or os.environ.get("MPC_DEMO_IMAGE"),
        help="a multi-platform image with a POSIX sh (default: $MPC_TEST_IMAGE)",
    )
    args = parse(options, argv, quick={"rounds": 1, "warmup": 0})
    if args.warmup < 0:
        options.error("--warmup must be at least 0")
    if not args.image:
        options.error("give --image, or source /var/lib/mpcontainer-test/env.sh")
    import docker

    print(
        f"image {args.image}; {args.rounds} rounds after {args.warmup} warm-up rounds, medians; "
        f"{machine()} at start",
        flush=True,
    )
    os.environ["MPC_ENGINE"] = "docker"  # `docker exec` is what the session is compared with
    docker_api = docker.from_env().api
    samples: dict[str, list[float]] = defaultdict(list)
    api = shell = None
    try:
        # The extension first: its start-up reaps with engines of its own, and closing them
        # removes every container of this process (see mpcontainer_magics.client.reap_orphans).
        shell = MagicShell(args.image)
        api = ApiSessions(args.image)
        # The first cells start the magic's sessions (and pull): untimed.
        shell.cell(f"--session b --platform {ARM}", CELL)
        shell.cell(f"--session b3 --platform {','.join(N3)}", CELL)
        round_steps = steps(api, shell, docker_api, samples)
        shuffle = random.Random(20261127)
        for index in range(args.warmup + args.rounds):
            warm = index < args.warmup
            number = index + 1 if warm else index - args.warmup + 1
            print(f"  {'warm-up' if warm else 'round'} {number}", file=sys.stderr, flush=True)
            shuffle.shuffle(round_steps)
            for step in round_steps:
                step()
            if warm:
                samples.clear()
    finally:
        try:
            if shell is not None:
                shell.close()
        finally:
            try:
                if api is not None:
                    api.close()
            finally:
                docker_api.close()
    report(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
