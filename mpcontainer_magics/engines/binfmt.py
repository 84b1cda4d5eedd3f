"""The kernel's binfmt_misc QEMU handlers: which foreign platforms Docker containers can run.

A container of a foreign architecture runs when the kernel hands its binaries to a QEMU
user-mode emulator: a binfmt_misc handler ``qemu-<arch>`` must be registered, enabled, and
carry the F ("fix binary") flag, which opens the interpreter when it is registered. Without
F the kernel looks the interpreter up inside the container at every exec, finds nothing, and
the container prints ``exec /bin/sh: no such file or directory``.

This is the one reader of those rules: ``DockerEngine.emulated_platforms`` (what
``%container platforms`` lists) and the doctor (``%container doctor``) both ask
:func:`check`, so they cannot disagree. The embedded engine does not use binfmt_misc (proot
starts qemu-user itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..platforms import Platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
#: Foreign architectures a kernel runs itself, without emulation (so no handler is needed).
KERNEL_RUNS = {"amd64": frozenset({"386"})}

#: "native": no emulator needed; "emulated": a usable QEMU handler; "no": cannot run (the
#: check says why and how to fix it); "unknown": the handler could not be read.
Runs = Literal["native", "emulated", "no", "unknown"]


@dataclass(frozen=True)
class Handler:
    """One binfmt_misc entry, as the kernel shows it in ``BINFMT_DIR/<name>``."""

    name: str
    enabled: bool
    flags: str
    interpreter: str

    @property
    def usable_in_containers(self) -> bool:
        """F: the interpreter was opened at registration, so containers need not have it."""
        return "F" in self.flags

    @classmethod
    def parse(cls, name: str, text: str) -> Handler:
        # "enabled", then "key value" lines: "interpreter /usr/...", "flags: PF", "magic ..."
        lines = text.splitlines()
        fields = {
            key.rstrip(":"): value.strip()
            for key, _, value in (line.partition(" ") for line in lines)
        }
        return cls(
            name=name,
            enabled=bool(lines) and lines[0].strip() == "enabled",
            flags=fields.get("flags", ""),
            interpreter=fields.get("interpreter") or "?",
        )


@dataclass(frozen=True)
class Emulation:
    """How ``platform`` runs in containers on this kernel; ``fix`` only when it does not."""

    platform: Platform
    runs: Runs
    detail: str
    fix: str = ""


def mounted(binfmt_dir: Path = BINFMT_DIR) -> bool:
    """Whether binfmt_misc is mounted there; when not, no handler works (one fix for all)."""
    return (binfmt_dir / "status").exists()


def not_mounted_fix(binfmt_dir: Path = BINFMT_DIR) -> str:
    return (
        f"`mount -t binfmt_misc binfmt_misc {binfmt_dir}`, then "
        "`apt-get install qemu-user-static binfmt-support`"
    )


def reinstall_fix(platform: Platform) -> str:
    return (
        f"`docker run --privileged --rm tonistiigi/binfmt --install {platform.architecture}` "
        "or `apt-get install qemu-user-static binfmt-support`"
    )


def read(platform: Platform, binfmt_dir: Path = BINFMT_DIR) -> Handler | None:
    """The QEMU handler registered for ``platform``; None when there is none or it cannot
    be read."""
    name = f"qemu-{platform.qemu_arch}"
    try:
        return Handler.parse(name, (binfmt_dir / name).read_text())
    except OSError:
        return None


def check(platform: Platform, native: Platform, binfmt_dir: Path = BINFMT_DIR) -> Emulation:
    """Can a container of ``platform`` run on a ``native`` kernel with these handlers?"""
    if platform.architecture == native.architecture:
        return Emulation(platform, "native", "the host's own architecture")
    if platform.architecture in KERNEL_RUNS.get(native.architecture, ()):
        return Emulation(platform, "native", f"the {native.architecture} kernel runs it")
    if platform.qemu_arch is None:
        return Emulation(platform, "no", "QEMU has no user-mode emulator for it")
    name = f"qemu-{platform.qemu_arch}"
    entry = binfmt_dir / name
    try:
        handler = Handler.parse(name, entry.read_text())
    except FileNotFoundError:
        return Emulation(
            platform, "no", f"no binfmt handler {name} is registered", reinstall_fix(platform)
        )
    except OSError as exc:
        return Emulation(platform, "unknown", f"cannot read {entry}: {exc.strerror}")
    if not handler.enabled:
        fix = f"`echo 1 > {entry}` or `update-binfmts --enable {name}`"
        return Emulation(platform, "no", f"binfmt handler {name} is disabled", fix)
    if not handler.usable_in_containers:
        why = (
            f"binfmt handler {name} is registered without the F flag (flags: "
            f"{handler.flags or 'none'}), so containers cannot find its interpreter "
            f"{handler.interpreter}"
        )
        fix = (
            f"remove it (`echo -1 > {entry}`), then {reinstall_fix(platform)} "
            "(both register it with F)"
        )
        return Emulation(platform, "no", why, fix)
    return Emulation(platform, "emulated", f"binfmt handler {name}: enabled, flags {handler.flags}")


def runnable_foreign(
    candidates: Iterable[Platform], native: Platform, binfmt_dir: Path = BINFMT_DIR
) -> list[Platform]:
    """The candidates of another architecture that containers can run here (emulated, or
    run by the kernel itself as 386 on amd64)."""
    if not mounted(binfmt_dir):
        return [p for p in candidates if p.architecture in KERNEL_RUNS.get(native.architecture, ())]
    return [
        p
        for p in candidates
        if p.architecture != native.architecture
        and check(p, native, binfmt_dir).runs in ("native", "emulated")
    ]
