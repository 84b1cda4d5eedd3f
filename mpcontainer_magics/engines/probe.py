"""Which platforms a Docker-API engine runs, learnt by running tiny programs on it.

This machine's ``/proc/sys/fs/binfmt_misc`` says nothing about a remote daemon or Docker
Desktop's VM, so, as BuildKit's ``util/archutil`` does, the engine itself is asked: each
program of ``mpcontainer_magics/probes`` (built by ``tools/build_probes.sh``) is a few
instructions of one architecture that exit 0 through a raw system call. One that ran proves
the daemon's containers run that platform, whoever runs it: the CPU (the native
architecture, 386 on amd64, 32-bit arm on an arm64 CPU with AArch32) or a QEMU handler with
the F flag. The amd64-v2/v3/v4 and arm-v5/v6/v7 programs first execute an instruction of
that level (SIGILL means it is absent); ``arm-aarch32`` tells the CPU's own 32-bit arm from
QEMU's, by the machine name ``uname`` reports.

On amd64 and arm64 daemons one container runs them all: a native runner program forks and
execs each and prints its wait status (a container each costs ~0.3 s of runc, even
concurrently). Other daemons get one short-lived container per program. The programs live
in a tiny image loaded once per daemon and kept (``mpc-probe:<digest>``); its ID is the
digest of a config we write, so every process and every probe finds the same image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .._aio import gather_or_cancel
from ..errors import EngineError
from ..platforms import Platform
from .base import LABEL_MANAGED
from .cpu_models import QEMU_CPU
from .docker_streams import STDOUT, frames

if TYPE_CHECKING:
    from docker.api.client import APIClient

T = TypeVar("T")

#: Each probe program and the platform its running proves.
PLATFORM_PROGRAMS: Mapping[str, Platform] = {
    name: Platform.parse(platform)
    for name, platform in (
        ("amd64", "linux/amd64"),
        ("arm64", "linux/arm64"),
        ("arm-v7", "linux/arm/v7"),
        ("arm-v6", "linux/arm/v6"),
        ("arm-v5", "linux/arm/v5"),
        ("s390x", "linux/s390x"),
        ("ppc64le", "linux/ppc64le"),
        ("riscv64", "linux/riscv64"),
        ("386", "linux/386"),
        ("mips64le", "linux/mips64le"),
    )
}
#: The x86-64 micro-architecture level each program needs (level 1 is plain amd64).
AMD64_LEVEL_PROGRAMS: Mapping[str, int] = {"amd64-v2": 2, "amd64-v3": 3, "amd64-v4": 4}
#: Exits 0 when the CPU itself runs 32-bit arm, 1 when an emulator does.
ARM32_PROGRAM = "arm-aarch32"
#: Native programs that run all the others in one container, by the daemon's architecture.
RUNNERS: Mapping[str, str] = {"amd64": "runner-amd64", "arm64": "runner-arm64"}
PROGRAMS = (*PLATFORM_PROGRAMS, *AMD64_LEVEL_PROGRAMS, ARM32_PROGRAM)

IMAGE_REPOSITORY = "mpc-probe"
#: A probe's programs exit at once; one that has not ended by then hangs (say, a broken
#: emulator): it is removed and the probe fails.
PROBE_TIMEOUT_S = 30.0
#: The exit code of a program that could not be executed at all (the runner's, and what we
#: record for a container Docker refused to start): no way to run that architecture.
NOT_EXECUTED = 127


class DockerCall(Protocol):
    """The engine's ``_docker``: run blocking docker-py work on a thread, errors translated."""

    def __call__(self, action: str, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True)
class ProbeReport:
    """What a Docker engine's containers run, as its probe found.

    ``runs`` holds every platform a program ran for, the native one included (in the order
    of :data:`PLATFORM_PROGRAMS`); ``amd64_level`` is the highest x86-64 level (1-4) whose
    program ran, None when amd64 does not run at all; ``arm32`` is True when the CPU itself
    runs 32-bit arm, False when only an emulator does, None when nothing runs it.
    """

    native: Platform
    runs: tuple[Platform, ...]
    amd64_level: int | None
    arm32: bool | None
    took_s: float

    @property
    def foreign(self) -> tuple[Platform, ...]:
        """The platforms of other architectures that ran (emulated, or by the kernel)."""
        return tuple(p for p in self.runs if p.architecture != self.native.architecture)

    def runnable(self, platform: Platform) -> bool:
        return any(platform.matches(p) for p in self.runs)


def program(name: str) -> bytes:
    """One probe program's bytes (package data: ``mpcontainer_magics/probes/NAME``)."""
    return resources.files("mpcontainer_magics").joinpath("probes", name).read_bytes()


def _tar(members: Sequence[tuple[str, bytes]]) -> bytes:
    """A tar of executable files, byte for byte the same every time (no times, no owners)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class ProbeImage:
    """The image holding the programs, as a ``docker save`` archive; ``image_id`` is what
    the daemon calls it once loaded (the digest of its config)."""

    archive: bytes
    image_id: str
    tag: str


def probe_image(native: Platform) -> ProbeImage:
    """The probe image for a daemon of ``native`` (its config names that platform, so no
    engine warns that the image does not match the host)."""
    names = [*PROGRAMS, *RUNNERS.values()]
    layer = _tar([(name, program(name)) for name in names])
    config = json.dumps(
        {
            **native.to_oci(),
            "config": {"Labels": {LABEL_MANAGED: "1"}},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha256(layer)}"]},
        },
        sort_keys=True,
    ).encode()
    digest = _sha256(config)
    tag = f"{IMAGE_REPOSITORY}:{digest[:12]}"
    manifest = [{"Config": f"{digest}.json", "RepoTags": [tag], "Layers": ["layer.tar"]}]
    archive = _tar(
        [
            ("manifest.json", json.dumps(manifest).encode()),
            (f"{digest}.json", config),
            ("layer.tar", layer),
        ]
    )
    return ProbeImage(archive, f"sha256:{digest}", tag)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ensure_image(api: APIClient, image: ProbeImage) -> None:
    """Load the probe image unless the daemon has it; then drop older ones (of earlier
    versions of the programs), which nothing needs any more."""
    import docker.errors

    try:
        api.inspect_image(image.image_id)
        return
    except docker.errors.NotFound:
        pass
    for chunk in api.load_image(image.archive):
        if isinstance(chunk, dict) and chunk.get("error"):
            raise EngineError(f"the engine refused the probe image {image.tag}: {chunk['error']}")
    with contextlib.suppress(docker.errors.APIError):  # in use by a probe of theirs: kept
        for old in api.images(name=IMAGE_REPOSITORY):
            if old["Id"] != image.image_id:
                api.remove_image(old["Id"])


def _run_one(
    api: APIClient,
    image_id: str,
    argv: Sequence[str],
    labels: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in a container of its own and remove it: (exit code, stdout, stderr).
    A start the engine refuses (exec format error, or no interpreter) is NOT_EXECUTED."""
    import docker.errors

    created = api.create_container(
        image_id,
        entrypoint=list(argv),
        environment=dict(env or {}),
        labels=dict(labels),
        network_disabled=True,
        detach=True,
    )
    container_id = created["Id"]
    try:
        sock = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
        try:
            sock_of = getattr(sock, "_sock", sock)
            sock_of.settimeout(PROBE_TIMEOUT_S)
            try:
                api.start(container_id)
            except docker.errors.APIError:
                return NOT_EXECUTED, b"", b""
            out, err = bytearray(), bytearray()
            for stream, data in frames(sock):
                (out if stream == STDOUT else err).extend(data)
        except TimeoutError:
            raise EngineError(
                f"a probe program ({argv[0]}) did not end within {PROBE_TIMEOUT_S:.0f} s: the "
                "engine's emulator for it may hang; try it with `docker run`"
            ) from None
        finally:
            sock.close()
        code = int(api.wait(container_id, timeout=PROBE_TIMEOUT_S)["StatusCode"])
        return code, bytes(out), bytes(err)
    finally:
        api.remove_container(container_id, force=True)


def _exit_codes(statuses: bytes, count: int) -> list[int]:
    """The runner's output (one wait status a line, in hex) as exit codes, 128 + N for a
    program killed by signal N (as a container's exit code says it)."""
    lines = statuses.decode("ascii", "replace").split()
    if len(lines) != count:
        raise EngineError(
            f"the probe runner reported {len(lines)} programs of {count}: {lines!r}; "
            "the engine may have cut its output"
        )
    codes = []
    for line in lines:
        status = int(line, 16)
        signal = status & 0x7F
        codes.append((status >> 8) & 0xFF if signal == 0 else 128 + signal)
    return codes


async def run_probe(
    api: APIClient, docker: DockerCall, native: Platform, labels: Mapping[str, str]
) -> ProbeReport:
    """Probe the engine behind ``api`` (whose native platform is ``native``); containers get
    ``labels`` and are removed before this returns, also when it fails or is cancelled."""
    started = time.perf_counter()
    image = probe_image(native)
    await docker("load the probe image", _ensure_image, api, image)
    codes = await exit_codes(api, docker, image.image_id, labels, RUNNERS.get(native.architecture))
    return _report(native, codes, time.perf_counter() - started)


async def exit_codes(
    api: APIClient,
    docker: DockerCall,
    image_id: str,
    labels: Mapping[str, str],
    runner: str | None,
) -> dict[str, int]:
    """Each of :data:`PROGRAMS`' exit code on the engine: all in one container through
    ``runner`` (a native runner program), or without one each in a container of its own."""
    paths = [f"/{name}" for name in PROGRAMS]
    action = "run the probe programs"
    if runner is not None:
        code, out, _ = await docker(action, _run_one, api, image_id, [f"/{runner}", *paths], labels)
        if code != 0:
            raise EngineError(f"the probe runner {runner} failed with exit code {code}")
        codes = _exit_codes(out, len(paths))
    else:
        ran = await gather_or_cancel(
            docker(action, _run_one, api, image_id, [path], labels) for path in paths
        )
        codes = [code for code, _, _ in ran]
    return dict(zip(PROGRAMS, codes, strict=True))


def program_for(platform: Platform) -> str | None:
    """The probe program of ``platform``'s architecture (its variant aside), if any."""
    return next(
        (name for name, p in PLATFORM_PROGRAMS.items() if p.architecture == platform.architecture),
        None,
    )


async def cpu_model_refused(
    api: APIClient,
    docker: DockerCall,
    native: Platform,
    labels: Mapping[str, str],
    platform: Platform,
    model: str,
) -> str | None:
    """Run ``platform``'s probe program with ``QEMU_CPU=model``: None when it ran, else
    why not (what QEMU said). See :mod:`.cpu_models`."""
    name = program_for(platform)
    if name is None:
        return f"no probe program for {platform.architecture}"
    image = probe_image(native)
    await docker("load the probe image", _ensure_image, api, image)
    code, _, err = await docker(
        f"try CPU model {model} for {platform}",
        _run_one,
        api,
        image.image_id,
        [f"/{name}"],
        labels,
        {QEMU_CPU: model},
    )
    if code in (0, NOT_EXECUTED):  # it ran; or nothing runs it, which the run will say
        return None
    said = err.decode("utf-8", "replace").strip().splitlines()
    return said[-1][:200] if said else f"exit code {code}"


def _report(native: Platform, codes: Mapping[str, int], took_s: float) -> ProbeReport:
    runs = tuple(p for name, p in PLATFORM_PROGRAMS.items() if codes[name] == 0)
    level = None
    if codes["amd64"] == 0:
        level = 1
        for name, at in AMD64_LEVEL_PROGRAMS.items():  # each level includes the ones below
            if codes[name] != 0:
                break
            level = at
    arm32 = {0: True, 1: False}.get(codes[ARM32_PROGRAM])
    if native.architecture == "arm":
        arm32 = True  # the runner's uname names its own ARMv7 CPU, as QEMU's would
    return ProbeReport(native, runs, level, arm32, took_s)


class ProbeCache:
    """One engine's probe report: the first caller runs ``probe()``, concurrent callers
    share it, later ones get it kept (a failed or cancelled probe is not kept)."""

    def __init__(self, probe: Callable[[], Awaitable[ProbeReport]]) -> None:
        self._probe = probe
        self._task: asyncio.Task[ProbeReport] | None = None

    async def get(self, *, refresh: bool = False) -> ProbeReport:
        """The report; ``refresh`` probes again (unless a probe is running now)."""
        task = self._task
        failed = task is not None and task.done() and (task.cancelled() or task.exception())
        if task is None or failed or (refresh and task.done()):
            task = self._task = asyncio.ensure_future(self._probe())
        return await task
