"""The one target resolver: what a request means and how each platform runs (fake engine)."""

from __future__ import annotations

import asyncio

import pytest
from test_runs import AMD64, ARM64, S390X, FakeEngine

from mpcontainer_magics.errors import ExecUnsupported, InvalidArgument
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.targets import Target, how_it_runs, parse_one, resolve

WINDOWS = Platform.parse("windows/amd64")
I386 = Platform.parse("linux/386")
IMAGE = FakeEngine({AMD64: ([], 0, 0), ARM64: ([], 0, 0), WINDOWS: ([], 0, 0)})


def runs(spec: object, cross: bool = False) -> list[tuple[str, str]]:
    targets = asyncio.run(resolve(IMAGE, "img", spec, cross=cross))  # type: ignore[arg-type]
    return [(str(t.platform), t.runs) for t in targets]


def test_a_request_means_platforms_and_how_each_runs() -> None:
    assert runs(None) == [("linux/amd64", "native")]
    assert runs("linux/arm64, aarch64,linux/s390x") == [
        ("linux/arm64", "emulated"),
        ("linux/s390x", "emulated"),
    ]
    assert runs([AMD64, "linux/arm64"]) == [("linux/amd64", "native"), ("linux/arm64", "emulated")]
    # "all": what the image offers that runs commands; windows/amd64 has files only.
    assert runs("all") == [("linux/amd64", "native"), ("linux/arm64", "emulated")]
    assert runs("linux/arm64,windows/amd64", cross=True) == [
        ("linux/arm64", "cross"),
        ("windows/amd64", "cross"),
    ]


def test_local_pins_need_no_nodes() -> None:
    # The engine is always the node "local", also when no node was ever added (Binder).
    assert runs("linux/arm64@local,linux/amd64") == runs("linux/arm64,linux/amd64")
    node = asyncio.run(resolve(IMAGE, "img", "linux/arm64", node="local"))  # type: ignore[arg-type]
    assert [(str(t.platform), t.runs) for t in node] == [("linux/arm64", "emulated")]
    with pytest.raises(InvalidArgument, match="no node named 'pi': the only node is local"):
        runs("linux/arm64@pi")


def test_platforms_that_cannot_run_say_so() -> None:
    with pytest.raises(ExecUnsupported, match="cannot run commands on windows/amd64"):
        runs("windows/amd64")
    only_windows = FakeEngine({WINDOWS: ([], 0, 0)})
    with pytest.raises(ExecUnsupported, match="windows/amd64"):
        asyncio.run(resolve(only_windows, "img", "all"))


def test_resolved_targets_pass_through_unchanged() -> None:
    targets = asyncio.run(resolve(IMAGE, "img", "linux/arm64"))
    assert asyncio.run(resolve(IMAGE, "other", targets)) == targets


def test_reports_say_how_and_why() -> None:
    emulated = [ARM64]
    assert how_it_runs("docker", AMD64, AMD64, emulated).runs == "native"
    assert how_it_runs("docker", ARM64, AMD64, emulated).runs == "emulated"
    assert how_it_runs("docker", S390X, AMD64, emulated) == Target(
        S390X, "no", "the docker engine has no emulator for it here"
    )
    assert how_it_runs("docker", WINDOWS, AMD64, emulated).why.endswith("files only")
    # Docker's amd64 kernel runs 386 containers itself; the embedded engine needs qemu-i386.
    assert how_it_runs("docker", I386, AMD64, []).runs == "native"
    assert how_it_runs("embedded", I386, AMD64, [I386]).runs == "emulated"


def test_one_platform_where_one_is_meant() -> None:
    assert parse_one(None) is None
    assert parse_one("windows/amd64") == WINDOWS
    for many in ("linux/amd64,linux/arm64", "all"):
        with pytest.raises(InvalidArgument, match="give one platform"):
            parse_one(many)
