"""A fleet: the local engine and named Docker-API nodes, each platform placed where it runs best.

    fleet = Fleet(local_engine)
    await fleet.add(Node("arm", "ssh://me@pi.local", platforms=["linux/arm64"]))
    [p.node for p in await fleet.place(parse_platforms("linux/amd64,linux/arm64"))]
    # ["local", "arm"]

Placement, for each platform (as buildx places a build's platforms on a builder's nodes):

1. a node pinned for it (``linux/arm64@arm``, or ``--node`` for a whole cell);
2. a node that claims it (``Node(platforms=...)``, ``%container node add … --platform``);
3. a node whose native platform runs it (its own architecture, or one its kernel runs);
4. a node that emulates it, the local one first;

among equal candidates the least used so far, so five platforms spread over the nodes
instead of piling on one. A node that does not answer is skipped, and the platform's
``why`` says so; a platform nothing runs is placed nowhere, with what would make it run.

The fleet is an :class:`.Engine` itself: what the builders, sessions and runs do with an
engine they do with it, and it hands each call to the node that holds the container or
image in question. ``on(name)`` is the same fleet with every new image made on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._aio import finish_despite_cancel
from ..errors import EngineError, EngineUnavailable, InvalidArgument, MPCError
from ..platforms import Matcher, Platform
from .base import (
    AttachedProcess,
    ContainerSpec,
    Engine,
    ExecOutcome,
    ImageConfig,
    OutputCallback,
    ProgressCallback,
    PulledImage,
)
from .endpoints import CONNECT_TIMEOUT_S, LOCAL, Connection, Node, open_connection

if TYPE_CHECKING:
    import pandas as pd

    from ..registry import RegistryClient

log = logging.getLogger(__name__)

#: An unreachable node is tried again at most this often when placing (seconds): a cell
#: must not wait a connect timeout for a node that was down a moment ago.
RETRY_UNREACHABLE_S = 30.0

#: A node seen answering this recently is not pinged again before placing (seconds).
RECHECK_S = 1.0
#: How long removing what we made on a node may take before we give up on it (a node that
#: died meanwhile); what is left is removed when it answers again.
CLOSE_TIMEOUT_S = 30.0

How = Literal["native", "emulated", "no"]

#: What ``connect(nodes=)`` takes: name -> endpoint (or settings), or a list of Nodes.
NodesSpec = Mapping[str, "str | Mapping[str, object]"] | Sequence[Node] | str

NODE_COLUMNS = [
    "node", "endpoint", "engine", "native", "emulated", "claimed", "state", "latency_ms",
]  # fmt: skip


@dataclass(frozen=True)
class Placement:
    """Where one platform runs (``node``) and how; ``node`` is "" when nowhere."""

    platform: Platform
    node: str
    runs: How
    why: str
    fallback: str = ""  # why it is not where it would have gone (a node is unreachable)


@dataclass
class Member:
    """A node of the fleet as last seen: its engine when it answers, else why not."""

    name: str
    endpoint: str
    claimed: tuple[Platform, ...] = ()
    engine: Engine | None = None
    connection: Connection | None = None
    error: str | None = None
    checked_at: float = 0.0
    native: Platform | None = None
    emulated: tuple[Platform, ...] = ()
    version: str = ""
    latency_s: float | None = None
    amd64_level: int | None = None  # x86-64 micro-architecture level, when probed
    arm32: bool = False  # an arm64 CPU that runs 32-bit arm code (its probe says)
    node: Node | None = field(default=None, repr=False)  # how to reach it (None: local)
    #: Engine objects of earlier connections, whose containers a lost node may still hold.
    lost: list[str] = field(default_factory=list, repr=False)
    #: Containers that could not be removed while the node was away.
    unremoved: set[str] = field(default_factory=set, repr=False)

    @property
    def reachable(self) -> bool:
        return self.engine is not None and self.error is None

    def runs_natively(self, platform: Platform) -> bool:
        """containerd's rules (``platforms.Only``) for this node's CPU: what its probe
        found (amd64 level, 32-bit arm mode) bounds the variants; unprobed, any variant of
        its own architecture counts."""
        if self.native is None or platform.os != "linux":
            return False
        host = self.native
        if host.architecture == "amd64" and self.amd64_level is None:
            host = replace(host, variant="v4")  # level unknown: do not refuse on a guess
        elif host.architecture == "amd64" and self.amd64_level > 1:
            host = replace(host, variant=f"v{self.amd64_level}")
        return Matcher.only(host, arm32=self.arm32).match(platform)

    def emulates(self, platform: Platform) -> bool:
        return any(platform.matches(p) for p in self.emulated)


@dataclass(frozen=True, repr=False)
class NodesReport:
    """The nodes as ``%container nodes`` shows them, as they were when it was made;
    ``.to_frame()`` for a DataFrame."""

    rows: tuple[dict[str, object], ...]

    @classmethod
    def of(cls, members: Sequence[Member]) -> NodesReport:
        return cls(tuple(_row(m) for m in members))

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=NODE_COLUMNS)

    def __repr__(self) -> str:
        return "\n".join(
            f"{r['node']}: {r['endpoint']}, {r['engine'] or '?'}, native {r['native'] or '?'}, "
            f"{r['state']}"
            for r in self.rows
        )


def _row(m: Member) -> dict[str, object]:
    return {
        "node": m.name,
        "endpoint": m.endpoint,
        "engine": m.version,
        "native": str(m.native or ""),
        "emulated": ", ".join(map(str, m.emulated)),
        "claimed": ", ".join(map(str, m.claimed)),
        "state": "reachable" if m.reachable else f"unreachable: {m.error or 'closed'}",
        "latency_ms": None if m.latency_s is None else round(m.latency_s * 1000, 1),
    }


class Fleet(Engine):
    """The local engine plus nodes; see the module's docstring."""

    name = "fleet"

    def __init__(
        self,
        local: Engine,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.local = local
        self.registry: RegistryClient = local.registry
        self.cpu_models = local.cpu_models  # one choice for every node
        self.chosen = local.chosen
        self.connect_timeout = connect_timeout
        self._members: dict[str, Member] = {LOCAL: Member(LOCAL, local.name, engine=local)}
        self._containers: dict[str, str] = {}  # container ID -> node holding it
        self._pin: str | None = None
        self._copied_mounts_to: set[str] = set()  # nodes told that mounts are copies
        self._notes: list[str] = []  # made here, so that views made by on() share it

    # -- nodes -------------------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return list(self._members.values())

    @property
    def has_nodes(self) -> bool:
        return len(self._members) > 1

    def member(self, name: str) -> Member:
        try:
            return self._members[name]
        except KeyError:
            known = ", ".join(self._members)
            raise InvalidArgument(
                f"no node named {name!r} (nodes: {known}); add it with "
                f"`%container node add {name} ENDPOINT` or client.add_node()"
            ) from None

    async def add(self, node: Node) -> Member:
        """Add ``node`` (replacing one of the same name) and connect to it; a node that does
        not answer is added all the same, marked unreachable with the reason."""
        if node.name in self._members:
            await self.remove_node(node.name)
        member = Member(node.name, node.endpoint, node.platforms, node=node)
        self._members[node.name] = member
        await self._connect(member, node)
        return member

    async def remove_node(self, name: str) -> None:
        """Forget a node, removing what this client made there first."""
        if name == LOCAL:
            raise InvalidArgument("the local engine cannot be removed; it is always a node")
        member = self.member(name)
        del self._members[name]
        for container_id in [c for c, n in self._containers.items() if n == name]:
            del self._containers[container_id]  # in place: views made by on() share it
        await self._disconnect(member)

    async def refresh(self, *, probe: bool = True) -> None:
        """Reconnect unreachable nodes, check the others still answer, re-read what they run."""
        await asyncio.gather(*(self._check(m, force=True) for m in self.members))
        stale = [m for m in self.members if m.reachable and (probe or m.native is None)]
        await asyncio.gather(*(self._learn(m, probe_again=probe) for m in stale))

    async def known(self) -> list[Member]:
        """The members, each reachable one's platforms read (once)."""
        unknown = [m for m in self.members if m.reachable and m.native is None]
        await asyncio.gather(*(self._learn(m) for m in unknown))
        return self.members

    async def _connect(self, member: Member, node: Node) -> None:
        from .docker import DockerEngine

        member.checked_at = time.monotonic()
        try:
            connection = await asyncio.wait_for(
                asyncio.to_thread(open_connection, node, self.connect_timeout),
                self.connect_timeout + 5,  # ssh's own timeout is the connect timeout
            )
        except (EngineUnavailable, asyncio.TimeoutError) as exc:
            member.error = str(exc) or "no answer in time"
            return
        from ..registry import RegistryClient

        member.connection = connection
        member.engine = DockerEngine(
            connection.api,
            # The local engine's registry settings as they are now; the node adds its
            # daemon's own mirrors.
            RegistryClient(
                insecure_registries=self.registry.insecure_registries,
                registry_mirrors=self.registry.registry_mirrors,
            ),
            node.endpoint,
            remote=connection.tunnel is not None,
        )
        member.engine.cpu_models = self.cpu_models
        member.engine.resolve_from = self.local.resolve_from
        member.error = None
        await self._learn(member)
        if member.reachable:
            await self._reap(member)

    async def _learn(self, member: Member, *, probe_again: bool = False) -> None:
        """What the node runs (its probe, on Docker-API engines), its version and round-trip
        time (one call)."""
        engine = member.engine
        assert engine is not None
        try:
            started = time.perf_counter()
            member.version = await engine.version()
            member.latency_s = time.perf_counter() - started
            member.native = await engine.native_platform()
            probe = getattr(engine, "probe", None)
            if probe is not None:  # what its CPU runs itself: amd64 level, 32-bit arm
                report = await probe(refresh=probe_again)
                member.amd64_level, member.arm32 = report.amd64_level, bool(report.arm32)
            foreign = await engine.emulated_platforms()
            member.emulated = tuple(p for p in foreign if not member.runs_natively(p))
        except EngineError as exc:
            member.error = str(exc)

    async def _reap(self, member: Member) -> None:
        """What dead kernels left there, and what this one lost when the node went away."""
        engine = member.engine
        assert engine is not None
        try:
            await engine.reap_orphans()
            remove_made_by = getattr(engine, "remove_made_by", None)
            while member.lost and remove_made_by is not None:
                await remove_made_by(member.lost[-1])
                member.lost.pop()
        except MPCError as exc:
            log.warning("could not reap what dead kernels left on node %s: %s", member.name, exc)

    async def _check(self, member: Member, *, force: bool = False) -> None:
        """Is the node still there? An unreachable one is tried again now and then."""
        if member.name == LOCAL:
            return
        if member.reachable:
            if not force and time.monotonic() - member.checked_at < RECHECK_S:
                return  # seen a moment ago: cells in a row pay no round trip
            ping = getattr(member.engine, "ping", member.engine.version)  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(ping(), self.connect_timeout)
                member.checked_at = time.monotonic()
                await self._remove_unremoved(member)
                return
            except (EngineError, asyncio.TimeoutError) as exc:
                member.error = str(exc) or "no answer in time"
                member.checked_at = time.monotonic()
                await self._disconnect(member)
                if not force:
                    return
        if member.node and (force or time.monotonic() - member.checked_at > RETRY_UNREACHABLE_S):
            await self._connect(member, member.node)

    async def _remove_unremoved(self, member: Member) -> None:
        assert member.engine is not None
        for container_id in list(member.unremoved):
            with contextlib.suppress(EngineError):
                await member.engine.remove(container_id)
                member.unremoved.discard(container_id)

    async def _disconnect(self, member: Member) -> None:
        engine, connection = member.engine, member.connection
        member.engine = member.connection = None
        if engine is not None and hasattr(engine, "instance"):
            member.lost.append(engine.instance)  # cleared once a reconnect finds them gone
        if engine is not None:
            try:
                await asyncio.wait_for(engine.aclose(), CLOSE_TIMEOUT_S)
            except (MPCError, asyncio.TimeoutError) as exc:
                log.warning("could not clean up on node %s: %s", member.name, exc)
        if connection is not None:
            await asyncio.to_thread(connection.close)

    # -- placement ---------------------------------------------------------------------------

    async def place(
        self,
        platforms: Sequence[Platform],
        *,
        node: str | None = None,
        pins: Mapping[Platform, str] | None = None,
    ) -> list[Placement]:
        """Where each platform runs: ``node`` for all of them, ``pins`` per platform, else
        by the rules in the module's docstring. Nodes are checked first (concurrently)."""
        pins = dict(pins or {})
        for name in {node, *pins.values()} - {None}:
            self.member(name)  # type: ignore[arg-type]  # a typo is an error, at once
        await asyncio.gather(*(self._check(m) for m in self.members))
        await self.known()
        load: dict[str, int] = {}
        placed = []
        for platform in platforms:
            pinned = pins.get(platform, node)
            where = self._pinned(platform, pinned) if pinned else self._best(platform, load)
            if where.node:
                load[where.node] = load.get(where.node, 0) + 1
            placed.append(where)
        return placed

    def _pinned(self, platform: Platform, name: str) -> Placement:
        member = self._members[name]
        if not member.reachable:
            return Placement(platform, "", "no", f"node {name} is unreachable ({member.error})")
        how = self._how(member, platform)
        if how is None:
            return Placement(
                platform, "", "no", f"node {name} ({member.native}) neither runs nor emulates it"
            )
        return how

    def _best(self, platform: Platform, load: Mapping[str, int]) -> Placement:
        if platform.os != "linux":
            return Placement(platform, "", "no", "only Linux platforms run commands")
        down = [m for m in self.members if not m.reachable]
        up = [m for m in self.members if m.reachable]
        tiers = [
            [m for m in up if any(platform.matches(c) for c in m.claimed)],
            [m for m in up if m.runs_natively(platform)],
            [m for m in up if m.emulates(platform) and m.name == LOCAL],
            [m for m in up if m.emulates(platform)],
        ]
        skipped = [m for m in down if any(platform.matches(c) for c in m.claimed)]
        note = "".join(f"; node {m.name} is unreachable ({m.error})" for m in skipped)
        for tier in tiers:
            if tier:
                # Least used first; ties keep the fleet's order (local, then as added).
                chosen = min(tier, key=lambda m: load.get(m.name, 0))
                how = self._how(chosen, platform)
                assert how is not None
                return replace(how, fallback=note.removeprefix("; "))
        return Placement(
            platform,
            "",
            "no",
            f"no node runs or emulates {platform}{note}: add a node whose CPU is "
            f"{platform.architecture} (%container node add NAME ENDPOINT), or install "
            "qemu-user-static and register its binfmt handlers on one",
        )

    def _how(self, member: Member, platform: Platform) -> Placement | None:
        where = "here" if member.name == LOCAL else f"on node {member.name}"
        if member.runs_natively(platform):
            return Placement(platform, member.name, "native", f"runs natively {where}")
        if member.emulates(platform):
            return Placement(platform, member.name, "emulated", f"runs under QEMU {where}")
        if any(platform.matches(c) for c in member.claimed):
            # Claimed but not what its probe found: trust the user, as buildx does.
            return Placement(platform, member.name, "native", f"claimed by node {member.name}")
        return None

    def on(self, name: str) -> Fleet:
        """This fleet with every new image (pulls, directories) made on node ``name``."""
        engine = self._engine(name)
        pinned = copy.copy(self)
        pinned._pin = name
        pinned.name = engine.name  # type: ignore[misc]  # what results call its engine
        return pinned

    # -- dispatch: each call goes to the node holding what it names ---------------------------

    def engine_of(self, name: str) -> Engine:
        """The engine of node ``name``; EngineUnavailable when it does not answer."""
        return self._engine(name)

    def _engine(self, name: str) -> Engine:
        member = self.member(name)
        if member.engine is None:
            raise EngineUnavailable(f"node {name} is unreachable ({member.error})")
        return member.engine

    def _of_image(self, image: PulledImage) -> Engine:
        return self._engine(image.node or LOCAL)

    def _of_container(self, container_id: str) -> Engine:
        return self._engine(self._containers.get(container_id, LOCAL))

    def _tagged(self, image: PulledImage, node: str) -> PulledImage:
        return replace(image, node=node)

    async def _target(self, platform: Platform) -> str:
        if self._pin is not None:
            return self._pin
        if platform.os != "linux":
            return LOCAL  # files only: the local engine reads them from the registry
        (where,) = await self.place([platform])
        if not where.node:
            raise EngineError(f"cannot run {platform}: {where.why}")
        return where.node

    async def image_platforms(self, reference: str) -> list[Platform]:
        return await self.local.image_platforms(reference)

    async def pull(
        self,
        reference: str,
        platform: Platform,
        *,
        refresh: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
        node = await self._target(platform)
        engine = self._engine(node)
        image = await engine.pull(reference, platform, refresh=refresh, on_progress=on_progress)
        return self._tagged(image, node)

    async def native_platform(self) -> Platform:
        return await self.local.native_platform()

    async def emulated_platforms(self) -> list[Platform]:
        return await self.local.emulated_platforms()

    async def version(self) -> str:
        return await self.local.version()

    async def create(self, spec: ContainerSpec) -> str:
        node = spec.image.node or LOCAL
        engine = self._engine(node)
        # A daemon on another machine cannot see this machine's files: copy mounts in.
        copy_in = bool(spec.mounts) and not getattr(engine, "is_local", True)
        container_id = await engine.create(replace(spec, mounts=()) if copy_in else spec)
        self._containers[container_id] = node
        if copy_in:
            try:
                for mount in spec.mounts:
                    await engine.copy_to(container_id, Path(mount.source), mount.target)
            except BaseException:
                await finish_despite_cancel(self.remove(container_id))
                raise
            self._say_copied_once(node)
        return container_id

    def _say_copied_once(self, node: str) -> None:
        if node not in self._copied_mounts_to:
            self._copied_mounts_to.add(node)
            self.note(
                f"node {node} is another machine and cannot see this one's files: mounts were "
                "copied in, and what the command changes there stays on the node (copy it "
                "back with %container cp)"
            )

    def take_notes(self) -> list[str]:
        """The fleet's own notes and its nodes' (the same note from several nodes once)."""
        notes = super().take_notes()
        for member in self.members:
            if member.engine is not None:
                notes += member.engine.take_notes()
        return list(dict.fromkeys(notes))

    async def start_and_wait(
        self, container_id: str, on_output: OutputCallback | None = None
    ) -> ExecOutcome:
        return await self._of_container(container_id).start_and_wait(container_id, on_output)

    async def remove(self, container_id: str) -> None:
        node = self._containers.get(container_id, LOCAL)
        member = self._members.get(node)
        if member is None or member.engine is None:
            return  # the node is gone; its leftovers are reaped when it is back
        try:
            await member.engine.remove(container_id)
        except EngineUnavailable:
            if node == LOCAL:
                raise
            # The node went away mid-cell: its row says so; the container goes when it is back.
            member.unremoved.add(container_id)
        self._containers.pop(container_id, None)

    async def start(self, container_id: str) -> None:
        await self._of_container(container_id).start(container_id)

    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        return await self._of_container(container_id).attach_exec(container_id, argv, on_output)

    async def state(self, container_id: str) -> str:
        node = self._containers.get(container_id, LOCAL)
        member = self._members.get(node)
        if member is None or member.engine is None:
            return "gone"
        return await member.engine.state(container_id)

    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        await self._of_container(container_id).copy_to(container_id, source, target)

    async def copy_from(self, container_id: str, path: str, dest: Path) -> bool:
        return await self._of_container(container_id).copy_from(container_id, path, dest)

    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        node = self._containers.get(container_id, LOCAL)
        image = await self._engine(node).commit(container_id, config)
        return self._tagged(image, node)

    async def image_config(self, image: PulledImage) -> ImageConfig:
        return await self._of_image(image).image_config(image)

    async def layer_ids(self, image: PulledImage) -> list[str]:
        return await self._of_image(image).layer_ids(image)

    async def save_layers(
        self, image: PulledImage, dest: Path, only: Sequence[int] | None = None
    ) -> list[Path]:
        return await self._of_image(image).save_layers(image, dest, only)

    async def read_image(self, image: PulledImage, dest: Path) -> None:
        await self._of_image(image).read_image(image, dest)

    async def image_from_directory(
        self, root: Path, platform: Platform, config: ImageConfig
    ) -> PulledImage:
        node = await self._target(platform)
        image = await self._engine(node).image_from_directory(root, platform, config)
        return self._tagged(image, node)

    async def reap_orphans(self) -> int:
        reached = [m.engine for m in self.members if m.engine is not None]
        return sum(await asyncio.gather(*(e.reap_orphans() for e in reached)))

    async def aclose(self) -> None:
        """Close every node (removing what we made there) and the local engine, at once: a
        kernel shutting down may not wait for one after the other."""
        remote = [m for m in self.members if m.name != LOCAL]
        await asyncio.gather(self.local.aclose(), *(self._disconnect(m) for m in remote))
