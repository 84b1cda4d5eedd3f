"""Placement on a fleet and node endpoints, table-driven; no engine runs here (see
tests/test_nodes.py for the real nodes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.cpu_models import CpuModels
from mpcontainer_magics.engines.endpoints import Node, endpoint_kind, nodes_from
from mpcontainer_magics.engines.fleet import Fleet, Member
from mpcontainer_magics.platforms import Platform, parse_platforms
from mpcontainer_magics.targets import split_pins

AMD64, ARM64, S390X, PPC64LE, I386 = parse_platforms(
    "linux/amd64,linux/arm64,linux/s390x,linux/ppc64le,linux/386"
)


class NamedEngine:
    """Only what placement reads of an engine: its kind."""

    name = "docker"
    registry = None
    chosen = ""
    cpu_models = CpuModels()
    resolve_from = "registry"

    async def version(self) -> str:
        return "Docker (a stand-in)"


def fleet_of(*members: Member) -> Fleet:
    """A fleet whose members are already known (native, emulated, claimed)."""
    local = NamedEngine()
    fleet = Fleet(local)  # type: ignore[arg-type]
    fleet.members[0].native = AMD64
    fleet.members[0].emulated = (ARM64, S390X, PPC64LE)
    for member in members:
        member.engine = member.engine or NamedEngine()  # type: ignore[assignment]
        fleet._members[member.name] = member
    return fleet


def node(name: str, native: Platform, *, claimed: str = "", down: str = "") -> Member:
    member = Member(
        name, f"unix:///run/{name}.sock", tuple(parse_platforms(claimed or []) if claimed else ())
    )
    member.native = native
    member.error = down or None
    member.checked_at = time.monotonic()  # just checked: placing does not try it again
    return member


def place(fleet: Fleet, platforms: str, **pins: Any) -> list[tuple[str, str, str]]:
    request, pinned = split_pins(platforms)
    assert isinstance(request, list)
    placed = asyncio.run(fleet.place(request, pins=pinned, **pins))
    return [(str(p.platform), p.node, p.runs) for p in placed]


ROUTES = [
    # (nodes, request, expected [(platform, node, how)])
    (
        [],
        "linux/amd64,linux/arm64",
        [("linux/amd64", "local", "native"), ("linux/arm64", "local", "emulated")],
    ),
    # A native node beats emulation here.
    (
        [node("pi", ARM64)],
        "linux/arm64,linux/s390x",
        [("linux/arm64", "pi", "native"), ("linux/s390x", "local", "emulated")],
    ),
    # A claim beats everything, even the local native platform.
    ([node("z", AMD64, claimed="linux/amd64")], "linux/amd64", [("linux/amd64", "z", "native")]),
    # Equal candidates share the work: two amd64 nodes, two amd64-kernel platforms.
    (
        [node("x2", AMD64)],
        "linux/amd64,linux/386",
        [("linux/amd64", "local", "native"), ("linux/386", "x2", "native")],
    ),
    # An unreachable claimant is skipped: its platform falls back, saying why (see below).
    (
        [node("pi", ARM64, claimed="linux/arm64", down="connection refused")],
        "linux/arm64",
        [("linux/arm64", "local", "emulated")],
    ),
    # A pin wins, even over a claim elsewhere.
    (
        [node("pi", ARM64, claimed="linux/arm64"), node("x2", AMD64)],
        "linux/arm64@x2",
        [("linux/arm64", "", "no")],
    ),
    (
        [node("pi", ARM64, claimed="linux/arm64")],
        "linux/amd64@pi,linux/arm64@local",
        [("linux/amd64", "", "no"), ("linux/arm64", "local", "emulated")],
    ),
]


@pytest.mark.parametrize(("nodes", "request_", "expected"), ROUTES)
def test_each_platform_goes_where_it_runs_best(nodes, request_, expected):
    assert place(fleet_of(*nodes), request_) == expected


def test_a_skipped_node_and_a_platform_nothing_runs_say_why():
    fleet = fleet_of(node("pi", ARM64, claimed="linux/arm64", down="connection refused"))
    (arm,) = asyncio.run(fleet.place([ARM64]))
    assert arm.fallback == "node pi is unreachable (connection refused)"
    (riscv,) = asyncio.run(fleet.place(parse_platforms("linux/riscv64")))
    assert riscv.node == "" and "no node runs or emulates linux/riscv64" in riscv.why
    assert "%container node add" in riscv.why


def test_node_forces_every_platform_there():
    fleet = fleet_of(node("pi", ARM64))
    assert place(fleet, "linux/arm64,linux/amd64", node="local") == [
        ("linux/arm64", "local", "emulated"),
        ("linux/amd64", "local", "native"),
    ]


def test_an_unknown_node_is_an_error_naming_the_known_ones():
    with pytest.raises(mpc.InvalidArgument, match=r"no node named 'nope' \(nodes: local, pi\)"):
        place(fleet_of(node("pi", ARM64)), "linux/arm64@nope")


ENDPOINTS = [
    ("unix:///var/run/docker.sock", "unix"),
    ("tcp://127.0.0.1:2376", "tcp"),
    ("ssh://me@pi.local:2222", "ssh"),
    ("desktop-linux", "context"),
]


@pytest.mark.parametrize(("endpoint", "kind"), ENDPOINTS)
def test_endpoint_kinds(endpoint, kind):
    assert endpoint_kind(endpoint) == kind


BAD_NODES = [
    (("pi", "http://pi:2375"), "the scheme must be unix://, tcp:// or ssh://"),
    (("pi", "pi.local:22"), "give a Docker context name"),
    (("local", "unix:///x.sock"), "'local' is the engine this client opened"),
    (("bad name", "unix:///x.sock"), "bad node name"),
    (("pi", ""), "node pi has no endpoint"),
    (("pi", "unix:///x.sock", (), "/certs"), "tls= is for tcp:// endpoints"),
]


@pytest.mark.parametrize(("args", "message"), BAD_NODES)
def test_bad_nodes_are_one_line_errors(args, message):
    with pytest.raises(mpc.InvalidArgument, match=message):
        Node(*args)


def test_nodes_come_from_a_mapping_a_list_or_json():
    expected = [Node("pi", "ssh://me@pi", (ARM64,)), Node("z", "tcp://127.0.0.1:2376")]
    as_mapping = {
        "pi": {"endpoint": "ssh://me@pi", "platforms": ["linux/arm64"]},
        "z": "tcp://127.0.0.1:2376",
    }
    assert nodes_from(as_mapping) == expected
    assert nodes_from(expected) == expected
    json = '{"pi": {"endpoint": "ssh://me@pi", "platforms": ["linux/arm64"]}, "z": "tcp://127.0.0.1:2376"}'
    assert nodes_from(json) == expected
    with pytest.raises(mpc.InvalidArgument, match="MPC_NODES must be a JSON object"):
        nodes_from("pi=ssh://me@pi")
    with pytest.raises(mpc.InvalidArgument, match="unknown settings"):
        nodes_from({"pi": {"endpoint": "ssh://me@pi", "password": "x"}})


def test_a_nodes_tls_directory_stays_out_of_its_repr():
    assert "secret" not in repr(Node("z", "tcp://lnx1:2376", tls="/home/me/secret-certs"))


def test_pins_are_read_from_the_platform_list():
    request, pins = split_pins("linux/amd64, linux/arm64@pi")
    assert request == [AMD64, ARM64] and pins == {ARM64: "pi"}
    with pytest.raises(mpc.InvalidArgument, match="names no node after '@'"):
        split_pins("linux/arm64@")
