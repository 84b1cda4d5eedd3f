"""The Docker engine: docker-py (blocking) wrapped for asyncio.

Every blocking docker-py call runs on a daemon thread of its own (see ``_call``), never on
the event loop's thread, and inside ``docker_errors``, which turns docker-py's exceptions
into ours (``_docker``).

Images are resolved through our registry client first: it tells which platforms an image
offers and the per-platform manifest digest, and the image is then pulled *by that digest*.
Docker's classic image store keeps one image per tag and re-points the tag on every
platform's pull, so running by tag after a multi-platform pull would silently run the wrong
architecture; we always run by image ID. Pulls, metering and image archives are in
``docker_images``; what both engines share (caches, bookkeeping, ``aclose``) in ``common``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker

from .._aio import finish_despite_cancel
from ..errors import (
    EmulationUnavailable,
    EngineError,
    ImageNotFound,
    InvalidArgument,
    MPCError,
    PlatformNotOffered,
    RegistryError,
)
from ..platforms import Platform
from ..registry import HUB, RegistryClient, ResolvedImage
from . import binfmt, docker_images
from .archives import write_copy
from .base import (
    EMULATION_CANDIDATES,
    LABEL_ENGINE,
    LABEL_MANAGED,
    AttachedProcess,
    ContainerSpec,
    ExecOutcome,
    ImageConfig,
    OutputCallback,
    PulledImage,
    owner_is_gone,
    owner_labels,
)
from .common import EngineBase, PullProgress, missing_path, not_a_directory
from .docker_errors import (
    DockerAPIError,
    DockerNotFound,
    docker_errors,
    exec_format_error,
    handler_without_f_flag,
    missing_interpreter,
    missing_network,
    refused_start,
)
from .docker_exec import DockerProcess
from .docker_streams import STDERR, frames
from .layers import apply_layer, extract_archive
from .probe import ProbeCache, ProbeReport, cpu_model_refused, run_probe

if TYPE_CHECKING:
    from docker.api.client import APIClient

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The directory bit of a Go ``os.FileMode``, as in the stat header of Docker's archive API.
GO_MODE_DIR = 1 << 31


def _no_read_timeout(sock: Any) -> None:
    """A quiet command must not hit docker-py's read timeout while it works."""
    for candidate in (sock, getattr(sock, "_sock", None)):
        if hasattr(candidate, "settimeout"):
            candidate.settimeout(None)


class DockerEngine(EngineBase[Platform]):
    """Containers of a Docker engine; ``_live`` maps each one made to its image's platform."""

    name = "docker"

    def __init__(
        self,
        api: APIClient,
        registry: RegistryClient,
        where: str = "",
        *,
        remote: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        where = where or api.base_url  # for messages: the address the user gave
        super().__init__(registry, cache_dir, f"Docker at {where}")
        self._api = api
        self._where = where
        self._remote = remote  # reached through a local socket (ssh) but not on this machine
        self._native: Platform | None = None
        self._instance = secrets.token_hex(8)  # LABEL_ENGINE of what this engine creates
        self._probe = ProbeCache(self._run_probe)
        self._daemon_mirrors: tuple[str, ...] | None = None  # its registry-mirrors, once read

    @classmethod
    async def connect(
        cls,
        base_url: str | None = None,
        *,
        registry: RegistryClient | None = None,
        cache_dir: Path | None = None,
    ) -> DockerEngine:
        """Connect to the daemon at ``base_url`` (default: DOCKER_HOST or the local socket).

        ``cache_dir`` keeps what names resolved to (default ``store.default_cache_dir()``)."""
        where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

        def open_api() -> APIClient:
            with docker_errors("answer a ping", where=where):
                if base_url is None:
                    api = docker.from_env().api
                else:
                    api = docker.APIClient(base_url=base_url, version="auto")
                api.ping()
            return api

        try:
            api = await asyncio.to_thread(open_api)
        except BaseException:
            if registry is not None:
                await registry.aclose()
            raise
        return cls(api, registry or RegistryClient(), where, cache_dir=cache_dir)

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking call on a daemon thread of its own.

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

    async def _docker(
        self,
        action: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        refine: Callable[[str], MPCError | None] | None = None,
        **kwargs: Any,
    ) -> T:
        """``_call`` of docker-py work, its errors translated: "Docker could not {action}"."""
        with docker_errors(action, where=self._where, refine=refine):
            return await self._call(fn, *args, **kwargs)

    # -- platforms ---------------------------------------------------------------------------

    async def native_platform(self) -> Platform:
        if self._native is None:
            version = await self._docker("say its version", self._api.version)
            self._native = Platform.parse(f"{version.get('Os', 'linux')}/{version['Arch']}")
        return self._native

    async def ping(self) -> None:
        """One round trip (``/_ping``): the lightest check that the daemon answers."""
        await self._docker("answer a ping", self._api.ping)

    async def version(self) -> str:
        """The daemon's version and the API version it speaks, e.g. "Docker 20.10.24 (API
        1.41)"; this client uses the API version negotiated when it connected."""
        info = await self._docker("say its version", self._api.version)
        names = {c.get("Name") for c in info.get("Components") or () if isinstance(c, dict)}
        product = "Podman" if "Podman Engine" in names else "Docker"  # Podman's compat API
        return f"{product} {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    async def emulated_platforms(self, binfmt_dir: Path | None = None) -> list[Platform]:
        """Foreign platforms this daemon's containers run: those of another architecture
        whose probe program ran there (emulated, or run by the kernel itself as 386 on
        amd64; see :meth:`probe`). Right for remote daemons and Docker Desktop's VM too.

        With ``binfmt_dir``, what the QEMU handlers there would let a daemon on this machine
        run instead (the rules of :func:`.binfmt.check`, which the doctor explains).
        """
        if binfmt_dir is not None:
            return binfmt.runnable_foreign(
                EMULATION_CANDIDATES, await self.native_platform(), binfmt_dir
            )
        return list((await self.probe()).foreign)

    async def probe(self, *, refresh: bool = False) -> ProbeReport:
        """What this daemon's containers run, learnt by running a tiny program of each
        architecture there (:mod:`.probe`); kept, ``refresh=True`` probes again."""
        return await self._probe.get(refresh=refresh)

    async def _run_probe(self) -> ProbeReport:
        labels = {**owner_labels(), LABEL_ENGINE: self._instance}
        return await run_probe(self._api, self._docker, await self.native_platform(), labels)

    async def _emulates(self, platform: Platform) -> bool:
        native = await self.native_platform()
        return platform.architecture != native.architecture and (
            platform.architecture not in binfmt.KERNEL_RUNS.get(native.architecture, ())
        )

    async def _try_cpu_model(self, platform: Platform, model: str) -> str | None:
        labels = {**owner_labels(), LABEL_ENGINE: self._instance}
        native = await self.native_platform()
        return await cpu_model_refused(self._api, self._docker, native, labels, platform, model)

    @property
    def is_local(self) -> bool:
        """True when the daemon runs on this machine, so host paths mean the same to it."""
        return not self._remote and self._api.base_url.startswith("http+docker://localhost")

    # -- images ------------------------------------------------------------------------------

    async def image_platforms(self, reference: str) -> list[Platform]:
        try:
            return await super().image_platforms(reference)
        except (ImageNotFound, RegistryError):
            local = await self._local_image(reference)
            if local is None:
                raise
            return [docker_images.platform_of(local)]

    async def _local_image(self, reference: str) -> dict[str, Any] | None:
        try:
            return await self._docker(
                f"inspect image {reference}", self._api.inspect_image, reference
            )
        except DockerNotFound:
            return None

    async def _lookup(self, reference: str) -> ResolvedImage:
        await self._use_daemon_mirrors()
        return await super()._lookup(reference)

    async def _use_daemon_mirrors(self) -> None:
        """Docker Hub names resolve through the daemon's own ``registry-mirrors`` too, after
        the user's: who configured Docker gets the same for our resolution."""
        if self._daemon_mirrors is None:
            info = await self._docker("describe itself", self._api.info)
            # A remote daemon's loopback mirror is on its machine, not reachable from here.
            self._daemon_mirrors = docker_images.daemon_mirrors(info, loopback=self.is_local)
            self.registry.daemon_mirrors = {HUB: self._daemon_mirrors}

    async def _fetch(
        self, reference: str, platform: Platform, refresh: bool, on_progress: PullProgress
    ) -> tuple[PulledImage, int]:
        # The platform's CPU model is proven while its image downloads (a container, ~0.3 s),
        # and before the pull returns: nothing of ours runs on after it (a Ctrl-C waits).
        proving = asyncio.ensure_future(self._with_cpu_model(platform, {}))
        try:
            return await self._fetch_pinned(reference, platform, refresh, on_progress)
        finally:
            with contextlib.suppress(MPCError):  # a refused model: creating will say so
                await finish_despite_cancel(proving)

    async def _fetch_pinned(
        self, reference: str, platform: Platform, refresh: bool, on_progress: PullProgress
    ) -> tuple[PulledImage, int]:
        try:
            resolved = await self._resolve(reference, refresh)
        except (ImageNotFound, RegistryError):
            # Images built or loaded locally exist in no registry: use them when they fit.
            local = await self._local_image(reference)
            if local is None:
                raise
            return self._local_pulled(reference, platform, local)
        digest = resolved.manifest_digest(platform)
        pinned_ref = resolved.reference.with_digest(digest)
        sources = docker_images.pull_sources(pinned_ref, resolved.mirror)
        local = await self._held(sources)
        offline = self.offline_failure(reference)
        if local is None and offline is not None:
            raise offline  # resolved from the cache, and the daemon lacks that digest
        # Only when someone follows the bytes: Docker Hub counts manifest GETs as pulls.
        sizes = (
            await docker_images.blob_sizes(self.registry, pinned_ref)
            if on_progress.listeners and offline is None
            else None
        )
        if local is None:
            meter = docker_images.PullMeter(on_progress, sizes)
            local = await self._pull_first(sources, platform, meter)
            size = meter.finish()
        else:
            size = sum(sizes[1].values(), sizes[0]) if sizes else int(local.get("Size") or 0)
        return PulledImage(reference, platform, local["Id"], digest), size

    @staticmethod
    def _local_pulled(
        reference: str, platform: Platform, local: dict[str, Any]
    ) -> tuple[PulledImage, int]:
        """A local image of that name, pulled from nowhere, if it is for ``platform``."""
        found = docker_images.platform_of(local)
        if not found.matches(platform):
            raise PlatformNotOffered(reference, platform, [found]) from None
        digests = local.get("RepoDigests") or []
        digest = digests[0].partition("@")[2] if digests else None
        # No registry to tell the compressed size: the image's own size stands in.
        size = int(local.get("Size") or 0)
        return PulledImage(reference, platform, local["Id"], digest), size

    async def _held(self, sources: Sequence[str]) -> dict[str, Any] | None:
        """The daemon's image of the first pinned name it holds (a mirror's, or the
        registry's: the same digest is the same content)."""
        for source in sources:
            local = await self._local_image(source)
            if local is not None:
                return local
        return None

    async def _pull_first(
        self, sources: Sequence[str], platform: Platform, meter: docker_images.PullMeter
    ) -> dict[str, Any]:
        """Pull the first of ``sources`` that Docker can: the mirror's name first (dockerd
        knows only its own mirrors, and those only for Docker Hub), then the registry's.
        One meter for all: the layers are the same, so progress never goes backwards."""
        *mirrored, own = sources
        for source in mirrored:
            try:
                return await self._pull_one(source, platform, meter)
            except MPCError as exc:
                log.info("pulling %s failed (%s); pulling %s instead", source, exc, own)
        return await self._pull_one(own, platform, meter)

    async def _pull_one(
        self, pinned: str, platform: Platform, meter: docker_images.PullMeter
    ) -> dict[str, Any]:
        await self._call(docker_images.pull, self._api, pinned, platform, meter)
        local = await self._local_image(pinned)
        if local is None:
            raise EngineError(
                f"Docker reported pulling {pinned} but does not have it; retry the pull"
            )
        return local

    async def image_config(self, image: PulledImage) -> ImageConfig:
        info = await self._docker(
            f"inspect image {image.reference}", self._api.inspect_image, image.image_id
        )
        return ImageConfig.from_oci(info.get("Config"))

    # -- containers --------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        image = spec.image
        if spec.mounts and not self.is_local:
            raise EngineError(
                f"bind mounts need a Docker engine on this machine; {self._where} is "
                "remote, where host paths mean nothing (copy files in with %container cp)"
            )
        binds = {
            m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts
        }
        host_config: dict[str, Any] = {"binds": binds} if binds else {}
        if spec.network is not None:
            host_config["network_mode"] = spec.network
        env = dict(spec.env)
        if spec.argv is not None:  # only what runs needs a CPU
            env = await self._with_cpu_model(image.platform, env)
        created = await self._docker(
            f"create a container of {image.reference} for {image.platform}",
            self._api.create_container,
            image.image_id,
            # An argv replaces any image ENTRYPOINT and drops its CMD. A container that is
            # only created to be copied from or committed never starts: any argv will do.
            entrypoint=list(spec.argv or ["/mpc-never-started"]),
            environment=env,
            working_dir=spec.workdir or None,
            labels={**owner_labels(), LABEL_ENGINE: self._instance, **spec.labels},
            host_config=self._api.create_host_config(**host_config) if host_config else None,
            detach=True,
            refine=self._network_missing,
        )
        self._live[created["Id"]] = image.platform
        return str(created["Id"])

    async def start_and_wait(
        self, container_id: str, on_output: OutputCallback | None = None
    ) -> ExecOutcome:
        emit, stderr_seen = self._emitter(on_output)
        started = time.perf_counter()
        platform = await self._platform_of_container(container_id)
        try:
            exit_code = await self._docker(
                f"run a command on {platform}",
                self._attach_start_wait,
                container_id,
                emit,
                refine=lambda text: self._start_refused(platform, text),
            )
        except DockerAPIError as exc:
            refused = refused_start(exc.explanation)
            if refused is None:
                raise
            # As `docker run` does: the command's exit code, Docker's reason on stderr.
            exit_code, message = refused
            if on_output is not None:
                on_output("stderr", f"{message}\n".encode())
            return ExecOutcome(exit_code, time.perf_counter() - started)
        duration = time.perf_counter() - started
        if exit_code != 0:
            failure = await self._emulation_failure(
                platform, stderr_seen.decode("utf-8", "replace")
            )
            if failure is not None:
                raise failure
        return ExecOutcome(exit_code, duration)

    @staticmethod
    def _emulation_missing(platform: Platform, text: str) -> MPCError | None:
        return EmulationUnavailable(platform, text) if exec_format_error(text) else None

    def _network_missing(self, text: str) -> MPCError | None:
        """A container's network that the daemon lacks (said at create or at start)."""
        name = missing_network(text)
        if name is None:
            return None
        return InvalidArgument(
            f"{self._where} has no network {name!r}: create it (`docker network create "
            f"{name}`), pick one of `docker network ls`, or use none or host"
        )

    def _start_refused(self, platform: Platform, text: str) -> MPCError | None:
        return self._network_missing(text) or self._emulation_missing(platform, text)

    async def _emulation_failure(self, platform: Platform, stderr: str) -> MPCError | None:
        """Why a foreign command could not start, when emulation is the reason."""
        if exec_format_error(stderr):
            return EmulationUnavailable(platform)
        said = missing_interpreter(stderr)
        if said is None or not self.is_local or platform.matches(await self.native_platform()):
            return None
        handler = binfmt.read(platform)
        if handler is None or not handler.enabled or handler.usable_in_containers:
            return None  # a binary that lacks its own loader: the command's failure
        return handler_without_f_flag(platform, said, handler.name, handler.interpreter)

    def _emitter(self, on_output: OutputCallback | None) -> tuple[OutputCallback, bytearray]:
        """A thread-safe ``on_output`` that also keeps stderr's start, to spot exec errors."""
        loop = asyncio.get_running_loop()
        stderr_seen = bytearray()

        def emit(stream: str, chunk: bytes) -> None:
            if stream == "stderr" and len(stderr_seen) < 4096:
                stderr_seen.extend(chunk)
            if on_output is not None:
                loop.call_soon_threadsafe(on_output, stream, chunk)

        return emit, stderr_seen

    async def _platform_of_container(self, container_id: str) -> Platform:
        if container_id in self._live:
            return self._live[container_id]
        with contextlib.suppress(EngineError):
            info = await self._docker(
                "inspect a container", self._api.inspect_container, container_id
            )
            image = await self._docker("inspect an image", self._api.inspect_image, info["Image"])
            return docker_images.platform_of(image)
        return await self.native_platform()

    def _attach_start_wait(self, container_id: str, emit: OutputCallback) -> int:
        sock = self._api.attach_socket(
            # Attached before the start, so the stream sees everything: asking for the logs
            # as well would repeat output that races the attachment.
            container_id,
            params={"stdout": 1, "stderr": 1, "stream": 1},
        )
        try:
            _no_read_timeout(sock)
            self._api.start(container_id)
            for stream_id, data in frames(sock):
                emit("stderr" if stream_id == STDERR else "stdout", data)
        finally:
            sock.close()
        return int(self._api.wait(container_id, timeout=None)["StatusCode"])

    async def start(self, container_id: str) -> None:
        platform = await self._platform_of_container(container_id)
        await self._docker(
            f"start a container on {platform}",
            self._api.start,
            container_id,
            refine=lambda text: self._start_refused(platform, text),
        )

    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        """``docker exec -i``: a process with its stdin open, read by a thread of its own."""
        loop = asyncio.get_running_loop()
        emit, _ = self._emitter(on_output)
        exited: asyncio.Future[int] = loop.create_future()
        platform = await self._platform_of_container(container_id)

        def refine(text: str) -> MPCError | None:
            if "is not running" in text:
                return EngineError(f"container {container_id[:12]} is not running any more: {text}")
            return self._emulation_missing(platform, text)

        action = f"run a shell on {platform}"
        created = await self._docker(
            action, self._api.exec_create, container_id, list(argv), stdin=True, refine=refine
        )
        sock = await self._docker(
            action, self._api.exec_start, created["Id"], socket=True, refine=refine
        )
        _no_read_timeout(sock)

        def settle(code: int) -> None:
            if not exited.done():
                exited.set_result(code)

        def pump() -> None:
            code = -1
            try:
                for stream_id, data in frames(sock):
                    emit("stderr" if stream_id == STDERR else "stdout", data)
            except OSError:
                pass  # the container was removed under us: the process is gone
            finally:
                sock.close()
                # Also when the client is being closed (the session's end): no code then.
                with contextlib.suppress(Exception):
                    code = int(self._api.exec_inspect(created["Id"]).get("ExitCode") or 0)
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(settle, code)

        threading.Thread(target=pump, name="mpc-docker-attached", daemon=True).start()
        stdin = getattr(sock, "_sock", sock)
        return DockerProcess(self._api, self._docker, container_id, created["Id"], stdin, exited)

    async def state(self, container_id: str) -> str:
        try:
            info = await self._docker(
                "inspect a container", self._api.inspect_container, container_id
            )
        except DockerNotFound:
            return "gone"
        status = info["State"]["Status"]
        return f"exited ({info['State']['ExitCode']})" if status == "exited" else status

    def _remove_now(self, container_id: str) -> None:
        with contextlib.suppress(DockerNotFound), docker_errors("remove a container"):
            self._api.remove_container(container_id, force=True)
        self._live.pop(container_id, None)

    async def remove(self, container_id: str) -> None:
        await self._call(self._remove_now, container_id)

    @property
    def instance(self) -> str:
        """The label value (LABEL_ENGINE) on every container this engine object makes."""
        return self._instance

    async def remove_made_by(self, instance: str) -> int:
        """Remove the containers an earlier engine object of this process made on this
        daemon, which it could not remove itself (the daemon went away meanwhile)."""
        mine = {"label": f"{LABEL_ENGINE}={instance}"}
        listed = await self._docker("list containers", self._api.containers, all=True, filters=mine)
        await asyncio.gather(*(self.remove(c["Id"]) for c in listed))
        return len(listed)

    # -- files and snapshots -----------------------------------------------------------------

    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        def put() -> None:
            with tempfile.TemporaryFile() as archive:
                write_copy(archive, source, target)
                archive.seek(0)
                self._api.put_archive(container_id, "/", archive)

        def refine(text: str) -> MPCError | None:
            return not_a_directory(target, text) if "not a directory" in text else None

        await self._docker(f"copy {source} to {target}", put, refine=refine)

    async def copy_from(self, container_id: str, path: str, dest: Path) -> bool:
        def get() -> bool:
            stream, stat = self._api.get_archive(container_id, path)
            unpacked = Path(tempfile.mkdtemp(prefix=".copy-", dir=dest.parent))
            try:
                with tempfile.TemporaryFile() as archive:
                    for chunk in stream:
                        archive.write(chunk)
                    archive.seek(0)
                    extract_archive(archive, unpacked)
                # The archive holds the path itself, under its base name.
                is_dir = bool(stat["mode"] & GO_MODE_DIR)
                if is_dir:
                    os.rename(unpacked / stat["name"], dest)
                else:
                    dest.mkdir()
                    os.rename(unpacked / stat["name"], dest / stat["name"])
                return is_dir
            finally:
                shutil.rmtree(unpacked, ignore_errors=True)

        try:
            return await self._docker(f"copy {path} out", get)
        except DockerNotFound:
            raise missing_path(path) from None

    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        platform = await self._platform_of_container(container_id)
        made = await self._docker(
            "snapshot a container",
            self._api.commit,
            container_id,
            conf=docker_images.docker_config(config),
        )
        snapshot = PulledImage(f"snapshot of {container_id[:12]}", platform, made["Id"], None)
        return self._made_here(snapshot)

    async def layer_ids(self, image: PulledImage) -> list[str]:
        info = await self._docker(
            f"inspect image {image.reference}", self._api.inspect_image, image.image_id
        )
        return list((info.get("RootFS") or {}).get("Layers") or [])

    async def save_layers(
        self, image: PulledImage, dest: Path, only: Sequence[int] | None = None
    ) -> list[Path]:
        return await self._docker(
            f"export {image.reference}",
            docker_images.save_layers,
            self._api,
            image.image_id,
            dest,
            only,
        )

    async def read_image(self, image: PulledImage, dest: Path) -> None:
        # `docker save` gives the image's own layers; a container's view would add the
        # files Docker plants in every container (/etc/hosts, /dev, .dockerenv...).
        layers_dir = Path(tempfile.mkdtemp(prefix=".layers-", dir=dest.parent))
        try:
            layers = await self.save_layers(image, layers_dir)
            dest.mkdir(parents=True, exist_ok=True)
            for layer in layers:
                await asyncio.to_thread(apply_layer, layer, dest)
        finally:
            await asyncio.to_thread(shutil.rmtree, layers_dir, True)

    async def image_from_directory(
        self, root: Path, platform: Platform, config: ImageConfig
    ) -> PulledImage:
        image_id = await self._docker(
            f"load an image of {root}",
            docker_images.load_directory,
            self._api,
            root,
            platform,
            config,
        )
        return self._made_here(PulledImage(f"rootfs for {platform}", platform, image_id, None))

    # -- housekeeping ------------------------------------------------------------------------

    def _remove_image_now(self, image_id: str) -> None:
        with contextlib.suppress(DockerNotFound), docker_errors("remove an image"):
            self._api.remove_image(image_id, force=True)
        self._made.pop(image_id, None)

    async def reap_orphans(self) -> int:
        """Remove containers, then snapshot images, of processes that are gone."""
        mine = {"label": f"{LABEL_MANAGED}=1"}
        listed = await self._docker("list containers", self._api.containers, all=True, filters=mine)
        orphans = [c["Id"] for c in listed if owner_is_gone(c.get("Labels") or {})]
        await asyncio.gather(*(self.remove(cid) for cid in orphans))
        images = await self._docker("list images", self._api.images, filters=mine)
        dead = [i["Id"] for i in images if owner_is_gone(i.get("Labels") or {})]
        for image_id in dead:  # one by one: a snapshot may be the parent of another
            with contextlib.suppress(EngineError):
                await self._call(self._remove_image_now, image_id)
        return len(orphans) + len(dead)

    def _remove_containers_now(self) -> None:
        # Also those whose creation was cancelled before we learnt their IDs: by label.
        mine = {"label": f"{LABEL_ENGINE}={self._instance}"}
        with contextlib.suppress(EngineError), docker_errors("list containers"):
            listed = self._api.containers(all=True, filters=mine)
            for container_id in {*self._live, *(c["Id"] for c in listed)}:
                with contextlib.suppress(EngineError):
                    self._remove_now(container_id)

    def _disconnect(self) -> None:
        self._api.close()
