"""Interactive sessions: one live container per platform, kept from cell to cell.

A session behaves like a terminal on each of its platforms: files, the working directory
and exported variables persist from one cell to the next. Each container runs a keep-alive
``sh`` loop; each cell is a ``docker exec`` of a small wrapper (``CELL``) that restores the
saved working directory and exported variables, evaluates the cell in the same shell (so
``cd`` and ``export`` take effect), and saves them again on the way out, also after an
``exit`` or a Ctrl-C. State lives in ``STATE_DIR`` inside the container, so it survives
exactly as long as the container.

Ctrl-C and timeouts stop the cell's processes (the engine signals its process group) and
leave the container running, so the next cell finds the session as it was.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .compare import Launch, LineCallback, RunResult, gather_or_cancel, run_streamed, runnable
from .engines.base import (
    LABEL_SESSION,
    Engine,
    ExecOutcome,
    Mount,
    OutputCallback,
    PulledImage,
)
from .errors import EmulationUnavailable, EngineError, InvalidArgument, SessionError
from .platforms import Platform

if TYPE_CHECKING:
    import pandas as pd

STATE_DIR = "/tmp/.mpc-session"

# `sleep` in the background and `wait`, so the loop costs nothing; exit if sleep is missing
# (127) rather than spin.
KEEP_ALIVE = ["sh", "-c", "while :; do sleep 86400 & wait $!; [ $? = 127 ] && exit 127; done"]

# Sourced by every cell. $1 is the cell, $2... are KEY=VALUE pairs of --env; MPC_KEEP_CWD=1
# when --workdir is given. Builtins only (read, not $(cat)): under emulation every process
# start costs ~40 ms.
CELL = f"""\
mpc_cell=$1; shift
if [ -f {STATE_DIR}/env ]; then . {STATE_DIR}/env; fi
if [ -z "${{MPC_KEEP_CWD:-}}" ] && {{ read -r mpc_cwd < {STATE_DIR}/cwd; }} 2>/dev/null; then
    cd "$mpc_cwd" 2>/dev/null || :
fi
unset MPC_KEEP_CWD
for mpc_kv do export "$mpc_kv"; done
unset mpc_kv mpc_cwd; set --
trap 'mpc_status=$?; pwd > {STATE_DIR}/cwd; export -p > {STATE_DIR}/env; exit $mpc_status' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
eval "$mpc_cell"
"""

# Run once per container at start: installs CELL (so `ps` in a cell shows one short line,
# not the whole wrapper) and proves the image has a working sh.
INSTALL = f'mkdir -p {STATE_DIR} && printf "%s" "$1" > {STATE_DIR}/cell.sh'
RUN_CELL = f". {STATE_DIR}/cell.sh"

#: Session names become container labels and appear in `%container cp NAME:/path`.
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_name(name: str) -> str:
    if not name or not set(name) <= NAME_CHARS or name[0] in ".-":
        raise InvalidArgument(
            f"bad session name {name!r}: use letters, digits, '_', '.' and '-' "
            "(not first), e.g. --session build"
        )
    return name


@dataclass(frozen=True)
class Member:
    """One platform's live container of a session."""

    platform: Platform
    image: PulledImage
    container_id: str
    emulated: bool
    started: float  # time.time()


class Session:
    """Live containers of one image on several platforms; create with ``client.session()``."""

    def __init__(self, engine: Engine, name: str, image: str, mounts: Sequence[Mount] = ()) -> None:
        self._engine = engine
        self.name = check_name(name)
        self.image = image
        self.mounts = tuple(mounts)
        self._members: dict[Platform, Member] = {}
        self._starting = asyncio.Lock()

    @property
    def platforms(self) -> list[Platform]:
        return list(self._members)

    def __repr__(self) -> str:
        platforms = ", ".join(map(str, self._members)) or "no platforms yet"
        return f"<Session {self.name!r}: {self.image} on {platforms}>"

    def member(self, platform: Platform | str | None = None) -> Member:
        """The container of ``platform`` (may be omitted when the session has only one)."""
        if platform is None:
            if len(self._members) != 1:
                raise InvalidArgument(
                    f"session {self.name!r} runs on {len(self._members)} platforms "
                    f"({', '.join(map(str, self._members))}); name one, e.g. "
                    f"{self.name}@{next(iter(self._members), 'linux/amd64')}"
                )
            return next(iter(self._members.values()))
        wanted = Platform.parse(platform) if isinstance(platform, str) else platform
        for member in self._members.values():
            if member.platform.matches(wanted):
                return member
        raise SessionError(
            f"session {self.name!r} has no {wanted} container; it runs on "
            f"{', '.join(map(str, self._members))}"
        )

    async def ensure(self, platforms: Sequence[Platform]) -> None:
        """Start a container for each platform the session does not run yet, concurrently.

        Platforms that started stay in the session even when another one fails.
        """
        runnable(platforms, platforms)
        async with self._starting:
            missing = [p for p in platforms if not any(p.matches(m) for m in self._members)]
            outcomes = await asyncio.gather(
                *(self._start(p) for p in missing), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, Member):
                    self._members[outcome.platform] = outcome
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _start(self, platform: Platform) -> Member:
        image = await self._engine.pull(self.image, platform)
        labels = {LABEL_SESSION: self.name}
        async with self._engine.container(
            image, KEEP_ALIVE, mounts=self.mounts, labels=labels, keep=True
        ) as container_id:
            try:
                await self._engine.start(container_id)
                installed = await self._engine.exec(container_id, INSTALL, [CELL])
                failure = f"exit {installed.exit_code}" if installed.exit_code else ""
            except EmulationUnavailable:
                raise
            except EngineError as exc:
                failure = str(exc)
            if failure:
                raise SessionError(
                    f"cannot start session {self.name!r} on {platform}: {self.image} needs a "
                    f"POSIX sh, sleep and mkdir, and a writable /tmp ({failure})"
                )
        native = await self._engine.native_platform()
        return Member(platform, image, container_id, not platform.matches(native), time.time())

    async def run(
        self,
        script: str,
        *,
        platforms: Sequence[Platform] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
    ) -> RunResult:
        """Run ``script`` with ``sh`` in the session on each (or the given) platform."""
        if platforms:
            await self.ensure(platforms)
            members = [self.member(p) for p in platforms]
        else:
            members = list(self._members.values())
        if not members:
            raise SessionError(f"session {self.name!r} has no platforms; start it with some")
        args = [script, *(f"{k}={v}" for k, v in (env or {}).items())]
        began = time.perf_counter()
        results = await gather_or_cancel(
            run_streamed(
                self._launcher(member, args, workdir),
                platform=member.platform,
                emulated=member.emulated,
                image_digest=member.image.digest,
                engine=self._engine.name,
                timeout=timeout,
                on_line=on_line,
            )
            for member in members
        )
        return RunResult(
            self.image,
            ["sh", "-c", script],
            results,
            timeout=timeout,
            wall_s=time.perf_counter() - began,
        )

    def _launcher(self, member: Member, args: list[str], workdir: str | None) -> Launch:
        async def launch(on_output: OutputCallback) -> ExecOutcome:
            try:
                return await self._engine.exec(
                    member.container_id,
                    RUN_CELL,
                    args,
                    env={"MPC_KEEP_CWD": "1"} if workdir else None,
                    workdir=workdir,
                    on_output=on_output,
                )
            except EngineError:
                state = await self._engine.state(member.container_id)
                if state == "running":
                    raise
                raise SessionError(
                    f"session {self.name!r} on {member.platform} is not running any more "
                    f"({state}); stop it (%container stop {self.name}) and start it again"
                ) from None

        return launch

    async def copy_in(
        self,
        source: str | os.PathLike[str],
        target: str,
        platform: Platform | str | None = None,
    ) -> None:
        """Copy a host file or directory to ``target`` on one platform, or on all of them.

        A directory's contents are merged into ``target``; a file becomes ``target``, or
        goes inside it when ``target`` ends with "/".
        """
        src = Path(source).expanduser().absolute()
        if not src.exists():
            raise InvalidArgument(f"{source} does not exist on this machine")
        if not posixpath.isabs(target):
            raise InvalidArgument(f"{target!r}: give an absolute path in the container")
        if target.endswith("/"):
            target += src.name
        members = [self.member(platform)] if platform else list(self._members.values())
        await gather_or_cancel(self._engine.copy_to(m.container_id, src, target) for m in members)

    async def copy_out(
        self,
        path: str,
        dest: str | os.PathLike[str],
        platform: Platform | str | None = None,
    ) -> list[Path]:
        """Copy ``path`` from the session to the host; returns what was written.

        From one platform (given, or the session's only one) the copy is ``dest``, or goes
        inside ``dest`` when that is an existing directory. From several, ``dest`` becomes a
        directory with one copy per platform, named like ``linux-arm64``.
        """
        if platform is not None or len(self._members) == 1:
            targets = {self.member(platform): Path(dest).expanduser().absolute()}
        else:
            base = Path(dest).expanduser().absolute()
            targets = {m: base / str(m.platform).replace("/", "-") for m in self._members.values()}
        name = posixpath.basename(posixpath.normpath(path))
        written = []
        for member, target in targets.items():
            if target.is_dir():
                target = target / name
            if target.exists() or target.is_symlink():
                raise InvalidArgument(f"{target} already exists; remove it or copy elsewhere")
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=".mpc-copy-", dir=target.parent))
            try:
                is_dir = await self._engine.copy_from(member.container_id, path, scratch / "out")
                (scratch / "out" if is_dir else scratch / "out" / name).rename(target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            written.append(target)
        return written

    async def rows(self) -> list[dict[str, object]]:
        now = time.time()
        states = await asyncio.gather(
            *(self._engine.state(m.container_id) for m in self._members.values())
        )
        return [
            {
                "name": self.name,
                "platform": str(m.platform),
                "image": self.image,
                "image_digest": m.image.digest,
                "container": m.container_id[:12],
                "age_s": round(now - m.started, 1),
                "state": state,
            }
            for m, state in zip(self._members.values(), states, strict=True)
        ]

    async def stop(self) -> None:
        """Remove every container of the session."""
        members, self._members = list(self._members.values()), {}
        await asyncio.gather(*(self._engine.remove(m.container_id) for m in members))


SESSION_COLUMNS = ["name", "platform", "image", "image_digest", "container", "age_s", "state"]


def sessions_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=SESSION_COLUMNS)
