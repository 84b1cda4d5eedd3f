"""Platform strings (``linux/arm64``, ``aarch64``, ``linux/arm/v7``...): parse, normalise, match.

This ports the rules of containerd's ``platforms`` package (database.go ``normalizeOS`` and
``normalizeArch``, platforms.go ``Parse``/``Format``, the equality matcher) so a platform
written the way Docker or containerd accept it means the same thing here. Differences, on
purpose:

* The OS defaults to ``linux`` rather than the host OS: the containers we run are Linux ones,
  even when the notebook runs on a Mac.
* The canonical form is containerd's *normalised* one, so plain ``arm`` always carries its
  variant (``linux/arm/v7``) and ``arm64/v8`` drops it (``linux/arm64``).
* User input is validated: the os/arch pair must be one Go knows, a variant must be one the
  architecture has, and a typo gets a "did you mean" hint. A bare OS (``linux``) is refused
  instead of silently meaning "this machine's architecture".

Constructing :class:`Platform` directly normalises but does not validate, because image indexes
legitimately carry odd entries (buildx attestations are ``unknown/unknown``).
"""

from __future__ import annotations

import difflib
import platform as _stdlib_platform
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidPlatform

__all__ = ["KNOWN_PLATFORMS", "Platform", "host_platform", "parse_platforms"]

# `go tool dist list` (Go 1.23): the os/arch pairs an image could be built for.
_GO_PORTS = {
    "aix": ("ppc64",), "android": ("386", "amd64", "arm", "arm64"), "darwin": ("amd64", "arm64"),
    "dragonfly": ("amd64",), "freebsd": ("386", "amd64", "arm", "arm64", "riscv64"),
    "illumos": ("amd64",), "ios": ("amd64", "arm64"), "js": ("wasm",),
    "linux": (
        "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle",
        "ppc64", "ppc64le", "riscv64", "s390x",
    ),
    "netbsd": ("386", "amd64", "arm", "arm64"),
    "openbsd": ("386", "amd64", "arm", "arm64", "ppc64", "riscv64"),
    "plan9": ("386", "amd64", "arm"), "solaris": ("amd64",), "wasip1": ("wasm",),
    "windows": ("386", "amd64", "arm", "arm64"),
}  # fmt: skip
KNOWN_PLATFORMS: frozenset[tuple[str, str]] = frozenset(
    (os, arch) for os, archs in _GO_PORTS.items() for arch in archs
)

# Spellings normalisation rewrites (containerd's, plus i486-i686 which `uname -m` prints).
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}
_ARCH_ALIASES |= dict.fromkeys(("i386", "i486", "i586", "i686"), "386")
# Every spelling we recognise, for "did you mean" hints and the host's `uname -m`; parse
# itself accepts only _ARCH_ALIASES, armhf and armel (containerd's set), not e.g. armv7l.
_HINT_ALIASES = {
    "armhf": "arm/v7", "armel": "arm/v6", "armv7": "arm/v7", "armv7l": "arm/v7",
    "armv6": "arm/v6", "armv6l": "arm/v6", "armv5": "arm/v5", "armv8": "arm64", "x64": "amd64",
    "x86": "386", "ppc64el": "ppc64le", "mips64el": "mips64le", "mipsel": "mipsle",
    "loongarch64": "loong64", **_ARCH_ALIASES,
}  # fmt: skip
# Only these architectures have variants (OCI image spec; Go's GOAMD64/GOARM/GOARM64 levels).
_VARIANTS = {
    "amd64": re.compile(r"v[234]"),
    "arm": re.compile(r"v[5-8]"),
    "arm64": re.compile(r"v8\.[1-9]|v9(\.[1-9])?"),
}
_COMPONENT = re.compile(r"[a-z0-9_.-]+")
_EXAMPLES = "expected os/arch[/variant] such as linux/arm64, linux/amd64 or linux/arm/v7"

_QEMU = {
    "amd64": "x86_64", "arm64": "aarch64", "386": "i386", "arm": "arm", "ppc64le": "ppc64le",
    "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "mipsle": "mipsel",
    "ppc64": "ppc64", "mips": "mips", "mips64": "mips64", "loong64": "loongarch64",
}  # fmt: skip
# Linux reports little-endian MIPS under the big-endian name; 32-bit arm says its ISA level.
_UNAME = _QEMU | {"386": "i686", "mips64le": "mips64", "mipsle": "mips"}
_ARM_UNAME = {"v5": "armv5tel", "v6": "armv6l", "v7": "armv7l", "v8": "armv8l"}


def _normalise(os: str, arch: str, variant: str) -> tuple[str, str, str]:
    """containerd's normalizeOS + normalizeArch, with the OS defaulting to linux."""
    os, arch, variant = os.lower() or "linux", arch.lower(), variant.lower()
    os = "darwin" if os == "macos" else os
    if re.fullmatch(r"\d+(\.\d+)?", variant):  # "7" -> "v7", "8.2" -> "v8.2"
        variant = "v" + variant
    if arch in ("armhf", "armel"):
        return os, "arm", "v7" if arch == "armhf" else "v6"
    if arch in ("i386", "i486", "i586", "i686"):
        variant = ""  # containerd drops whatever followed i386; 386 has no variants
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "amd64" and variant == "v1":
        variant = ""  # v1 is baseline x86-64, what every amd64 image is
    elif arch == "arm64":
        variant = {"v8": "", "v8.0": "", "v9.0": "v9"}.get(variant, variant)
    elif arch == "arm" and not variant:
        variant = "v7"  # armhf, by far the most common 32-bit arm
    return os, arch, variant


def _suggest(os: str, arch: str) -> str | None:
    """The known (or alias) os/arch closest to a bad one, as canonical text; linux wins ties."""
    if os != "linux" and ("linux", _ARCH_ALIASES.get(arch, arch)) in KNOWN_PLATFORMS:
        return f"linux/{_ARCH_ALIASES.get(arch, arch)}"  # a real arch on the wrong OS
    wanted = f"{os}/{arch}"
    candidates = {f"{o}/{a}": f"{o}/{a}" for o, a in KNOWN_PLATFORMS}
    candidates |= {f"linux/{alias}": f"linux/{real}" for alias, real in _HINT_ALIASES.items()}
    best: tuple[float, bool, bool] = (0.6, False, False)  # difflib's usual cutoff
    suggestion = None
    # Sorted, strict ">": deterministic. Ties go to linux (our containers) and real names.
    for text, canonical in sorted(candidates.items()):
        ratio = difflib.SequenceMatcher(None, wanted, text).ratio()
        key = (ratio, canonical.startswith("linux/"), text == canonical)
        if key > best:
            best, suggestion = key, canonical
    return suggestion


def _invalid(text: str, problem: str, hint: str = "") -> InvalidPlatform:
    hint = f"; {hint}" if hint else ""
    return InvalidPlatform(f"invalid platform {text!r}: {problem}{hint} ({_EXAMPLES})")


@dataclass(frozen=True, order=True)
class Platform:
    """An OCI platform, normalised on construction (``Platform("Linux", "aarch64")`` is arm64)."""

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        # Normalising here makes equality, hashing and sorting agree with `matches`.
        os, arch, variant = _normalise(self.os, self.architecture, self.variant)
        object.__setattr__(self, "os", os)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse user input: ``os/arch[/variant]`` or a bare arch (os linux); validated."""
        spec = text.strip().lower()
        if not spec:
            raise _invalid(text, "empty platform")
        parts = spec.split("/")
        if len(parts) > 3:
            raise _invalid(text, f"too many '/'-separated parts ({len(parts)}, at most 3)")
        if any(not _COMPONENT.fullmatch(part) for part in parts):
            raise _invalid(text, "each part must be non-empty letters, digits, '_', '.' or '-'")
        if spec == "all":
            raise _invalid(text, '"all" is not one platform', "the caller must expand it")
        if len(parts) == 1:
            if parts[0] in {*_GO_PORTS, "macos"}:
                raise _invalid(text, "names only an OS", f"add an architecture, e.g. {spec}/amd64")
            parts.insert(0, "linux")
        os, arch, variant = _normalise(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
        if (os, arch) not in KNOWN_PLATFORMS:
            guess = _suggest(os, parts[1])
            raise _invalid(
                text, f"unknown os/arch {os}/{parts[1]}", f"did you mean {guess}?" if guess else ""
            )
        pattern = _VARIANTS.get(arch)
        if variant and not (pattern and pattern.fullmatch(variant)):
            has = "has no variants" if pattern is None else f"has no variant {variant}"
            raise _invalid(text, f"{arch} {has}", f"try {cls(os, arch)}")
        return cls(os, arch, variant)

    @classmethod
    def from_oci(cls, obj: Mapping[str, Any]) -> Platform:
        """From an OCI/Docker platform object or image config (``os``/``Os``, ``architecture``...).

        Normalised but not validated against KNOWN_PLATFORMS: this is data from an image.
        """
        fields = {str(key).lower(): value for key, value in obj.items()}
        arch = fields.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise InvalidPlatform(
                f"platform object with keys {sorted(fields)} has no 'architecture' string; "
                'expected e.g. {"os": "linux", "architecture": "arm64"}'
            )
        return cls(str(fields.get("os") or ""), arch, str(fields.get("variant") or ""))

    def to_oci(self) -> dict[str, str]:
        """The OCI platform object; ``variant`` only when there is one."""
        oci = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            oci["variant"] = self.variant
        return oci

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, other: Platform | str) -> bool:
        """Normalised equality: ``linux/arm64`` matches ``linux/arm64/v8`` and ``aarch64``.

        A string is parsed first, so a malformed one raises InvalidPlatform.
        """
        if isinstance(other, str):
            other = Platform.parse(other)
        return self == other

    @property
    def qemu_arch(self) -> str | None:
        """The qemu-user target (``qemu-<name>``) emulating this architecture, None if none."""
        return _QEMU.get(self.architecture)

    @property
    def uname_machine(self) -> str:
        """What ``uname -m`` prints on native hardware; the architecture itself if unknown.

        Under qemu-user, 32-bit arm may report the emulated CPU (e.g. armv7l for an arm/v6 image).
        """
        if self.architecture == "arm":
            return _ARM_UNAME.get(self.variant, f"arm{self.variant}l")
        return _UNAME.get(self.architecture, self.architecture)


def parse_platforms(spec: str | Iterable[str | Platform]) -> list[Platform]:
    """Parse a comma-separated list (or an iterable of such strings and Platforms).

    Returns normalised platforms, de-duplicated by normalised equality, first occurrence kept.
    The caller handles the word ``all``; here it is an error, as is an empty list.
    """
    entries: list[str | Platform] = []
    for item in [spec] if isinstance(spec, str) else spec:
        if isinstance(item, Platform):
            entries.append(item)
        else:  # empty pieces are tolerated so "a, b," and "a,,b" work
            entries.extend(piece.strip() for piece in item.split(",") if piece.strip())
    if not entries:
        raise InvalidPlatform(f"no platforms given in {spec!r}; {_EXAMPLES}")
    if any(isinstance(e, str) and e.lower() == "all" for e in entries):
        if len(entries) == 1:  # a caller bug: "all" alone is the caller's to expand
            raise InvalidPlatform('"all" must be expanded to real platforms before parsing')
        raise InvalidPlatform(
            f'"all" must be used alone, not inside the list {spec!r}; give either all '
            "or platforms such as linux/amd64,linux/arm64"
        )
    result: list[Platform] = []
    for entry in entries:
        parsed = entry if isinstance(entry, Platform) else Platform.parse(entry)
        if parsed not in result:
            result.append(parsed)
    return result


# `uname -m` spellings beyond the aliases above (32-bit arm kernels name their ISA level).
_HOST_MACHINES = _HINT_ALIASES | {
    "armv5tel": "arm/v5", "armv5tejl": "arm/v5",
    # A 32-bit userland on an ARMv8 CPU. containerd's default spec says linux/arm/v8 here and
    # its matcher then also takes v7..v5 images; we match exactly, 32-bit images are published
    # as arm/v7, and Docker's daemon reports "arm" (= arm/v7): so arm/v7, on both engines.
    "armv8l": "arm/v7",
}  # fmt: skip


def host_platform() -> Platform:
    """The platform whose containers run natively here, e.g. linux/amd64.

    The OS is always linux, whatever ``sys.platform`` says: a Mac or Windows host runs Linux
    containers in a VM of its own architecture, so an Apple-silicon Mac reports linux/arm64.
    """
    machine = _stdlib_platform.machine().lower()  # Windows says "AMD64"
    if machine in ("mips", "mips64") and sys.byteorder == "little":
        machine += "le"  # uname uses the big-endian name for both byte orders
    arch, _, variant = _HOST_MACHINES.get(machine, machine).partition("/")
    host = Platform("linux", arch, variant)
    if ("linux", host.architecture) not in KNOWN_PLATFORMS:
        raise InvalidPlatform(
            f"cannot map this machine's architecture {machine!r} to a Linux container platform; "
            "name the platforms explicitly, e.g. linux/amd64"
        )
    return host


def cross_env(target: Platform, build: Platform) -> dict[str, str]:
    """The variables a build running on ``build`` needs to produce ``target``'s binaries.

    BuildKit's automatic platform arguments (TARGETPLATFORM, TARGETOS, TARGETARCH,
    TARGETVARIANT, BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT), plus Go's GOOS/GOARCH
    (and GOARM for 32-bit arm: "v7" → "7"), so `go build` cross-compiles as is.
    """
    env = {
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "GOOS": target.os,
        "GOARCH": target.architecture,
    }
    if target.architecture == "arm" and target.variant:
        env["GOARM"] = target.variant.lstrip("v")
    return env
