"""``%%container`` and ``%container``: a thin skin over :mod:`mpcontainer_magics.client`.

Each magic parses its arguments, calls the async client through the private loop thread
(``_loop.LoopThread``) and displays what comes back. Lines streamed by the containers are
queued by the loop thread and printed by the main thread while it waits, so they land in the
cell that is running. Every error of this package becomes a one-line ``UsageError``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import queue
import re
import shlex
import sys
import textwrap
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
)
from IPython.display import display
from traitlets import Dict, Enum, Float, List, Unicode

from ._loop import LoopThread
from .defaults import DEFAULT_IMAGE, ENGINES
from .errors import MPCError
from .platforms import Platform

# The client and everything it needs load where they are first used: on the loop thread's
# start-up connect, so that `%load_ext` returns at once.
if TYPE_CHECKING:
    from .client import Client
    from .container import Container
    from .results import RunResult
    from .session import Session
    from .targets import Target

T = TypeVar("T")
P = TypeVar("P", bound=argparse.ArgumentParser)

#: One argparse argument: (flags, options), as given to ``add_argument``.
Argument = tuple[tuple[str, ...], dict[str, Any]]


def _arg(*flags: str, **options: Any) -> Argument:
    return flags, options


@dataclass(frozen=True)
class Subcommand:
    """A ``%container NAME …`` line magic, declared once: its one-line summary and its
    arguments. The help, the error for an unknown name and the parser all come from here;
    ``ContainerMagics._line_NAME(args)`` does the work."""

    summary: str
    arguments: tuple[Argument, ...] = ()

    def parser(self, name: str) -> MagicArgumentParser:
        """The parser: errors are UsageErrors, as for every magic (its help adds the %)."""
        return self._filled(MagicArgumentParser(prog=f"container {name}", description=self.summary))

    def usage(self, name: str) -> str:
        """``%container NAME [OPTIONS] ARGS`` on one line."""
        plain = self._filled(argparse.ArgumentParser(prog=f"%container {name}", add_help=False))
        return " ".join(plain.format_usage().removeprefix("usage: ").split())

    def _filled(self, parser: P) -> P:
        for flags, options in self.arguments:
            parser.add_argument(*flags, **options)
        return parser


_ONE_IMAGE = (
    _arg("-i", "--image", metavar="IMAGE", help="the image (default: the default image)"),
    _arg("-p", "--platform", metavar="P", help="one platform, any OS (default: native)"),
)
_FROM = _arg(
    "--from",
    "-s",
    "--session",  # what a session's cells say: `publish REF --session NAME` reads naturally
    dest="source",
    required=True,
    metavar="SESSION_OR_VAR",
    help="a session, a session cell's --out result, or a variable holding Containers",
)

SUBCOMMANDS: dict[str, Subcommand] = {
    "pull": Subcommand(
        "fetch an image for platforms",
        (_arg("image"), _arg("-p", "--platform", metavar="P1,P2|all")),
    ),
    "platforms": Subcommand(
        "native and emulated platforms, and which platforms the image offers",
        (_arg("image", nargs="?"),),
    ),
    "doctor": Subcommand(
        "the engine and its version, which platforms can run and why not, registries, "
        "cache size, and each problem with its fix (--node NAME: the same for a node)",
        (_arg("-n", "--node", metavar="NAME", help="a node's engine instead of the local one"),),
    ),
    "sessions": Subcommand("the live sessions, one row per platform"),
    "stop": Subcommand(
        "remove a session's containers (or every session's)",
        (
            _arg("name", nargs="?"),
            _arg("--all", action="store_true", help="stop every session"),
        ),
    ),
    "cp": Subcommand(
        "copy between this machine and a session; the session side is NAME[@PLATFORM]:/path",
        (_arg("source"), _arg("dest")),
    ),
    "ls": Subcommand(
        "list the files of an image (any OS, e.g. windows/amd64)",
        (_arg("path", nargs="?", default="/"), *_ONE_IMAGE),
    ),
    "cat": Subcommand("print a file of an image", (_arg("path"), *_ONE_IMAGE)),
    "publish": Subcommand(
        "push the platforms of a session (or of a session cell's --out result, or "
        "Containers in a variable) as one image",
        (
            _arg("reference", help="where to push, e.g. registry.example/hello:1"),
            _FROM,
        ),
    ),
    "export": Subcommand(
        "the same as publish, written as an OCI image layout (a directory, or a tar when "
        "the path ends in .tar)",
        (
            _arg("path", help="a directory, or a file ending in .tar"),
            _FROM,
            _arg("--tag", default="latest", help="the layout's reference name"),
        ),
    ),
    "node": Subcommand(
        "add a node (a Docker context name, or a unix://, tcp:// or ssh:// URL) whose "
        "--platform list is routed to it first, or remove one: node add NAME ENDPOINT | "
        "node rm NAME",
        (
            _arg("action", choices=["add", "rm"]),
            _arg("name"),
            _arg("endpoint", nargs="?"),
            _arg("-p", "--platform", metavar="P1,P2", help="platforms the node claims"),
            _arg("--tls", metavar="DIR", help="ca.pem, cert.pem, key.pem for a tcp:// node"),
        ),
    ),
    "nodes": Subcommand(
        "every node: endpoint, engine and version, native, emulated and claimed platforms, "
        "reachable or why not, round-trip latency",
        (_arg("--refresh", action="store_true", help="retry unreachable nodes, probe again"),),
    ),
    "ui": Subcommand(
        "the widget app (also mpc.ui()): platforms, command, Run/Stop, live output, Publish",
        (_arg("image", nargs="?"),),
    ),
    "help": Subcommand(
        "this list, or one subcommand's options",
        (_arg("subcommand", nargs="?"),),
    ),
}


def subcommands_help() -> str:
    """The line magics, one usage line and one summary each (from ``SUBCOMMANDS``)."""
    lines = ["Line magics (`%container help NAME` shows one's options):"]
    for name, subcommand in SUBCOMMANDS.items():
        lines.append(f"  {subcommand.usage(name)}")
        lines += textwrap.wrap(
            subcommand.summary, 88, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)


def _with_subcommands_help(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Append the line magics to the docstring, before magic_arguments turns it into the
    help that ``%container?`` and ``%%container?`` show."""
    magic.__doc__ = f"{inspect.cleandoc(magic.__doc__ or '')}\n\n{subcommands_help()}\n"
    return magic


#: The session side of `%container cp`: NAME[@PLATFORM]:/absolute/path
SESSION_PATH = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<platform>[^:]+))?:(?P<path>/.*)$"
)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # e.g. "No closing quotation"
        raise UsageError(
            f"cannot parse {line!r}: {exc}; close the quote, or escape it with a backslash"
        ) from None


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--env expects KEY=VALUE, got {pair!r}; write it as "
                f"--env {key or 'NAME'}={value or 'VALUE'} (quote a value with spaces: "
                "-e 'GREETING=hello world')"
            )
        env[key] = value
    return env


@magics_class
class ContainerMagics(Magics):
    """Run cells in containers on many CPU architectures (see ``%%container?``)."""

    default_image = Unicode(DEFAULT_IMAGE, help="Image used when a cell gives no --image.").tag(
        config=True
    )
    engine = Enum(list(ENGINES), default_value="auto", help="Which container engine to use.").tag(
        config=True
    )
    insecure_registries = List(
        Unicode(),
        help="Registries (host[:port]) to reach over plain HTTP; loopback ones always are.",
    ).tag(config=True)
    registry_mirrors = Dict(
        help="Mirrors to pull through, registry -> [host[:port], ...], tried in order before "
        'the registry itself, e.g. {"docker.io": ["mirror.example:5000"]}; default: '
        "$MPC_REGISTRY_MIRRORS (that as JSON), which a JupyterHub can set for every kernel.",
    ).tag(config=True)
    nodes = Dict(
        help='Docker-API nodes, name -> endpoint or {"endpoint": …, "platforms": […], '
        '"tls": DIR}, e.g. {"pi": "ssh://me@pi.local"}; default: $MPC_NODES (that as JSON).',
    ).tag(config=True)
    node_timeout = Float(
        3.0, help="Seconds a node may take to answer before it counts as down."
    ).tag(config=True)
    cpu_models = Dict(
        help="The CPU model QEMU emulates per platform, platform -> model as QEMU's -cpu "
        'takes it ("" for QEMU\'s own default), e.g. {"linux/arm64": "cortex-a72"}; the '
        "others get the fastest faithful model (arm64: max,pauth-impdef=on). Default: "
        "$MPC_CPU_MODELS (that as JSON), which a JupyterHub can set for every kernel.",
    ).tag(config=True)
    resolve = Enum(
        ["", "registry", "cache"],
        default_value="",
        help='Where image names resolve: "registry" (asked once per kernel; the cache stands '
        'in when it is unreachable) or "cache" (what the cache knows, e.g. images a Binder '
        'or hub image prefetched, is used without asking); "" reads $MPC_RESOLVE.',
    ).tag(config=True)
    network = Unicode(
        "",
        help="The network cells' containers get when --network names none, as `docker run "
        '--network`: "none", "host", "bridge" or a network\'s name; "" is the engine\'s '
        "default. The embedded engine always shares this machine's network.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        # Magics registers itself in shell.configurables, so `%config ContainerMagics.x` works.
        super().__init__(shell=shell, **kwargs)
        self._bridge = LoopThread()
        self._client: Client | None = None
        self._client_engine = ""
        self._configured_nodes: dict[str, Any] = {}  # what of `nodes` the client has
        self._connecting = asyncio.Lock()
        #: The background start-up begun by ``start()``: connect, then reap orphans.
        self.startup: Future[int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and remove what dead kernels left, in the background (load stays fast)."""
        self.startup = self._bridge.submit(self._reap_orphans())

    async def _reap_orphans(self) -> int:
        from .client import reap_orphans
        from .engines.endpoints import reap_tunnels
        from .workspace import reap_workspaces

        reaped = await asyncio.to_thread(reap_workspaces) + await asyncio.to_thread(reap_tunnels)
        engine = None
        with contextlib.suppress(MPCError):  # no engine yet: the first cell will say so
            engine = (await self._connected()).engine
        # On every engine, not only this kernel's: a dead kernel may have switched engines.
        return reaped + await reap_orphans(engine)

    def close(self) -> None:
        """Remove every container of this kernel and stop the loop thread."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._bridge.run(self._client.aclose())
            self._client = None
        self._bridge.close()

    async def _connected(self) -> Client:
        from .client import Client, open_engine
        from .registry.mirrors import mirrors_from_env

        async with self._connecting:
            kind = self.engine  # read once: %config may change it while we connect
            if self._client is None or self._client_engine != kind:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                self._client = Client(await open_engine(kind), node_timeout=self.node_timeout)
                self._client_engine = kind
                self._configured_nodes = {}
            # Follows `%config ContainerMagics.insecure_registries` (and registry_mirrors)
            # without reconnecting.
            registry = self._client.engine.registry
            registry.insecure_registries = self.insecure_registries
            registry.registry_mirrors = self.registry_mirrors or mirrors_from_env()
            self._client.network = self.network or None
            self._client.cpu_models = self.cpu_models or None
            self._client.resolve = self.resolve or None
            await self._follow_nodes_config(self._client)
            return self._client

    async def _follow_nodes_config(self, client: Client) -> None:
        """Add and remove nodes as `%config ContainerMagics.nodes` (or $MPC_NODES) changes."""
        from .engines.endpoints import nodes_from

        wanted = {n.name: n for n in nodes_from(self.nodes or os.environ.get("MPC_NODES"))}
        if wanted == self._configured_nodes:
            return
        for name in set(self._configured_nodes) - set(wanted):
            with contextlib.suppress(MPCError):
                await client.remove_node(name)
        await asyncio.gather(
            *(client.add_node(n) for name, n in wanted.items()
              if self._configured_nodes.get(name) != n)
        )  # fmt: skip
        self._configured_nodes = wanted

    def _run(
        self,
        make: Callable[[Client], Coroutine[Any, Any, T]],
        poll: Callable[[], None] | None = None,
    ) -> T:
        async def call() -> T:
            return await make(await self._connected())

        try:
            return self._bridge.run(call(), poll=poll)
        except MPCError as exc:
            raise UsageError(str(exc)) from None

    # -- the magic ---------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "-p",
        "--platform",
        help="Comma-separated platforms such as linux/amd64,linux/arm64,linux/s390x, or 'all' "
        "for every platform the image offers (default: the engine's native platform).",
    )
    @argument(
        "-i", "--image", help="Image to run (default: %%config ContainerMagics.default_image)."
    )
    @argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Environment variable for the cell (repeatable).",
    )
    @argument("-w", "--workdir", help="Working directory inside the container.")
    @argument(
        "-s",
        "--session",
        metavar="NAME",
        help="Run in the live session NAME (started on first use): files, the working "
        "directory and exported variables persist from cell to cell, on every platform.",
    )
    @argument(
        "-m",
        "--mount",
        action="append",
        default=[],
        metavar="HOST:CONTAINER[:ro]",
        help="Bind a host path into the containers (repeatable). For a session, give mounts "
        "when it starts.",
    )
    @argument(
        "-t", "--timeout", type=float, help="Seconds each platform may run before it is stopped."
    )
    @argument(
        "-n",
        "--node",
        metavar="NAME",
        help="Run every platform on node NAME (see %%container nodes); PLATFORM@NAME in "
        "--platform pins one platform instead.",
    )
    @argument(
        "--network",
        metavar="NAME",
        help="The containers' network, as docker run --network: none, host, bridge or a "
        "network's name (default: %%config ContainerMagics.network, else the engine's). A "
        "session keeps the network it started with.",
    )
    @argument("-o", "--out", metavar="VAR", help="Store the result object in this variable.")
    @argument(
        "--raise-error",
        action="store_true",
        help="Fail the cell when a platform exits non-zero (otherwise that is shown as data).",
    )
    @argument("--table", action="store_true", help="Show the table even for a single platform.")
    @argument(
        "--cross",
        action="store_true",
        help="Cross-build: run on the engine's native platform once per --platform target, "
        "with TARGETPLATFORM/TARGETOS/TARGETARCH/TARGETVARIANT, BUILDPLATFORM/BUILDOS/"
        "BUILDARCH and GOOS/GOARCH/GOARM set for that target (keep outputs with --mount).",
    )
    @_with_subcommands_help
    @line_cell_magic
    def container(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a POSIX sh script in a container on each platform, side by side.

        Output streams live, each line labelled with its platform; afterwards a table shows
        one row per platform (exit code, stdout, stderr, duration, emulated, image digest)
        and which outputs agree or differ. A non-zero exit is data, not an error, unless
        --raise-error. Ctrl-C stops and removes the cell's containers.
        """
        if cell is None:
            return self._line(line)
        try:
            # POSIX quoting, so that `-e 'GREETING=hello world'` works as in a terminal.
            args = self.container.parser.parse_args(_split(line))
        except UsageError as exc:
            raise UsageError(f"{exc} (see %%container? for the options)") from None
        return self._cell(args, cell)

    def _cell(self, args: Any, cell: str) -> None:
        if not cell.strip():
            raise UsageError("the cell is empty: write the shell commands to run below %%container")
        if args.cross and (args.session or not args.platform):
            raise UsageError(
                "--cross needs --platform targets and runs one-off containers, not a session "
                "(keep the build's output with --mount HOST:CONTAINER)"
            )
        env = _parse_env(args.env)
        lines: queue.SimpleQueue[tuple[Platform, str, str]] = queue.SimpleQueue()
        labelled = False  # decided once the platforms are known, before any line arrives

        def show_lines() -> None:
            while True:
                try:
                    platform, stream, text = lines.get_nowait()
                except queue.Empty:
                    return
                target = sys.stderr if stream == "stderr" else sys.stdout
                print(f"[{platform}] {text}" if labelled else text, file=target, flush=True)

        def on_targets(targets: list[Target]) -> None:
            nonlocal labelled
            labelled = len(targets) > 1
            for t in targets:
                if t.fallback:  # said before any output: where it runs instead, and why
                    lines.put((t.platform, "stderr", f"{t.fallback}: {t.why} instead"))

        def on_line(*item: Any) -> None:
            lines.put(item)

        def run(client: Client) -> Coroutine[Any, Any, RunResult]:
            # A session keeps the image it started with; the default only starts new ones.
            keeps_image = args.session in client.session_names
            return client.run(
                cell,
                platforms=args.platform,
                image=args.image or (None if keeps_image else self.default_image),
                env=env,
                workdir=args.workdir,
                mounts=args.mount or None,
                network=args.network,
                timeout=args.timeout,
                cross=args.cross,
                session=args.session,
                on_targets=on_targets,
                on_line=on_line,
                node=args.node,
            )

        result = self._run(run, poll=show_lines)
        for note in result.notes:
            print(note, file=sys.stderr)
        if args.out:
            self.shell.user_ns[args.out] = result
        if len(result) > 1 or args.table:
            display(result)
        elif result.results and result[0].exit_code:
            print(f"exit code {result[0].exit_code}", file=sys.stderr)
        try:
            result.check(nonzero=args.raise_error)
        except MPCError as exc:
            raise UsageError(str(exc)) from None
        return None

    # -- line magics -------------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        words = _split(line)
        if not words or words[0] not in SUBCOMMANDS:
            given = f"unknown subcommand {words[0]!r}; " if words else ""
            raise UsageError(
                f"{given}use %%container as a cell magic, or one of: "
                + " | ".join(f"%container {name}" for name in SUBCOMMANDS)
                + " (%container help lists what each does)"
            )
        name = words[0]
        args = SUBCOMMANDS[name].parser(name).parse_args(words[1:])
        return getattr(self, f"_line_{name}")(args)

    def _line_help(self, args: Any) -> None:
        if args.subcommand is None:
            print(subcommands_help())
        elif args.subcommand in SUBCOMMANDS:
            print(SUBCOMMANDS[args.subcommand].parser(args.subcommand).format_help(), end="")
        else:
            raise UsageError(
                f"unknown subcommand {args.subcommand!r}; one of: {', '.join(SUBCOMMANDS)}"
            )

    def _line_pull(self, args: Any) -> None:
        pulled = self._run(lambda client: client.pull(args.image, platforms=args.platform))
        for image in pulled:
            pin = image.digest or f"local image {image.image_id[:19]}"
            print(f"{image.reference} for {image.platform}: {pin}")
        for note in pulled.notes:
            print(note, file=sys.stderr)

    def _line_platforms(self, args: Any) -> Any:
        return self._run(lambda client: client.platforms(args.image))

    def _line_doctor(self, args: Any) -> Any:
        return self._run(lambda client: client.doctor(args.node))

    def _line_node(self, args: Any) -> Any:
        if args.action == "rm":
            if args.endpoint or args.platform or args.tls:
                raise UsageError(f"node rm takes only a name: %container node rm {args.name}")
            self._run(lambda client: client.remove_node(args.name))
            print(f"removed node {args.name}")
            return None
        if not args.endpoint:
            raise UsageError(
                f"give the node's endpoint: %container node add {args.name} ssh://me@host "
                "(or a Docker context name, unix:// or tcp:// URL)"
            )
        report = self._run(
            lambda client: client.add_node(
                args.name, args.endpoint, platforms=args.platform, tls=args.tls
            )
        )
        return report.to_frame()

    def _line_nodes(self, args: Any) -> Any:
        return self._run(lambda client: client.nodes(refresh=args.refresh)).to_frame()

    def _line_ui(self, args: Any) -> Any:
        from .widgets import ContainerApp  # imports ipywidgets: only when asked for

        # The magics' own loop and client: the app's session is one of %container sessions.
        return ContainerApp(
            args.image or self.default_image, bridge=self._bridge, connect=self._connected
        )

    def _line_sessions(self, args: Any) -> Any:
        frame = self._run(lambda client: client.sessions())
        if frame.empty:
            print("no sessions; start one with %%container --session NAME")
            return None
        return frame

    def _line_stop(self, args: Any) -> None:
        if (args.name is None) == (not args.all):
            raise UsageError("give a session name or --all, e.g. %container stop build")
        stopped = self._run(lambda client: client.stop(args.name))
        print(f"stopped: {', '.join(stopped)}" if stopped else "no sessions to stop")

    def _line_cp(self, args: Any) -> None:
        source, dest = SESSION_PATH.match(args.source), SESSION_PATH.match(args.dest)
        if bool(source) == bool(dest):
            raise UsageError(
                "exactly one side of %container cp is a session path NAME[@PLATFORM]:/path, "
                "e.g. %container cp ./data build:/work/ or %container cp build@linux/arm64:/out ."
                " (prefix a host path containing ':' with ./)"
            )
        if dest:
            session_side = dest

            async def copy(client: Client) -> list[str]:
                session = client.get_session(session_side["name"])
                platform = session_side["platform"]
                await session.copy_in(args.source, session_side["path"], platform)
                return [
                    f"{session_side['name']}@{p}:{session_side['path']}"
                    for p in ([platform] if platform else session.platforms)
                ]
        else:
            assert source is not None
            session_side = source

            async def copy(client: Client) -> list[str]:
                session = client.get_session(session_side["name"])
                written = await session.copy_out(
                    session_side["path"], args.dest, session_side["platform"]
                )
                return [str(path) for path in written]

        for target in self._run(copy):
            print(f"copied to {target}")

    def _image_container(self, args: Any) -> Callable[[Client], Container]:
        from .targets import parse_one

        try:
            platform = parse_one(args.platform)
        except MPCError as exc:
            raise UsageError(str(exc)) from None
        image = args.image or self.default_image
        return lambda client: client.container(platform).from_(image)

    def _line_ls(self, args: Any) -> None:
        container = self._image_container(args)
        names = self._run(lambda client: container(client).directory(args.path).entries())
        print("\n".join(names) if names else f"{args.path} is empty")

    def _line_cat(self, args: Any) -> None:
        container = self._image_container(args)
        print(self._run(lambda client: container(client).file(args.path).contents()), end="")

    def _line_publish(self, args: Any) -> Any:
        return self._run(
            lambda client: client.publish(args.reference, self._variants(client, args.source))
        )

    def _line_export(self, args: Any) -> Any:
        return self._run(
            lambda client: client.export(
                args.path, self._variants(client, args.source), tag=args.tag
            )
        )

    def _variants(self, client: Client, name: str) -> Session | list[Container]:
        """A session by name, or a variable holding a Session, a Container or Containers."""
        from .container import Container
        from .results import RunResult
        from .session import Session

        if name in client.session_names:
            return client.get_session(name)
        if name not in self.shell.user_ns:
            raise UsageError(
                f"no session or variable called {name!r}; sessions: "
                f"{', '.join(client.session_names) or 'none'}. Give --from one of those, or a "
                "variable holding Containers (start a session with %%container --session NAME)"
            )
        value = self.shell.user_ns[name]
        if isinstance(value, RunResult) and value.session in client.session_names:
            return client.get_session(value.session)  # `--out` of a session cell
        if isinstance(value, Session):
            return value
        if isinstance(value, Container):
            return [value]
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, Container) for v in value)
        ):
            return list(value)
        raise UsageError(
            f"{name} is a {type(value).__name__}; --from takes a session (or the --out result "
            "of a session cell), a Container or a list of Containers (the result of a one-off "
            "run holds outputs, not files: run it in a --session to publish it)"
        )
