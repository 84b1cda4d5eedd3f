"""Tests for mpcontainer_magics.platforms: containerd's normalisation rules, ported table by table.

Rows marked "containerd" come from containerd/platforms' platforms_test.go (TestParseSelector,
TestParseSelectorInvalid, TestFormatAll), compare_test.go (TestOnly, TestOnlyStrict) and
platform_windows_compat_test.go (Test_PlatformCompat, Test_PlatformOrder), with the OS
defaulting to linux and the normalised canonical form (plain arm carries v7, arm64/v8 drops
the variant).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mpcontainer_magics.errors import InvalidPlatform, MPCError
from mpcontainer_magics.platforms import (
    KNOWN_PLATFORMS,
    Matcher,
    Platform,
    compatible,
    cross_env,
    host_platform,
    parse_platforms,
)

PARSE_CASES = [
    # (input, os, architecture, variant)
    ("linux/arm64", "linux", "arm64", ""),  # containerd
    ("linux/arm64/v8", "linux", "arm64", ""),  # containerd (normalised)
    ("linux/arm64/8", "linux", "arm64", ""),
    ("linux/arm64/v8.0", "linux", "arm64", ""),
    ("linux/arm64/v8.2", "linux", "arm64", "v8.2"),
    ("linux/arm64/v9", "linux", "arm64", "v9"),
    ("linux/arm64/9.0", "linux", "arm64", "v9"),
    ("linux/aarch64", "linux", "arm64", ""),
    ("aarch64", "linux", "arm64", ""),
    ("Aarch64", "linux", "arm64", ""),  # containerd
    ("arm64", "linux", "arm64", ""),
    ("linux/arm", "linux", "arm", "v7"),  # containerd
    ("arm", "linux", "arm", "v7"),  # containerd
    ("linux/arm/v7", "linux", "arm", "v7"),  # containerd
    ("linux/arm/7", "linux", "arm", "v7"),
    ("linux/arm/v6", "linux", "arm", "v6"),  # containerd
    ("linux/arm/6", "linux", "arm", "v6"),
    ("linux/arm/v5", "linux", "arm", "v5"),
    ("linux/arm/5", "linux", "arm", "v5"),
    ("linux/arm/8", "linux", "arm", "v8"),
    ("armhf", "linux", "arm", "v7"),  # containerd
    ("linux/armhf", "linux", "arm", "v7"),
    ("armel", "linux", "arm", "v6"),  # containerd
    ("linux/armel", "linux", "arm", "v6"),
    ("x86_64", "linux", "amd64", ""),  # containerd
    ("x86-64", "linux", "amd64", ""),
    ("X86_64", "linux", "amd64", ""),
    ("Linux/x86_64", "linux", "amd64", ""),  # containerd
    ("amd64", "linux", "amd64", ""),
    ("linux/amd64/v1", "linux", "amd64", ""),
    ("linux/amd64/1", "linux", "amd64", ""),
    ("linux/amd64/v2", "linux", "amd64", "v2"),
    ("linux/amd64/V3", "linux", "amd64", "v3"),
    ("linux/x86_64/v4", "linux", "amd64", "v4"),
    ("i386", "linux", "386", ""),  # containerd
    ("i486", "linux", "386", ""),
    ("i586", "linux", "386", ""),
    ("i686", "linux", "386", ""),
    ("linux/386", "linux", "386", ""),
    ("s390x", "linux", "s390x", ""),  # containerd
    ("linux/s390x", "linux", "s390x", ""),  # containerd
    ("LINUX/PPC64LE", "linux", "ppc64le", ""),
    ("linux/ppc64", "linux", "ppc64", ""),
    ("riscv64", "linux", "riscv64", ""),
    ("linux/mips64le", "linux", "mips64le", ""),
    ("linux/mipsle", "linux", "mipsle", ""),
    ("linux/loong64", "linux", "loong64", ""),
    ("macos/aarch64", "darwin", "arm64", ""),  # containerd (without the OS version)
    ("macOS/arm64", "darwin", "arm64", ""),
    ("darwin/amd64", "darwin", "amd64", ""),
    ("windows/amd64", "windows", "amd64", ""),  # containerd (without the OS version)
    ("js/wasm", "js", "wasm", ""),
    ("  linux/arm64  ", "linux", "arm64", ""),
]


@pytest.mark.parametrize(("text", "os", "arch", "variant"), PARSE_CASES)
def test_parse_normalises(text: str, os: str, arch: str, variant: str) -> None:
    p = Platform.parse(text)
    assert (p.os, p.architecture, p.variant) == (os, arch, variant)


@pytest.mark.parametrize(("text", "os", "arch", "variant"), PARSE_CASES)
def test_format_round_trips(text: str, os: str, arch: str, variant: str) -> None:
    p = Platform.parse(text)
    assert str(p) == "/".join(x for x in (os, arch, variant) if x)
    assert Platform.parse(str(p)) == p
    assert str(Platform.parse(str(p))) == str(p)


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (Platform("linux", "arm64"), "linux/arm64"),
        (Platform("linux", "arm", "v7"), "linux/arm/v7"),
        (Platform("linux", "arm", "v6"), "linux/arm/v6"),
        (Platform("linux", "amd64", "v3"), "linux/amd64/v3"),
        (Platform("linux", "s390x"), "linux/s390x"),
    ],
)
def test_str(platform: Platform, expected: str) -> None:
    assert str(platform) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("Linux", "AArch64"), ("linux", "arm64", "")),
        (("", "x86_64"), ("linux", "amd64", "")),  # OS defaults to linux, not the host OS
        (("linux", "arm"), ("linux", "arm", "v7")),
        (("linux", "arm", "6"), ("linux", "arm", "v6")),
        (("linux", "arm64", "v8"), ("linux", "arm64", "")),
        (("linux", "amd64", "v1"), ("linux", "amd64", "")),
        (("linux", "i386", "v9"), ("linux", "386", "")),
        (("macos", "arm64"), ("darwin", "arm64", "")),
        (("unknown", "unknown"), ("unknown", "unknown", "")),  # not validated: image data
    ],
)
def test_constructor_normalises(args: tuple[str, ...], expected: tuple[str, str, str]) -> None:
    p = Platform(*args)
    assert (p.os, p.architecture, p.variant) == expected


@pytest.mark.parametrize(
    ("spec", "others"),
    [
        # containerd TestParseSelector "matches" columns.
        ("linux/arm64", ["linux/aarch64", "linux/aarch64/v8", "linux/arm64/v8", "aarch64"]),
        ("linux/arm64/v8", ["linux/aarch64", "linux/aarch64/v8", "linux/arm64", "arm64"]),
        ("linux/arm", ["linux/arm/v7", "linux/armhf", "linux/arm/7", "armhf"]),
        ("linux/arm/v6", ["linux/armel", "armel", "linux/arm/6"]),
        ("linux/arm/v7", ["linux/arm", "linux/armhf"]),
        ("linux/amd64", ["x86_64", "linux/x86-64", "linux/amd64/v1", "AMD64"]),
        ("linux/386", ["i386", "i686"]),
    ],
)
def test_matches(spec: str, others: list[str]) -> None:
    p = Platform.parse(spec)
    for other in others:
        assert p.matches(other), other
        assert p.matches(Platform.parse(other)), other
        assert Platform.parse(other).matches(p), other


@pytest.mark.parametrize(
    ("spec", "other"),
    [
        ("linux/arm64", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v6"),
        ("linux/arm64", "linux/arm64/v9"),
        ("linux/amd64", "linux/amd64/v3"),
        ("linux/amd64", "windows/amd64"),
        ("linux/ppc64le", "linux/ppc64"),
        ("linux/mips64le", "linux/mips64"),
    ],
)
def test_does_not_match(spec: str, other: str) -> None:
    assert not Platform.parse(spec).matches(other)
    assert not Platform.parse(other).matches(spec)


def test_equal_platforms_hash_equal() -> None:
    assert len({Platform.parse("aarch64"), Platform("linux", "arm64", "v8")}) == 1
    assert sorted([Platform.parse("s390x"), Platform.parse("amd64")])[0] == Platform(
        "linux", "amd64"
    )


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("linux/arm65", "linux/arm64"),
        ("arm65", "linux/arm64"),
        ("linux/s390", "linux/s390x"),
        ("linx/amd64", "linux/amd64"),
        ("lnux/arm64", "linux/arm64"),
        ("linux/amd46", "linux/amd64"),
        ("linux/aarch46", "linux/arm64"),
        ("linux/x86_46", "linux/amd64"),
        ("linux/ppc64el", "linux/ppc64le"),
        ("linux/mips64el", "linux/mips64le"),
        ("linux/armv7", "linux/arm/v7"),
        ("armv7l", "linux/arm/v7"),
        ("linux/armv6l", "linux/arm/v6"),
        ("loongarch64", "linux/loong64"),
        ("linux/riscv", "linux/riscv64"),
        ("windows/s390x", "linux/s390x"),
        ("darwin/ppc64le", "linux/ppc64le"),
    ],
)
def test_unknown_platform_suggests(text: str, suggestion: str) -> None:
    with pytest.raises(InvalidPlatform) as info:
        Platform.parse(text)
    message = str(info.value)
    assert f"did you mean {suggestion}?" in message
    assert repr(text) in message
    assert "expected os/arch[/variant] such as linux/arm64" in message
    assert "\n" not in message


def test_unrelated_input_gets_no_suggestion() -> None:
    with pytest.raises(InvalidPlatform) as info:
        Platform.parse("qqqqqq/zzzzzz")
    assert "did you mean" not in str(info.value)
    assert "unknown os/arch qqqqqq/zzzzzz" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty platform"),  # containerd
        ("   ", "empty platform"),
        ("/linux/arm", "must be non-empty"),  # containerd: leading slash
        ("linux/arm/", "must be non-empty"),  # containerd: trailing slash
        ("linux//arm", "must be non-empty"),
        ("linux /arm", "must be non-empty letters"),  # containerd: spaces
        ("linux/&arm", "must be non-empty letters"),  # containerd: invalid character
        ("linux/*", "must be non-empty letters"),  # containerd: no wildcards
        ("windows(10.0.17763/amd64", "is not os(version[+feature]...)"),  # containerd
        ("windows(10.0.17763)x/amd64", "is not os(version[+feature]...)"),
        ("windows(10 0)/amd64", "is not os(version[+feature]...)"),
        ("windows(+)/amd64", "is not os(version[+feature]...)"),  # an empty feature
        ("windows(10.0%zz)/amd64", "must start a %XX escape"),
        ("amd64(10.0)", "OS options need an OS and an architecture"),
        ("windows(10.0.20348)", "names only an OS"),
        ("linux/arm/foo/bar", "too many '/'-separated parts"),  # containerd
        ("linux/arm/v7/x", "too many '/'-separated parts"),
        ("linux/s390x/v7", "s390x has no variants; try linux/s390x"),
        ("linux/ppc64le/v2", "ppc64le has no variants; try linux/ppc64le"),
        ("linux/386/v2", "386 has no variants"),
        ("linux/arm/v9", "arm has no variant v9; try linux/arm/v7"),
        ("linux/arm/foo", "arm has no variant foo"),
        ("linux/amd64/v5", "amd64 has no variant v5; try linux/amd64"),
        ("linux/arm64/v7", "arm64 has no variant v7; try linux/arm64"),
        ("linux", "names only an OS; add an architecture, e.g. linux/amd64"),
        ("windows", "names only an OS"),
        ("macos", "names only an OS"),
        ("linux/wasm", "unknown os/arch linux/wasm"),
        ("all", '"all" is not one platform'),
    ],
)
def test_invalid_input(text: str, problem: str) -> None:
    with pytest.raises(InvalidPlatform) as info:
        Platform.parse(text)
    message = str(info.value)
    assert problem in message
    assert repr(text) in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MPCError)


def test_error_message_escapes_newlines() -> None:
    with pytest.raises(InvalidPlatform) as info:
        Platform.parse("linux\n/arm64")
    assert "\n" not in str(info.value)
    assert "'linux\\n/arm64'" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", ["linux/amd64"]),
        ("linux/amd64,linux/arm64", ["linux/amd64", "linux/arm64"]),
        ("linux/arm64 , linux/amd64", ["linux/arm64", "linux/amd64"]),
        (" aarch64,x86_64 ,  armhf ", ["linux/arm64", "linux/amd64", "linux/arm/v7"]),
        ("linux/arm64,aarch64,linux/arm64/v8", ["linux/arm64"]),
        ("s390x,amd64,s390x,x86_64,ppc64le", ["linux/s390x", "linux/amd64", "linux/ppc64le"]),
        ("linux/arm,linux/arm/v7,armhf,armel", ["linux/arm/v7", "linux/arm/v6"]),
        ("amd64,arm64,", ["linux/amd64", "linux/arm64"]),
        ("amd64,,arm64", ["linux/amd64", "linux/arm64"]),
        (["riscv64", "linux/s390x"], ["linux/riscv64", "linux/s390x"]),
        (["riscv64, arm64", "linux/arm64/v8"], ["linux/riscv64", "linux/arm64"]),
        ([Platform("linux", "arm64"), "aarch64", "amd64"], ["linux/arm64", "linux/amd64"]),
        ((p for p in ["i686", "i386", "386"]), ["linux/386"]),
    ],
)
def test_parse_platforms(spec: object, expected: list[str]) -> None:
    result = parse_platforms(spec)  # type: ignore[arg-type]
    assert [str(p) for p in result] == expected
    assert all(isinstance(p, Platform) for p in result)


@pytest.mark.parametrize("spec", ["", "  ", ",", " , ,", [], [""]])
def test_parse_platforms_empty(spec: object) -> None:
    with pytest.raises(InvalidPlatform, match="no platforms given"):
        parse_platforms(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["all,linux/arm64", "linux/amd64, ALL", ["amd64", "all"]])
def test_parse_platforms_rejects_all_in_a_list(spec: object) -> None:
    with pytest.raises(InvalidPlatform) as info:
        parse_platforms(spec)  # type: ignore[arg-type]
    message = str(info.value)
    assert '"all" must be used alone' in message
    assert repr(spec) in message
    assert "\n" not in message


def test_parse_platforms_rejects_all_alone() -> None:
    with pytest.raises(InvalidPlatform, match='"all" must be expanded'):
        parse_platforms("all")


def test_parse_platforms_reports_the_bad_entry() -> None:
    with pytest.raises(InvalidPlatform) as info:
        parse_platforms("linux/amd64, linux/arm65")
    assert "'linux/arm65'" in str(info.value)
    assert "did you mean linux/arm64?" in str(info.value)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"os": "linux", "architecture": "arm64"}, "linux/arm64"),
        ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64"),
        ({"os": "linux", "architecture": "arm", "variant": "v7"}, "linux/arm/v7"),
        ({"os": "linux", "architecture": "arm"}, "linux/arm/v7"),
        ({"os": "linux", "architecture": "arm", "variant": "v6"}, "linux/arm/v6"),
        ({"os": "linux", "architecture": "amd64", "variant": ""}, "linux/amd64"),
        ({"os": "linux", "architecture": "x86_64"}, "linux/amd64"),
        ({"architecture": "s390x"}, "linux/s390x"),
        # docker image inspect / docker-py attrs use capitalised keys.
        ({"Os": "linux", "Architecture": "arm64", "Variant": "v8", "Size": 1}, "linux/arm64"),
        # A real index entry with extra fields, and a buildx attestation entry.
        ({"os": "linux", "architecture": "ppc64le", "os.features": []}, "linux/ppc64le"),
        ({"os": "unknown", "architecture": "unknown"}, "unknown/unknown"),
    ],
)
def test_from_oci(obj: dict[str, object], expected: str) -> None:
    assert str(Platform.from_oci(obj)) == expected


@pytest.mark.parametrize("obj", [{}, {"os": "linux"}, {"os": "linux", "architecture": ""}])
def test_from_oci_needs_architecture(obj: dict[str, str]) -> None:
    with pytest.raises(InvalidPlatform, match="no 'architecture'"):
        Platform.from_oci(obj)


@pytest.mark.parametrize(
    ("text", "oci"),
    [
        ("linux/arm64", {"os": "linux", "architecture": "arm64"}),
        ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ("armel", {"os": "linux", "architecture": "arm", "variant": "v6"}),
        ("linux/amd64/v3", {"os": "linux", "architecture": "amd64", "variant": "v3"}),
        ("i686", {"os": "linux", "architecture": "386"}),
    ],
)
def test_to_oci_round_trip(text: str, oci: dict[str, str]) -> None:
    p = Platform.parse(text)
    assert p.to_oci() == oci
    assert Platform.from_oci(p.to_oci()) == p


QEMU_UNAME = [
    # (platform, qemu_arch, uname_machine)
    ("linux/amd64", "x86_64", "x86_64"),
    ("linux/amd64/v3", "x86_64", "x86_64"),
    ("linux/arm64", "aarch64", "aarch64"),
    ("linux/arm/v7", "arm", "armv7l"),
    ("linux/arm/v6", "arm", "armv6l"),
    ("linux/arm/v5", "arm", "armv5tel"),
    ("linux/386", "i386", "i686"),
    ("linux/ppc64le", "ppc64le", "ppc64le"),
    ("linux/ppc64", "ppc64", "ppc64"),
    ("linux/s390x", "s390x", "s390x"),
    ("linux/riscv64", "riscv64", "riscv64"),
    ("linux/mips64le", "mips64el", "mips64"),
    ("linux/mips64", "mips64", "mips64"),
    ("linux/mipsle", "mipsel", "mips"),
    ("linux/mips", "mips", "mips"),
    ("linux/loong64", "loongarch64", "loongarch64"),
]


@pytest.mark.parametrize(("text", "qemu", "uname"), QEMU_UNAME)
def test_qemu_arch_and_uname_machine(text: str, qemu: str, uname: str) -> None:
    p = Platform.parse(text)
    assert p.qemu_arch == qemu
    assert p.uname_machine == uname


def test_unknown_arch_has_no_qemu_and_reports_itself() -> None:
    p = Platform.parse("js/wasm")
    assert p.qemu_arch is None
    assert p.uname_machine == "wasm"
    assert Platform("unknown", "unknown").qemu_arch is None


def test_host_platform_here() -> None:
    # This suite runs on an x86_64 Linux machine.
    assert host_platform() == Platform("linux", "amd64")
    assert str(host_platform()) == "linux/amd64"


# `uname -m` (and the byte order) → the host's container platform, on both engines.
HOST_MACHINES = [
    ("x86_64", "little", "linux/amd64"),
    ("AMD64", "little", "linux/amd64"),  # Windows
    ("arm64", "little", "linux/arm64"),  # macOS on Apple silicon
    ("aarch64", "little", "linux/arm64"),
    ("armv7l", "little", "linux/arm/v7"),
    ("armv6l", "little", "linux/arm/v6"),
    ("armv8l", "little", "linux/arm/v7"),
    ("i686", "little", "linux/386"),
    ("ppc64le", "little", "linux/ppc64le"),
    ("s390x", "big", "linux/s390x"),
    ("riscv64", "little", "linux/riscv64"),
    ("mips64", "little", "linux/mips64le"),
    ("mips64", "big", "linux/mips64"),
    ("mips", "little", "linux/mipsle"),
    ("loongarch64", "little", "linux/loong64"),
]


@pytest.mark.parametrize(("machine", "byteorder", "expected"), HOST_MACHINES)
def test_host_platform_mapping(
    monkeypatch: pytest.MonkeyPatch, machine: str, byteorder: str, expected: str
) -> None:
    import platform as stdlib_platform
    import sys

    monkeypatch.setattr(stdlib_platform, "machine", lambda: machine)
    monkeypatch.setattr(sys, "byteorder", byteorder)
    monkeypatch.setattr(sys, "platform", "darwin")  # the OS is linux regardless
    assert str(host_platform()) == expected


@pytest.mark.parametrize(("machine", "byteorder", "expected"), HOST_MACHINES)
def test_the_embedded_engine_names_the_host_platform_alike(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, machine: str, byteorder: str, expected: str
) -> None:
    # It once had a table of its own: armv8l failed to parse, little-endian MIPS was mips.
    import platform as stdlib_platform
    import sys

    from mpcontainer_magics.engines.embedded import EmbeddedEngine

    monkeypatch.setattr(stdlib_platform, "machine", lambda: machine)
    monkeypatch.setattr(sys, "byteorder", byteorder)

    async def native() -> Platform:
        engine = await EmbeddedEngine.connect(cache_dir=tmp_path)
        try:
            return await engine.native_platform()
        finally:
            await engine.aclose()

    assert str(asyncio.run(native())) == expected


@pytest.mark.parametrize("machine", ["", "vax", "sparc64"])
def test_host_platform_unknown_machine(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    import platform as stdlib_platform

    monkeypatch.setattr(stdlib_platform, "machine", lambda: machine)
    with pytest.raises(InvalidPlatform, match="cannot map this machine's architecture"):
        host_platform()


def test_known_platforms_is_go_dist_list() -> None:
    linux = {arch for os, arch in KNOWN_PLATFORMS if os == "linux"}
    assert linux == {
        "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle",
        "ppc64", "ppc64le", "riscv64", "s390x",
    }  # fmt: skip
    for pair in [("aix", "ppc64"), ("js", "wasm"), ("wasip1", "wasm"), ("windows", "arm64")]:
        assert pair in KNOWN_PLATFORMS
    assert ("linux", "s390") not in KNOWN_PLATFORMS
    assert ("windows", "s390x") not in KNOWN_PLATFORMS
    assert isinstance(KNOWN_PLATFORMS, frozenset)
    assert len(KNOWN_PLATFORMS) == 49


# -- the full syntax: OS versions and features ------------------------------------------------

FULL_SYNTAX = [
    # (input, the platform it means, its canonical text)
    (
        "windows(10.0.17763)/amd64",  # containerd
        Platform("windows", "amd64", os_version="10.0.17763"),
        "windows(10.0.17763)/amd64",
    ),
    (
        "windows(10.0.20348.2340)/amd64",
        Platform("windows", "amd64", "", "10.0.20348.2340"),
        "windows(10.0.20348.2340)/amd64",
    ),
    (
        "Windows(10.0.17763+win32k)/x86_64",  # containerd, OS and arch normalised
        Platform("windows", "amd64", os_version="10.0.17763", os_features=("win32k",)),
        "windows(10.0.17763+win32k)/amd64",
    ),
    (  # features come out sorted and unique, as containerd's Normalize keeps them
        "windows(10.0.17763+zz+win32k+zz)/arm64",
        Platform("windows", "arm64", os_version="10.0.17763", os_features=("win32k", "zz")),
        "windows(10.0.17763+win32k+zz)/arm64",
    ),
    (
        "windows(+win32k)/amd64",  # features without a version
        Platform("windows", "amd64", os_features=("win32k",)),
        "windows(+win32k)/amd64",
    ),
    ("windows()/amd64", Platform("windows", "amd64"), "windows/amd64"),  # empty options
    (  # FormatAll's %-encoding of the syntax's own characters
        "windows(1%2B2%28x%29%2Fy%25+a%2Bb)/amd64",
        Platform("windows", "amd64", os_version="1+2(x)/y%", os_features=("a+b",)),
        "windows(1%2B2%28x%29%2Fy%25+a%2Bb)/amd64",
    ),
    ("linux(5.15)/arm64/v8", Platform("linux", "arm64", os_version="5.15"), "linux(5.15)/arm64"),
    ("linux/arm64/v8", Platform("linux", "arm64"), "linux/arm64"),
    ("linux/amd64/v3", Platform("linux", "amd64", "v3"), "linux/amd64/v3"),
]


@pytest.mark.parametrize(("text", "platform", "canonical"), FULL_SYNTAX)
def test_full_syntax_parses_formats_and_round_trips(
    text: str, platform: Platform, canonical: str
) -> None:
    assert Platform.parse(text) == platform
    assert str(platform) == canonical
    assert Platform.parse(canonical) == platform
    assert Platform.from_oci(platform.to_oci()) == platform


def test_os_version_and_features_keep_their_case() -> None:
    p = Platform.parse("Windows(10.0.17763-RC+Win32k)/AMD64")
    assert (p.os, p.architecture, p.os_version, p.os_features) == (
        "windows",
        "amd64",
        "10.0.17763-RC",
        ("Win32k",),
    )


def test_base_drops_os_version_and_features() -> None:
    p = Platform.parse("windows(10.0.20348+win32k)/amd64")
    assert p.base == Platform("windows", "amd64") and str(p.base) == "windows/amd64"
    assert Platform.parse("linux/arm/v6").base == Platform("linux", "arm", "v6")


def test_cross_env_names_platforms_as_buildkit_does() -> None:
    env = cross_env(Platform.parse("windows(10.0.20348)/amd64"), Platform.parse("linux/amd64"))
    assert env["TARGETPLATFORM"] == "windows/amd64" and env["BUILDPLATFORM"] == "linux/amd64"


def test_os_version_and_features_take_part_in_equality_hashing_and_sorting() -> None:
    ltsc2019 = Platform.parse("windows(10.0.17763)/amd64")
    ltsc2022 = Platform.parse("windows(10.0.20348)/amd64")
    plain = Platform("windows", "amd64")
    assert len({ltsc2019, ltsc2022, plain, Platform("windows", "amd64", "", "10.0.17763")}) == 3
    assert sorted([ltsc2022, ltsc2019, plain]) == [plain, ltsc2019, ltsc2022]
    assert Platform("windows", "amd64", os_features=["b", "a"]) == Platform(
        "windows", "amd64", os_features=("a", "b", "a")
    )
    # matches() stays normalised equality: an OS version is part of what is compared.
    assert not plain.matches(ltsc2019) and ltsc2019.matches("windows(10.0.17763)/amd64")


def test_os_features_must_not_be_a_string() -> None:
    with pytest.raises(TypeError, match="sequence of strings"):
        Platform("windows", "amd64", os_features="win32k")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        # An index entry of a Windows image (mcr.microsoft.com's shape).
        ({"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2340"},
         Platform("windows", "amd64", "", "10.0.20348.2340")),
        ({"architecture": "amd64", "os": "windows", "os.features": ["win32k"]},
         Platform("windows", "amd64", os_features=("win32k",))),
        # docker image inspect spells them OsVersion / OsFeatures.
        ({"Architecture": "amd64", "Os": "windows", "OsVersion": "10.0.17763.1",
          "OsFeatures": None}, Platform("windows", "amd64", "", "10.0.17763.1")),
        ({"architecture": "arm64", "os": "linux", "os.version": ""}, Platform("linux", "arm64")),
    ],
)  # fmt: skip
def test_from_oci_reads_os_version_and_features(obj: dict[str, object], expected: Platform) -> None:
    assert Platform.from_oci(obj) == expected


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({"architecture": "amd64", "os.version": 10}, "'os.version' is 10, not a string"),
        ({"architecture": "amd64", "os.features": "win32k"},
         "'os.features' is 'win32k', not a list"),
        ({"architecture": "amd64", "os.features": [1]}, "not a list of strings"),
    ],
)  # fmt: skip
def test_from_oci_refuses_malformed_os_options(obj: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidPlatform, match=problem):
        Platform.from_oci(obj)


def test_to_oci_writes_os_version_and_features() -> None:
    p = Platform.parse("windows(10.0.20348.2340+win32k)/amd64")
    assert p.to_oci() == {
        "os": "windows",
        "architecture": "amd64",
        "os.version": "10.0.20348.2340",
        "os.features": ["win32k"],
    }


# -- what runs on what: containerd's Only and OnlyStrict ---------------------------------------

# containerd's TestOnly, row for row: a host, what it runs, what it does not.
ONLY = [
    ("linux/amd64", ["linux/amd64", "linux/386"],
     ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"]),
    ("linux/amd64/v2", ["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
     ["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64"]),
    ("linux/386", ["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64"]),
    ("windows/amd64", ["windows/amd64", "windows(10.0.17763)/amd64"],
     ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"]),
    ("linux/arm/v8", ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
     ["linux/amd64", "linux/arm64", "windows/amd64", "windows/arm"]),
    ("linux/arm/v7", ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
     ["linux/amd64", "linux/arm/v8", "linux/arm64", "windows/amd64", "windows/arm"]),
    ("linux/arm/v6", ["linux/arm/v5", "linux/arm/v6"],
     ["linux/amd64", "linux/arm", "linux/arm/v7", "linux/arm/v8", "linux/arm64"]),
    ("linux/arm/v5", ["linux/arm/v5"],
     ["linux/amd64", "linux/arm", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64"]),
    ("linux/arm64/v9",
     ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
      "linux/arm64/v8", "linux/arm64/v8.1", "linux/arm64/v8.2", "linux/arm64/v8.3",
      "linux/arm64/v8.4", "linux/arm64/v8.5", "linux/arm64/v9", "linux/arm64/v9.0"],
     ["linux/amd64", "windows/amd64", "windows/arm", "linux/arm64/v8.6"]),
    ("linux/arm64/v8.1",
     ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
      "linux/arm64/v8", "linux/arm64/v8.1"],
     ["linux/amd64", "linux/arm64/v9", "linux/arm64/v8.2", "windows/amd64", "windows/arm"]),
    ("linux/arm64",
     ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", "linux/arm64",
      "linux/arm64/v8"],
     ["linux/amd64", "linux/arm64/v9", "linux/arm64/v8.1", "windows/amd64", "windows/arm"]),
    # Beyond containerd's table: v9.x reaches v8.(x+5), capped at v8.9.
    ("linux/arm64/v9.5", ["linux/arm64/v9.4", "linux/arm64/v8.9", "linux/arm64/v8"],
     ["linux/arm64/v9.6", "linux/s390x"]),
    ("linux/s390x", ["linux/s390x"], ["linux/ppc64le", "linux/amd64"]),
]  # fmt: skip

# containerd's TestOnlyStrict: the platform itself only (in any spelling).
ONLY_STRICT = [
    ("linux/amd64", ["linux/amd64", "x86_64"], ["linux/386", "linux/arm/v7", "windows/amd64"]),
    ("linux/386", ["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64"]),
    ("windows/amd64", ["windows/amd64", "windows(10.0.17763)/amd64"],
     ["linux/amd64", "windows/arm"]),
    ("windows(10.0.17763)/amd64", ["windows/amd64", "windows(10.0.17763)/amd64"],
     ["linux/amd64", "windows/arm", "windows(10.0.20348)/amd64"]),
    ("linux/arm/v8", ["linux/arm/v8"],
     ["linux/arm", "linux/arm/v5", "linux/arm/v7", "linux/arm64"]),
    ("linux/arm/v7", ["linux/arm", "linux/arm/v7"],
     ["linux/arm/v5", "linux/arm/v6", "linux/arm/v8"]),
    ("linux/arm64/v9", ["linux/arm64/v9", "linux/arm64/v9.0"],
     ["linux/arm/v8", "linux/arm64/v8", "linux/arm64/v8.1"]),
    ("linux/arm64/v8.1", ["linux/arm64/v8.1"], ["linux/arm64/v8", "linux/arm64/v9"]),
    ("linux/arm64", ["linux/arm64", "linux/arm64/v8"],
     ["linux/arm", "linux/arm/v8", "linux/arm64/v9"]),
]  # fmt: skip


@pytest.mark.parametrize(("host", "runs", "does_not"), ONLY)
def test_only(host: str, runs: list[str], does_not: list[str]) -> None:
    matcher = Matcher.only(Platform.parse(host))
    assert [p for p in runs if not matcher.match(Platform.parse(p))] == []
    assert [p for p in does_not if matcher.match(Platform.parse(p))] == []


@pytest.mark.parametrize(("platform", "runs", "does_not"), ONLY_STRICT)
def test_only_strict(platform: str, runs: list[str], does_not: list[str]) -> None:
    matcher = Matcher.only_strict(Platform.parse(platform))
    assert [p for p in runs if not matcher.match(Platform.parse(p))] == []
    assert [p for p in does_not if matcher.match(Platform.parse(p))] == []


@pytest.mark.parametrize(
    ("host", "best_first"),
    [
        ("linux/amd64", ["linux/amd64", "linux/386"]),
        ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
        ("linux/386", ["linux/386"]),
        ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm/v5", ["linux/arm/v5"]),
        ("linux/arm64", ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6",
                         "linux/arm/v5"]),
        ("linux/arm64/v8.2", ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64",
                              "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm64/v9.1", ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6",
                              "linux/arm64/v8.5", "linux/arm64/v8.4", "linux/arm64/v8.3",
                              "linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64",
                              "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/ppc64le", ["linux/ppc64le"]),
        ("windows(10.0.20348)/amd64", ["windows(10.0.20348)/amd64", "windows(10.0.20348)/386"]),
    ],
)  # fmt: skip
def test_compatible_lists_what_a_host_runs_best_first(host: str, best_first: list[str]) -> None:
    assert [str(p) for p in compatible(Platform.parse(host))] == best_first


@pytest.mark.parametrize("host", ["linux/arm64", "linux/arm64/v8.2", "linux/arm64/v9"])
def test_an_arm64_cpu_without_a_32_bit_mode_runs_no_arm_images(host: str) -> None:
    runs = compatible(Platform.parse(host), arm32=False)
    assert runs and all(p.architecture == "arm64" for p in runs)
    assert not Matcher.only(Platform.parse(host), arm32=False).match(Platform.parse("linux/arm/v7"))
    assert Matcher.only(Platform.parse(host)).match(Platform.parse("linux/arm/v7"))


def test_os_features_must_be_a_subset_of_the_hosts() -> None:
    host = Matcher.only(Platform.parse("windows(10.0.20348+win32k)/amd64"))
    assert host.match(Platform.parse("windows(10.0.20348+win32k)/amd64"))
    assert host.match(Platform.parse("windows(10.0.20348)/amd64"))
    assert not host.match(Platform.parse("windows(10.0.20348+win32k+other)/amd64"))
    assert not Matcher.only(Platform.parse("windows/amd64")).match(
        Platform.parse("windows(+win32k)/amd64")
    )


# containerd's Test_PlatformCompat: (host build, image build, runs). From Windows Server 2022
# (20348) on, a host runs images of builds 20348 up to its own; an older host its own only.
RS5, WS2022, WIN11_22H2, WS2025 = 17763, 20348, 22621, 26100
WINDOWS_COMPAT = [
    (RS5, RS5, True),
    (RS5, WS2022, False),
    (WS2022, RS5, False),
    (WS2022, WS2022, True),
    (WIN11_22H2, RS5, False),
    (WIN11_22H2, WS2022, True),
    (WS2022, WIN11_22H2, False),  # never a newer build than the host's
    (WS2025, WS2022, True),
]


@pytest.mark.parametrize(("host", "image", "runs"), WINDOWS_COMPAT)
def test_windows_hosts_run_the_builds_containerd_says(host: int, image: int, runs: bool) -> None:
    matcher = Matcher.only(Platform.parse(f"windows(10.0.{host})/amd64"))
    assert matcher.match(Platform("windows", "amd64", os_version=f"10.0.{image}.1")) is runs


@pytest.mark.parametrize(
    ("host_version", "image_version", "runs"),
    [
        ("10.0.17763", "10.0.17763.1234", True),  # the revision does not count
        ("10.0.17763.5", "10.0.17763.1234", True),
        ("10.0.17763", "", True),  # an image without a version runs anywhere
        ("", "10.0.17763.1", True),  # so does any image on a host of unknown version
        ("10", "10.0.17763.1", True),  # not major.minor.build: no version to match
        ("10.0.17763", "6.3.17763.1", False),  # another major.minor
        ("10.0.17763", "ltsc2019", False),  # a version that is not one
    ],
)
def test_windows_version_matching_edges(host_version: str, image_version: str, runs: bool) -> None:
    matcher = Matcher.only_strict(Platform("windows", "amd64", os_version=host_version))
    assert matcher.match(Platform("windows", "amd64", os_version=image_version)) is runs


def test_linux_os_versions_do_not_restrict_matching() -> None:
    # containerd applies a version matcher to Windows only.
    assert Matcher.only(Platform.parse("linux(5.15)/amd64")).match(
        Platform.parse("linux(6.1)/amd64")
    )


LINUX = Platform.parse("linux/amd64")
WS2022_IMAGE = Platform("windows", "amd64", os_version="10.0.20348.3091")
WS2025_IMAGE = Platform("windows", "amd64", os_version="10.0.26100.2894")
WS2025_REV3000 = Platform("windows", "amd64", os_version="10.0.26100.3000")


# containerd's Test_PlatformOrder: a Windows host picks the newest build it runs.
@pytest.mark.parametrize(
    ("host", "offered", "best"),
    [
        (WS2022_IMAGE, [LINUX, WS2022_IMAGE, WS2025_IMAGE], WS2022_IMAGE),
        (WS2025_IMAGE, [LINUX, WS2022_IMAGE, WS2025_IMAGE], WS2025_IMAGE),
        (WS2025_IMAGE, [LINUX, WS2022_IMAGE, WS2025_REV3000], WS2025_REV3000),
    ],
)
def test_windows_hosts_prefer_the_newest_build_they_run(
    host: Platform, offered: list[Platform], best: Platform
) -> None:
    assert Matcher.only(host).ranked(offered)[0] == best


def test_ranked_orders_by_the_hosts_preference_and_drops_what_does_not_run() -> None:
    offered = [
        Platform.parse(f"linux/{p}") for p in ["386", "amd64/v2", "arm64", "amd64", "amd64/v4"]
    ]
    ranked = Matcher.only(Platform.parse("linux/amd64/v3")).ranked(offered)
    assert [str(p) for p in ranked] == ["linux/amd64/v2", "linux/amd64", "linux/386"]


def test_ranked_prefers_more_os_features_then_keeps_index_order() -> None:
    host = Matcher.only(Platform.parse("windows(+win32k)/amd64"))
    first, second = Platform("windows", "amd64", "", "10.0.17763.1"), Platform("windows", "amd64")
    featured = Platform("windows", "amd64", os_features=("win32k",))
    assert host.ranked([first, featured, second]) == [featured, first, second]
    assert host.ranked([second, first]) == [second, first]  # no host version: index order


def test_less_is_containerds_preference() -> None:
    host = Matcher.only(Platform.parse("linux/arm/v7"))
    v7, v6, v5 = (Platform.parse(f"linux/arm/v{n}") for n in (7, 6, 5))
    s390x = Platform.parse("linux/s390x")
    assert host.less(v7, v6) and host.less(v6, v5) and host.less(v5, s390x)
    assert not host.less(v6, v7) and not host.less(v7, v7)
    assert not host.less(s390x, v5) and not host.less(s390x, s390x)
