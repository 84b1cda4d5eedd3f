"""Run one command on N platforms at once, streaming each platform's lines.

``run_on_platforms`` pulls every platform's image concurrently, then runs the command in a
fresh container per platform concurrently, so a cell costs about as much as its slowest
platform. Output is decoded incrementally (a multibyte character split across two chunks
survives) and handed out line by line while the containers still run.

A platform that times out or cannot run (no emulation) does not sink the others: its row
records why, and ``RunResult.check()`` turns such rows into the matching exception once the
caller has the result in hand.
"""

from __future__ import annotations

import asyncio
import codecs
import posixpath
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ._aio import gather_or_cancel
from .engines.base import (
    ExecOutcome,
    Mount,
    OutputCallback,
    PulledImage,
    PullProgressCallback,
    Runner,
    per_platform,
)
from .engines.cpu_models import refusal_note, refused_by_qemu
from .errors import EngineError, EngineUnavailable, InvalidArgument, MPCError, SessionError
from .platforms import Platform, cross_env
from .results import PlatformResult, RunResult
from .targets import PlatformsSpec, Target, engine_for, resolve

#: ``on_line(platform, stream, line)``: one complete line (without its newline) as it arrives.
LineCallback = Callable[[Platform, str, str], None]


class _LineSplitter:
    """Decodes one stream incrementally and hands out complete lines; keeps the full text."""

    def __init__(self, emit: Callable[[str], None] | None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._emit = emit
        self._pending = ""
        self._parts: list[str] = []

    def feed(self, chunk: bytes, final: bool = False) -> None:
        text = self._decoder.decode(chunk, final=final)
        self._parts.append(text)
        if self._emit is None:
            return
        *complete, self._pending = (self._pending + text).split("\n")
        for line in complete:
            self._emit(line)
        if final and self._pending:
            self._emit(self._pending)
            self._pending = ""

    def close(self) -> str:
        self.feed(b"", final=True)
        return "".join(self._parts)


def checked_env(env: Mapping[str, object] | None) -> dict[str, str]:
    """The variables a run gets, the same on every engine: values become text with
    ``str()``, as docker-py does (``env={"N": 1}`` sets N=1); None is refused."""
    checked = {}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidArgument(
                f"bad environment variable name {key!r}: use a non-empty string without '=', "
                "e.g. env={'GREETING': 'hello'}"
            )
        if value is None:
            raise InvalidArgument(
                f"environment variable {key} has no value (None): give a string, e.g. "
                f"env={{{key!r}: ''}}, or leave it out"
            )
        checked[key] = value.decode() if isinstance(value, bytes) else str(value)
    return checked


def checked_workdir(workdir: str | None) -> str | None:
    """A run's working directory must be absolute, as Docker requires, on every engine."""
    if workdir is not None and not posixpath.isabs(workdir):
        raise InvalidArgument(
            f"the working directory {workdir!r} is not an absolute path in the container: "
            f"give one such as /{workdir.lstrip('./') or 'work'} (in a session, `cd` in the "
            "cell goes anywhere)"
        )
    return workdir


def checked_network(network: str | None) -> str | None:
    """A ``network=`` value: None, or a name as ``docker run --network`` takes it."""
    if network is not None and (not isinstance(network, str) or not network.strip()):
        raise InvalidArgument(
            f"bad network {network!r}: give a name such as 'host', 'none', 'bridge' or one "
            "of `docker network ls` (or None for the engine's default)"
        )
    return network


async def run_on_platforms(
    engine: Runner,
    image: str,
    argv: Sequence[str],
    platforms: PlatformsSpec = None,
    *,
    env: Mapping[str, object] | None = None,
    workdir: str | None = None,
    mounts: Sequence[Mount] = (),
    network: str | None = None,
    timeout: float | None = None,
    on_line: LineCallback | None = None,
    on_progress: PullProgressCallback | None = None,
    cross: bool = False,
) -> RunResult:
    """Run ``argv`` on every platform concurrently; per-platform failures land in the result.

    ``platforms`` is a request, or targets already resolved (see :mod:`.targets`). With
    ``cross``, every run happens on the engine's native platform, once per target
    platform, with that target's cross-compilation variables (``platforms.cross_env``).
    ``on_progress(platform, done_bytes, total_bytes)`` follows each platform's pull.
    ``network`` is each container's (as ``docker run --network``; None: the engine's).
    """
    started = time.perf_counter()
    env, workdir = checked_env(env), checked_workdir(workdir)
    native = await engine.native_platform()
    targets = await resolve(engine, image, platforms, cross=cross)
    runnable = [t for t in targets if t.runs != "no"]
    if cross:  # runs natively only: the targets need not be able to run here
        pulled = [await engine.pull(image, native, on_progress=per_platform(on_progress, native))]
        pulled *= len(runnable)
    else:
        pulled = await gather_or_cancel(
            engine_for(engine, t).pull(
                image, t.platform, on_progress=per_platform(on_progress, t.platform)
            )
            for t in runnable
        )
    images = dict(zip(runnable, pulled, strict=True))

    def launcher(image: PulledImage, target: Target) -> Launch:
        run_env = {**cross_env(target.platform, native), **env} if cross else env
        where = engine if cross else engine_for(engine, target)
        return lambda on_output: where.run(
            image,
            argv,
            env=run_env,
            workdir=workdir,
            mounts=mounts,
            network=network,
            on_output=on_output,
        )

    async def run_one(target: Target) -> PlatformResult:
        if target.runs == "no":
            return unplaced(target)
        image = images[target]
        return await run_streamed(
            launcher(image, target),
            platform=target.platform,
            emulated=target.emulated,
            image_digest=image.digest,
            engine=engine_for(engine, target).name,
            node=target.node,
            timeout=timeout,
            on_line=on_line,
        )

    results = await gather_or_cancel(run_one(t) for t in targets)
    result = RunResult(image, argv, results, timeout=timeout, wall_s=time.perf_counter() - started)
    result.notes += emulator_notes(results)
    return result


def emulator_notes(results: Sequence[PlatformResult]) -> list[str]:
    """What rows whose program QEMU refused to start (over its CPU model) should say."""
    return [
        refusal_note(r.platform, said)
        for r in results
        if r.emulated and (said := refused_by_qemu(r.stderr)) is not None
    ]


def unplaced(target: Target) -> PlatformResult:
    """The row of a platform no node can run: why, and what would make it run."""
    error = EngineUnavailable(f"{target.platform} cannot run: {target.why}")
    return PlatformResult(
        platform=target.platform,
        exit_code=None,
        stdout="",
        stderr="",
        duration_s=0.0,
        emulated=False,
        image_digest=None,
        engine="",
        node="",
        error=str(error),
        exception=error,
    )


#: Starts one platform's command with the given output callback (a fresh run or an exec).
Launch = Callable[[OutputCallback], Awaitable[ExecOutcome]]


async def run_streamed(
    launch: Launch,
    *,
    platform: Platform,
    emulated: bool,
    image_digest: str | None,
    engine: str,
    node: str = "",
    timeout: float | None = None,
    on_line: LineCallback | None = None,
) -> PlatformResult:
    """Run one platform's command, splitting its output into lines as it arrives."""

    def emitter(stream: str) -> Callable[[str], None] | None:
        if on_line is None:
            return None
        return lambda line: on_line(platform, stream, line)

    streams = {name: _LineSplitter(emitter(name)) for name in ("stdout", "stderr")}
    exit_code: int | None = None
    error: str | None = None
    exception: MPCError | None = None
    started = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(
            launch(lambda stream, chunk: streams[stream].feed(chunk)), timeout
        )
        exit_code, duration = outcome.exit_code, outcome.duration_s
    except asyncio.TimeoutError:
        error, duration = f"timed out after {timeout:g} s", time.perf_counter() - started
    except (EngineError, SessionError) as exc:
        # This platform's row says why (a session member that stopped, say); the other
        # platforms run on: one failure never cancels their cells.
        error, exception, duration = str(exc), exc, time.perf_counter() - started
    return PlatformResult(
        platform=platform,
        exit_code=exit_code,
        stdout=streams["stdout"].close(),
        stderr=streams["stderr"].close(),
        duration_s=duration,
        emulated=emulated,
        image_digest=image_digest,
        engine=engine,
        node=node,
        error=error,
        timed_out=error is not None and exception is None,
        exception=exception,
    )
