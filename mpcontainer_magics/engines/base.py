"""The interface of a container engine, in the parts its callers need.

An engine knows which platform it runs natively and which it can emulate, how to get an
image for one platform *pinned* (so later runs cannot drift to another platform's image),
and a few container primitives the rest of the package composes. Its interface comes in
parts, as docker-py separates images from containers, so a caller (or a test's fake) deals
only with the part it uses:

- :class:`ImageSource`: what an image offers, and ``pull`` one platform of it pinned;
- :class:`Runtime`: one-off containers: ``create``, ``start_and_wait``, ``remove``
  (``container()`` pairs create and remove, cancellation-safe; ``run`` is all three);
- :class:`Runner`: both, all that running a command on N platforms needs (``runs``);
- :class:`Sessions`: long-lived containers: ``start`` + ``attach_exec`` keep a shell we
  talk to, ``state`` says whether it still runs;
- :class:`ImageStore`: files and snapshots: ``copy_to`` / ``copy_from`` move directories,
  ``commit`` snapshots a container, ``read_image`` / ``layer_ids`` / ``save_layers`` /
  ``image_config`` read an image, ``image_from_directory`` makes one of a host directory;
- :class:`Engine`: all of them, plus what a client does once (``version``, ``reap_orphans``,
  ``aclose``), and notes for the user (``note``, ``take_notes``: shown with the next
  result). Docker and the embedded engine share their bookkeeping in ``common.EngineBase``.

Everything is async; blocking client libraries are wrapped in threads by the engine itself.
Waiting calls (``run``, ``start_and_wait``) are cancellation-safe: when their task is
cancelled (timeout, Ctrl-C) what they started is stopped before the cancellation propagates.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import posixpath
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._aio import finish_despite_cancel
from ..errors import InvalidArgument
from ..platforms import Platform
from .archives import stream_digest
from .cpu_models import CpuModels

if TYPE_CHECKING:
    from ..registry import RegistryClient  # imports httpx: not at %load_ext time

#: ``on_output(stream, chunk)`` with stream "stdout" or "stderr"; called on the event loop.
OutputCallback = Callable[[str, bytes], None]

#: ``on_progress(done_bytes, total_bytes)`` while an image is pulled: how many bytes of the
#: platform's compressed blobs (config and layers) are fetched, of how many in all (None
#: while unknown). ``done`` never decreases; the last call is ``(total, total)``. It may be
#: called from any thread (Docker's pull streams on a thread of its own) or on the event
#: loop, so it must be quick and thread-safe.
ProgressCallback = Callable[[int, int | None], None]

#: ``on_progress(platform, done_bytes, total_bytes)``: the pulls of several platforms (the
#: client's and sessions' ``on_progress``), each as :data:`ProgressCallback`.
PullProgressCallback = Callable[[Platform, int, int | None], None]


def per_platform(
    on_progress: PullProgressCallback | None, platform: Platform
) -> ProgressCallback | None:
    """The engine's ``on_progress`` for one platform of a multi-platform one."""
    if on_progress is None:
        return None
    return lambda done, total: on_progress(platform, done, total)


#: Foreign platforms an engine may be able to emulate with qemu-user.
EMULATION_CANDIDATES = [
    Platform.parse(p)
    for p in (
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/s390x",
        "linux/ppc64le",
        "linux/riscv64",
        "linux/386",
        "linux/mips64le",
    )
]

#: Label keys put on everything we create, so leftovers can be found and attributed.
LABEL_MANAGED = "io.mpcontainer-magics.managed"
LABEL_HOST = "io.mpcontainer-magics.host"
LABEL_PID = "io.mpcontainer-magics.pid"
LABEL_PID_START = "io.mpcontainer-magics.pid-start"
LABEL_SESSION = "io.mpcontainer-magics.session"
#: Which engine object (client) of its process made a container: closing one client
#: removes its own containers, never those of another client in the same kernel.
LABEL_ENGINE = "io.mpcontainer-magics.engine"


@dataclass(frozen=True)
class PulledImage:
    """An image made available for exactly one platform, pinned by an engine-local ID."""

    reference: str  # as the user wrote it, e.g. "alpine:3.23"
    platform: Platform
    image_id: str  # what the engine runs; never the tag, which may be re-pointed
    digest: str | None  # the per-platform manifest digest, when known
    node: str = ""  # the fleet's node holding it ("" for a single engine's own)


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int
    duration_s: float


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config that decide how its containers run."""

    env: tuple[str, ...] = ()  # "KEY=VALUE" entries, in order
    workdir: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    user: str = ""  # "name", "uid" or "uid:gid"; "" is root
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_oci(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        """From an image config's ``config`` object (Docker's ``Config`` has the same keys)."""
        config = config or {}
        entrypoint, cmd = config.get("Entrypoint"), config.get("Cmd")
        return cls(
            env=tuple(config.get("Env") or ()),
            workdir=config.get("WorkingDir") or "",
            entrypoint=tuple(entrypoint) if entrypoint is not None else None,
            cmd=tuple(cmd) if cmd is not None else None,
            user=config.get("User") or "",
            labels=dict(config.get("Labels") or {}),
        )

    def to_oci(self) -> dict[str, Any]:
        """The image config's ``config`` object; empty settings are left out."""
        oci: dict[str, Any] = {}
        if self.env:
            oci["Env"] = list(self.env)
        if self.workdir:
            oci["WorkingDir"] = self.workdir
        if self.entrypoint is not None:
            oci["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            oci["Cmd"] = list(self.cmd)
        if self.user:
            oci["User"] = self.user
        if self.labels:
            oci["Labels"] = dict(self.labels)
        return oci

    def env_dict(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.env)

    def with_env(self, name: str, value: str) -> ImageConfig:
        env = self.env_dict()
        env[name] = value
        return replace(self, env=tuple(f"{k}={v}" for k, v in env.items()))


@dataclass(frozen=True)
class Mount:
    """A host directory (or file) bound into a container at ``target``."""

    source: str
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        """``HOST_PATH:CONTAINER_PATH[:ro|:rw]``; a relative host path is relative to the cwd."""
        parts = text.split(":")
        mode = parts.pop() if len(parts) == 3 else "rw"
        if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
            raise InvalidArgument(
                f"bad mount {text!r}: write HOST_PATH:CONTAINER_PATH, optionally with :ro"
            )
        return cls(parts[0], parts[1], mode == "ro").checked()

    def checked(self) -> Mount:
        """This mount with an absolute, existing source; raises InvalidArgument otherwise."""
        source = os.path.abspath(os.path.expanduser(self.source))
        if not os.path.exists(source):
            raise InvalidArgument(
                f"mount source {self.source} does not exist on this machine; create it first"
            )
        if not posixpath.isabs(self.target):
            raise InvalidArgument(
                f"mount target {self.target!r} must be an absolute path in the container"
            )
        return Mount(source, posixpath.normpath(self.target), self.read_only)

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class ContainerSpec:
    """What a container is made of (``Runtime.create``): an image, a command, its settings."""

    image: PulledImage
    argv: tuple[str, ...] | None = None  # None: never started (only copied from, committed)
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)  # besides owner_labels()
    #: As ``docker run --network``: "none", "host", "bridge" or a network's name; None is
    #: the engine's default (the client's ``network``, else the daemon's own).
    network: str | None = None


class AttachedProcess(abc.ABC):
    """A process started by ``Engine.attach_exec``: we write its stdin and see it end."""

    #: Resolves with the exit code once the process has ended and its output is all read.
    exited: asyncio.Future[int]

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send ``data`` to the process's stdin."""

    @abc.abstractmethod
    async def running(self) -> bool:
        """Whether the process itself still runs (``exited`` may come later: a job it
        started, say a server started with ``setsid``, may hold its output open)."""

    @abc.abstractmethod
    async def interrupt(self, group: int) -> None:
        """Stop process group ``group`` (as seen in the container) and everything in it.

        SIGINT first, as Ctrl-C in a terminal; then SIGTERM and SIGKILL to whatever is left
        of the group (a non-interactive shell starts background jobs immune to SIGINT).
        """


class ImageSource(abc.ABC):
    """Where images come from: the platforms an image offers, one of them pinned."""

    @abc.abstractmethod
    async def image_platforms(self, reference: str) -> list[Platform]:
        """Every platform the image offers."""

    @abc.abstractmethod
    async def pull(
        self,
        reference: str,
        platform: Platform,
        *,
        refresh: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
        """Make ``reference`` available for ``platform``; cached unless ``refresh``.

        ``on_progress(done_bytes, total_bytes)`` (see :data:`ProgressCallback`) follows the
        bytes fetched; a pull that finds the image already there reports ``(total, total)``
        once. It may be called from any thread, or on the event loop.
        """


class Runtime(abc.ABC):
    """Where commands run: one-off containers, created, run to completion, removed."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def native_platform(self) -> Platform:
        """The platform containers run on without emulation."""

    async def run(
        self,
        image: PulledImage,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        mounts: Sequence[Mount] = (),
        network: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecOutcome:
        """Run ``argv`` in a new container of ``image``, removed afterwards."""
        async with self.container(
            image, argv, env=env, workdir=workdir, mounts=mounts, network=network
        ) as cid:
            return await self.start_and_wait(cid, on_output)

    @asynccontextmanager
    async def container(
        self,
        image: PulledImage,
        argv: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
        network: str | None = None,
        keep: bool = False,
    ) -> AsyncIterator[str]:
        """A created (not started) container, removed on exit even when cancelled.

        With ``keep``, it is removed only if the block fails: how long-lived containers
        (sessions) are set up. A container created just after a Ctrl-C must not be left
        behind: creation always completes, and is then undone if we were cancelled meanwhile.
        """
        argv = tuple(argv) if argv else None
        spec = ContainerSpec(
            image, argv, dict(env or {}), workdir, tuple(mounts), labels or {}, network
        )
        create = asyncio.ensure_future(self.create(spec))
        try:
            container_id = await finish_despite_cancel(create)
        except asyncio.CancelledError:
            if not create.cancelled() and create.exception() is None:
                await finish_despite_cancel(self.remove(create.result()))
            raise
        try:
            yield container_id
        except BaseException:
            await finish_despite_cancel(self.remove(container_id))
            raise
        if not keep:
            await finish_despite_cancel(self.remove(container_id))

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> str:
        """Create a container as ``spec`` says, labelled as ours; its ID."""

    @abc.abstractmethod
    async def start_and_wait(
        self, container_id: str, on_output: OutputCallback | None = None
    ) -> ExecOutcome:
        """Start a created container, stream its output, and wait for it to exit.

        A command that cannot start exits as in ``docker run``: 127 when it is not found,
        126 when it cannot be executed, with the reason on stderr.
        """

    @abc.abstractmethod
    async def remove(self, container_id: str) -> None:
        """Remove the container (killing it if it runs); a missing one is not an error."""


class Runner(ImageSource, Runtime):
    """All that running a command on N platforms needs (``runs.run_on_platforms``), and
    what the user should be told of it."""

    # Notes: what the user should hear with the next result (a mirror served an image, a
    # cached resolution stood in for an unreachable registry, mounts were copied to a node).

    def note(self, text: str) -> None:
        """Leave ``text`` for the user, with the next result (the same note once)."""
        pending: list[str] = self.__dict__.setdefault("_notes", [])
        if text not in pending:
            pending.append(text)

    def take_notes(self) -> list[str]:
        """What the user should be told since the last call (said once each)."""
        pending: list[str] = self.__dict__.get("_notes", [])
        taken = list(pending)
        pending.clear()  # in place: copies of an engine (Fleet.on) share the list
        return taken


class Sessions(abc.ABC):
    """Long-lived containers: started in the background, talked to through exec'd shells."""

    @abc.abstractmethod
    async def start(self, container_id: str) -> None:
        """Start a created container in the background (its argv should keep it alive)."""

    @abc.abstractmethod
    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        """Start ``argv`` in a running container with its stdin open to us (a live shell).

        Its output goes to ``on_output`` (on the event loop) for as long as it runs.
        """

    @abc.abstractmethod
    async def state(self, container_id: str) -> str:
        """ "running", "exited (CODE)", "created", … or "gone" when the container is missing."""


class ImageStore(abc.ABC):
    """Files and snapshots: what containers and images hold, and images made of them."""

    @abc.abstractmethod
    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        """Copy the host file or directory ``source`` to the path ``target`` in the container.

        A directory's contents are merged into ``target`` (created with its parents).
        """

    @abc.abstractmethod
    async def copy_from(self, container_id: str, path: str, dest: Path) -> bool:
        """Copy ``path`` of the container into the new host directory ``dest``.

        A directory's contents land in ``dest``; a file lands as ``dest/<its name>``.
        Returns True when ``path`` was a directory.
        """

    @abc.abstractmethod
    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        """Snapshot the container's filesystem as an image recording ``config``."""

    @abc.abstractmethod
    async def image_config(self, image: PulledImage) -> ImageConfig:
        """How containers of ``image`` run by default (env, workdir, entrypoint, cmd)."""

    @abc.abstractmethod
    async def layer_ids(self, image: PulledImage) -> list[str]:
        """The digests of the image's uncompressed layers (its diff_ids), bottom layer
        first, without reading the layers."""

    @abc.abstractmethod
    async def save_layers(
        self, image: PulledImage, dest: Path, only: Sequence[int] | None = None
    ) -> list[Path]:
        """The image's layers as uncompressed tar files in ``dest``, bottom layer first;
        with ``only``, just the layers of those indexes, in that order."""

    @abc.abstractmethod
    async def read_image(self, image: PulledImage, dest: Path) -> None:
        """Unpack the exact filesystem of ``image`` into the new host directory ``dest``."""

    @abc.abstractmethod
    async def image_from_directory(
        self, root: Path, platform: Platform, config: ImageConfig
    ) -> PulledImage:
        """An image for ``platform`` whose filesystem is exactly the host directory ``root``."""


class Engine(Runner, Sessions, ImageStore):
    """A place where containers run: every part, and what a client does with it once."""

    #: Why this engine serves the client, when "auto" chose it ("" when it was asked for).
    chosen: str = ""
    #: Reads images straight from registries (for files of platforms that cannot run here).
    registry: RegistryClient
    #: The CPU model QEMU emulates per platform (a client shares one with all its engines).
    cpu_models: CpuModels
    #: Where names resolve: "registry" (the cache stands in when it is unreachable) or
    #: "cache" (what the cache knows is used without asking: prefetched images).
    resolve_from: str

    @abc.abstractmethod
    async def emulated_platforms(self) -> list[Platform]:
        """Foreign platforms this engine can run through emulation (may be empty)."""

    @abc.abstractmethod
    async def version(self) -> str:
        """What runs the containers and its version, e.g. "Docker 20.10.24 (API 1.41)"."""

    @abc.abstractmethod
    async def reap_orphans(self) -> int:
        """Remove containers left by processes of this host that no longer exist."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Remove everything this process created and release connections."""


def file_digest(path: Path) -> str:
    """The sha256 digest of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return stream_digest(f)


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name ([] if unknown): [0] is
    the state, [19] the start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The command name (field 2) may contain spaces; fields after ")" are fixed.
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start_ticks(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" if unknown).

    Together with the PID it identifies a process even after the PID is reused.
    """
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def owner_labels() -> dict[str, str]:
    """Labels naming this project and this process (host, PID, PID start time)."""
    pid = os.getpid()
    return {
        LABEL_MANAGED: "1",
        LABEL_HOST: socket.gethostname(),
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start_ticks(pid),
    }


def owned_prefix(prefix: str) -> str:
    """``prefix`` + this process's PID and start time: for temporary names whose owner can
    later be told gone (:func:`owner_of_name`)."""
    pid = os.getpid()
    return f"{prefix}{pid}-{process_start_ticks(pid)}-"


def owner_of_name(name: str, prefix: str) -> dict[str, str]:
    """The owner labels of a name made with :func:`owned_prefix` (for :func:`owner_is_gone`)."""
    pid, _, rest = name.removeprefix(prefix).partition("-")
    return {
        LABEL_HOST: socket.gethostname(),
        LABEL_PID: pid,
        LABEL_PID_START: rest.partition("-")[0],
    }


def processes_naming(needle: bytes) -> list[int]:
    """PIDs of this machine's processes whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
    return found


def owner_is_gone(labels: Mapping[str, str]) -> bool:
    """True when the labels name a process of this host that no longer exists.

    Containers of other hosts (a shared remote daemon) are never judged gone.
    """
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    if _stat_fields(pid)[:1] == ["Z"]:
        return True  # it has exited; only its parent has not collected its status yet
    recorded = labels.get(LABEL_PID_START, "")
    return bool(recorded) and recorded != process_start_ticks(pid)
