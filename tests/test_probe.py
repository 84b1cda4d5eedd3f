"""The engine-side probe: what a Docker engine runs, learnt by running tiny programs on it.

Against the real dockerd of .ci/setup, whose machine has QEMU binfmt handlers with the F
flag for arm64, arm, s390x, ppc64le (and riscv64, mips64el); the probe programs themselves
also run here directly, some under QEMU CPU models that lack an instruction level.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import my_containers
from test_engine_errors import registered_without_f_flag

import mpcontainer_magics as mpc
from mpcontainer_magics.engines import probe
from mpcontainer_magics.engines.base import owner_labels
from mpcontainer_magics.engines.docker import DockerEngine
from mpcontainer_magics.platforms import Platform

pytestmark = pytest.mark.real

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
PPC64LE_HANDLER = Path("/proc/sys/fs/binfmt_misc/qemu-ppc64le")
PROBES = resources.files("mpcontainer_magics").joinpath("probes")


def on_docker(main: Callable[[DockerEngine], Awaitable[T]]) -> T:
    async def go() -> T:
        async with mpc.connect("docker") as client:
            assert isinstance(client.engine, DockerEngine)
            return await main(client.engine)

    return asyncio.run(go())


def names(platforms: tuple[Platform, ...] | list[Platform]) -> list[str]:
    return [str(p) for p in platforms]


@contextmanager
def disabled(handler: Path) -> Iterator[None]:
    """A binfmt handler switched off for the block (other runs share it: keep it short)."""
    handler.write_text("0")
    try:
        yield
    finally:
        handler.write_text("1")


def test_the_probe_finds_what_this_machine_runs(docker_api):
    async def main(engine: DockerEngine) -> tuple[probe.ProbeReport, list[Platform]]:
        return await engine.probe(), await engine.emulated_platforms()

    report, emulated = on_docker(main)
    assert str(report.native) == "linux/amd64"
    assert report.amd64_level is not None and report.amd64_level >= 1
    ran = names(report.runs)
    for platform in ("linux/amd64", "linux/386", "linux/arm64", "linux/arm/v7", "linux/s390x"):
        assert platform in ran
    assert "linux/ppc64le" in ran
    assert report.arm32 is False  # 32-bit arm runs, but under QEMU: an amd64 CPU has no AArch32
    # emulated_platforms: what ran of another architecture (386 runs on the amd64 kernel)
    assert emulated == list(report.foreign) and "linux/amd64" not in names(emulated)
    assert "linux/386" in names(emulated)
    assert my_containers(docker_api) == []


def test_a_disabled_handler_disappears_after_a_refresh_and_comes_back():
    async def main(engine: DockerEngine) -> tuple[list[str], list[str], list[str]]:
        before = names((await engine.probe()).runs)
        with disabled(PPC64LE_HANDLER):
            kept = names((await engine.probe()).runs)  # the report is kept until a refresh
            during = names((await engine.probe(refresh=True)).runs)
        after = names((await engine.probe(refresh=True)).runs)
        return before, during, after if kept == before else ["the report was not kept"]

    before, during, after = on_docker(main)
    assert "linux/ppc64le" in before and "linux/ppc64le" in after
    assert "linux/ppc64le" not in during
    assert [p for p in before if p != "linux/ppc64le"] == during  # only that one is gone


def test_a_handler_without_the_f_flag_runs_nothing_in_containers():
    """Without F the kernel looks for the interpreter inside the container: not runnable."""

    async def probed(engine: DockerEngine) -> list[str]:
        with registered_without_f_flag("qemu-s390x"):
            report = await engine.probe(refresh=True)
        return names(report.runs)

    ran = on_docker(probed)
    assert "linux/s390x" not in ran
    assert "linux/arm64" in ran  # the other handlers are untouched


def test_the_probe_leaves_no_container_and_keeps_its_image(docker_api):
    image = probe.probe_image(Platform.parse("linux/amd64"))

    async def twice(engine: DockerEngine) -> None:
        await engine.probe()
        await engine.probe(refresh=True)

    on_docker(twice)
    on_docker(twice)  # another engine finds the image there: same ID, not loaded again
    assert my_containers(docker_api) == []
    info = docker_api.inspect_image(image.tag)
    assert info["Id"] == image.image_id
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")


def test_loading_the_probe_image_drops_older_ones(docker_api):
    """An image of other programs (say, of an earlier version) goes when the new one comes."""
    current = probe.probe_image(Platform.parse("linux/amd64"))
    older = probe.probe_image(Platform.parse("linux/arm64"))  # another config: another image
    docker_api.remove_image(current.image_id, force=True)
    list(docker_api.load_image(older.archive))

    async def main(engine: DockerEngine) -> probe.ProbeReport:
        return await engine.probe()

    assert "linux/arm64" in names(on_docker(main).runs)
    held = [i["Id"] for i in docker_api.images(name=probe.IMAGE_REPOSITORY)]
    assert current.image_id in held and older.image_id not in held


def test_one_container_each_finds_what_the_runner_finds(docker_api):
    """The way daemons without a runner program are probed (say, s390x ones)."""
    labels = owner_labels()

    async def main(engine: DockerEngine) -> tuple[dict[str, int], dict[str, int]]:
        image = probe.probe_image(await engine.native_platform())
        await engine.probe()  # loads the image
        api, docker = engine._api, engine._docker
        runner = await probe.exit_codes(api, docker, image.image_id, labels, "runner-amd64")
        each = await probe.exit_codes(api, docker, image.image_id, labels, None)
        return runner, each

    runner, each = on_docker(main)
    assert runner == each
    assert runner["arm64"] == 0 and runner["arm-aarch32"] == 1
    assert my_containers(docker_api) == []


# -- the programs themselves, run on this machine --------------------------------------------


def run_program(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_arm64_runner_reports_what_the_amd64_runner_does():
    """The arm64 runner, emulated here, runs the programs as the native one does."""
    programs = [str(PROBES.joinpath(name)) for name in probe.PROGRAMS]
    amd64 = run_program(str(PROBES.joinpath("runner-amd64")), *programs)
    arm64 = run_program(str(PROBES.joinpath("runner-arm64")), *programs)
    assert amd64.returncode == arm64.returncode == 0
    assert arm64.stdout == amd64.stdout
    assert probe._exit_codes(amd64.stdout.encode(), len(programs))[0] == 0  # amd64 ran


@pytest.mark.parametrize(
    ("cpu", "passes", "fails"),
    [
        ("qemu64", "amd64", "amd64-v2"),  # x86-64-v1
        ("Nehalem", "amd64-v2", "amd64-v3"),
        ("Haswell", "amd64-v3", "amd64-v4"),
    ],
)
def test_each_amd64_level_program_needs_its_level(cpu, passes, fails):
    ok = run_program("qemu-x86_64-static", "-cpu", cpu, str(PROBES.joinpath(passes)))
    assert ok.returncode == 0
    missing = run_program("qemu-x86_64-static", "-cpu", cpu, str(PROBES.joinpath(fails)))
    assert missing.returncode == -4  # SIGILL: the instruction is not there


@pytest.mark.parametrize(
    ("cpu", "passes", "fails"), [("arm926", "arm-v5", "arm-v6"), ("arm1176", "arm-v6", "arm-v7")]
)
def test_each_arm_program_needs_its_version(cpu, passes, fails):
    assert run_program("qemu-arm-static", "-cpu", cpu, str(PROBES.joinpath(passes))).returncode == 0
    assert run_program("qemu-arm-static", "-cpu", cpu, str(PROBES.joinpath(fails))).returncode == -4


def test_the_programs_ship_with_the_package_and_their_sources_with_the_repo():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "probes/*" in config["package-data"]["mpcontainer_magics"]
    for name in [*probe.PROGRAMS, *probe.RUNNERS.values()]:
        data = PROBES.joinpath(name).read_bytes()
        assert data.startswith(b"\x7fELF") and len(data) < 1024, name
        assert (REPO / "tools" / "probes" / f"{name}.s").is_file(), name
