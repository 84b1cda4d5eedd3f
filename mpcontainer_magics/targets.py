"""Which platforms a request means, and how each of them runs: the one target resolver.

    targets = await resolve(engine, IMG, "all")
    [(str(t.platform), t.runs) for t in targets]   # [("linux/amd64", "native"), ...]

A request names platforms as users write them (``platforms=`` of the client, ``--platform``
of the magics, the widget's ticked boxes): None means the engine's native platform, "all"
every platform the image offers, anything else a comma-separated list or a sequence of
strings and :class:`~.platforms.Platform` objects. Each resulting :class:`Target` says how it
runs on the engine:

* ``native``: no emulator needed (the engine's own architecture, or one its kernel runs
  itself, as Docker's amd64 kernel runs 386 containers);
* ``emulated``: under QEMU user-mode emulation;
* ``cross``: a cross build, run on the native platform with the target's variables;
* ``no``: it cannot run commands at all (not Linux, or, in reports, no emulator here), and why.

With nodes (a :class:`~.engines.fleet.Fleet`), each target also names the ``node`` it runs
on, placed by the fleet's rules; ``linux/arm64@pi`` in a request pins a platform to node
``pi``, and ``node=`` pins all of them. A platform no node can run gets ``no`` with what
would make it run, and its row says so; the others still run.

Whether an emulator is really there is only known when a run tries: a remote Docker daemon's
handlers are not visible here, so runs never skip a platform on a guess; the engine's error
then lands in that platform's row. Reports (``%container platforms``, the widget's picker)
use :func:`how_it_runs` with the engine's list of emulated platforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .engines import binfmt
from .engines.endpoints import LOCAL
from .engines.fleet import Fleet
from .errors import ExecUnsupported, InvalidArgument
from .platforms import Platform, parse_platforms

if TYPE_CHECKING:
    from .engines.base import Engine

#: A parsed request: explicit platforms, "all", or None for the native platform.
Request = list[Platform] | Literal["all"] | None
Runs = Literal["native", "emulated", "cross", "no"]


@dataclass(frozen=True)
class Target:
    """One platform of a request and how it runs (``why`` says it in words)."""

    platform: Platform
    runs: Runs
    why: str
    node: str = ""  # the fleet's node it runs on; "" with a single engine
    fallback: str = ""  # why not on the node it would have gone to (unreachable)

    @property
    def emulated(self) -> bool:
        return self.runs == "emulated"

    def __str__(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return f"{self.platform}{where} ({self.runs}: {self.why})"


#: What ``platforms=`` accepts: None (native), "all" (every platform the image offers),
#: "linux/amd64,linux/arm64", a sequence of strings/Platforms, or targets resolved before.
PlatformsSpec = str | Sequence[str | Platform | Target] | None


def parse_request(spec: PlatformsSpec) -> Request:
    """``platforms=`` as the user wrote it → explicit platforms, "all", or None."""
    return split_pins(spec)[0]


def split_pins(spec: PlatformsSpec) -> tuple[Request, dict[Platform, str]]:
    """The request, and the nodes its ``PLATFORM@NODE`` entries pin platforms to."""
    if spec is None:
        return None, {}
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return "all", {}
    if isinstance(spec, str):
        if "@" not in spec:
            return parse_platforms(spec), {}
        spec = spec.split(",")
    pins: dict[Platform, str] = {}
    platforms: list[str | Platform] = []
    for item in spec:
        if isinstance(item, Target):
            item = item.platform
        if isinstance(item, str) and "@" in item:
            text, _, node = item.partition("@")
            if not node.strip():
                raise InvalidArgument(
                    f"{item.strip()!r} names no node after '@'; write e.g. linux/arm64@pi"
                )
            (platform,) = parse_platforms(text)
            pins[platform] = node.strip()
            item = platform
        platforms.append(item)
    return parse_platforms(platforms), pins


def parse_one(spec: str | Platform | None) -> Platform | None:
    """A single platform (any OS: files of a windows image can be read), or None."""
    if spec is None or isinstance(spec, Platform):
        return spec
    if "," in spec or spec.strip().lower() == "all":
        raise InvalidArgument(f"give one platform, not {spec!r}, e.g. --platform windows/amd64")
    return Platform.parse(spec)


def runs_without_emulator(engine: str, platform: Platform, native: Platform) -> bool:
    """The engine's own architecture; on Docker also what its kernel runs itself (386 on
    amd64). The embedded engine starts qemu-user for every other architecture."""
    if platform.architecture == native.architecture:
        return True
    return engine == "docker" and platform.architecture in binfmt.KERNEL_RUNS.get(
        native.architecture, ()
    )


def how_it_runs(
    engine: str, platform: Platform, native: Platform, emulated: Sequence[Platform]
) -> Target:
    """How ``platform`` runs on an engine whose native platform and emulated ones are known."""
    if platform.os != "linux":
        return Target(platform, "no", "only Linux platforms run commands: files only")
    if runs_without_emulator(engine, platform, native):
        return Target(platform, "native", f"runs natively on {native}")
    if any(platform.matches(p) for p in emulated):
        return Target(platform, "emulated", "runs under QEMU user-mode emulation")
    return Target(platform, "no", f"the {engine} engine has no emulator for it here")


async def requested_platforms(
    engine: Engine, image: str | None, spec: PlatformsSpec
) -> list[Platform]:
    """The platforms ``spec`` names, whether they can run or not (for pulls and files):
    the native one for None, every platform ``image`` offers for "all"."""
    request = parse_request(spec)
    if request is None:
        return [await engine.native_platform()]
    if request == "all":
        if image is None:
            raise InvalidArgument('platforms="all" needs an image to read its platforms from')
        return await engine.image_platforms(image)
    return request


async def resolve(
    engine: Engine,
    image: str | None,
    spec: PlatformsSpec,
    *,
    cross: bool = False,
    node: str | None = None,
) -> list[Target]:
    """The targets ``spec`` means for ``image`` on ``engine``.

    An explicit non-Linux platform raises ExecUnsupported (files only); "all" keeps the
    image's Linux platforms (and raises when it has none). ``cross`` targets need not run
    here at all: each is built on the native platform. Targets resolved before are kept.
    On a fleet, ``node`` (and ``PLATFORM@NODE`` in ``spec``) pins where they run.
    """
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(t, Target) for t in spec):
        return list(spec)  # resolved by a caller that showed them first
    _, pins = split_pins(spec)
    if not isinstance(engine, Fleet):
        # The engine itself is always the node "local": pins to it pin nothing.
        named = sorted({n for n in (*pins.values(), node) if n is not None and n != LOCAL})
        if named:
            raise InvalidArgument(
                f"no node named {named[0]!r}: the only node is local (this machine's engine); "
                "add one first (%container node add NAME ENDPOINT, or connect(nodes={...}))"
            )
    platforms = await requested_platforms(engine, image, spec)
    native = await engine.native_platform()
    if cross:
        return [Target(p, "cross", f"cross-built on {native}") for p in platforms]
    if parse_request(spec) == "all":
        linux = [p for p in platforms if p.os == "linux"]
        if platforms and not linux:
            raise ExecUnsupported(platforms[0])
        platforms = linux
    for platform in platforms:
        if platform.os != "linux":
            raise ExecUnsupported(platform)
    if isinstance(engine, Fleet):
        placed = await engine.place(platforms, node=node, pins=pins)
        return [Target(p.platform, p.runs, p.why, p.node, p.fallback) for p in placed]
    targets = []
    for platform in platforms:
        if runs_without_emulator(engine.name, platform, native):
            targets.append(Target(platform, "native", f"runs natively on {native}"))
        else:
            targets.append(Target(platform, "emulated", "runs under QEMU user-mode emulation"))
    return targets


def engine_for(engine: Engine, target: Target) -> Engine:
    """Where ``target`` runs: its node's part of a fleet, or the engine itself."""
    if isinstance(engine, Fleet) and target.node:
        return engine.on(target.node)
    return engine
