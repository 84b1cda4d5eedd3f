"""The Docker engine: docker-py (blocking) wrapped for asyncio.

Every blocking docker-py call runs on a daemon thread of its own (see ``_call``), never on
the event loop's thread.

Images are resolved through our registry client first: it tells which platforms an image
offers and the per-platform manifest digest, and the image is then pulled *by that digest*.
Docker's classic image store keeps one image per tag and re-points the tag on every
platform's pull, so running by tag after a multi-platform pull would silently run the wrong
architecture; we always run by image ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
from docker.utils.socket import STDERR, frames_iter

from ..errors import (
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    ImageError,
    ImageNotFound,
    PlatformNotOffered,
    RegistryError,
)
from ..platforms import Platform
from ..registry import RegistryClient, ResolvedImage
from .base import (
    LABEL_MANAGED,
    Engine,
    ExecOutcome,
    OutputCallback,
    PulledImage,
    finish_despite_cancel,
    owner_is_gone,
    owner_labels,
)

if TYPE_CHECKING:
    from docker.api.client import APIClient

T = TypeVar("T")

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# Foreign platforms worth probing for emulation, in the order users usually care about.
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


def _short(exc: BaseException) -> str:
    """The first line of an exception's text, trimmed: enough to diagnose, never a wall."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _exec_format_error(text: str) -> bool:
    return "exec format error" in text.lower()


class DockerEngine(Engine):
    name = "docker"

    def __init__(self, api: APIClient, registry: RegistryClient) -> None:
        self._api = api
        self._registry = registry
        self._native: Platform | None = None
        self._resolved: dict[str, ResolvedImage] = {}
        self._pulled: dict[tuple[str, Platform], PulledImage] = {}
        self._live: set[str] = set()  # IDs of containers created and not yet removed

    @classmethod
    async def connect(cls, base_url: str | None = None) -> DockerEngine:
        """Connect to the daemon at ``base_url`` (default: DOCKER_HOST or the local socket)."""

        def open_api() -> APIClient:
            try:
                if base_url is None:
                    api = docker.from_env().api
                else:
                    api = docker.APIClient(base_url=base_url, version="auto")
                api.ping()
            except docker.errors.DockerException as exc:
                where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                raise EngineUnavailable(
                    f"cannot reach the Docker engine at {where} ({_short(exc)}); start it "
                    "(`sudo systemctl start docker`, or `sudo dockerd &`) or set DOCKER_HOST to "
                    f"a running engine (DOCKER_HOST is {os.environ.get('DOCKER_HOST', 'unset')})"
                ) from None
            return api

        api = await asyncio.to_thread(open_api)
        return cls(api, RegistryClient())

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking docker-py call on a daemon thread of its own.

        Not a thread pool: pools are joined at interpreter exit, and a thread blocked on a
        container's output would then hang the exit; a fresh thread per call also means a
        wide fan-out never waits for a free worker.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():  # the awaiting task was cancelled meanwhile
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def work() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args, **kwargs), None)
            except BaseException as exc:  # handed to the awaiting task, not lost
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed while we worked
                loop.call_soon_threadsafe(settle, *outcome)

        threading.Thread(target=work, name="mpc-docker", daemon=True).start()
        return await future

    # -- platforms ---------------------------------------------------------------------------

    async def native_platform(self) -> Platform:
        if self._native is None:
            version = await self._call(self._api.version)
            self._native = Platform.parse(f"{version.get('Os', 'linux')}/{version['Arch']}")
        return self._native

    async def emulated_platforms(self) -> list[Platform]:
        """Foreign platforms with an enabled binfmt_misc QEMU handler on the daemon's host.

        binfmt_misc is only visible when the daemon runs on this machine (a unix socket);
        for a remote daemon nothing can be claimed, so the list is empty.
        """
        native = await self.native_platform()
        if not self._api.base_url.startswith("http+docker://localhost"):
            return []
        found = []
        for platform in EMULATION_CANDIDATES:
            if platform.architecture == native.architecture or platform.qemu_arch is None:
                continue
            entry = BINFMT_DIR / f"qemu-{platform.qemu_arch}"
            with contextlib.suppress(OSError):
                if entry.read_text().startswith("enabled"):
                    found.append(platform)
        return found

    async def image_platforms(self, reference: str) -> list[Platform]:
        try:
            return (await self._resolve(reference)).platforms()
        except (ImageNotFound, RegistryError):
            local = await self._local_image(reference)
            if local is None:
                raise
            return [self._platform_of(local)]

    # -- images ------------------------------------------------------------------------------

    async def _resolve(self, reference: str, refresh: bool = False) -> ResolvedImage:
        if refresh or reference not in self._resolved:
            self._resolved[reference] = await self._registry.resolve(reference)
        return self._resolved[reference]

    async def _local_image(self, reference: str) -> dict[str, Any] | None:
        try:
            return await self._call(self._api.inspect_image, reference)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise EngineError(
                f"Docker failed to inspect image {reference}: {_short(exc)}"
            ) from None

    @staticmethod
    def _platform_of(image: Mapping[str, Any]) -> Platform:
        return Platform.from_oci(
            {
                "os": image.get("Os", "linux"),
                "architecture": image.get("Architecture", ""),
                "variant": image.get("Variant", ""),
            }
        )

    async def pull(
        self, reference: str, platform: Platform, *, refresh: bool = False
    ) -> PulledImage:
        key = (reference, platform)
        if refresh or key not in self._pulled:
            self._pulled[key] = await self._pull(reference, platform, refresh)
        return self._pulled[key]

    async def _pull(self, reference: str, platform: Platform, refresh: bool) -> PulledImage:
        try:
            resolved = await self._resolve(reference, refresh)
        except (ImageNotFound, RegistryError):
            # Images built or loaded locally exist in no registry: use them when they fit.
            local = await self._local_image(reference)
            if local is None:
                raise
            found = self._platform_of(local)
            if not found.matches(platform):
                raise PlatformNotOffered(reference, platform, [found]) from None
            digests = local.get("RepoDigests") or []
            digest = digests[0].partition("@")[2] if digests else None
            return PulledImage(reference, platform, local["Id"], digest)

        digest = resolved.manifest_digest(platform)
        pinned = resolved.reference.with_digest(digest).pull_name
        local = await self._local_image(pinned)
        if local is None:
            await self._call(self._docker_pull, pinned, platform)
            local = await self._local_image(pinned)
            if local is None:
                raise EngineError(f"Docker reported pulling {pinned} but does not have it")
        return PulledImage(reference, platform, local["Id"], digest)

    def _docker_pull(self, pinned: str, platform: Platform) -> None:
        try:
            # Drain the progress stream; errors arrive as {"error": ...} items, not exceptions.
            for item in self._api.pull(pinned, platform=str(platform), stream=True, decode=True):
                if "error" in item:
                    raise self._pull_error(pinned, platform, str(item["error"]))
        except docker.errors.APIError as exc:
            raise self._pull_error(pinned, platform, _short(exc)) from None

    @staticmethod
    def _pull_error(pinned: str, platform: Platform, text: str) -> ImageError:
        # We pull a single manifest the registry listed for this platform, so a platform
        # mismatch here means the index lies about it; Docker's text says how.
        if "not found" in text or "manifest unknown" in text:
            return ImageNotFound(f"Docker could not find {pinned}: {text}")
        return ImageError(f"Docker failed to pull {pinned} for {platform}: {text}")

    # -- running -----------------------------------------------------------------------------

    async def run(
        self,
        image: PulledImage,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecOutcome:
        loop = asyncio.get_running_loop()

        def emit(stream: str, chunk: bytes) -> None:
            if on_output is not None:
                loop.call_soon_threadsafe(on_output, stream, chunk)

        stderr_seen = bytearray()  # only to recognise "exec format error"

        def watch_stderr(stream: str, chunk: bytes) -> None:
            if stream == "stderr" and len(stderr_seen) < 4096:
                stderr_seen.extend(chunk)
            emit(stream, chunk)

        # A container created just after a Ctrl-C must not be left behind: creation always
        # completes, and is then undone if we were cancelled meanwhile.
        create = asyncio.ensure_future(self._call(self._create, image, argv, env, workdir))
        try:
            container_id = await finish_despite_cancel(create)
        except asyncio.CancelledError:
            if not create.exception():
                await finish_despite_cancel(self._remove(create.result()))
            raise
        try:
            started = time.perf_counter()
            exit_code = await self._call(self._attach_start_wait, container_id, watch_stderr)
            duration = time.perf_counter() - started
        except docker.errors.APIError as exc:
            if _exec_format_error(str(exc)):
                raise EmulationUnavailable(image.platform, _short(exc)) from None
            raise EngineError(f"Docker failed to run on {image.platform}: {_short(exc)}") from None
        finally:
            await finish_despite_cancel(self._remove(container_id))
        if exit_code != 0 and _exec_format_error(stderr_seen.decode(errors="replace")):
            raise EmulationUnavailable(image.platform)
        return ExecOutcome(exit_code, duration)

    def _create(
        self,
        image: PulledImage,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        workdir: str | None,
    ) -> str:
        try:
            created = self._api.create_container(
                image.image_id,
                entrypoint=list(argv),  # replaces any image ENTRYPOINT; the image CMD is dropped
                environment=dict(env or {}),
                working_dir=workdir or None,
                labels=owner_labels(),
                detach=True,
            )
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not create a container: {_short(exc)}") from None
        self._live.add(created["Id"])
        return created["Id"]

    def _attach_start_wait(self, container_id: str, emit: OutputCallback) -> int:
        sock = self._api.attach_socket(
            container_id, params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 1}
        )
        try:
            # A quiet command must not hit docker-py's read timeout while it works.
            for candidate in (sock, getattr(sock, "_sock", None)):
                if hasattr(candidate, "settimeout"):
                    candidate.settimeout(None)
            self._api.start(container_id)
            for stream_id, data in frames_iter(sock, tty=False):
                emit("stderr" if stream_id == STDERR else "stdout", data)
        finally:
            sock.close()
        return int(self._api.wait(container_id, timeout=None)["StatusCode"])

    def _remove_now(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_container(container_id, force=True)
        self._live.discard(container_id)

    async def _remove(self, container_id: str) -> None:
        await self._call(self._remove_now, container_id)

    # -- housekeeping ------------------------------------------------------------------------

    async def reap_orphans(self) -> int:
        listed = await self._call(
            self._api.containers, all=True, filters={"label": f"{LABEL_MANAGED}=1"}
        )
        orphans = [c["Id"] for c in listed if owner_is_gone(c.get("Labels") or {})]
        await asyncio.gather(*(self._remove(cid) for cid in orphans))
        return len(orphans)

    async def aclose(self) -> None:
        # Blocking calls on purpose: at interpreter exit (atexit) no thread pool accepts work
        # any more, and closing is the last thing this engine does anyway.
        try:
            mine = [f"{key}={value}" for key, value in owner_labels().items()]
            listed = self._api.containers(all=True, filters={"label": mine})
            for container_id in self._live | {c["Id"] for c in listed}:
                with contextlib.suppress(docker.errors.APIError):
                    self._remove_now(container_id)
        finally:
            await self._registry.aclose()
            self._api.close()
