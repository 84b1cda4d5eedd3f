"""Interactive sessions: one live container per platform, kept from cell to cell.

A session behaves like a terminal on each of its platforms: files, the working directory
and variables persist from one cell to the next. Each container runs a keep-alive loop, and
a live ``sh`` in it (:class:`.shell.Shell`) runs the cells, on every platform concurrently.

Ctrl-C and timeouts stop what the cell started (the engine signals the shell's process
group) and leave the container running; the next cell gets a fresh shell that restores the
working directory and exported variables, so the session goes on as it was.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._aio import gather_or_cancel
from .engines.base import (
    LABEL_SESSION,
    Engine,
    ExecOutcome,
    Mount,
    OutputCallback,
    ProgressCallback,
    PulledImage,
    PullProgressCallback,
    per_platform,
)
from .engines.tree import remove_tree
from .errors import (
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    InvalidArgument,
    SessionError,
)
from .hostpaths import absolute, host_destination
from .platforms import Platform
from .publish import Snapshot
from .results import RunResult
from .runs import (
    Launch,
    LineCallback,
    checked_env,
    checked_workdir,
    emulator_notes,
    run_streamed,
)
from .shell import Shell
from .targets import PlatformsSpec, Target, engine_for, resolve

if TYPE_CHECKING:
    import pandas as pd

# `sleep` in the background and `wait`, so the loop costs nothing; exit if sleep is missing
# (127) rather than spin.
KEEP_ALIVE = ["sh", "-c", "while :; do sleep 86400 & wait $!; [ $? = 127 ] && exit 127; done"]

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
    """One platform's live container of a session, and the shell in it."""

    platform: Platform
    image: PulledImage
    container_id: str
    shell: Shell
    emulated: bool
    started: float  # time.time()
    node: str = ""  # the fleet's node it lives on; "" with a single engine
    engine: str = ""  # the kind of engine it runs on


#: How long a lost shell's container may still look "running" before we believe it (s).
STATE_SETTLE_S = 2.0


class Session:
    """Live containers of one image on several platforms; create with ``client.session()``."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        image: str,
        mounts: Sequence[Mount] = (),
        network: str | None = None,
    ) -> None:
        self._engine = engine
        self.name = check_name(name)
        self.image = image
        self.mounts = tuple(mounts)
        self.network = network  # its containers' (None: the engine's default)
        self._members: dict[Platform, Member] = {}
        self._starting = asyncio.Lock()

    @property
    def platforms(self) -> list[Platform]:
        return list(self._members)

    @property
    def nodes(self) -> set[str]:
        """The fleet's nodes its members live on ("local" for the client's own engine)."""
        return {m.node or "local" for m in self._members.values()}

    def placed(self, targets: Sequence[Target]) -> list[Target]:
        """``targets`` with those of running members where they already run: a session's
        platform stays on its node, wherever a new placement would put it."""
        placed = []
        for target in targets:
            member = self._members.get(target.platform)
            if member is not None and member.node:
                how = "emulated" if member.emulated else "native"
                why = f"runs in the session on node {member.node}"
                target = Target(target.platform, how, why, member.node)
            placed.append(target)
        return placed

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
            f"{', '.join(map(str, self._members))}. Name one of those, or add {wanted}: "
            f"%%container --session {self.name} --platform {wanted}"
        )

    async def ensure(
        self,
        platforms: PlatformsSpec,
        *,
        on_progress: PullProgressCallback | None = None,
    ) -> list[Target]:
        """Start a container for each platform the session does not run yet, concurrently;
        returns the targets ``platforms`` means (see :mod:`.targets`).

        Platforms that started stay in the session even when another one fails.
        ``on_progress(platform, done_bytes, total_bytes)`` follows the pull of each platform
        started (see :data:`.engines.base.ProgressCallback`).
        """
        targets = await resolve(self._engine, self.image, platforms)
        async with self._starting:
            missing = [t for t in targets if not any(t.platform.matches(m) for m in self._members)]
            outcomes = await asyncio.gather(
                *(self._start(t, per_platform(on_progress, t.platform)) for t in missing),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, Member):
                    self._members[outcome.platform] = outcome
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return targets

    async def _start(self, target: Target, on_progress: ProgressCallback | None = None) -> Member:
        platform = target.platform
        if target.runs == "no":
            raise EngineUnavailable(
                f"cannot start session {self.name!r} on {platform}: {target.why}"
            )
        engine = engine_for(self._engine, target)
        image = await engine.pull(self.image, platform, on_progress=on_progress)
        labels = {LABEL_SESSION: self.name}
        async with engine.container(
            image, KEEP_ALIVE, mounts=self.mounts, labels=labels, network=self.network, keep=True
        ) as container_id:
            shell = Shell(engine, container_id)
            try:
                await engine.start(container_id)
                await shell.start()
            except (EmulationUnavailable, EngineUnavailable):
                raise  # the platform or the engine, not the image: its own message says why
            except (EngineError, SessionError) as exc:
                raise SessionError(
                    f"cannot start session {self.name!r} on {platform}: {self.image} needs a "
                    f"POSIX sh, sleep and mkdir, and a writable /tmp ({exc}); pick an image "
                    "that has them, e.g. alpine or busybox"
                ) from None
        return Member(
            platform, image, container_id, shell, target.emulated, time.time(),
            target.node, engine.name,
        )  # fmt: skip

    async def run(
        self,
        script: str,
        *,
        platforms: PlatformsSpec = None,
        env: Mapping[str, object] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
    ) -> RunResult:
        """Run ``script`` with ``sh`` in the session on each (or the given) platform.

        ``env`` and ``workdir`` follow the rules of one-off runs (:func:`.runs.checked_env`,
        :func:`.runs.checked_workdir`); the cell starts in ``workdir``.
        """
        checked, workdir = checked_env(env), checked_workdir(workdir)
        if platforms:
            members = [self.member(t.platform) for t in await self.ensure(platforms)]
        else:
            members = list(self._members.values())
        if not members:
            raise SessionError(
                f"session {self.name!r} has no platforms; start it with some, e.g. "
                f"%%container --session {self.name} --platform linux/amd64"
            )
        began = time.perf_counter()
        results = await gather_or_cancel(
            run_streamed(
                self._launcher(member, script, checked, workdir),
                platform=member.platform,
                emulated=member.emulated,
                image_digest=member.image.digest,
                engine=member.engine or self._engine.name,
                node=member.node,
                timeout=timeout,
                on_line=on_line,
            )
            for member in members
        )
        result = RunResult(
            self.image,
            ["sh", "-c", script],
            results,
            timeout=timeout,
            wall_s=time.perf_counter() - began,
            session=self.name,
        )
        result.notes += emulator_notes(results)
        return result

    def _launcher(
        self, member: Member, script: str, env: Mapping[str, str], workdir: str | None
    ) -> Launch:
        async def launch(on_output: OutputCallback) -> ExecOutcome:
            try:
                outcome = await member.shell.run(
                    script, env=env, workdir=workdir, on_output=on_output
                )
            except EngineError:
                await self._check_running(member)
                raise
            if member.shell.lost:  # killed with its container (docker kill), or by itself
                await self._check_running(member)
            return outcome

        return launch

    async def _check_running(self, member: Member) -> None:
        """SessionError when ``member``'s container has stopped (from outside, say).

        Called when its shell was lost: the engine may learn a moment later that the
        container went with it (the embedded engine sees its proot end asynchronously), so
        "running" is asked again for a short while before it is believed.
        """
        loop = asyncio.get_running_loop()
        settled_by = loop.time() + STATE_SETTLE_S
        state = await self._engine.state(member.container_id)
        while state == "running" and loop.time() < settled_by:
            await asyncio.sleep(0.05)
            state = await self._engine.state(member.container_id)
        if state != "running":
            raise SessionError(
                f"session {self.name!r} on {member.platform} is not running any more "
                f"({state}); stop it (%container stop {self.name}) and start it again"
            )

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
            raise InvalidArgument(
                f"{source} does not exist on this machine; check the path (a relative one "
                f"starts in {os.getcwd()})"
            )
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
        base = absolute(dest)
        if platform is not None or len(self._members) == 1:
            targets = {self.member(platform): base}
        else:
            targets = {m: base / str(m.platform).replace("/", "-") for m in self._members.values()}
        name = posixpath.basename(posixpath.normpath(path))
        made_base = not os.path.lexists(base)
        written: list[Path] = []
        try:
            for member, target in targets.items():
                if target.is_dir():
                    target = target / name
                if target.exists() or target.is_symlink():
                    raise InvalidArgument(f"{target} already exists; remove it or copy elsewhere")
                source = await self._followed(member, path)
                with host_destination(target, what="copy") as scratch:
                    out = scratch / "out"
                    is_dir = await self._engine.copy_from(member.container_id, source, out)
                    (out if is_dir else out / name).rename(target)
                written.append(target)
        except BaseException:
            # All platforms or none: a later platform's failure takes back the earlier copies.
            for done in [base] if made_base else written:
                remove_tree(done)
            raise
        return written

    async def _followed(self, member: Member, path: str) -> str:
        """``path``, or with a trailing "/" the directory it names (a symlink followed), as
        `docker cp` reads it: that directory's contents are copied, on every engine."""
        if not path.endswith("/") or posixpath.normpath(path) == "/":
            return path
        found = bytearray()
        outcome = await member.shell.run(  # a subshell: the session's cwd stays
            f"(cd -P -- {shlex.quote(path)} 2>/dev/null && pwd -P)",
            on_output=lambda stream, chunk: found.extend(chunk) if stream == "stdout" else None,
        )
        real = found.decode(errors="replace").strip()
        if outcome.exit_code != 0 or not posixpath.isabs(real):
            raise InvalidArgument(
                f"{path} is not a directory in the container on {member.platform}; a trailing "
                "/ copies a directory's contents: drop it to copy the path itself"
            )
        return real

    async def snapshots(self) -> list[Snapshot]:
        """The session's filesystems now, one per platform, as images (for publishing)."""

        async def snap(member: Member) -> Snapshot:
            config = await self._engine.image_config(member.image)
            image = await self._engine.commit(member.container_id, config)
            return Snapshot(member.platform, image, config, member.image)

        return await gather_or_cancel(snap(m) for m in self._members.values())

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
                "node": m.node or "local",
                "age_s": round(now - m.started, 1),
                "state": state,
            }
            for m, state in zip(self._members.values(), states, strict=True)
        ]

    async def stop(self) -> None:
        """Remove every container of the session."""
        members, self._members = list(self._members.values()), {}
        await asyncio.gather(*(self._engine.remove(m.container_id) for m in members))


SESSION_COLUMNS = [
    "name", "platform", "image", "image_digest", "container", "node", "age_s", "state",
]  # fmt: skip


def sessions_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=SESSION_COLUMNS)
