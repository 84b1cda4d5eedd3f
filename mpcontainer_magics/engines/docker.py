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
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
from docker.utils.socket import STDERR, frames_iter

from ..errors import (
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    ImageError,
    ImageNotFound,
    InvalidArgument,
    PlatformNotOffered,
    RegistryError,
)
from ..platforms import Platform
from ..registry import Reference, RegistryClient, ResolvedImage, check_digest
from . import binfmt
from .base import (
    EMULATION_CANDIDATES,
    LABEL_MANAGED,
    AttachedProcess,
    Engine,
    ExecOutcome,
    ImageConfig,
    Mount,
    OutputCallback,
    ProgressCallback,
    PulledImage,
    owner_is_gone,
    owner_labels,
)
from .binfmt import BINFMT_DIR
from .layers import apply_layer, extract_archive

if TYPE_CHECKING:
    from docker.api.client import APIClient

T = TypeVar("T")

# Foreign platforms worth probing for emulation, in the order users usually care about.


def _short(exc: BaseException) -> str:
    """The first line of an exception's text, trimmed: enough to diagnose, never a wall."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _exec_format_error(text: str) -> bool:
    return "exec format error" in text.lower()


#: What runc prints when execve finds no interpreter for a binary that exists: a foreign one
#: whose binfmt handler was registered without the F flag (the interpreter path is then
#: looked up inside the container, which lacks it).
_NO_INTERPRETER = re.compile(r"^exec (\S+): no such file or directory$", re.MULTILINE)


def _refused_start(exc: docker.errors.APIError) -> tuple[int, str] | None:
    """The exit code and message ``docker run`` gives when Docker refuses to start a command:
    127 when it is not found, 126 when it cannot be executed (docker/cli's rules)."""
    text = str(exc.explanation or exc)
    lowered = text.lower()
    if any(s in lowered for s in ("executable file not found", "no such file or directory")):
        code = 127
    elif "permission denied" in lowered or "is a directory" in lowered:
        code = 126
    else:
        return None
    # "failed to create shim task: OCI runtime create failed: runc create failed: unable to
    # start container process: exec: "x": executable file not found in $PATH: unknown"
    message = text.rpartition("container process: ")[2].removesuffix(": unknown")
    return code, message


#: Writes up to this size go straight into a socket's send buffer (Linux's minimum is
#: larger), so they never wait for the reader.
SOCKET_BUFFER_FLOOR = 16 * 1024

#: The directory bit of a Go ``os.FileMode``, as in the stat header of Docker's archive API.
GO_MODE_DIR = 1 << 31


def _no_read_timeout(sock: Any) -> None:
    """A quiet command must not hit docker-py's read timeout while it works."""
    for candidate in (sock, getattr(sock, "_sock", None)):
        if hasattr(candidate, "settimeout"):
            candidate.settimeout(None)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files copied in belong to root, as with `docker cp` and Dagger, not to our host uid."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _docker_config(config: ImageConfig) -> dict[str, Any]:
    """An image config in Docker's spelling; our labels mark it for clean-up."""
    return {**config.to_oci(), "Labels": {**config.labels, **owner_labels()}}


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    found = archive.extractfile(name)
    if found is None:
        raise EngineError(f"Docker's image archive has no file {name}")
    return found


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return f"sha256:{digest.hexdigest()}"


class _PullMeter:
    """The bytes of a ``docker pull``, summed per layer from its progress stream.

    With ``sizes`` from the manifest (the config's size, {short layer ID: size}) the total is
    known from the start; without them it is the sum of the layer sizes the stream named so
    far. A layer counts in full once Docker has it ("Download complete", "Already exists",
    "Pull complete"...). ``feed`` runs on the pull's thread, and so does ``on_progress``.
    """

    _COMPLETE = frozenset(
        {"Verifying Checksum", "Download complete", "Extracting", "Pull complete", "Already exists"}
    )

    def __init__(
        self, on_progress: ProgressCallback | None, sizes: tuple[int, dict[str, int]] | None
    ) -> None:
        self._report = on_progress
        self._known = sizes is not None
        self._config = sizes[0] if sizes else 0
        self._sizes = dict(sizes[1]) if sizes else {}
        self._got: dict[str, int] = {}
        self._last: tuple[int, int | None] = (-1, None)
        if self._known:
            self._emit()

    @property
    def total(self) -> int | None:
        if self._known:
            return self._config + sum(self._sizes.values())
        return sum(self._sizes.values()) or None

    def feed(self, item: Mapping[str, Any]) -> None:
        """Count one item of the stream, e.g. {"status": "Downloading", "id": "4b5f…",
        "progressDetail": {"current": 1024, "total": 772788}}."""
        if self._report is None:
            return
        layer, status = item.get("id"), item.get("status")
        if not isinstance(layer, str) or not isinstance(status, str):
            return
        if self._known and layer not in self._sizes:
            return  # not a layer of this manifest (e.g. the "Pulling from" line)
        detail = item.get("progressDetail")
        detail = detail if isinstance(detail, dict) else {}
        if status == "Downloading":
            size, current = detail.get("total"), detail.get("current")
            if not self._known and isinstance(size, int) and size > 0:
                self._sizes[layer] = size
            if isinstance(current, int):
                self._got[layer] = max(self._got.get(layer, 0), current)
        elif status in self._COMPLETE:
            self._got[layer] = max(self._got.get(layer, 0), self._sizes.get(layer, 0))
        else:
            return
        self._emit()

    def _emit(self) -> None:
        total = self.total
        done = sum(min(got, self._sizes.get(layer, got)) for layer, got in self._got.items())
        done = max(done if total is None else min(done, total), self._last[0], 0)
        if self._report is not None and (done, total) != self._last:
            self._last = (done, total)
            self._report(done, total)

    def finish(self) -> int:
        """The pull is over: report ``(total, total)``; returns ``total``."""
        total = self.total if self._known else max(self.total or 0, self._last[0], 0)
        assert total is not None
        if self._report is not None and self._last != (total, total):
            self._last = (total, total)
            self._report(total, total)
        return total


class DockerEngine(Engine):
    name = "docker"

    def __init__(self, api: APIClient, registry: RegistryClient) -> None:
        self._api = api
        self.registry = registry
        self._native: Platform | None = None
        self._resolved: dict[str, ResolvedImage] = {}
        self._pulled: dict[tuple[str, Platform], PulledImage] = {}
        self._sizes: dict[str, int] = {}  # image ID -> bytes its pull reported
        self._live: set[str] = set()  # IDs of containers created and not yet removed
        self._made: dict[str, None] = {}  # images made by commit/load (ordered), not yet removed

    @classmethod
    async def connect(
        cls, base_url: str | None = None, *, registry: RegistryClient | None = None
    ) -> DockerEngine:
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

        try:
            api = await asyncio.to_thread(open_api)
        except BaseException:
            if registry is not None:
                await registry.aclose()
            raise
        return cls(api, registry or RegistryClient())

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

    async def version(self) -> str:
        """The daemon's version and the API version it speaks, e.g. "Docker 20.10.24 (API
        1.41)"; this client uses the API version negotiated when it connected."""
        try:
            info = await self._call(self._api.version)
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(
                f"the Docker engine did not say its version ({_short(exc)})"
            ) from None
        return f"Docker {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    async def emulated_platforms(self, binfmt_dir: Path = BINFMT_DIR) -> list[Platform]:
        """Foreign platforms this daemon's containers can run: those with a binfmt_misc QEMU
        handler usable in containers (enabled, flag F), and those the kernel runs itself
        (386 on amd64); the rules are :func:`.binfmt.check`'s, which the doctor shows.

        binfmt_misc is only visible when the daemon runs on this machine (a unix socket);
        for a remote daemon nothing can be claimed, so the list is empty.
        """
        if not self.is_local:
            return []
        return binfmt.runnable_foreign(
            EMULATION_CANDIDATES, await self.native_platform(), binfmt_dir
        )

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
            self._resolved[reference] = await self.registry.resolve(reference)
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
        self,
        reference: str,
        platform: Platform,
        *,
        refresh: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
        key = (reference, platform)
        if refresh or key not in self._pulled:
            self._pulled[key] = await self._pull(reference, platform, refresh, on_progress)
        elif on_progress is not None:
            size = self._sizes.get(self._pulled[key].image_id, 0)
            on_progress(size, size)
        return self._pulled[key]

    async def _pull(
        self,
        reference: str,
        platform: Platform,
        refresh: bool,
        on_progress: ProgressCallback | None = None,
    ) -> PulledImage:
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
            # No registry to tell the compressed size: the image's own size stands in.
            self._report_present(local["Id"], int(local.get("Size") or 0), on_progress)
            return PulledImage(reference, platform, local["Id"], digest)

        digest = resolved.manifest_digest(platform)
        pinned_ref = resolved.reference.with_digest(digest)
        pinned = pinned_ref.pull_name
        local = await self._local_image(pinned)
        sizes = await self._blob_sizes(pinned_ref) if on_progress is not None else None
        if local is None:
            meter = _PullMeter(on_progress, sizes)
            await self._call(self._docker_pull, pinned, platform, meter)
            local = await self._local_image(pinned)
            if local is None:
                raise EngineError(f"Docker reported pulling {pinned} but does not have it")
            self._sizes[local["Id"]] = meter.finish()
        else:
            size = sum(sizes[1].values(), sizes[0]) if sizes else int(local.get("Size") or 0)
            self._report_present(local["Id"], size, on_progress)
        return PulledImage(reference, platform, local["Id"], digest)

    def _report_present(
        self, image_id: str, size: int, on_progress: ProgressCallback | None
    ) -> None:
        self._sizes[image_id] = size
        if on_progress is not None:
            on_progress(size, size)

    async def _blob_sizes(self, pinned: Reference) -> tuple[int, dict[str, int]] | None:
        """The compressed size of the config and of each layer (by the short ID Docker's
        progress stream names layers with) of manifest ``pinned``; None if unknown."""
        try:
            body, _, _ = await self.registry.get_manifest(pinned)
            manifest = json.loads(body)
            layers = {
                check_digest(layer["digest"]).partition(":")[2][:12]: int(layer["size"])
                for layer in manifest["layers"]
            }
            return int(manifest["config"]["size"]), layers
        except (RegistryError, ValueError, KeyError, TypeError, AttributeError):
            return None  # progress then counts what the stream says

    def _docker_pull(
        self, pinned: str, platform: Platform, meter: _PullMeter | None = None
    ) -> None:
        try:
            # Drain the progress stream; errors arrive as {"error": ...} items, not exceptions.
            for item in self._api.pull(pinned, platform=str(platform), stream=True, decode=True):
                if "error" in item:
                    raise self._pull_error(pinned, platform, str(item["error"]))
                if meter is not None:
                    meter.feed(item)
        except docker.errors.APIError as exc:
            raise self._pull_error(pinned, platform, _short(exc)) from None

    @staticmethod
    def _pull_error(pinned: str, platform: Platform, text: str) -> ImageError:
        # We pull a single manifest the registry listed for this platform, so a platform
        # mismatch here means the index lies about it; Docker's text says how.
        if "not found" in text or "manifest unknown" in text:
            return ImageNotFound(f"Docker could not find {pinned}: {text}")
        return ImageError(f"Docker failed to pull {pinned} for {platform}: {text}")

    # -- containers --------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True when the daemon runs on this machine, so host paths mean the same to it."""
        return self._api.base_url.startswith("http+docker://localhost")

    async def create(
        self,
        image: PulledImage,
        argv: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
    ) -> str:
        if mounts and not self.is_local:
            raise EngineError(
                f"bind mounts need a Docker engine on this machine; {self._api.base_url} is "
                "remote, where host paths mean nothing (copy files in with %container cp)"
            )
        return await self._call(self._create, image, argv, env, workdir, mounts, labels)

    def _create(
        self,
        image: PulledImage,
        argv: Sequence[str] | None,
        env: Mapping[str, str] | None,
        workdir: str | None,
        mounts: Sequence[Mount],
        labels: Mapping[str, str] | None,
    ) -> str:
        binds = {
            m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts
        }
        try:
            created = self._api.create_container(
                image.image_id,
                # An argv replaces any image ENTRYPOINT and drops its CMD. A container that is
                # only created to be copied from or committed never starts: any argv will do.
                entrypoint=list(argv) if argv else ["/mpc-never-started"],
                environment=dict(env or {}),
                working_dir=workdir or None,
                labels={**owner_labels(), **(labels or {})},
                host_config=self._api.create_host_config(binds=binds) if binds else None,
                detach=True,
            )
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not create a container: {_short(exc)}") from None
        self._live.add(created["Id"])
        return created["Id"]

    async def start_and_wait(
        self, container_id: str, on_output: OutputCallback | None = None
    ) -> ExecOutcome:
        emit, stderr_seen = self._emitter(on_output)
        started = time.perf_counter()
        try:
            exit_code = await self._call(self._attach_start_wait, container_id, emit)
        except docker.errors.APIError as exc:
            refused = None if _exec_format_error(str(exc)) else _refused_start(exc)
            if refused is None:
                raise await self._run_error(container_id, exc) from None
            # As `docker run` does: the command's exit code, Docker's reason on stderr.
            exit_code, message = refused
            if on_output is not None:
                on_output("stderr", f"{message}\n".encode())
            return ExecOutcome(exit_code, time.perf_counter() - started)
        duration = time.perf_counter() - started
        if exit_code != 0:
            failure = await self._emulation_failure(container_id, stderr_seen)
            if failure is not None:
                raise failure
        return ExecOutcome(exit_code, duration)

    async def _emulation_failure(
        self, container_id: str, stderr_seen: bytearray
    ) -> EmulationUnavailable | None:
        """Why a foreign command could not start, when emulation is the reason."""
        seen = stderr_seen.decode(errors="replace")
        if _exec_format_error(seen):
            return EmulationUnavailable(await self._platform_of_container(container_id))
        missing = _NO_INTERPRETER.search(seen)
        if missing is None or not self.is_local:
            return None
        platform = await self._platform_of_container(container_id)
        foreign = not platform.matches(await self.native_platform())
        handler = binfmt.read(platform) if foreign else None
        if handler is None or not handler.enabled or handler.usable_in_containers:
            return None  # a binary that lacks its own loader: the command's failure
        name = f"qemu-{platform.qemu_arch}"
        return EmulationUnavailable(
            platform,
            f"{missing.group(0)}: the binfmt handler {name} is registered without the F flag, "
            f"so its interpreter {handler.interpreter} is not visible inside containers",
            f"register it again with the F flag: remove it (`echo -1 > {BINFMT_DIR / name}`), "
            f"then `update-binfmts --enable {name}` (Debian's qemu-user-static) or "
            f"`docker run --privileged --rm tonistiigi/binfmt --install {platform.architecture}`",
        )

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

    async def _run_error(self, container_id: str, exc: docker.errors.APIError) -> EngineError:
        platform = await self._platform_of_container(container_id)
        if _exec_format_error(str(exc)):
            return EmulationUnavailable(platform, _short(exc))
        return EngineError(f"Docker failed to run on {platform}: {_short(exc)}")

    async def _platform_of_container(self, container_id: str) -> Platform:
        with contextlib.suppress(docker.errors.APIError):
            info = await self._call(self._api.inspect_container, container_id)
            image = await self._call(self._api.inspect_image, info["Image"])
            return self._platform_of(image)
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
            for stream_id, data in frames_iter(sock, tty=False):
                emit("stderr" if stream_id == STDERR else "stdout", data)
        finally:
            sock.close()
        return int(self._api.wait(container_id, timeout=None)["StatusCode"])

    async def start(self, container_id: str) -> None:
        try:
            await self._call(self._api.start, container_id)
        except docker.errors.APIError as exc:
            raise await self._run_error(container_id, exc) from None

    async def attach_exec(
        self, container_id: str, argv: Sequence[str], on_output: OutputCallback
    ) -> AttachedProcess:
        """``docker exec -i``: a process with its stdin open, read by a thread of its own."""
        loop = asyncio.get_running_loop()
        emit, _ = self._emitter(on_output)
        exited: asyncio.Future[int] = loop.create_future()
        try:
            exec_id = (
                await self._call(self._api.exec_create, container_id, list(argv), stdin=True)
            )["Id"]
            sock = await self._call(self._api.exec_start, exec_id, socket=True)
        except docker.errors.APIError as exc:
            raise await self._exec_error(container_id, exc) from None
        _no_read_timeout(sock)

        def settle(code: int) -> None:
            if not exited.done():
                exited.set_result(code)

        def pump() -> None:
            code = -1
            try:
                for stream_id, data in frames_iter(sock, tty=False):
                    emit("stderr" if stream_id == STDERR else "stdout", data)
            except OSError:
                pass  # the container was removed under us: the process is gone
            finally:
                sock.close()
                # Also when the client is being closed (the session's end): no code then.
                with contextlib.suppress(Exception):
                    code = int(self._api.exec_inspect(exec_id).get("ExitCode") or 0)
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(settle, code)

        threading.Thread(target=pump, name="mpc-docker-attached", daemon=True).start()
        return _DockerProcess(self, container_id, getattr(sock, "_sock", sock), exited)

    async def _exec_error(self, container_id: str, exc: docker.errors.APIError) -> EngineError:
        text = _short(exc)
        if "is not running" in text:
            return EngineError(f"container {container_id[:12]} is not running any more: {text}")
        return await self._run_error(container_id, exc)

    async def state(self, container_id: str) -> str:
        try:
            info = await self._call(self._api.inspect_container, container_id)
        except docker.errors.NotFound:
            return "gone"
        status = info["State"]["Status"]
        return f"exited ({info['State']['ExitCode']})" if status == "exited" else status

    def _remove_now(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_container(container_id, force=True)
        self._live.discard(container_id)

    async def remove(self, container_id: str) -> None:
        await self._call(self._remove_now, container_id)

    # -- files and snapshots -----------------------------------------------------------------

    async def copy_to(self, container_id: str, source: Path, target: str) -> None:
        def put() -> None:
            top = posixpath.normpath(target).lstrip("/")
            with tempfile.TemporaryFile() as archive:
                with tarfile.open(fileobj=archive, mode="w") as tar:
                    # Entries carry the target path: Docker creates missing parents. A
                    # directory's own entry is left out (unless it is empty), so an existing
                    # target keeps its mode and owner (/tmp stays 1777).
                    children = sorted(source.iterdir()) if _real_dir(source) else []
                    for child in children:
                        tar.add(child, posixpath.join(top, child.name), filter=_owned_by_root)
                    if not children:
                        tar.add(source, top or ".", filter=_owned_by_root)
                archive.seek(0)
                self._api.put_archive(container_id, "/", archive)

        try:
            await self._call(put)
        except docker.errors.APIError as exc:
            raise EngineError(
                f"Docker could not copy {source} to {target}: {_short(exc)}"
            ) from None

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
            return await self._call(get)
        except docker.errors.NotFound:
            raise InvalidArgument(
                f"{path} does not exist in the container; check the name, e.g. list "
                f"{posixpath.dirname(path.rstrip('/')) or '/'} with ls"
            ) from None
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not copy {path} out: {_short(exc)}") from None

    async def commit(self, container_id: str, config: ImageConfig) -> PulledImage:
        platform = await self._platform_of_container(container_id)
        try:
            made = await self._call(self._api.commit, container_id, conf=_docker_config(config))
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not snapshot a container: {_short(exc)}") from None
        self._made[made["Id"]] = None
        return PulledImage(f"snapshot of {container_id[:12]}", platform, made["Id"], None)

    async def save_layers(self, image: PulledImage, dest: Path) -> list[Path]:
        def save() -> list[Path]:
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile() as archive:
                for chunk in self._api.get_image(image.image_id):
                    archive.write(chunk)
                archive.seek(0)
                with tarfile.open(fileobj=archive) as saved:
                    manifest = json.load(_member(saved, "manifest.json"))
                    layers = []
                    for number, name in enumerate(manifest[0]["Layers"]):
                        layers.append(dest / f"layer-{number}.tar")
                        with open(layers[-1], "wb") as out:
                            shutil.copyfileobj(_member(saved, name), out, 1 << 20)
                    return layers

        try:
            return await self._call(save)
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not export {image.reference}: {_short(exc)}") from None

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
        def load() -> str:
            # `docker import` ignores the platform on this API version; a `docker load`
            # archive carries it in the image config.
            with tempfile.TemporaryFile() as archive:
                with tempfile.TemporaryFile() as layer:
                    with tarfile.open(fileobj=layer, mode="w") as tar:
                        for entry in sorted(root.iterdir()):
                            tar.add(entry, arcname=entry.name)
                    layer.seek(0)
                    diff_id = _sha256_of(layer)
                    layer.seek(0)
                    image_config = json.dumps(
                        {
                            **platform.to_oci(),
                            "config": _docker_config(config),
                            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                        }
                    ).encode()
                    with tarfile.open(fileobj=archive, mode="w") as tar:
                        _add_bytes(tar, "config.json", image_config)
                        info = tarfile.TarInfo("layer.tar")
                        info.size = layer.seek(0, os.SEEK_END)
                        layer.seek(0)
                        tar.addfile(info, layer)
                        manifest = [{"Config": "config.json", "Layers": ["layer.tar"]}]
                        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
                archive.seek(0)
                for item in self._api.load_image(archive.read()):
                    if "error" in item:
                        raise EngineError(f"Docker could not load an image: {item['error']}")
                    found = re.search(
                        r"Loaded image ID: (sha256:[0-9a-f]{64})", item.get("stream", "")
                    )
                    if found:
                        return found.group(1)
            raise EngineError("Docker loaded the image archive but named no image")

        try:
            image_id = await self._call(load)
        except docker.errors.APIError as exc:
            raise EngineError(f"Docker could not load an image: {_short(exc)}") from None
        self._made[image_id] = None
        return PulledImage(f"rootfs for {platform}", platform, image_id, None)

    async def image_config(self, image: PulledImage) -> ImageConfig:
        info = await self._call(self._api.inspect_image, image.image_id)
        return ImageConfig.from_oci(info.get("Config"))

    async def remove_image(self, image: PulledImage) -> None:
        await self._call(self._remove_image_now, image.image_id)

    def _remove_image_now(self, image_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_image(image_id, force=True)
        self._made.pop(image_id, None)

    # -- housekeeping ------------------------------------------------------------------------

    async def reap_orphans(self) -> int:
        """Remove containers, then snapshot images, of processes that are gone."""
        mine = {"label": f"{LABEL_MANAGED}=1"}
        listed = await self._call(self._api.containers, all=True, filters=mine)
        orphans = [c["Id"] for c in listed if owner_is_gone(c.get("Labels") or {})]
        await asyncio.gather(*(self.remove(cid) for cid in orphans))
        images = await self._call(self._api.images, filters=mine)
        dead = [i["Id"] for i in images if owner_is_gone(i.get("Labels") or {})]
        for image_id in dead:  # one by one: a snapshot may be the parent of another
            with contextlib.suppress(docker.errors.APIError):
                await self._call(self._remove_image_now, image_id)
        return len(orphans) + len(dead)

    async def aclose(self) -> None:
        # Blocking calls on purpose: at interpreter exit (atexit) no thread pool accepts work
        # any more, and closing is the last thing this engine does anyway.
        try:
            mine = [f"{key}={value}" for key, value in owner_labels().items()]
            listed = self._api.containers(all=True, filters={"label": mine})
            for container_id in self._live | {c["Id"] for c in listed}:
                with contextlib.suppress(docker.errors.APIError):
                    self._remove_now(container_id)
            # Newest first, so that a snapshot goes before the snapshot it was made from.
            for image_id in reversed(list(self._made)):
                with contextlib.suppress(docker.errors.APIError):
                    self._remove_image_now(image_id)
        finally:
            await self.registry.aclose()
            self._api.close()


class _DockerProcess(AttachedProcess):
    def __init__(
        self, engine: DockerEngine, container_id: str, stdin: Any, exited: asyncio.Future[int]
    ) -> None:
        self._engine = engine
        self._container_id = container_id
        self._stdin = stdin
        self.exited = exited

    async def write(self, data: bytes) -> None:
        try:
            if len(data) <= SOCKET_BUFFER_FLOOR:
                # Fits in the socket's send buffer, so it cannot block; a thread hop per
                # platform would cost more than the rest of a builtin-only cell.
                self._stdin.sendall(data)
            else:
                await self._engine._call(self._stdin.sendall, data)
        except OSError as exc:
            raise EngineError(
                f"lost the connection to a shell in container {self._container_id[:12]}: {exc}"
            ) from None

    async def interrupt(self, group: int) -> None:
        # Docker cannot signal an exec'd process, so a second exec signals its group (each
        # exec leads a process group of its own: runc calls setsid).
        await self._signal(f"kill -s INT -{int(group)}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 2)
        await self._signal(
            f"kill -s TERM -{int(group)} 2>/dev/null || exit 0; sleep 1; "
            f"kill -s KILL -{int(group)} 2>/dev/null; exit 0"
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 5)

    async def _signal(self, script: str) -> None:
        api = self._engine._api

        def signal() -> None:
            exec_id = api.exec_create(self._container_id, ["sh", "-c", script])["Id"]
            api.exec_start(exec_id)  # returns when the kill script is done

        with contextlib.suppress(docker.errors.APIError):
            await self._engine._call(signal)
