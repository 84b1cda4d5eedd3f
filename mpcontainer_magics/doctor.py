"""``%container doctor`` / ``await client.doctor()``: what this machine can run, and what to fix.

The report names the engine in use, its version and why it was chosen; the native platform;
for each common platform whether it can run here and why (Docker: the binfmt_misc QEMU
handler is registered, enabled and has the F flag, which containers need; the embedded
engine: ``qemu-<arch>-static`` is on PATH); the registries configured (insecure ones, and the
*hosts* that have credentials in the Docker config — never the credentials); the cache
directory and its size; and every problem found, each with its fix on one line.

Nothing here raises for a problem it finds: problems are data in the report.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engines import binfmt
from .engines.base import EMULATION_CANDIDATES, Engine
from .engines.binfmt import BINFMT_DIR
from .engines.embedded import EmbeddedEngine
from .engines.proot import find_qemu
from .engines.tree import directory_size
from .errors import MPCError, PtraceDenied
from .platforms import Platform
from .registry.auth import HUB_AUTH_KEY
from .registry.reference import DOMAIN

if TYPE_CHECKING:
    import pandas as pd

INSTALL_QEMU = "apt-get install qemu-user-static"

RUNS_COLOURS = {"native": "#1a7f37", "emulated": "#1a7f37", "no": "#cf222e", "unknown": "#6e7781"}


@dataclass(frozen=True)
class Problem:
    """Something that does not work, and the command or step that fixes it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} — fix: {self.fix}"


@dataclass(frozen=True)
class PlatformCheck:
    """Whether one platform can run on the engine: "native", "emulated", "no" or "unknown"."""

    platform: Platform
    runs: str
    detail: str
    problem: Problem | None = None


@dataclass(frozen=True, repr=False)
class DoctorReport:
    """The engine, what it can run, registries, cache and problems; see the module docstring."""

    engine: str
    version: str
    chosen: str  # why "auto" picked this engine ("" when it was asked for)
    native: Platform
    platforms: tuple[PlatformCheck, ...]
    insecure_registries: tuple[str, ...]
    credential_hosts: tuple[str, ...]  # registry hosts only, never credentials
    docker_config: str  # the config.json read for credential hosts
    cache_dir: str
    cache_bytes: int | None  # None when the cache directory does not exist yet
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_frame(self) -> pd.DataFrame:
        """One row per platform: platform, runs, detail, problem, fix."""
        import pandas as pd

        rows = [
            {
                "platform": str(c.platform),
                "runs": c.runs,
                "detail": c.detail,
                "problem": c.problem.what if c.problem else None,
                "fix": c.problem.fix if c.problem else None,
            }
            for c in self.platforms
        ]
        return pd.DataFrame(rows, columns=["platform", "runs", "detail", "problem", "fix"])

    def _facts(self) -> list[tuple[str, str]]:
        insecure = ", ".join(self.insecure_registries) or "none"
        hosts = ", ".join(self.credential_hosts) or "none"
        if self.cache_bytes is None:
            cache = f"{self.cache_dir} (not created yet)"
        else:
            cache = f"{self.cache_dir}, {format_size(self.cache_bytes)}"
        facts = [("engine", f"{self.engine} ({self.version})")]
        if self.chosen:
            facts.append(("chosen because", self.chosen))
        return [
            *facts,
            ("native platform", str(self.native)),
            ("insecure registries", f"{insecure} (loopback registries always use plain HTTP)"),
            ("registries with credentials", f"{hosts} (hosts from {self.docker_config})"),
            ("cache", cache),
        ]

    def __repr__(self) -> str:
        lines = [f"{name}: {value}" for name, value in self._facts()]
        lines.append("platforms:")
        width = max((len(str(c.platform)) for c in self.platforms), default=0)
        for check in self.platforms:
            lines.append(f"  {check.platform!s:<{width}}  {check.runs:<8}  {check.detail}")
        if self.problems:
            lines.append(f"problems ({len(self.problems)}):")
            lines += [f"  {problem}" for problem in self.problems]
        else:
            lines.append("problems: none")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        facts = "".join(
            f'<tr><th style="text-align: left">{html.escape(name)}</th>'
            f'<td style="text-align: left">{html.escape(value)}</td></tr>'
            for name, value in self._facts()
        )
        rows = "".join(
            "<tr>"
            f'<td style="text-align: left">{html.escape(str(c.platform))}</td>'
            f'<td style="text-align: left; color: {RUNS_COLOURS.get(c.runs, "inherit")}; '
            f'font-weight: bold">{html.escape(c.runs)}</td>'
            f'<td style="text-align: left">{html.escape(c.detail)}</td>'
            "</tr>"
            for c in self.platforms
        )
        if self.problems:
            items = "".join(
                f"<li>{_code(problem.what)} — fix: {_code(problem.fix)}</li>"
                for problem in self.problems
            )
            problems = f'<p style="color: #cf222e"><b>problems ({len(self.problems)}):</b></p>'
            problems += f"<ul>{items}</ul>"
        else:
            problems = '<p style="color: #1a7f37"><b>no problems found</b></p>'
        return (
            f'<table class="mpc-doctor">{facts}</table>'
            '<table class="mpc-doctor-platforms"><thead><tr>'
            '<th style="text-align: left">platform</th><th style="text-align: left">runs</th>'
            '<th style="text-align: left">why</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>{problems}"
        )


def _code(text: str) -> str:
    """Escaped text with `backquoted` parts shown as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _candidates(native: Platform) -> list[Platform]:
    """The native platform, then the common foreign ones."""
    found = [native]
    for platform in EMULATION_CANDIDATES:
        if not any(platform.matches(p) for p in found):
            found.append(platform)
    return found


def check_binfmt(
    platform: Platform, native: Platform, binfmt_dir: Path = BINFMT_DIR
) -> PlatformCheck:
    """Can Docker run ``platform`` here (the rules of :mod:`.engines.binfmt`)."""
    found = binfmt.check(platform, native, binfmt_dir)
    problem = Problem(f"{platform}: {found.detail}", found.fix) if found.fix else None
    return PlatformCheck(platform, found.runs, found.detail, problem)


def check_qemu(platform: Platform, native: Platform) -> PlatformCheck:
    """Can the embedded engine run ``platform`` here: its qemu-user binary on PATH."""
    if platform.architecture == native.architecture:
        return PlatformCheck(platform, "native", "the host's own architecture")
    if platform.qemu_arch is None:
        return PlatformCheck(platform, "no", "QEMU has no user-mode emulator for it")
    found = find_qemu(platform)
    if found is None:
        binary = f"qemu-{platform.qemu_arch}-static"
        why = f"{binary} is not on PATH"
        fix = f"`{INSTALL_QEMU}` (or put {binary} on PATH)"
        return PlatformCheck(platform, "no", why, Problem(f"{platform}: {why}", fix))
    return PlatformCheck(platform, "emulated", f"proot -q {found}")


async def check_proot(
    engine: EmbeddedEngine, checks: list[PlatformCheck]
) -> tuple[list[PlatformCheck], list[Problem]]:
    """``checks`` after running a tiny program through proot on the native platform and on
    one emulated platform, as a container's command runs: proot's version says nothing of
    whether it can run anything here (a hub may forbid ptrace)."""
    tried = [c for c in checks if c.runs == "native"][:1]
    tried += [c for c in checks if c.runs == "emulated"][:1]
    problems: list[Problem] = []
    for check in tried:
        try:
            await engine.try_platform(check.platform)
        except PtraceDenied as exc:
            problem = Problem(
                f"this environment forbids ptrace, so proot runs nothing here ({exc.said})",
                "ask the hub's admin to allow the ptrace system call in the pods' seccomp "
                "profile and to keep kernel.yama.ptrace_scope at 1 or below; or use a Docker "
                "engine (a node)",
            )
            nothing = [PlatformCheck(c.platform, "no", "ptrace is forbidden here") for c in checks]
            return nothing, [problem]
        except MPCError as exc:
            problems.append(
                Problem(
                    f"{check.platform}: a tiny program did not run under proot: {exc}",
                    "try `PROOT_NO_SECCOMP=1`, or reinstall proot and qemu-user-static",
                )
            )
    return checks, problems


#: Shown for an "auths" key with no host in it: the key itself might be a secret.
NO_HOST = "(a key that names no registry host)"


def _host_of(key: str) -> str:
    """The registry host[:port] of a Docker config key; never any user:password in it.

    Docker accepts a host, host:port or an http(s) URL with a path; a URL may carry userinfo
    (``https://user:secret@host/v1/``). As Docker does, drop the scheme and cut at the first
    "/", but only after the last "@", so that a password holding a "/" cannot pass for a host.
    """
    if key.rstrip("/") == HUB_AUTH_KEY.rstrip("/"):
        return "docker.io"
    address = re.sub(r"^https?://", "", key, flags=re.IGNORECASE).rpartition("@")[2]
    host = address.partition("/")[0]
    return host if DOMAIN.fullmatch(host) else NO_HOST


def credential_hosts(config_file: Path) -> tuple[tuple[str, ...], Problem | None]:
    """Registry hosts the Docker config has credentials for; never the credentials."""
    try:
        config: Any = json.loads(config_file.read_text())
    except FileNotFoundError:
        return (), None
    except (OSError, ValueError) as exc:
        problem = Problem(
            f"cannot read the Docker config {config_file} ({type(exc).__name__})",
            f"repair or remove {config_file}, then `docker login` again",
        )
        return (), problem
    if not isinstance(config, dict):
        return (), Problem(
            f"the Docker config {config_file} is not a JSON object",
            f"repair or remove {config_file}",
        )
    hosts: dict[str, None] = {}
    store = config.get("credsStore")
    auths = config.get("auths")
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        if store or (isinstance(entry, dict) and entry):
            hosts[_host_of(str(key)) + (f" (credential store {store})" if store else "")] = None
    helpers = config.get("credHelpers")
    for key, helper in (helpers if isinstance(helpers, dict) else {}).items():
        hosts[f"{_host_of(str(key))} (credential helper {helper})"] = None
    return tuple(hosts), None


async def _platform_checks(
    engine: Engine, native: Platform, binfmt_dir: Path
) -> tuple[list[PlatformCheck], list[Problem]]:
    """Each common platform on ``engine``, and the problems beyond one platform's."""
    candidates = _candidates(native)
    if isinstance(engine, EmbeddedEngine):
        return await check_proot(engine, [check_qemu(p, native) for p in candidates])
    if engine.name != "docker":
        emulated = await engine.emulated_platforms()
        return [
            PlatformCheck(p, "native", "the engine's own architecture")
            if p.matches(native)
            else PlatformCheck(p, "emulated", "the engine says so")
            if any(p.matches(e) for e in emulated)
            else PlatformCheck(p, "no", "the engine cannot emulate it")
            for p in candidates
        ], []
    if not getattr(engine, "is_local", True):
        return [
            PlatformCheck(p, "native", "the daemon's own architecture")
            if p.matches(native)
            else PlatformCheck(
                p, "unknown", "the Docker daemon is remote: its handlers are not visible here"
            )
            for p in candidates
        ], []
    checks = [check_binfmt(p, native, binfmt_dir) for p in candidates]
    if binfmt.mounted(binfmt_dir):
        return checks, []
    not_mounted = Problem(  # one problem, not one per platform
        f"binfmt_misc is not mounted at {binfmt_dir}, so no foreign platform runs",
        binfmt.not_mounted_fix(binfmt_dir),
    )
    return [
        c if c.runs == "native" else PlatformCheck(c.platform, "no", "binfmt_misc is not mounted")
        for c in checks
    ], [not_mounted]


async def diagnose(engine: Engine, *, binfmt_dir: Path = BINFMT_DIR) -> DoctorReport:
    """Check ``engine`` and this machine; problems are collected, not raised."""
    problems: list[Problem] = []
    try:
        version = await engine.version()
    except MPCError as exc:
        version = "version unknown"
        problems.append(Problem(f"{engine.name} did not say its version: {exc}", "see the message"))
    proot = getattr(engine, "proot", None)
    if engine.name == "embedded" and proot:
        version += f" at {proot}"
    native = await engine.native_platform()
    checks, platform_problems = await _platform_checks(engine, native, binfmt_dir)
    problems += platform_problems
    problems += [c.problem for c in checks if c.problem is not None]
    config_file = engine.registry.config_file
    hosts, config_problem = credential_hosts(config_file)
    if config_problem is not None:
        problems.append(config_problem)
    from .engines.store import default_cache_dir  # lazily: it imports httpx

    cache_dir = Path(getattr(engine, "cache_dir", None) or default_cache_dir())
    insecure = engine.registry.insecure_registries
    return DoctorReport(
        engine=engine.name,
        version=version,
        chosen=engine.chosen,
        native=native,
        platforms=tuple(checks),
        insecure_registries=tuple(sorted(insecure)),
        credential_hosts=hosts,
        docker_config=str(config_file),
        cache_dir=str(cache_dir),
        cache_bytes=await asyncio.to_thread(directory_size, cache_dir),
        problems=tuple(problems),
    )
