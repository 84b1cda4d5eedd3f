"""The async client: the one API that the magics, widgets and Python users all go through.

    async with mpc.connect() as client:
        result = await client.run("uname -m", platforms="linux/amd64,linux/s390x", image=IMG)
        result.to_frame()

The same client builds containers step by step (Dagger-style, see :mod:`.container`) and
keeps interactive sessions (see :mod:`.session`)::

    arm = client.container(platform="linux/arm64").from_(IMG)
    out = await arm.with_exec(["uname", "-m"]).stdout()
    build = await client.session("build", platforms="linux/arm64,linux/s390x", image=IMG)
    await build.run("cd /work && export X=1")

``connect()`` can also be awaited directly (``client = await mpc.connect()``); then call
``await client.aclose()`` when done so every container, session and snapshot is removed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shlex
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._aio import finish_despite_cancel, gather_or_cancel
from .container import Container
from .defaults import DEFAULT_IMAGE, ENGINES
from .directory import Directory, GitRepository, Host
from .doctor import DoctorReport, Problem, diagnose
from .engines.base import (
    Engine,
    Mount,
    PulledImage,
    PullProgressCallback,
    per_platform,
)
from .engines.cpu_models import models_from_env
from .engines.endpoints import CONNECT_TIMEOUT_S, Node, nodes_from
from .engines.fleet import Fleet, NodesReport, NodesSpec
from .errors import EngineUnavailable, InvalidArgument, MPCError, SessionError
from .evaluate import BuildContext, Evaluator
from .platform_report import PlatformReport
from .platforms import Platform, parse_platforms
from .publish import Published, Snapshot
from .recipes import ContainerRecipe, Empty
from .results import RunResult
from .runs import LineCallback, checked_env, checked_network, checked_workdir, run_on_platforms
from .session import Session, check_name, sessions_frame
from .targets import (
    PlatformsSpec,
    Target,
    engine_for,
    requested_platforms,
    resolve,
)
from .workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Where names resolve for every kernel of a hub: "registry" or "cache" (see Client.resolve).
RESOLVE_ENV = "MPC_RESOLVE"


#: What ``mounts=`` accepts: "HOST:CONTAINER[:ro]" strings or Mount objects.
MountsSpec = Sequence[str | Mount]


def mounts_arg(spec: MountsSpec | None) -> list[Mount]:
    if isinstance(spec, str):
        raise InvalidArgument("mounts must be a list, e.g. mounts=['./data:/data:ro']")
    return [m.checked() if isinstance(m, Mount) else Mount.parse(m) for m in spec or ()]


class Pulled(list[PulledImage]):
    """What :meth:`Client.pull` fetched, one image per platform, and its ``notes``: what
    the user should be told (a mirror served it, a cached resolution was used)."""

    def __init__(self, images: Sequence[PulledImage], notes: Sequence[str] = ()) -> None:
        super().__init__(images)
        self.notes = list(notes)


class Client:
    """A connection to one engine, and to the nodes added to it. ``aclose()`` removes all
    it created, on every node."""

    def __init__(
        self,
        engine: Engine,
        *,
        node_timeout: float = CONNECT_TIMEOUT_S,
        network: str | None = None,
        cpu_models: Mapping[str, str | None] | None = None,
        resolve: str | None = None,
    ) -> None:
        self.engine = engine  # the local one: always the node "local"
        self.cpu_models = cpu_models
        self._node_timeout = node_timeout
        self._fleet: Fleet | None = None
        # What the builders (containers, directories) hold instead of this client.
        self._ctx = BuildContext(engine, Evaluator(engine, Workspace()))
        self._sessions: dict[str, Session] = {}
        self.network = network
        self.resolve = resolve

    @property
    def network(self) -> str | None:
        """The network containers get when a call names none, as ``docker run --network``:
        "none", "host", "bridge" or a network's name; None leaves it to the engine (Docker:
        the daemon's default; the embedded engine always shares this machine's)."""
        return self._ctx.evaluator.network

    @network.setter
    def network(self, network: str | None) -> None:
        self._ctx.evaluator.network = checked_network(network)

    @property
    def resolve(self) -> str:
        """Where image names resolve: "registry" (asked once per client; what the cache
        knows stands in when it is unreachable) or "cache" (what the cache knows is used
        without asking the registry: images prefetched for a class cost it no request).
        None reads ``$MPC_RESOLVE`` (default "registry")."""
        return self.engine.resolve_from

    @resolve.setter
    def resolve(self, where: str | None) -> None:
        where = where or os.environ.get(RESOLVE_ENV) or "registry"
        if where not in ("registry", "cache"):
            raise InvalidArgument(
                f"resolve must be 'registry' or 'cache', not {where!r}"
                + (f" (from ${RESOLVE_ENV})" if os.environ.get(RESOLVE_ENV) == where else "")
            )
        engines = [self.engine]
        if self._fleet is not None:
            engines += [m.engine for m in self._fleet.members if m.engine is not None]
        for engine in engines:
            engine.resolve_from = where

    @property
    def cpu_models(self) -> dict[Platform, str]:
        """The CPU model QEMU emulates per platform, where the user chose one ("" is QEMU's
        own default); other emulated platforms get the fastest faithful model (see
        :mod:`.engines.cpu_models`: arm64 gets ``max,pauth-impdef=on``). Set it to a
        mapping such as ``{"linux/arm64": "cortex-a72"}``; None reads ``$MPC_CPU_MODELS``."""
        return dict(self.engine.cpu_models.chosen)

    @cpu_models.setter
    def cpu_models(self, models: Mapping[str, str | None] | None) -> None:
        self.engine.cpu_models.choose(models_from_env() if models is None else models)

    @property
    def fleet(self) -> Fleet:
        """The local engine and the nodes added to it (made on first use)."""
        if self._fleet is None:
            self._fleet = Fleet(self.engine, connect_timeout=self._node_timeout)
        return self._fleet

    @property
    def _runs_on(self) -> Engine:
        """Where work goes: the fleet once there are nodes, else the engine itself (whose
        foreign platforms are tried under emulation, never refused on a guess)."""
        return self._fleet if self._fleet is not None and self._fleet.has_nodes else self.engine

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Remove every container, session, snapshot and temporary directory of this client."""
        self._sessions.clear()
        try:
            await (self._fleet or self.engine).aclose()
        finally:
            self._ctx.evaluator.close()

    # -- Dagger-style building blocks --------------------------------------------------------

    def container(self, platform: str | Platform | None = None) -> Container:
        """An empty container for ``platform`` (default: the engine's native platform)."""
        if isinstance(platform, str):
            platform = Platform.parse(platform)
        return Container(self._ctx, ContainerRecipe(platform))

    def directory(self) -> Directory:
        """An empty directory."""
        return Directory(self._ctx, Empty())

    def host(self) -> Host:
        return Host(self._ctx)

    def git(self, url: str, *, keep_git_dir: bool = False) -> GitRepository:
        """A git repository (URL or local path); ``.branch(name).tree()`` checks it out."""
        return GitRepository(self._ctx, url, keep_git_dir)

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, address: str, variants: Sequence[Container] | Session) -> Published:
        """Push the variants (containers, or a session's platforms) as one image ``address``."""
        return await self._ctx.publish(address, await self._snapshots(variants))

    async def export(
        self,
        path: str | os.PathLike[str],
        variants: Sequence[Container] | Session,
        *,
        tag: str = "latest",
    ) -> Published:
        """Write the variants as an OCI image layout (a directory, or a tar for *.tar)."""
        return await self._ctx.export(path, await self._snapshots(variants), tag)

    async def _snapshots(self, variants: Sequence[Container] | Session) -> list[Snapshot]:
        if isinstance(variants, Session):
            return await variants.snapshots()
        return await self._ctx.snapshots(c._recipe for c in variants)

    # -- sessions ----------------------------------------------------------------------------

    async def session(
        self,
        name: str,
        *,
        platforms: PlatformsSpec = None,
        image: str | None = None,
        mounts: MountsSpec | None = None,
        network: str | None = None,
        on_progress: PullProgressCallback | None = None,
    ) -> Session:
        """The session ``name``, started (or extended to more platforms) as needed.

        A new session needs nothing but a name: it defaults to DEFAULT_IMAGE on the native
        platform and the client's ``network``. An existing one keeps its image, mounts and
        network; asking for others is an error.
        ``on_progress(platform, done_bytes, total_bytes)`` follows the pull of each platform
        started now (as in :meth:`pull`).
        """
        session = self._session_for(name, image, mounts, network)
        if platforms is not None or not session.platforms:
            try:
                await session.ensure(platforms, on_progress=on_progress)
            except BaseException:
                if name not in self._sessions:  # a new session that failed to start
                    await finish_despite_cancel(session.stop())
                raise
        self._sessions[name] = session
        return session

    def _session_for(
        self, name: str, image: str | None, mounts: MountsSpec | None, network: str | None
    ) -> Session:
        """The session ``name`` (a new one is not kept until it starts); refuses to change
        the image, mounts or network of one that runs."""
        session = self._sessions.get(check_name(name))
        wanted_mounts = mounts_arg(mounts)
        network = checked_network(network)
        if session is None:
            return Session(
                self._runs_on, name, image or DEFAULT_IMAGE, wanted_mounts, network or self.network
            )
        if (
            (image and image != session.image)
            or (mounts is not None and tuple(wanted_mounts) != session.mounts)
            or (network is not None and network != session.network)
        ):
            raise SessionError(
                f"session {name!r} runs {session.image}"
                + (f" with mounts {', '.join(map(str, session.mounts))}" if session.mounts else "")
                + (f" on network {session.network}" if session.network else "")
                + f"; stop it first (%container stop {name}) or pick another session name"
            )
        return session

    async def targets(
        self,
        image: str,
        platforms: PlatformsSpec,
        *,
        cross: bool = False,
        node: str | None = None,
    ) -> list[Target]:
        """What a ``platforms=`` value means for ``image`` on this engine: each platform and
        how it runs (natively, emulated, or ``cross``-built on the native platform), and
        with nodes, on which one (``node`` for all; ``linux/arm64@NAME`` for one)."""
        return await resolve(self._runs_on, image, platforms, cross=cross, node=node)

    # -- nodes -------------------------------------------------------------------------------

    async def add_node(
        self,
        node: Node | str,
        endpoint: str | None = None,
        *,
        platforms: PlatformsSpec = None,
        tls: str | None = None,
    ) -> NodesReport:
        """Add a node: ``add_node("pi", "ssh://me@pi.local", platforms="linux/arm64")`` or
        ``add_node(Node(...))``. One that does not answer is kept, marked unreachable (the
        report says why); its platforms go elsewhere until it answers."""
        if isinstance(node, str):
            if endpoint is None:
                raise InvalidArgument(
                    f"node {node}: give its endpoint too, e.g. add_node({node!r}, "
                    "'ssh://me@host') or a Docker context name"
                )
            claimed = parse_platforms(platforms) if isinstance(platforms, str) else platforms
            node = Node(node, endpoint, tuple(claimed or ()), tls)  # type: ignore[arg-type]
        member = await self.fleet.add(node)
        self._use_fleet_for_builds()
        return NodesReport.of([member])

    async def remove_node(self, name: str) -> None:
        """Forget node ``name``, removing this client's containers there; sessions with a
        member there are stopped."""
        self.fleet.member(name)
        on_it = [n for n, s in self._sessions.items() if name in s.nodes]
        await self.stop_all(on_it)
        await self.fleet.remove_node(name)
        self._use_fleet_for_builds()

    async def nodes(self, *, refresh: bool = False) -> NodesReport:
        """Every node, the local one first: endpoint, engine and version, native, emulated
        and claimed platforms, reachable or why not, round-trip latency. ``refresh`` tries
        unreachable nodes again and re-reads what each runs."""
        await self.fleet.refresh(probe=refresh)
        return NodesReport.of(self.fleet.members)

    def _use_fleet_for_builds(self) -> None:
        # Images built before keep working: an image of no node is the local engine's.
        self._ctx.evaluator.engine = self._runs_on
        self._ctx = BuildContext(self._runs_on, self._ctx.evaluator, self._ctx.blob_homes)

    @property
    def session_names(self) -> list[str]:
        return list(self._sessions)

    def get_session(self, name: str) -> Session:
        try:
            return self._sessions[name]
        except KeyError:
            known = ", ".join(self._sessions) or "none"
            raise SessionError(
                f"no session called {name!r} (sessions: {known}); start one with "
                f"%%container --session {name}"
            ) from None

    async def sessions(self) -> pd.DataFrame:
        """One row per session and platform: image digest, container, age, state."""
        rows = []
        for session in self._sessions.values():
            rows += await session.rows()
        return sessions_frame(rows)

    async def stop(self, name: str | None = None) -> list[str]:
        """Remove session ``name`` (or every session); returns the names stopped."""
        return await self.stop_all([name] if name is not None else list(self._sessions))

    async def stop_all(self, names: Sequence[str]) -> list[str]:
        stopping = [self.get_session(n) for n in names]
        for n in names:
            del self._sessions[n]
        await gather_or_cancel(s.stop() for s in stopping)
        return names

    # -- runs --------------------------------------------------------------------------------

    async def run(
        self,
        command: str | Sequence[str],
        *,
        platforms: PlatformsSpec = None,
        image: str | None = None,
        env: Mapping[str, object] | None = None,
        workdir: str | None = None,
        mounts: MountsSpec | None = None,
        network: str | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        cross: bool = False,
        session: str | None = None,
        on_targets: Callable[[list[Target]], None] | None = None,
        on_progress: PullProgressCallback | None = None,
        node: str | None = None,
    ) -> RunResult:
        """Run ``command`` on each platform concurrently, in a fresh container each.

        ``image`` defaults to DEFAULT_IMAGE. ``cross=True`` runs every platform's command on
        the native platform instead, with that platform's cross-compilation variables
        (TARGETARCH, GOARCH, …). With ``session="NAME"`` the command runs in that live
        session instead (see :meth:`session`: started on first use with ``image`` and
        ``mounts``, extended to new ``platforms``; without ``platforms``, on all of its own).

        A string is run as a POSIX ``sh`` script; a sequence is an argv run as is.
        ``on_targets(targets)`` hears the platforms and how each runs before anything is
        pulled or printed; ``on_progress(platform, done_bytes, total_bytes)`` follows each
        platform's pull (as in :meth:`pull`); ``on_line(platform, stream, line)`` gets the
        output as it comes. Non-zero exits, timeouts and platforms without emulation are
        recorded in the result; call ``result.check()`` to turn them into exceptions.
        With nodes, each platform runs where the fleet places it (see :mod:`.engines.fleet`);
        ``node="NAME"`` runs them all there, ``"linux/arm64@NAME"`` pins one. ``network`` is
        the containers' (as ``docker run --network``; default: the client's ``network``).
        """
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidArgument(
                f"timeout must be a positive number of seconds, not {timeout}; give e.g. 60 "
                "(--timeout 60 in a cell), or no timeout at all for no limit"
            )
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise InvalidArgument(
                "nothing to run: the command is empty; give a shell command such as 'uname -m' "
                "or an argv list such as ['uname', '-m']"
            )
        env, workdir = checked_env(env), checked_workdir(workdir)  # before anything starts
        if session is not None:
            if cross:
                raise InvalidArgument(
                    "cross builds run one-off containers, not a session: drop session= and "
                    "keep the build's output with mounts=['HOST:CONTAINER']"
                )
            script = command if isinstance(command, str) else shlex.join(argv)
            return await self._run_in_session(
                session, script, platforms, image, mounts, network, on_targets, on_progress,
                node, env=env, workdir=workdir, timeout=timeout, on_line=on_line,
            )  # fmt: skip
        image = image or DEFAULT_IMAGE
        targets = await self.targets(image, platforms, cross=cross, node=node)
        if on_targets is not None:
            on_targets(targets)
        result = await run_on_platforms(
            self._runs_on,
            image,
            argv,
            targets,
            env=env,
            workdir=workdir,
            mounts=mounts_arg(mounts),
            network=checked_network(network) or self.network,
            timeout=timeout,
            on_line=on_line,
            on_progress=on_progress,
            cross=cross,
        )
        return self._with_notes(result)

    def _with_notes(self, result: RunResult) -> RunResult:
        result.notes += self.take_notes()
        return result

    def take_notes(self) -> list[str]:
        """What the user should be told since the last result (a mirror served an image,
        a cached resolution stood in for an unreachable registry, mounts were copied to a
        node); each note once. Runs and pulls carry theirs in ``.notes``."""
        return (self._fleet or self.engine).take_notes()

    async def _run_in_session(
        self,
        name: str,
        script: str,
        platforms: PlatformsSpec,
        image: str | None,
        mounts: MountsSpec | None,
        network: str | None,
        on_targets: Callable[[list[Target]], None] | None,
        on_progress: PullProgressCallback | None,
        node: str | None,
        **run: Any,
    ) -> RunResult:
        known = self._session_for(name, image, mounts, network)
        if platforms is None and known.platforms:
            platforms = known.platforms  # where it runs already
        targets = known.placed(await self.targets(known.image, platforms, node=node))
        if on_targets is not None:
            on_targets(targets)
        # Pulled first, also where the session runs already (cached: the bars fill at once).
        await gather_or_cancel(
            engine_for(self._runs_on, t).pull(
                known.image, t.platform, on_progress=per_platform(on_progress, t.platform)
            )
            for t in targets
            if t.runs != "no"
        )
        live = await self.session(
            name, platforms=targets, image=image, mounts=mounts, network=network
        )
        return self._with_notes(await live.run(script, platforms=targets, **run))

    async def pull(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        platforms: PlatformsSpec = None,
        on_progress: PullProgressCallback | None = None,
    ) -> Pulled:
        """Fetch ``image`` for each platform concurrently (always asks the registry again).

        ``on_progress(platform, done_bytes, total_bytes)`` follows each platform's bytes
        (see :data:`.engines.base.ProgressCallback`: from any thread, ``total`` None while
        unknown, ``(total, total)`` last, also when the image was there already).
        The list's ``notes`` say what the user should know (see :meth:`take_notes`).
        """
        engine = self._runs_on  # with nodes, each platform is pulled where it would run
        targets = await requested_platforms(engine, image, platforms)
        pulled = await gather_or_cancel(
            engine.pull(image, p, refresh=True, on_progress=per_platform(on_progress, p))
            for p in targets
        )
        return Pulled(pulled, self.take_notes())

    async def platforms(self, image: str | None = None) -> PlatformReport:
        """The engine's native and emulated platforms, and what ``image`` offers."""
        offered = await self.engine.image_platforms(image) if image else []
        placed: list[Target] = []
        if self._fleet is not None and self._fleet.has_nodes:
            members = await self._fleet.known()
            candidates = offered or [
                p for m in members for p in (m.native, *m.emulated, *m.claimed) if p
            ]
            linux = list(dict.fromkeys(p for p in candidates if p.os == "linux"))
            placed = await resolve(self._fleet, image, linux) if linux else []
        return PlatformReport(
            engine=self.engine.name,
            native=await self.engine.native_platform(),
            emulated=tuple(await self.engine.emulated_platforms()),
            image=image,
            offered=tuple(offered),
            chosen=self.engine.chosen,
            placed=tuple(placed),
        )

    async def doctor(self, node: str | None = None) -> DoctorReport:
        """What this machine can run and why not: the engine and its version, the native
        platform, each common platform (emulation present, enabled, usable in containers),
        registries, the cache and its size, and each problem with its fix. ``node``: the
        same for that node; without it, each unreachable node is a problem too."""
        if node is not None:
            return await diagnose(self.fleet.engine_of(node))
        report = await diagnose(self.engine)
        if self._fleet is None:
            return report
        down = [
            Problem(
                f"node {m.name} is unreachable ({m.error})",
                f"check that its engine runs and answers at {m.endpoint}, then "
                "%container nodes --refresh",
            )
            for m in self._fleet.members
            if not m.reachable
        ]
        return replace(report, problems=(*report.problems, *down))


async def open_engine(
    kind: str = "auto",
    *,
    insecure_registries: Sequence[str] = (),
    registry_mirrors: Mapping[str, Sequence[str]] | None = None,
) -> Engine:
    """The engine called ``kind``: "docker", "embedded" (proot + qemu-user, no daemon), or
    "auto": Docker when a daemon answers, else the embedded engine. The engine's ``chosen``
    then says why it was picked. ``MPC_ENGINE=docker|embedded`` in the environment decides
    what "auto" means (say, for a whole JupyterHub or test run).

    ``insecure_registries`` (host[:port]) may be reached over plain HTTP, as loopback ones are.
    ``registry_mirrors`` ({"docker.io": ["mirror:5000"]}) are tried before the registries
    they mirror; by default those ``$MPC_REGISTRY_MIRRORS`` names (that mapping as JSON).
    """
    if kind not in ENGINES:
        raise InvalidArgument(f"unknown engine {kind!r}; use one of: {', '.join(ENGINES)}")
    if kind == "auto" and os.environ.get("MPC_ENGINE"):
        kind = os.environ["MPC_ENGINE"]
        if kind not in ENGINES:
            raise InvalidArgument(
                f"MPC_ENGINE={kind!r} is not an engine; set it to one of: {', '.join(ENGINES)}"
            )
    # Lazy imports: docker-py and httpx are slow to import, and %load_ext must stay fast.
    from .engines.embedded import EmbeddedEngine
    from .registry import RegistryClient

    def registry() -> RegistryClient:
        return RegistryClient(
            insecure_registries=insecure_registries, registry_mirrors=registry_mirrors
        )

    if kind == "embedded":
        return await EmbeddedEngine.connect(registry=registry())
    from .engines.docker import DockerEngine

    try:
        engine: Engine = await DockerEngine.connect(registry=registry())
    except EngineUnavailable as no_docker:
        if kind == "docker":
            raise
        try:
            engine = await EmbeddedEngine.connect(registry=registry())
        except EngineUnavailable as no_proot:
            raise EngineUnavailable(
                f"no container engine is available: {no_docker} Or use the embedded engine, "
                f"but {no_proot}"
            ) from None
        engine.chosen = "auto: no Docker daemon answered, so the embedded engine (proot)"
        return engine
    if kind == "auto":
        engine.chosen = "auto: a Docker daemon answered"
    return engine


async def reap_orphans(using: Engine | None = None) -> int:
    """Remove what dead processes of this machine left (containers, their processes and
    snapshots) on every engine that can hold such leftovers: Docker when a daemon answers,
    the embedded engine when its cache directory exists. Whichever engine this process
    uses: a dead kernel may have used the other (``%config ContainerMagics.engine``).

    ``using`` (the engine this process works with) reaps its own kind, so it is not opened
    a second time; the other kinds are opened just for this and closed after."""
    from .engines.docker import DockerEngine
    from .engines.embedded import EmbeddedEngine
    from .engines.store import default_cache_dir

    async def reap_on(engine: Engine) -> int:
        try:
            return await engine.reap_orphans()
        except MPCError as exc:
            log.warning("could not remove what dead processes left on %s: %s", engine.name, exc)
            return 0

    async def open_and_reap(open_one: Callable[[], Awaitable[Engine]]) -> int:
        try:
            engine = await open_one()
        except EngineUnavailable:
            return 0  # no such engine here, so nothing of it to reap
        try:
            return await reap_on(engine)
        finally:
            await engine.aclose()

    others: dict[str, Callable[[], Awaitable[Engine]]] = {"docker": DockerEngine.connect}
    if default_cache_dir().is_dir():
        others["embedded"] = EmbeddedEngine.connect
    jobs = [
        open_and_reap(open_one)
        for kind, open_one in others.items()
        if using is None or kind != using.name
    ]
    if using is not None:
        jobs.append(reap_on(using))
    return sum(await asyncio.gather(*jobs))


class connect:
    """Open a :class:`Client`; use as ``async with connect() as client`` or ``await connect()``.

    ``nodes`` adds Docker-API nodes: ``{"pi": "ssh://me@pi.local", "z": {"endpoint":
    "tcp://lnx1:2376", "tls": "~/.docker/z", "platforms": ["linux/s390x"]}}`` or a list of
    :class:`Node`; without it, the ``MPC_NODES`` environment variable (that mapping as
    JSON) is read. A node that does not answer within ``node_timeout`` seconds is kept,
    marked unreachable. ``registry_mirrors`` maps registries to mirrors tried first
    (``{"docker.io": ["mirror.example:5000"]}``; default: ``$MPC_REGISTRY_MIRRORS``).
    ``network`` is what containers get when a call names none (see :attr:`Client.network`);
    ``cpu_models`` the CPU model QEMU emulates per platform (see :attr:`Client.cpu_models`;
    default: ``$MPC_CPU_MODELS``, else the fastest faithful one); ``resolve`` where image
    names resolve (see :attr:`Client.resolve`; default: ``$MPC_RESOLVE``, else "registry").
    """

    def __init__(
        self,
        engine: str = "auto",
        *,
        insecure_registries: Sequence[str] = (),
        registry_mirrors: Mapping[str, Sequence[str]] | None = None,
        nodes: NodesSpec | None = None,
        node_timeout: float = CONNECT_TIMEOUT_S,
        network: str | None = None,
        cpu_models: Mapping[str, str | None] | None = None,
        resolve: str | None = None,
    ) -> None:
        self._kind = engine
        self._network = checked_network(network)
        self._cpu_models = cpu_models
        self._resolve = resolve
        self._insecure = tuple(insecure_registries)
        self._mirrors = registry_mirrors
        self._nodes = nodes_from(nodes if nodes is not None else os.environ.get("MPC_NODES"))
        self._node_timeout = node_timeout
        self._client: Client | None = None

    async def _open(self) -> Client:
        engine = await open_engine(
            self._kind, insecure_registries=self._insecure, registry_mirrors=self._mirrors
        )
        client = Client(
            engine,
            node_timeout=self._node_timeout,
            network=self._network,
            cpu_models=self._cpu_models,
            resolve=self._resolve,
        )
        try:
            await asyncio.gather(*(client.fleet.add(n) for n in self._nodes))
        except BaseException:
            await finish_despite_cancel(client.aclose())
            raise
        client._use_fleet_for_builds()
        return client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
