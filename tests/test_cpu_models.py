"""The CPU model QEMU emulates per platform (engines/cpu_models.py), on both real engines.

arm64 containers get QEMU_CPU=max,pauth-impdef=on, which QEMU's arm64 guests run
pointer-authenticated code with 6-40x faster than the default (how fast is bench/
bench_emulation.py's business); what is tested here is who gets which model, that a model
an engine's QEMU refuses is proven so before any container gets it, and what users see.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import mpcontainer_magics as mpc
from mpcontainer_magics.engines import cpu_models
from mpcontainer_magics.engines.cpu_models import (
    CpuModels,
    parse_models,
    refused_by_qemu,
    with_model,
)
from mpcontainer_magics.platforms import Platform

ARM64, ARM_V7 = Platform.parse("linux/arm64"), Platform.parse("linux/arm/v7")
SHOW = "echo ${QEMU_CPU:-none}"


def cell(shell: Any, line: str, body: str = SHOW) -> mpc.RunResult:
    shell.run_cell_magic("container", f"{line} --out res", body)
    return shell.user_ns["res"]


# -- the rules, as data ------------------------------------------------------------------------


def test_arm64_gets_the_fast_faithful_model_and_a_users_choice_wins():
    models = CpuModels()
    assert models.wanted(ARM64) == ("max,pauth-impdef=on", False)
    assert models.wanted(Platform.parse("linux/s390x")) == ("", False)  # QEMU's default
    models.choose({"aarch64": "cortex-a72", "linux/arm/v7": None})
    assert models.wanted(ARM64) == ("cortex-a72", True)
    assert models.wanted(ARM_V7) == ("", True)
    # The container's own QEMU_CPU is the user's: never replaced.
    assert with_model({"QEMU_CPU": "max"}, "cortex-a72") == {"QEMU_CPU": "max"}
    assert with_model({"A": "1"}, "") == {"A": "1"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"linux/arm64": "max pauth=off"}, "bad CPU model 'max pauth=off'"),
        ({"linux/arm64": 3}, "must be text"),
        ({"linux/arm65": "max"}, "arm65"),
    ],
)
def test_bad_models_are_refused_with_how_to_write_them(spec, message):
    with pytest.raises(mpc.InvalidArgument, match=message):
        parse_models(spec)


def test_a_hub_sets_models_for_every_kernel(monkeypatch):
    monkeypatch.setenv("MPC_CPU_MODELS", '{"linux/arm64": "cortex-a53"}')
    assert cpu_models.models_from_env() == {"linux/arm64": "cortex-a53"}
    monkeypatch.setenv("MPC_CPU_MODELS", "cortex-a53")
    with pytest.raises(mpc.InvalidArgument, match="MPC_CPU_MODELS must be JSON"):
        cpu_models.models_from_env()


def test_qemus_refusals_are_recognised_whoever_started_it():
    # As Docker's binfmt handler and as qemu-user started by hand print them.
    said = "arm-binfmt-P: can't apply global max-arm-cpu.pauth-impdef=on: Property 'max-arm"
    assert refused_by_qemu(f"{said}-cpu.pauth-impdef' not found\n") is not None
    assert refused_by_qemu("qemu-aarch64-static: unable to find CPU model 'x'\n") is not None
    assert refused_by_qemu("sh: can't apply: no such file\n") is None


# -- on the real engines -----------------------------------------------------------------------


def test_only_emulated_arm64_containers_get_the_model(shell):
    res = cell(shell, "--platform linux/amd64,linux/arm64,linux/s390x,linux/arm/v7")
    assert res.stdout == {
        "linux/amd64": "none\n",
        "linux/arm64": "max,pauth-impdef=on\n",
        "linux/s390x": "none\n",
        "linux/arm/v7": "none\n",
    }
    # Sessions too, and a cell's own QEMU_CPU wins.
    assert cell(shell, "--session cpu --platform linux/arm64")[0].stdout == "max,pauth-impdef=on\n"
    assert cell(shell, "--platform linux/arm64 -e QEMU_CPU=cortex-a53")[0].stdout == "cortex-a53\n"
    shell.run_line_magic("container", "stop cpu")


def test_users_choose_models_and_a_refused_choice_says_so(shell):
    shell.run_line_magic("config", "ContainerMagics.cpu_models = {'linux/arm64': 'cortex-a72'}")
    try:
        assert cell(shell, "--platform linux/arm64")[0].stdout == "cortex-a72\n"
        shell.run_line_magic("config", "ContainerMagics.cpu_models = {'linux/arm64': ''}")
        assert cell(shell, "--platform linux/arm64")[0].stdout == "none\n"
        shell.run_line_magic("config", "ContainerMagics.cpu_models = {'linux/arm64': 'nonesuch'}")
        with pytest.raises(UsageError) as refused:
            cell(shell, "--platform linux/arm64")
    finally:
        shell.run_line_magic("config", "ContainerMagics.cpu_models = {}")
    message = str(refused.value)
    assert "refuses CPU model 'nonesuch' for linux/arm64" in message
    assert "unable to find CPU model 'nonesuch'" in message  # QEMU's own words
    assert "-cpu help" in message and "\n" not in message


def test_a_default_the_engines_qemu_refuses_is_left_out_and_said_once(
    shell, monkeypatch, test_image
):
    # qemu-arm has no pauth-impdef property: a real QEMU refusing a model, as an older
    # qemu-aarch64 (< 6.0) would refuse arm64's.
    monkeypatch.setitem(cpu_models.DEFAULT_MODELS, "arm", "max,pauth-impdef=on")
    first = cell(shell, "--platform linux/arm/v7")
    assert first[0].exit_code == 0 and first[0].stdout == "none\n"
    (note,) = [n for n in first.notes if "does not take CPU model" in n]
    assert note.startswith("linux/arm/v7: the QEMU of ")
    assert "Property 'max-arm-cpu.pauth-impdef' not found" in note
    assert not [n for n in cell(shell, "--platform linux/arm/v7").notes if "CPU model" in n]


def test_a_32_bit_arm_program_in_an_arm64_container_is_told_why_it_failed(
    shell, engine_kind, tmp_path
):
    if engine_kind != "docker":
        pytest.skip("proot runs every program of a container through one qemu")
    # Docker's binfmt handler starts qemu-arm for it, which reads QEMU_CPU too.
    program = tmp_path / "armhf"
    deb = sorted(Path("/var/cache/mpcontainer-test").glob("busybox-static_*_armhf.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(program)], check=True)
    res = cell(
        shell,
        f"--platform linux/arm64 --mount {program}/bin:/armhf:ro",
        "/armhf/busybox uname -m",
    )
    assert res[0].exit_code != 0
    (note,) = [n for n in res.notes if "QEMU_CPU" in n]
    assert note.startswith("linux/arm64: arm-binfmt-P: can't apply global")
    assert "env -u QEMU_CPU" in note and "cpu_models {'linux/arm64': ''}" in note
    assert cell(shell, "--platform linux/arm64 --mount "
                f"{program}/bin:/armhf:ro", "env -u QEMU_CPU /armhf/busybox uname -m"
                )[0].stdout == "armv7l\n"  # fmt: skip


def test_connect_takes_models_and_nodes_share_them(engine_kind, test_image):
    async def main() -> str:
        async with mpc.connect(cpu_models={"linux/arm64": "cortex-a53"}) as client:
            assert client.cpu_models == {ARM64: "cortex-a53"}
            res = await client.run(SHOW, image=test_image, platforms="linux/arm64")
            return res[0].stdout

    assert asyncio.run(main()) == "cortex-a53\n"
