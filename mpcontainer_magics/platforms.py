"""Platform strings (``linux/arm64``, ``aarch64``, ``windows(10.0.20348)/amd64``...): parse,
normalise, match, and say what runs on what.

This ports the rules of containerd's ``platforms`` package (database.go ``normalizeOS`` and
``normalizeArch``; platforms.go ``Parse``, ``FormatAll`` and its matcher, OS versions and
features included; compare.go ``Only``/``OnlyStrict``; platform_windows_compat.go's Windows
version rule) so a platform written the way Docker or containerd accept it means the same
thing here, and an index entry is chosen as containerd would choose it. Differences, on
purpose:

* The OS defaults to ``linux`` rather than the host OS: the containers we run are Linux ones,
  even when the notebook runs on a Mac.
* The canonical form is containerd's *normalised* one, so plain ``arm`` always carries its
  variant (``linux/arm/v7``) and ``arm64/v8`` drops it (``linux/arm64``).
* User input is validated: the os/arch pair must be one Go knows, a variant must be one the
  architecture has, and a typo gets a "did you mean" hint. A bare OS (``linux``) is refused
  instead of silently meaning "this machine's architecture".

* Cross-architecture fallbacks (arm64 hosts running 32-bit arm images) depend on a parameter:
  whether the CPU has a 32-bit mode is a runtime fact (many arm64 CPUs lack it, and qemu-aarch64
  cannot run AArch32 code), which containerd does not ask.
* Among entries that match equally well, a higher Windows OS version wins, compared as numbers
  (containerd's Windows comparer compares the strings).

Constructing :class:`Platform` directly normalises but does not validate, because image indexes
legitimately carry odd entries (buildx attestations are ``unknown/unknown``).
"""

from __future__ import annotations

import difflib
import platform as _stdlib_platform
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from .errors import InvalidPlatform

__all__ = [
    "KNOWN_PLATFORMS",
    "Matcher",
    "Platform",
    "compatible",
    "host_platform",
    "parse_platforms",
]

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
# containerd's osRe: os[(version[+feature]...)], the options %-encoded (FormatAll's encoding).
_OS_WITH_OPTIONS = re.compile(
    r"([a-z0-9_-]+)(?:\(([a-z0-9_.%-]*)((?:\+[a-z0-9_.%-]+)*)\))?", re.IGNORECASE
)
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
# The characters FormatAll encodes in an OS version or feature ("%" first: no double encoding).
_OPTION_ESCAPES = {"%": "%25", "+": "%2B", "(": "%28", ")": "%29", "/": "%2F"}
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


def _encode_option(value: str) -> str:
    return "".join(_OPTION_ESCAPES.get(char, char) for char in value)


def _split_os(text: str, part: str) -> tuple[str, str, tuple[str, ...]]:
    """``os[(version[+feature]...)]`` -> (os, version, features), the options %-decoded."""
    found = _OS_WITH_OPTIONS.fullmatch(part)
    if found is None:
        if "(" not in part:
            raise _invalid(text, "each part must be non-empty letters, digits, '_', '.' or '-'")
        raise _invalid(
            text,
            f"the OS part {part!r} is not os(version[+feature]...)",
            "e.g. windows(10.0.20348)/amd64 or windows(10.0.20348+win32k)/amd64",
        )
    name, version, features = found.groups(default="")
    options = [version, *features.split("+")[1:]]
    if any(_BAD_ESCAPE.search(option) for option in options):
        raise _invalid(text, "a '%' in the OS options must start a %XX escape such as %2B")
    decoded = [unquote(option) for option in options]
    return name.lower(), decoded[0], tuple(decoded[1:])


@dataclass(frozen=True, order=True)
class Platform:
    """An OCI platform, normalised on construction (``Platform("Linux", "aarch64")`` is arm64).

    ``os_version`` (``10.0.20348.2340``) and ``os_features`` (``("win32k",)``) are the OCI
    ``os.version`` and ``os.features``; features are kept sorted and unique, as containerd's
    Normalize keeps them.
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalising here makes equality, hashing and sorting agree with `matches`.
        os, arch, variant = _normalise(self.os, self.architecture, self.variant)
        if isinstance(self.os_features, str):  # tuple("win32k") would be its letters
            raise TypeError(f"os_features must be a sequence of strings, not {self.os_features!r}")
        object.__setattr__(self, "os", os)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "os_features", tuple(sorted(set(self.os_features))))

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse user input, validated: ``os[(version[+feature]...)]/arch[/variant]`` or a bare
        arch (os linux), e.g. ``linux/arm/v7``, ``windows(10.0.20348)/amd64``, ``aarch64``."""
        spec = text.strip()
        if not spec:
            raise _invalid(text, "empty platform")
        parts = spec.split("/")
        if len(parts) > 3:
            raise _invalid(text, f"too many '/'-separated parts ({len(parts)}, at most 3)")
        os_part, parts = parts[0], [part.lower() for part in parts]
        os_name, os_version, os_features = _split_os(text, os_part)
        if any(not _COMPONENT.fullmatch(part) for part in parts[1:]):
            raise _invalid(text, "each part must be non-empty letters, digits, '_', '.' or '-'")
        if spec.lower() == "all":
            raise _invalid(text, '"all" is not one platform', "the caller must expand it")
        if len(parts) == 1:
            if os_name in {*_GO_PORTS, "macos"}:
                example = f"{parts[0]}/amd64"
                raise _invalid(text, "names only an OS", f"add an architecture, e.g. {example}")
            if os_name != parts[0]:
                raise _invalid(
                    text,
                    "OS options need an OS and an architecture",
                    "e.g. windows(10.0.20348)/amd64",
                )
            os_name, parts = "linux", ["linux", *parts]
        os, arch, variant = _normalise(os_name, parts[1], parts[2] if len(parts) == 3 else "")
        if (os, arch) not in KNOWN_PLATFORMS:
            guess = _suggest(os, parts[1])
            raise _invalid(
                text, f"unknown os/arch {os}/{parts[1]}", f"did you mean {guess}?" if guess else ""
            )
        pattern = _VARIANTS.get(arch)
        if variant and not (pattern and pattern.fullmatch(variant)):
            has = "has no variants" if pattern is None else f"has no variant {variant}"
            raise _invalid(text, f"{arch} {has}", f"try {cls(os, arch)}")
        return cls(os, arch, variant, os_version, os_features)

    @classmethod
    def from_oci(cls, obj: Mapping[str, Any]) -> Platform:
        """From an OCI/Docker platform object or image config (``os``/``Os``, ``architecture``,
        ``os.version``/``OsVersion``, ``os.features``/``OsFeatures``...).

        Normalised but not validated against KNOWN_PLATFORMS: this is data from an image.
        """
        fields = {str(key).lower().replace(".", ""): value for key, value in obj.items()}
        arch = fields.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise InvalidPlatform(
                f"platform object with keys {sorted(obj)} has no 'architecture' string; "
                'expected e.g. {"os": "linux", "architecture": "arm64"}'
            )
        version, features = fields.get("osversion") or "", fields.get("osfeatures") or []
        if not isinstance(version, str):
            raise InvalidPlatform(
                f"platform object's 'os.version' is {version!r}, not a string like "
                "'10.0.20348.2340'"
            )
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InvalidPlatform(
                f"platform object's 'os.features' is {features!r}, not a list of strings like "
                "['win32k']"
            )
        os, variant = str(fields.get("os") or ""), str(fields.get("variant") or "")
        return cls(os, arch, variant, version, tuple(features))

    def to_oci(self) -> dict[str, Any]:
        """The OCI platform object; ``variant``, ``os.version``, ``os.features`` only when set."""
        oci: dict[str, Any] = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            oci["variant"] = self.variant
        if self.os_version:
            oci["os.version"] = self.os_version
        if self.os_features:
            oci["os.features"] = list(self.os_features)
        return oci

    @property
    def base(self) -> Platform:
        """This platform without OS version and features: ``str(p.base)`` is containerd's
        Format, the ``os/arch[/variant]`` that Docker's --platform and BuildKit expect."""
        return Platform(self.os, self.architecture, self.variant)

    def __str__(self) -> str:
        """containerd's FormatAll: ``os/arch[/variant]``, the OS as ``os(version+f1+f2)`` when it
        has a version or features; ``Platform.parse`` reads it back."""
        options = _encode_option(self.os_version)
        options += "".join(f"+{_encode_option(f)}" for f in self.os_features)
        os = f"{self.os}({options})" if options else self.os
        return "/".join(part for part in (os, self.architecture, self.variant) if part)

    def matches(self, other: Platform | str) -> bool:
        """Normalised equality: ``linux/arm64`` matches ``linux/arm64/v8`` and ``aarch64``.

        A string is parsed first, so a malformed one raises InvalidPlatform. For "can run",
        see :func:`compatible` and :class:`Matcher`.
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


# -- what runs on what: containerd's Only / OnlyStrict ----------------------------------------

# Windows Server 2022 (10.0.20348) began the stable container ABI: a host from that build on
# runs containers of any build from it up to its own; an older host runs only its own build.
_STABLE_ABI_BUILDS = (20348,)
_ARM64_LEVEL = re.compile(r"v(\d+)(?:\.(\d+))?")
_MAX_ARMV8_MINOR = 9  # Arm ends the v8 line at v8.9; v9.x carries v8.(x+5)


def _windows_version(version: str) -> tuple[int, int, int] | None:
    """major.minor.build of a Windows OS version (``10.0.20348.2340``); None if it has none."""
    parts = version.split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        return None
    major, minor, build = (int(p) for p in parts[:3])
    return (major, minor, build) if major < 256 and minor < 256 and build < 65536 else None


def _windows_runs(host_version: str, image_version: str) -> bool:
    """containerd's windowsVersionMatcher: does a Windows host of ``host_version`` run an image
    built for ``image_version``? An unknown host version or an image without one: yes."""
    host = _windows_version(host_version)
    if host is None or not image_version:
        return True
    image = _windows_version(image_version)
    if image is None or image[:2] != host[:2]:
        return False
    if host[2] < _STABLE_ABI_BUILDS[0]:
        return image[2] == host[2]
    floor = max(b for b in _STABLE_ABI_BUILDS if b <= host[2])
    return floor <= image[2] <= host[2]


def _runs(wanted: Platform, offered: Platform) -> bool:
    """containerd's NewMatcher(wanted).Match(offered): same os/arch/variant, an OS version a
    Windows host runs (other OSes ignore versions), and no OS feature ``wanted`` lacks."""
    return (
        wanted.base == offered.base
        and (wanted.os != "windows" or _windows_runs(wanted.os_version, offered.os_version))
        and set(offered.os_features) <= set(wanted.os_features)
    )


def _arm64_levels(variant: str) -> list[str]:
    """The arm64 variants an arm64 CPU of ``variant`` runs, itself first (containerd's vector):
    v9.x runs v9.x..v9 then v8.(x+5)..v8; v8.x runs v8.x..v8."""
    level = _ARM64_LEVEL.fullmatch(variant or "v8")
    if level is None:
        return [variant]
    major, minor = int(level[1]), int(level[2] or 0)
    levels = [f"v{major}.{m}" if m else f"v{major}" for m in range(minor, -1, -1)]
    if major == 9:
        top = min(minor + 5, _MAX_ARMV8_MINOR)
        levels += [f"v8.{m}" if m else "v8" for m in range(top, -1, -1)]
    return levels


def _numbered_down(platform: Platform, arch: str, variant: str, floor: int) -> list[Platform]:
    """``arch`` at level ``variant`` (vN), then each lower level down to v``floor``."""
    level = re.fullmatch(r"v(\d+)", variant)
    variants = [f"v{n}" for n in range(int(level[1]), floor - 1, -1)] if level else [variant]
    return [replace(platform, architecture=arch, variant=v) for v in variants]


def compatible(host: Platform, *, arm32: bool = True) -> list[Platform]:
    """The platforms whose images run on ``host``, best first (containerd's ``Only`` vector).

    amd64/vN runs amd64 vN..v1, then 386; arm/vN runs arm vN..v5; arm64 at any v8.x/v9.x
    level runs the arm64 levels below it and, when ``arm32`` (the CPU has a 32-bit mode: a
    runtime probe's answer), arm/v8..v5. Other architectures run only themselves. The host's
    OS version and features carry over to every entry. The list holds normalised platforms,
    so ``linux/arm64`` (v8) appears as plain arm64.
    """
    if host.architecture == "amd64":
        return [
            *_numbered_down(host, "amd64", host.variant or "v1", 1),
            replace(host, architecture="386", variant=""),
        ]
    if host.architecture == "arm":
        return _numbered_down(host, "arm", host.variant, 5)
    if host.architecture == "arm64":
        own = [replace(host, variant=v) for v in _arm64_levels(host.variant)]
        return own + (_numbered_down(host, "arm", "v8", 5) if arm32 else [])
    return [host]


@dataclass(frozen=True)
class Matcher:
    """Which offered platforms a machine runs, and which it prefers (containerd's ``Ordered``).

    ``wanted`` is in order of preference; an offered platform matches a wanted one as
    containerd's matcher does (see :meth:`match`). Build one with :meth:`only` (what a host
    runs, fallbacks included) or :meth:`only_strict` (exactly that platform)::

        Matcher.only(Platform.parse("linux/amd64/v2")).ranked(offered)  # amd64/v2, amd64, 386
    """

    wanted: tuple[Platform, ...]

    @classmethod
    def only(cls, host: Platform, *, arm32: bool = True) -> Matcher:
        """containerd's ``Only``: ``host`` and every platform :func:`compatible` says it runs."""
        return cls(tuple(compatible(host, arm32=arm32)))

    @classmethod
    def only_strict(cls, platform: Platform) -> Matcher:
        """containerd's ``OnlyStrict``: ``platform`` only (normalised; a Windows OS version
        still matches the builds it runs, and features a subset of its own)."""
        return cls((platform,))

    def match(self, offered: Platform) -> bool:
        """Does some wanted platform run ``offered``: same os/arch/variant, a Windows OS
        version that host runs (unversioned on either side matches), features a subset?"""
        return self._rank(offered) is not None

    def less(self, a: Platform, b: Platform) -> bool:
        """Is ``a`` preferred to ``b``: it matches an earlier wanted platform, or the same one
        with more OS features or (when the wanted one has an OS version) a higher OS version;
        a match beats a non-match."""
        rank_a, rank_b = self._rank(a), self._rank(b)
        return rank_a is not None and (rank_b is None or rank_a < rank_b)

    def ranked(self, offered: Iterable[Platform]) -> list[Platform]:
        """The offered platforms that match, best first; equally good ones keep their order."""
        ranks = [(rank, p) for p in offered if (rank := self._rank(p)) is not None]
        return [p for _, p in sorted(ranks, key=lambda pair: pair[0])]

    def _rank(self, offered: Platform) -> tuple[int, int, tuple[int, ...]] | None:
        position = next((n for n, w in enumerate(self.wanted) if _runs(w, offered)), None)
        if position is None:
            return None
        # A host's OS version prefers the newest build it runs (containerd's Windows comparer);
        # a request without one keeps index order, as containerd's Ordered does.
        newest: tuple[int, ...] = ()
        if self.wanted[position].os_version:
            parts = offered.os_version.split(".")
            newest = tuple(-int(p) if p.isdigit() else 1 for p in parts)
        return position, -len(offered.os_features), newest


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
        "TARGETPLATFORM": str(target.base),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": str(build.base),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "GOOS": target.os,
        "GOARCH": target.architecture,
    }
    if target.architecture == "arm" and target.variant:
        env["GOARM"] = target.variant.lstrip("v")
    return env
