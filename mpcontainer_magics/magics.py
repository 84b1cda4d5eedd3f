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
from traitlets import Enum, Unicode

from ._loop import LoopThread
from .client import DEFAULT_IMAGE, ENGINES, Client, open_engine
from .errors import MPCError
from .platforms import Platform

T = TypeVar("T")

SUBCOMMANDS = {
    "pull": "%container pull IMAGE [--platform P1,P2|all]   fetch an image for platforms",
    "platforms": "%container platforms [IMAGE]   native/emulated platforms, what IMAGE offers",
}


def _line_parser(name: str) -> MagicArgumentParser:
    return MagicArgumentParser(prog=f"%container {name}", description=SUBCOMMANDS[name])


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
        with contextlib.suppress(MPCError):  # no engine yet: the first cell will say so
            return await (await self._connected()).engine.reap_orphans()
        return 0

    def close(self) -> None:
        """Remove every container of this kernel and stop the loop thread."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._bridge.run(self._client.aclose())
            self._client = None
        self._bridge.close()

    async def _connected(self) -> Client:
        async with self._connecting:
            if self._client is None or self._client_engine != self.engine:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                self._client = Client(await open_engine(self.engine))
                self._client_engine = self.engine
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
        "-t", "--timeout", type=float, help="Seconds each platform may run before it is stopped."
    )
    @argument("-o", "--out", metavar="VAR", help="Store the result object in this variable.")
    @argument(
        "--raise-error",
        action="store_true",
        help="Fail the cell when a platform exits non-zero (otherwise that is shown as data).",
    )
    @argument("--table", action="store_true", help="Show the table even for a single platform.")
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
        env = _parse_env(args.env)
        lines: queue.SimpleQueue[tuple[Platform, str, str]] = queue.SimpleQueue()
        labelled = args.platform is not None and (
            "," in args.platform or args.platform.strip().lower() == "all"
        )

        def show_lines() -> None:
            while True:
                try:
                    platform, stream, text = lines.get_nowait()
                except queue.Empty:
                    return
                target = sys.stderr if stream == "stderr" else sys.stdout
                print(f"[{platform}] {text}" if labelled else text, file=target, flush=True)

        result = self._run(
            lambda client: client.run(
                cell,
                platforms=args.platform,
                image=args.image or self.default_image,
                env=env,
                workdir=args.workdir,
                timeout=args.timeout,
                on_line=lambda *item: lines.put(item),
            ),
            poll=show_lines,
        )
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

    def _line(self, line: str) -> Any:
        words = _split(line)
        if not words or words[0] not in SUBCOMMANDS:
            given = f"unknown subcommand {words[0]!r}; " if words else ""
            raise UsageError(
                f"{given}use %%container as a cell magic, or one of: "
                + " | ".join(SUBCOMMANDS.values())
            )
        name, rest = words[0], words[1:]
        if name == "pull":
            parser = _line_parser(name)
            parser.add_argument("image")
            parser.add_argument("-p", "--platform")
            args = parser.parse_args(rest)
            pulled = self._run(lambda client: client.pull(args.image, platforms=args.platform))
            for image in pulled:
                pin = image.digest or f"local image {image.image_id[:19]}"
                print(f"{image.reference} for {image.platform}: {pin}")
            return None
        parser = _line_parser(name)
        parser.add_argument("image", nargs="?")
        args = parser.parse_args(rest)
        return self._run(lambda client: client.platforms(args.image))
