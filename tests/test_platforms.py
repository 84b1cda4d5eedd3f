"""Tests for mpcontainer_magics.platforms: containerd's normalisation rules, ported table by table.

Rows marked "containerd" come from containerd/platforms' platforms_test.go (TestParseSelector,
TestParseSelectorInvalid) with the OS defaulting to linux and the normalised canonical form
(plain arm carries v7, arm64/v8 drops the variant).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mpcontainer_magics.errors import InvalidPlatform, MPCError
from mpcontainer_magics.platforms import (
    KNOWN_PLATFORMS,
    Platform,
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
