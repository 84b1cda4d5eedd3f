"""Nodes benchmark: what a cell spread over several Docker-API nodes costs, and an ssh node.

Run: .venv/bin/python bench/bench_nodes.py [--rounds 20] [--warmup 1] [--image IMG] [--quick]
(needs the extra nodes of .ci/nodes: source /var/lib/mpcontainer-test/env.sh, which sets
$MPC_TEST_NODE_* and the image, $MPC_TEST_IMAGE).

Three clients through the public API (``mpc.connect(nodes=...)``): one spreading a
3-platform ``uname -m`` cell over three nodes by claims (linux/arm64 on the Docker-context
node, linux/s390x on the TLS node, linux/amd64 on the local engine), one without nodes
running the same cell on the local engine alone, and one with the ssh node and the same
daemon reached directly through its unix socket. Timed in interleaved, shuffled rounds: the
spread cell, the one-node cell, the Docker CLI's ``docker -H ... run --rm`` on the same
nodes started together, a one-off cell on each way into the ssh node's daemon, and warm
session cells (``true``) on each. Then, once, each node's probe (``engine.probe``) and
connecting to every node. Every number is a median over --rounds rounds (--quick: one
round, no warm-up). Images are pulled on every node before anything is timed; the clients
(and their sessions) are closed at the end, also after an error, and the script checks that
no container of this process is left on any node.
See bench/README.md for what each row means. Targets print PASS or MISS; the exit status is
0 either way (this is a measurement).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from common import (
    LoopThread,
    Row,
    machine,
    median,
    ms,
    parse,
    parser,
    print_table,
    repository_of,
    run_quiet,
    timed,
    verdict,
)

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import LABEL_PID

AMD64, ARM64, S390X = "linux/amd64", "linux/arm64", "linux/s390x"
#: Where the spread cell's platforms go: the claims below put them there.
SPREAD = {AMD64: "local", ARM64: "ctx", S390X: "tls"}
PEER_TARGET = 1.1  # spread cell / the CLI's `docker run` on the same nodes, started together
SSH_WARM_TARGET_MS = 5.0  # warm session cell over ssh - the same over the daemon's socket
PROBE_TARGET_S = 1.0  # one node's probe
ONE_OFF = "uname -m"
WARM = "true"
WARM_PER_ROUND = 5  # warm cells are ~3 ms: several in a row a round on each way
STALL_S = 0.03  # a warm cell slower than this waited for something (see bench/README.md)
#: The ssh node and its daemon's own socket, as one-platform nodes of the third client.
OVER = {"ssh": "via ssh", "sock": "via its unix socket"}


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set: source /var/lib/mpcontainer-test/env.sh first")
    return value


@dataclass(frozen=True)
class Way:
    """One node: what connect(nodes=) is given, and the docker CLI argv reaching it."""

    spec: str | dict[str, Any]
    cli: tuple[str, ...]


def ways() -> dict[str, Way]:
    """Every node of this machine by name, "local" (the engine connect opens) included."""
    certs, tls = need("MPC_TEST_NODE_TLS_CERTS"), need("MPC_TEST_NODE_TLS")
    tls_flags = (
        "--tlsverify",
        f"--tlscacert={certs}/ca.pem",
        f"--tlscert={certs}/cert.pem",
        f"--tlskey={certs}/key.pem",
    )
    ctx, ssh = need("MPC_TEST_NODE_CTX"), need("MPC_TEST_NODE_SSH")
    podman = need("MPC_TEST_NODE_PODMAN")
    sock = f"unix://{need('MPC_TEST_NODE_SSH_SOCKET')}"
    local = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"  # as connect's
    return {
        "local": Way("", ("docker", "-H", local)),
        "ctx": Way({"endpoint": ctx, "platforms": [ARM64]}, ("docker", "--context", ctx)),
        "tls": Way(
            {"endpoint": tls, "tls": certs, "platforms": [S390X]},
            ("docker", *tls_flags, "-H", tls),
        ),
        "ssh": Way(ssh, ("docker", "-H", ssh)),
        "sock": Way(sock, ("docker", "-H", sock)),
        "podman": Way(podman, ("docker", "-H", podman)),
    }


def cli_run(way: Way, platform: str, reference: str) -> float:
    """Wall seconds of ``docker -H NODE run --rm --platform P REF uname -m`` (argv list)."""
    argv = [*way.cli, "run", "--rm", "--platform", platform, reference, *ONE_OFF.split()]
    return timed(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=300))


def cli_spread(nodes: dict[str, Way], pinned: dict[str, str]) -> float:
    """Wall seconds of one CLI ``docker run`` per platform on its node, all started at once."""
    with ThreadPoolExecutor(len(SPREAD)) as pool:
        jobs = [(nodes[n], p, pinned[p]) for p, n in SPREAD.items()]
        return timed(lambda: list(pool.map(lambda job: cli_run(*job), jobs)))


def pull_pinned(way: Way, reference: str) -> None:
    """``reference`` (REPO@DIGEST) in the node's image store, so the CLI peer is warm."""
    inspect = [*way.cli, "image", "inspect", reference]
    if subprocess.run(inspect, capture_output=True, timeout=120).returncode:
        run_quiet([*way.cli, "pull", "-q", reference])


def left_behind(nodes: dict[str, Way]) -> dict[str, list[str]]:
    """Containers this process made that a node still holds (there should be none)."""
    found = {}
    for name, way in nodes.items():
        argv = [*way.cli, "ps", "-aq", "--filter", f"label={LABEL_PID}={os.getpid()}"]
        ids = run_quiet(argv, text=True).stdout.split()
        if ids:
            found[name] = ids
    return found


class Clients:
    """The three clients, driven from sync code through a loop thread of our own."""

    def __init__(self, nodes: dict[str, Way], image: str) -> None:
        self.image = image
        self.bridge = LoopThread()
        self.opened: list[mpc.Client] = []
        self.spread = self._open({n: nodes[n].spec for n in ("ctx", "tls")})
        self.single = self._open({})  # no nodes: every platform on the local engine
        self.over = self._open({n: nodes[n].spec for n in OVER})
        self.sessions = {
            n: self.call(self.over.session(f"bench-{n}", platforms=f"{AMD64}@{n}", image=image))
            for n in OVER
        }

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.bridge.run(coro)

    def _open(self, nodes: dict[str, Any]) -> mpc.Client:
        # nodes={} (not None): MPC_NODES in the environment must not add nodes here.
        async def connect() -> mpc.Client:
            return await mpc.connect(engine="docker", nodes=nodes)

        client = self.call(connect())
        self.opened.append(client)
        down = [r for r in self.call(client.nodes()).rows if r["state"] != "reachable"]
        if down:
            raise SystemExit(f"node {down[0]['node']} does not answer: {down[0]['state']}")
        return client

    def run(self, client: mpc.Client, platforms: Sequence[str], node: str | None = None) -> Any:
        """One one-off cell; its result, checked (it ran, and where it should)."""
        result = self.call(
            client.run(ONE_OFF, image=self.image, platforms=list(platforms), node=node)
        )
        if not result.ok:
            raise SystemExit(f"a cell failed: {result.results}")
        return result

    def spread_cell(self) -> float:
        started = time.perf_counter()
        result = self.run(self.spread, list(SPREAD))
        wall = time.perf_counter() - started
        where = {str(r.platform): r.node for r in result}
        if where != SPREAD:
            raise SystemExit(f"the spread cell ran on {where}, not on {SPREAD}")
        return wall

    def single_cell(self) -> float:
        return timed(lambda: self.run(self.single, list(SPREAD)))

    def over_cell(self, node: str) -> float:
        def cell() -> None:
            if self.run(self.over, [AMD64], node=node)[0].node != node:
                raise SystemExit(f"a cell for node {node} ran elsewhere")

        return timed(cell)

    def warm_cell(self, node: str) -> float:
        async def cell() -> None:
            result = await self.sessions[node].run(WARM)
            if not result.ok or result[0].node != node:
                raise SystemExit(f"a session cell on {node} failed or ran elsewhere: {result}")

        return timed(lambda: self.call(cell()))

    def close(self) -> None:
        try:
            for client in self.opened:
                self.call(client.aclose())  # stops the sessions too
        finally:
            self.bridge.close()


def pinned_references(image: str) -> dict[str, str]:
    """platform -> ``REPO@DIGEST`` of that platform's manifest (what the CLI peer runs)."""

    async def pull() -> list:
        async with mpc.connect(engine="docker", nodes={}) as client:
            return await client.pull(image, platforms=list(SPREAD))

    return {str(p.platform): f"{repository_of(image)}@{p.digest}" for p in asyncio.run(pull())}


def warm_up(clients: Clients, nodes: dict[str, Way], pinned: dict[str, str]) -> None:
    """Untimed: every image on every node it runs from (ours and the CLI's), QEMU warm."""
    for platform, name in SPREAD.items():
        pull_pinned(nodes[name], pinned[platform])
    for name in OVER:
        pull_pinned(nodes[name], pinned[AMD64])
    clients.spread_cell()
    clients.single_cell()
    cli_spread(nodes, pinned)
    for name in OVER:
        clients.over_cell(name)
        clients.warm_cell(name)


def steps(
    clients: Clients, nodes: dict[str, Way], pinned: dict[str, str], samples: dict[str, list]
) -> list[Callable[[], None]]:
    """One round's measurements (each appends its samples), to be run in a shuffled order."""

    def sample(key: str, measure: Callable[[], float]) -> Callable[[], None]:
        return lambda: samples[key].append(measure())

    def warm_runs() -> None:
        # Cells in a row on one session, as a user runs them; which way goes first alternates.
        first = len(samples["warm:ssh"]) // WARM_PER_ROUND % 2
        for name in [*OVER][first:] + [*OVER][:first]:
            for _ in range(WARM_PER_ROUND):
                samples[f"warm:{name}"].append(clients.warm_cell(name))

    return [
        sample("spread", clients.spread_cell),
        sample("single", clients.single_cell),
        sample("cli", lambda: cli_spread(nodes, pinned)),
        *(sample(f"once:{n}", lambda n=n: clients.over_cell(n)) for n in OVER),
        warm_runs,
    ]


def rounds(
    clients: Clients, nodes: dict[str, Way], pinned: dict[str, str], warmup: int, count: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = defaultdict(list)
    round_steps = steps(clients, nodes, pinned, samples)
    shuffle = random.Random(20261201)
    for index in range(warmup + count):
        warm = index < warmup
        number = index + 1 if warm else index - warmup + 1
        print(f"  {'warm-up' if warm else 'round'} {number}", file=sys.stderr, flush=True)
        shuffle.shuffle(round_steps)
        for step in round_steps:
            step()
        if warm:
            samples.clear()
    return samples


def probes(nodes: dict[str, Way]) -> tuple[float, dict[str, float], str]:
    """Connecting to every node (probes included), each node's probe alone, the nodes table."""

    async def measure() -> tuple[float, dict[str, float], str]:
        others = {n: w.spec for n, w in nodes.items() if n not in ("local", "sock")}
        started = time.perf_counter()
        async with mpc.connect(engine="docker", nodes=others) as client:
            report = await client.nodes()
            connect_s = time.perf_counter() - started
            each = {}
            for name in (str(r["node"]) for r in report.rows):  # one at a time: alone on the CPUs
                engine = client.fleet.engine_of(name)
                probe = getattr(engine, "probe", None)
                if probe is None:
                    raise SystemExit(f"node {name} is not a Docker-API engine")
                started = time.perf_counter()
                await probe(refresh=True)
                each[name] = time.perf_counter() - started
            return connect_s, each, repr(report)

    return asyncio.run(measure())


def paired(samples: dict[str, list[float]], ours: str, peer: str) -> float:
    return median([a - b for a, b in zip(samples[ours], samples[peer], strict=True)])


def target_rows(
    samples: dict[str, list[float]], connect_s: float, probe_s: dict[str, float]
) -> list[Row]:
    med = {key: median(values) for key, values in samples.items()}
    spread, single, cli = med["spread"], med["single"], med["cli"]
    cpus = os.cpu_count()
    rows: list[Row] = [
        (
            "3-platform cell spread over 3 nodes / on one node",
            f"{spread:.3f} s",
            f"one node {single:.3f} s",
            f"{spread / single:.2f} (info: one machine, {cpus} CPUs: spreading cannot be faster)",
        ),
        (
            "spread cell / 3 parallel `docker -H NODE run --rm`",
            f"{spread:.3f} s",
            f"CLI {cli:.3f} s; <= {PEER_TARGET:.2f}",
            f"{spread / cli:.2f} {verdict(spread / cli <= PEER_TARGET)}",
        ),
    ]
    for label, key in (("one-off `uname -m` cell", "once"), ("warm session cell `true`", "warm")):
        ssh, sock = med[f"{key}:ssh"], med[f"{key}:sock"]
        added = (ssh - sock) * 1000
        added_paired = paired(samples, f"{key}:ssh", f"{key}:sock") * 1000
        judged = (
            f" (< {SSH_WARM_TARGET_MS:.0f} ms) {verdict(added < SSH_WARM_TARGET_MS)}"
            if key == "warm"
            else " (info)"
        )
        rows.append(
            (
                f"{label}: ssh - unix socket, same daemon",
                f"ssh {ssh * 1000:.1f} ms",
                f"socket {sock * 1000:.1f} ms",
                f"{added:+.1f} ms (paired {added_paired:+.1f}), ratio {ssh / sock:.2f}{judged}",
            )
        )
    for name, wall in probe_s.items():
        rows.append(
            (
                f"probe of node {name}, image there",
                f"{wall:.2f} s",
                f"< {PROBE_TARGET_S:.1f} s",
                f"{wall / PROBE_TARGET_S:.2f} {verdict(wall < PROBE_TARGET_S)}",
            )
        )
    rows.append(
        (
            f"connect + first nodes(), {len(probe_s) - 1} nodes at once",
            f"{connect_s:.2f} s",
            "(probes included)",
            "info",
        )
    )
    return rows


def spread_of(values: Sequence[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return " / ".join(f"{v * 1000:.1f}" for v in (ordered[0], median(ordered), p90, ordered[-1]))


def stalls(key: str, values: Sequence[float]) -> str:
    """How many warm cells waited (one-off cells all take longer than STALL_S)."""
    return str(sum(v > STALL_S for v in values)) if key.startswith("warm:") else "-"


def report(samples: dict[str, list[float]], connect_s: float, probe_s: dict[str, float]) -> None:
    print()
    print_table(target_rows(samples, connect_s, probe_s), ("row", "ours", "peer/target", "ratio"))
    print()
    print(f"every sample, ms: min / median / p90 / max; how many, how many over {ms(STALL_S)}")
    print_table(
        [
            (key, spread_of(values), str(len(values)), stalls(key, values))
            for key, values in sorted(samples.items())
        ],
        ("measure", "min / median / p90 / max", "n", f"> {ms(STALL_S)}"),
    )
    print(f"{machine()} at the end")


def main(argv: Sequence[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=20, help="timed rounds (medians shown)")
    options.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    options.add_argument(
        "--image",
        default=os.environ.get("MPC_TEST_IMAGE"),
        help="a multi-platform image with uname and a POSIX sh (default: $MPC_TEST_IMAGE)",
    )
    args = parse(options, argv, quick={"rounds": 1, "warmup": 0})
    if args.warmup < 0:
        options.error("--warmup must be at least 0")
    if not args.image:
        options.error("give --image, or source /var/lib/mpcontainer-test/env.sh")
    nodes = ways()
    print(
        f"image {args.image}; {args.rounds} rounds after {args.warmup} warm-up rounds, medians; "
        f"{machine()} at start",
        flush=True,
    )
    pinned = pinned_references(args.image)
    clients = None
    try:
        clients = Clients(nodes, args.image)
        warm_up(clients, nodes, pinned)
        samples = rounds(clients, nodes, pinned, args.warmup, args.rounds)
    finally:
        if clients is not None:
            clients.close()
    connect_s, probe_s, table = probes(nodes)
    print(table)
    leaked = left_behind(nodes)
    if leaked:
        raise SystemExit(f"containers of this process left behind: {leaked}")
    report(samples, connect_s, probe_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
