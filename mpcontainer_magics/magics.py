"""``%%container`` and ``%container``: a thin skin over :mod:`mpcontainer_magics.client`.

Each magic parses its arguments, calls the async client through the private loop thread
(``_loop.LoopThread``) and displays what comes back. Lines streamed by the containers are
queued by the loop thread and printed by the main thread while it waits, so they land in the
cell that is running. Every error of this package becomes a one-line ``UsageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import shlex
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
)
from IPython.display import display
from traitlets import Enum, List, Unicode

from ._loop import LoopThread
from .client import DEFAULT_IMAGE, ENGINES, Client, open_engine
from .container import Container
from .errors import MPCError
from .platforms import Platform
from .results import RunResult
from .session import Session
from .workspace import reap_workspaces

T = TypeVar("T")

SUBCOMMANDS = {
    "pull": "%container pull IMAGE [--platform P1,P2|all]   fetch an image for platforms",
    "platforms": "%container platforms [IMAGE]   native/emulated platforms, what IMAGE offers",
    "doctor": "%container doctor   the engine and its version, which platforms can run and why "
    "not, registries, cache size, and each problem with its fix",
    "sessions": "%container sessions   the live sessions, one row per platform",
    "stop": "%container stop NAME | --all   remove a session's containers (or every session's)",
    "cp": "%container cp SRC DST   copy between this machine and a session; the session side "
    "is NAME[@PLATFORM]:/path",
    "ls": "%container ls [PATH] --image IMAGE [--platform P]   list files of an image "
    "(any OS, e.g. windows/amd64)",
    "cat": "%container cat PATH --image IMAGE [--platform P]   print a file of an image",
    "publish": "%container publish REF --from SESSION_OR_VAR   push the platforms of a session "
    "(or of a session cell's --out result, or Containers in a variable) as one image",
    "export": "%container export PATH --from SESSION_OR_VAR [--tag TAG]   the same, written as "
    "an OCI image layout (a directory, or a tar for PATH.tar)",
    "ui": "%container ui [IMAGE]   the widget app: platforms, command, Run/Stop, live output, "
    "Publish",
}

#: The session side of `%container cp`: NAME[@PLATFORM]:/absolute/path
SESSION_PATH = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<platform>[^:]+))?:(?P<path>/.*)$"
)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # e.g. "No closing quotation"
        raise UsageError(f"cannot parse {line!r}: {exc}") from None


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env expects KEY=VALUE, got {pair!r}")
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

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        # Magics registers itself in shell.configurables, so `%config ContainerMagics.x` works.
        super().__init__(shell=shell, **kwargs)
        self._bridge = LoopThread()
        self._client: Client | None = None
        self._client_engine = ""
        self._connecting = asyncio.Lock()
        #: The background start-up begun by ``start()``: connect, then reap orphans.
        self.startup: Future[int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and remove containers of dead kernels, in the background (load stays fast)."""
        self.startup = self._bridge.submit(self._reap_orphans())

    async def _reap_orphans(self) -> int:
        reaped = await asyncio.to_thread(reap_workspaces)
        with contextlib.suppress(MPCError):  # no engine yet: the first cell will say so
            reaped += await (await self._connected()).engine.reap_orphans()
        return reaped

    def close(self) -> None:
        """Remove every container of this kernel and stop the loop thread."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._bridge.run(self._client.aclose())
            self._client = None
        self._bridge.close()

    async def _connected(self) -> Client:
        async with self._connecting:
            kind = self.engine  # read once: %config may change it while we connect
            if self._client is None or self._client_engine != kind:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                self._client = Client(await open_engine(kind))
                self._client_engine = kind
            # Follows `%config ContainerMagics.insecure_registries` without reconnecting.
            self._client.engine.registry.insecure_registries = self.insecure_registries
            return self._client

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
    @line_cell_magic
    def container(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a POSIX sh script in a container on each platform, side by side.

        Output streams live, each line labelled with its platform; afterwards a table shows
        one row per platform (exit code, stdout, stderr, duration, emulated, image digest)
        and which outputs agree or differ. A non-zero exit is data, not an error, unless
        --raise-error. Ctrl-C stops and removes the cell's containers.

        Line magics:
          %container pull IMAGE [--platform P1,P2|all]   fetch an image for platforms
          %container platforms [IMAGE]                   native/emulated platforms, and
                                                         which platforms IMAGE offers
          %container doctor                              engine, version, which platforms
                                                         can run and why not, registries,
                                                         cache size; each problem's fix
          %container sessions                            live sessions (one row per platform)
          %container stop NAME | --all                   remove sessions
          %container cp SRC DST                          copy files; the session side is
                                                         NAME[@PLATFORM]:/path
          %container ls [PATH] --image IMAGE [--platform P]   list an image's files (any OS)
          %container cat PATH --image IMAGE [--platform P]    print an image's file
          %container publish REF --from SESSION_OR_VAR        push a multi-platform image
          %container export PATH --from SESSION_OR_VAR        write it as an OCI layout
          %container ui [IMAGE]                              the widget app (also mpc.ui())
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
        labelled = [False]  # decided once the platforms are known, before any line arrives

        def show_lines() -> None:
            while True:
                try:
                    platform, stream, text = lines.get_nowait()
                except queue.Empty:
                    return
                target = sys.stderr if stream == "stderr" else sys.stdout
                print(f"[{platform}] {text}" if labelled[0] else text, file=target, flush=True)

        def on_line(*item: Any) -> None:
            lines.put(item)

        async def run(client: Client) -> RunResult:
            # A session keeps the image it started with; the default only starts new ones.
            keeps_image = args.session in client.session_names
            image = args.image or (None if keeps_image else self.default_image)
            if args.session is None:
                targets = await client.resolve_platforms(image, args.platform, cross=args.cross)
                labelled[0] = len(targets) > 1
                return await client.run(
                    cell,
                    platforms=targets,
                    image=image,
                    env=env,
                    workdir=args.workdir,
                    mounts=args.mount,
                    timeout=args.timeout,
                    on_line=on_line,
                    cross=args.cross,
                )
            session = await client.session(
                args.session,
                platforms=args.platform,
                image=image,
                mounts=args.mount or None,
            )
            targets = session.platforms
            if args.platform is not None:
                targets = await client.resolve_platforms(session.image, args.platform)
            labelled[0] = len(targets) > 1
            return await session.run(
                cell,
                platforms=targets,
                env=env,
                workdir=args.workdir,
                timeout=args.timeout,
                on_line=on_line,
            )

        result = self._run(run, poll=show_lines)
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
                + " | ".join(SUBCOMMANDS.values())
            )
        name, rest = words[0], words[1:]
        parser = MagicArgumentParser(prog=f"%container {name}", description=SUBCOMMANDS[name])
        return getattr(self, f"_line_{name}")(parser, rest)

    def _line_pull(self, parser: MagicArgumentParser, words: list[str]) -> None:
        parser.add_argument("image")
        parser.add_argument("-p", "--platform")
        args = parser.parse_args(words)
        pulled = self._run(lambda client: client.pull(args.image, platforms=args.platform))
        for image in pulled:
            pin = image.digest or f"local image {image.image_id[:19]}"
            print(f"{image.reference} for {image.platform}: {pin}")

    def _line_platforms(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.add_argument("image", nargs="?")
        args = parser.parse_args(words)
        return self._run(lambda client: client.platforms(args.image))

    def _line_doctor(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.parse_args(words)
        return self._run(lambda client: client.doctor())

    def _line_ui(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.add_argument("image", nargs="?")
        args = parser.parse_args(words)
        from .widgets import ContainerApp  # imports ipywidgets: only when asked for

        # The magics' own loop and client: the app's session is one of %container sessions.
        return ContainerApp(
            args.image or self.default_image, bridge=self._bridge, connect=self._connected
        )

    def _line_sessions(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.parse_args(words)
        frame = self._run(lambda client: client.sessions())
        if frame.empty:
            print("no sessions; start one with %%container --session NAME")
            return None
        return frame

    def _line_stop(self, parser: MagicArgumentParser, words: list[str]) -> None:
        parser.add_argument("name", nargs="?")
        parser.add_argument("--all", action="store_true", help="stop every session")
        args = parser.parse_args(words)
        if (args.name is None) == (not args.all):
            raise UsageError("give a session name or --all, e.g. %container stop build")
        stopped = self._run(lambda client: client.stop(args.name))
        print(f"stopped: {', '.join(stopped)}" if stopped else "no sessions to stop")

    def _line_cp(self, parser: MagicArgumentParser, words: list[str]) -> None:
        parser.add_argument("source")
        parser.add_argument("dest")
        args = parser.parse_args(words)
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

    def _image_files(
        self, parser: MagicArgumentParser, words: list[str], path_required: bool
    ) -> tuple[Any, Callable[[Client], Any]]:
        parser.add_argument("path", nargs=None if path_required else "?", default="/")
        parser.add_argument("-i", "--image", help="the image (default: the default image)")
        parser.add_argument("-p", "--platform", help="one platform (default: native)")
        args = parser.parse_args(words)
        if args.platform and ("," in args.platform or args.platform.strip().lower() == "all"):
            raise UsageError("give one platform, e.g. --platform windows/amd64")
        image = args.image or self.default_image
        return args, lambda client: client.container(args.platform).from_(image)

    def _line_ls(self, parser: MagicArgumentParser, words: list[str]) -> None:
        args, container = self._image_files(parser, words, path_required=False)
        names = self._run(lambda client: container(client).directory(args.path).entries())
        print("\n".join(names) if names else f"{args.path} is empty")

    def _line_cat(self, parser: MagicArgumentParser, words: list[str]) -> None:
        args, container = self._image_files(parser, words, path_required=True)
        print(self._run(lambda client: container(client).file(args.path).contents()), end="")

    def _line_publish(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.add_argument("reference", help="where to push, e.g. registry.example/hello:1")
        parser.add_argument("--from", dest="source", required=True, metavar="SESSION_OR_VAR")
        args = parser.parse_args(words)
        return self._run(
            lambda client: client.publish(args.reference, self._variants(client, args.source))
        )

    def _line_export(self, parser: MagicArgumentParser, words: list[str]) -> Any:
        parser.add_argument("path", help="a directory, or a file ending in .tar")
        parser.add_argument("--from", dest="source", required=True, metavar="SESSION_OR_VAR")
        parser.add_argument("--tag", default="latest", help="the layout's reference name")
        args = parser.parse_args(words)
        return self._run(
            lambda client: client.export(
                args.path, self._variants(client, args.source), tag=args.tag
            )
        )

    def _variants(self, client: Client, name: str) -> Session | list[Container]:
        """A session by name, or a variable holding a Session, a Container or Containers."""
        if name in client.session_names:
            return client.get_session(name)
        if name not in self.shell.user_ns:
            raise UsageError(
                f"no session or variable called {name!r}; sessions: "
                f"{', '.join(client.session_names) or 'none'}"
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
