"""Tiny programs (the probes, a few instructions and an exit system call, no libc) run on
this machine to prove what works before anything depends on it: a platform under proot (the
doctor: a hub may forbid the ptrace proot needs), a CPU model under qemu-user (a QEMU that
does not know a property refuses to start)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from importlib import resources
from pathlib import Path

from ..errors import EmulationUnavailable, EngineError
from ..platforms import Platform
from .cpu_models import QEMU_CPU
from .probe import program, program_for
from .proot import ProotProcess, find_qemu, proot_command, proot_env

#: A tiny program that has not ended by then hangs (a broken emulator).
TIMEOUT_S = 30.0


async def under_proot(proot: str, platform: Platform, qemu: str | None, emulated: bool) -> None:
    """Run ``platform``'s tiny program with ``proot`` (and ``qemu`` when ``emulated``), as a
    container's command runs; raises what a run would (PtraceDenied where the environment
    forbids ptrace)."""
    name = program_for(platform)
    if name is None:
        raise EngineError(f"there is no probe program for {platform.architecture}")
    if emulated and qemu is None:
        raise EmulationUnavailable(platform, f"no qemu-{platform.qemu_arch}-static on PATH")
    said = bytearray()
    with tempfile.TemporaryDirectory(prefix="mpc-tiny-") as rootfs:
        Path(rootfs, name).write_bytes(program(name))
        os.chmod(Path(rootfs, name), 0o755)
        argv = [f"/{name}"]
        command = proot_command(
            proot, Path(rootfs), argv, workdir="/", qemu=qemu, binds=[], user=None
        )
        process = await ProotProcess.spawn(
            command, argv, proot_env(), lambda _, chunk: said.extend(chunk)
        )
        try:
            code = await asyncio.wait_for(process.wait(), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise EngineError(
                f"a tiny {platform} program did not end within {TIMEOUT_S:.0f} s under proot"
            ) from None
        finally:
            await process.kill()
    if code != 0:
        detail = said.decode(errors="replace").strip()[-200:] or "no output"
        raise EngineError(f"a tiny {platform} program exited {code} under proot ({detail})")


async def with_cpu_model(platform: Platform, model: str) -> str | None:
    """Run ``platform``'s tiny program with its qemu-user binary and ``QEMU_CPU=model``:
    None when it ran (or there is nothing to try it with: a run will say why), else what
    QEMU said."""
    qemu, name = find_qemu(platform), program_for(platform)
    if qemu is None or name is None:
        return None
    probes = resources.files("mpcontainer_magics").joinpath("probes")
    with resources.as_file(probes.joinpath(name)) as path:
        return await _run_with_model(qemu, path, model)


async def _run_with_model(qemu: str, program: Path, model: str) -> str | None:
    """Run ``program`` with the qemu-user binary ``qemu`` and ``QEMU_CPU=model``: None when
    it ran, else what QEMU said."""
    process = await asyncio.create_subprocess_exec(
        qemu,
        str(program),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, QEMU_CPU: model},
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 10)
    except asyncio.TimeoutError:
        return f"{qemu} did not end within 10 s"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode == 0:
        return None
    said = err.decode("utf-8", "replace").strip().splitlines()
    return said[-1][:200] if said else f"{qemu} exited {process.returncode}"
