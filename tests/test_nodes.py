"""Nodes on real engines: four extra daemons on this machine (a Docker context, TLS over tcp,
ssh, Podman) beside the main one. They are all x86_64, so each claims a foreign platform,
and every test checks on the node itself (its event log) where a container ran."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import alive, my_containers
from IPython.core.error import UsageError
from node_fixtures import Node, on_node, ran_on, start_node, stop_node

import mpcontainer_magics as mpc
from mpcontainer_magics._loop import LoopThread
from mpcontainer_magics.engines.base import LABEL_MANAGED, processes_naming
from mpcontainer_magics.engines.endpoints import TUNNEL_PREFIX, reap_tunnels

pytestmark = [pytest.mark.real]

T = TypeVar("T")

#: What each node claims: the cell's foreign platforms go there, not to QEMU here.
CLAIMS = {
    "ctx": "linux/arm64",
    "tls": "linux/s390x",
    "ssh": "linux/ppc64le",
    "podman": "linux/arm/v7",
}
FIVE = "linux/amd64,linux/arm64,linux/s390x,linux/ppc64le,linux/arm/v7"


def spec_of(node: Node) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpoint": node.endpoint, "platforms": [CLAIMS[node.name]]}
    if node.tls_certs is not None:
        spec["tls"] = str(node.tls_certs)
    return spec


class Nodes:
    """One client with every node, kept for the module (connecting probes each node)."""

    def __init__(self, nodes: dict[str, Node], image: str) -> None:
        self.nodes, self.image = nodes, image
        self._bridge = LoopThread("test-nodes")
        self.client = self.run(mpc.connect(nodes={n: spec_of(v) for n, v in nodes.items()}))

    def run(self, coro: Awaitable[T]) -> T:
        async def wait() -> T:
            return await coro

        return self._bridge.run(wait())

    def call(self, fn: Callable[[mpc.Client], Awaitable[T]]) -> T:
        return self.run(fn(self.client))

    def close(self) -> None:
        self.run(self.client.aclose())
        self._bridge.close()


def managed_on(node: Node) -> list[str]:
    """Containers of ours on the node, seen through its own way in."""
    return on_node(node, "ps", "-aq", "--filter", f"label={LABEL_MANAGED}=1").split()


@pytest.fixture(scope="module")
def fleet(test_nodes: dict[str, Node], test_image: str, docker_api: Any) -> Iterator[Nodes]:
    for node in test_nodes.values():
        assert managed_on(node) == [], f"node {node.name} holds containers before the tests"
    nodes = Nodes(test_nodes, test_image)
    try:
        yield nodes
    finally:
        nodes.close()
    for node in test_nodes.values():
        assert managed_on(node) == [], f"closing the client left containers on {node.name}"
    assert my_containers(docker_api) == []


def test_nodes_table_says_what_each_node_is(fleet: Nodes):
    frame = fleet.call(lambda c: c.nodes()).to_frame().set_index("node")
    assert list(frame.index) == ["local", "ctx", "tls", "ssh", "podman"]
    assert set(frame["state"]) == {"reachable"}
    assert frame.loc["podman", "engine"].startswith("Podman 4.")
    assert frame.loc["ctx", "engine"].startswith("Docker ")
    for name, claimed in CLAIMS.items():
        assert frame.loc[name, "claimed"] == claimed
        assert frame.loc[name, "native"] == "linux/amd64"
        # Learnt by running programs on that node, not from this machine's /proc.
        assert "linux/arm64" in frame.loc[name, "emulated"].split(", ")
        assert frame.loc[name, "latency_ms"] >= 0
    assert frame.loc["ssh", "endpoint"] == fleet.nodes["ssh"].endpoint


def test_each_claimed_platform_runs_on_its_node_as_the_node_records(fleet: Nodes):
    since = time.time()
    result = fleet.call(lambda c: c.run("uname -m", platforms=FIVE, image=fleet.image))
    frame = result.to_frame().set_index("platform")
    assert frame.loc["linux/amd64", "node"] == "local"
    for name, platform in CLAIMS.items():
        assert frame.loc[platform, "node"] == name
        assert frame.loc[platform, "exit_code"] == 0, frame.loc[platform, "error"]
    assert frame.loc["linux/arm/v7", "stdout"] == "armv7l\n"
    assert frame.loc["linux/s390x", "engine"] == "docker"
    for node in fleet.nodes.values():
        assert len(ran_on(node, since)) >= 1, f"nothing started on node {node.name}"


def test_a_pull_fetches_each_platform_where_it_would_run(fleet: Nodes):
    pulled = fleet.call(lambda c: c.pull(fleet.image, platforms="linux/amd64,linux/s390x"))
    assert [(str(p.platform), p.node) for p in pulled] == [
        ("linux/amd64", "local"),
        ("linux/s390x", "tls"),
    ]
    digest = pulled[1].digest
    assert digest and digest in on_node(fleet.nodes["tls"], "images", "--digests")


def test_a_pin_and_node_override_the_claims(fleet: Nodes):
    since = time.time()
    pinned = fleet.call(
        lambda c: c.run("uname -m", platforms="linux/arm64@tls,linux/s390x", image=fleet.image)
    )
    assert [(str(r.platform), r.node) for r in pinned] == [
        ("linux/arm64", "tls"),
        ("linux/s390x", "tls"),
    ]
    assert ran_on(fleet.nodes["ctx"], since) == set()
    everything = fleet.call(
        lambda c: c.run("uname -m", platforms=FIVE, image=fleet.image, node="podman")
    )
    assert {r.node for r in everything} == {"podman"}
    assert all(r.ok for r in everything), everything.to_frame()


def test_a_session_lives_on_several_nodes_and_keeps_its_state(fleet: Nodes, tmp_path: Path):
    platforms = "linux/amd64,linux/arm64,linux/s390x"

    async def session(c: mpc.Client) -> tuple[Any, Any]:
        await c.run(
            'cd /tmp && echo "made on $(uname -m)" > made.txt && export KEPT=yes',
            platforms=platforms,
            session="across",
            image=fleet.image,
        )
        after = await c.run('echo "$PWD $KEPT $(cat made.txt)"', session="across")
        return after, await c.sessions()

    after, table = fleet.call(session)
    assert [(str(r.platform), r.node, r.stdout) for r in after] == [
        ("linux/amd64", "local", "/tmp yes made on x86_64\n"),
        ("linux/arm64", "ctx", "/tmp yes made on aarch64\n"),
        ("linux/s390x", "tls", "/tmp yes made on s390x\n"),
    ]
    assert list(table["node"]) == ["local", "ctx", "tls"]
    fleet.call(lambda c: c.get_session("across").copy_out("/tmp/made.txt", tmp_path / "out"))
    assert (tmp_path / "out" / "linux-s390x").read_text() == "made on s390x\n"
    assert fleet.call(lambda c: c.stop("across")) == ["across"]


def test_a_directory_made_on_one_node_is_used_on_another(fleet: Nodes):
    async def build(c: mpc.Client) -> str:
        made = (
            c.container(platform="linux/arm64")  # ctx claims it
            .from_(fleet.image)
            .with_exec(["sh", "-c", "mkdir -p /out && uname -m > /out/machine"])
            .directory("/out")
        )
        used = (
            c.container(platform="linux/s390x")  # tls claims it
            .from_(fleet.image)
            .with_directory("/in", made)
            .with_exec(["sh", "-c", 'echo "$(cat /in/machine) read on $(uname -m)"'])
        )
        return await used.stdout()

    assert fleet.call(build) == "aarch64 read on s390x\n"


def test_publish_joins_variants_built_on_different_nodes(
    fleet: Nodes, registry_host: str, tmp_path: Path
):
    reference = f"{registry_host}/test/nodes-{secrets.token_hex(4)}:1"
    platforms = "linux/arm64,linux/s390x,linux/arm/v7"  # ctx, tls, podman

    async def publish(c: mpc.Client) -> mpc.RunResult:
        await c.run(
            "echo made on $(uname -m) > /made.txt",
            platforms=platforms,
            session="pub",
            image=fleet.image,
        )
        published = await c.publish(reference, c.get_session("pub"))
        await c.export(tmp_path / "layout", c.get_session("pub"))
        await c.stop("pub")
        return await c.run("cat /made.txt", platforms=platforms, image=published.reference)

    back = fleet.call(publish)
    index = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    offered = sorted(str(mpc.Platform.from_oci(m["platform"])) for m in index["manifests"])
    assert offered == ["linux/arm/v7", "linux/arm64", "linux/s390x"]
    # The same variants as an OCI layout: one index, the same platforms.
    (entry,) = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"]
    layout_index = (tmp_path / "layout" / "blobs" / "sha256" / entry["digest"][7:]).read_text()
    exported = [mpc.Platform.from_oci(m["platform"]) for m in json.loads(layout_index)["manifests"]]
    assert sorted(map(str, exported)) == offered
    assert [r.stdout for r in back] == [
        "made on aarch64\n",
        "made on s390x\n",
        "made on armv7l\n",
    ]


def test_a_platform_nothing_runs_is_a_row_that_says_what_would_run_it(fleet: Nodes):
    # No node here runs or emulates loong64 (their probes say so): that row says what
    # would make it run, and the other platform runs all the same.
    result = fleet.call(
        lambda c: c.run("uname -m", platforms="linux/amd64,linux/loong64", image=fleet.image)
    )
    amd64, loong64 = result
    assert amd64.ok and amd64.stdout == "x86_64\n"
    assert loong64.exit_code is None and "\n" not in (loong64.error or "")
    assert "no node runs or emulates linux/loong64" in loong64.error
    assert "%container node add" in loong64.error
    with pytest.raises(mpc.EngineUnavailable):
        result.check()


def test_what_a_node_is_reached_with_never_shows(fleet: Nodes, test_nodes: dict[str, Node]):
    certs = test_nodes["tls"].tls_certs
    assert certs is not None
    key = (certs / "key.pem").read_text().splitlines()[1]  # a line of the private key
    report = fleet.call(lambda c: c.nodes())
    shown = [repr(report), report.to_frame().to_string(), repr(fleet.client.fleet.members)]
    shown += [repr(mpc.Node("z", test_nodes["tls"].endpoint, tls=str(certs)))]
    for text in shown:
        assert key not in text and str(certs) not in text


def test_mounts_reach_a_node_on_another_machine_as_copies(fleet: Nodes, tmp_path: Path):
    # The ssh node is "another machine" (reached through a tunnel): its daemon cannot see
    # this machine's files, so the mount is copied in, and the host's file stays as it was.
    (tmp_path / "in.txt").write_text("from this machine\n")

    def run(c: mpc.Client) -> Awaitable[mpc.RunResult]:
        return c.run(
            "cat /data/in.txt; echo changed > /data/in.txt; cat /data/in.txt",
            platforms="linux/ppc64le",  # claimed by ssh
            image=fleet.image,
            mounts=[f"{tmp_path}:/data"],
        )

    result = fleet.call(run)
    assert (result[0].node, result[0].stdout) == ("ssh", "from this machine\nchanged\n")
    (note,) = result.notes  # said once: not again on the next run
    assert "node ssh is another machine and cannot see this one's files" in note
    assert fleet.call(run).notes == []
    assert (tmp_path / "in.txt").read_text() == "from this machine\n"


def test_doctor_per_node_and_unreachable_nodes_as_problems(fleet: Nodes):
    report = fleet.call(lambda c: c.doctor("podman"))
    assert report.version.startswith("Podman 4.") and str(report.native) == "linux/amd64"

    async def with_a_dead_node(c: mpc.Client) -> Any:
        await c.add_node("gone", "unix:///nonexistent/docker.sock")
        try:
            return await c.doctor()
        finally:
            await c.remove_node("gone")

    problems = [str(p) for p in fleet.call(with_a_dead_node).problems]
    assert any(
        "node gone is unreachable (connection refused" in p and "--refresh" in p for p in problems
    ), problems


def test_the_widgets_picker_says_where_each_platform_would_run(fleet: Nodes):
    async def the_fleets_client() -> mpc.Client:
        return fleet.client

    app = mpc.ui(fleet.image, bridge=fleet._bridge, connect=the_fleets_client)
    try:
        app.lookup().wait(60)
        boxes = {name: box.description for name, box in app.platform_boxes.items()}
    finally:
        app.close()
    assert boxes["linux/amd64"] == "linux/amd64 (native on local)"
    for node, platform in CLAIMS.items():
        assert boxes[platform] == f"{platform} (emulated on {node})"


def test_magics_add_list_pin_and_remove_nodes(
    shell, test_nodes: dict[str, Node], capsys, tmp_path: Path
):
    ctx = test_nodes["ctx"]
    shell.run_line_magic("container", f"node add arm {ctx.endpoint} --platform linux/arm64")
    frame = shell.run_line_magic("container", "nodes")
    assert list(frame["node"]) == ["local", "arm"] and frame["state"][1] == "reachable"
    since = time.time()
    shell.run_cell_magic("container", "--platform linux/amd64,linux/arm64 --out res", "uname -m")
    res = shell.user_ns["res"]
    assert [(str(r.platform), r.node) for r in res] == [
        ("linux/amd64", "local"),
        ("linux/arm64", "arm"),
    ]
    assert ran_on(ctx, since)
    shell.run_cell_magic("container", "--platform linux/arm64@local --out res", "uname -m")
    assert shell.user_ns["res"][0].node == "local"
    shell.run_cell_magic("container", "--platform linux/amd64 --node arm --out res", "uname -m")
    assert shell.user_ns["res"][0].node == "arm"
    with pytest.raises(UsageError, match=r"no node named 'nope' \(nodes: local, arm\)"):
        shell.run_cell_magic("container", "--platform linux/arm64@nope", "true")
    # A session member on the node, and %container cp from it to this machine.
    shell.run_cell_magic("container", "--session m --platform linux/arm64", "uname -m > /tmp/m")
    shell.run_line_magic("container", f"cp m:/tmp/m {tmp_path / 'copied'}")
    assert (tmp_path / "copied").read_text() == "aarch64\n"
    capsys.readouterr()
    shell.run_line_magic("container", "node rm arm")  # stops the session living there
    assert "removed node arm" in capsys.readouterr().out
    assert shell.run_line_magic("container", "sessions") is None  # "no sessions"
    assert managed_on(ctx) == []
    assert list(shell.run_line_magic("container", "nodes")["node"]) == ["local"]


def test_config_nodes_and_mpc_nodes_configure_a_whole_hub(shell, test_nodes, monkeypatch):
    tls = test_nodes["tls"]
    monkeypatch.setenv("MPC_NODES", json.dumps({"z": spec_of(tls)}))
    assert list(shell.run_line_magic("container", "nodes")["node"]) == ["local", "z"]
    ctx = test_nodes["ctx"].endpoint
    shell.run_line_magic("config", f"ContainerMagics.nodes = {{'c': {ctx!r}}}")
    try:  # the profile's setting wins over the environment's, and follows %config
        assert list(shell.run_line_magic("container", "nodes")["node"]) == ["local", "c"]
    finally:
        shell.run_line_magic("config", "ContainerMagics.nodes = {}")
    assert list(shell.run_line_magic("container", "nodes")["node"]) == ["local", "z"]


# -- faults -----------------------------------------------------------------------------


def connected(nodes: dict[str, Any], **options: Any) -> Any:
    return mpc.connect(nodes=nodes, **options)


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_node_down_before_a_cell_hands_its_platform_on_and_says_so(
    test_nodes: dict[str, Node], test_image: str, attempt: int
):
    ctx = test_nodes["ctx"]

    async def main() -> tuple[list[Any], Any, Any, str]:
        async with connected({"ctx": spec_of(ctx)}) as c:
            stop_node(ctx)
            try:
                seen: list[Any] = []
                fell_back = await c.run(
                    "uname -m", platforms="linux/arm64", image=test_image, on_targets=seen.extend
                )
            finally:
                start_node(ctx)
            table = (await c.nodes(refresh=True)).to_frame().set_index("node")
            again = await c.run("uname -m", platforms="linux/arm64", image=test_image)
            return seen, fell_back, again, table.loc["ctx", "state"]

    seen, fell_back, again, state = asyncio.run(asyncio.wait_for(main(), 180))
    assert "node ctx is unreachable (" in seen[0].fallback
    assert (fell_back[0].node, fell_back[0].emulated, fell_back[0].stdout) == (
        "local", True, "aarch64\n",
    )  # fmt: skip
    assert state == "reachable" and again[0].node == "ctx" and again[0].ok
    assert managed_on(ctx) == []


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_node_dying_mid_cell_fails_its_row_only_and_is_cleaned_when_back(
    test_nodes: dict[str, Node], test_image: str, docker_api: Any, attempt: int
):
    ctx = test_nodes["ctx"]

    async def main() -> tuple[Any, list[str]]:
        async with connected({"ctx": spec_of(ctx)}) as c:
            cell = asyncio.ensure_future(
                c.run("sleep 4; echo done", platforms="linux/amd64,linux/arm64", image=test_image)
            )
            await asyncio.sleep(1.5)  # both run now
            await asyncio.to_thread(stop_node, ctx)
            result = await asyncio.wait_for(cell, 60)
            await asyncio.to_thread(start_node, ctx)
            await c.nodes(refresh=True)  # back: what the cell left there is removed
            return result, managed_on(ctx)

    result, left = asyncio.run(asyncio.wait_for(main(), 180))
    amd64, arm64 = result
    assert amd64.ok and amd64.stdout == "done\n" and amd64.node == "local"
    assert arm64.node == "ctx" and arm64.exit_code is None
    assert arm64.error and "\n" not in arm64.error
    assert left == [] and managed_on(ctx) == []
    assert my_containers(docker_api) == []


class Silent:
    """A TCP port that accepts connections and never says a word (a blocked ssh port)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_an_ssh_node_that_never_answers_is_unreachable_within_the_timeout(
    test_image: str, attempt: int
):
    silent = Silent()

    async def main() -> tuple[float, Any, Any]:
        async with mpc.connect(node_timeout=2) as c:
            started = time.monotonic()
            report = await c.add_node(
                "blocked", f"ssh://mpcnode@127.0.0.1:{silent.port}", platforms="linux/arm64"
            )
            took = time.monotonic() - started
            result = await c.run("uname -m", platforms="linux/arm64", image=test_image)
            return took, report.to_frame().iloc[0], result

    try:
        took, row, result = asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        silent.close()
    assert row["state"].startswith("unreachable: ") and "\n" not in row["state"]
    assert took < 30, took  # bounded: a hang would be stopped by the wait_for above
    assert result[0].node == "local" and result[0].ok


@contextlib.contextmanager
def a_kernel_that_dies(*steps: str) -> Iterator[subprocess.Popen[str]]:
    """A process that awaits ``steps`` (lines of an async main), says it is ready, and is
    killed when the block ends, as a kernel dies: with no clean-up of its own."""
    main = "".join(f"    {step}\n" for step in steps)
    script = (
        "import asyncio, mpcontainer_magics as mpc\nasync def main():\n"
        f"{main}    print('ready', flush=True)\n    await asyncio.sleep(600)\nasyncio.run(main())\n"
    )
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout is not None and kernel.stdout.readline() == "ready\n"
        yield kernel
    finally:
        kernel.kill()
        kernel.wait()


def test_what_a_killed_kernel_left_on_a_node_is_reaped_when_a_client_connects(
    test_nodes: dict[str, Node], test_image: str
):
    ctx = test_nodes["ctx"]
    nodes = json.dumps({"ctx": spec_of(ctx)})
    with a_kernel_that_dies(
        f"c = await mpc.connect(nodes={nodes})",
        f"await c.session('left', platforms='linux/arm64', image={test_image!r})",
    ):
        assert len(managed_on(ctx)) == 1  # its session's container, on the node

    async def connect_again() -> None:
        async with mpc.connect(nodes={"ctx": spec_of(ctx)}):
            pass

    asyncio.run(asyncio.wait_for(connect_again(), 60))
    assert managed_on(ctx) == []


def test_a_killed_kernels_ssh_tunnel_is_ended_by_the_next_load(test_nodes: dict[str, Node]):
    ssh = test_nodes["ssh"]
    with a_kernel_that_dies(f"await mpc.connect(nodes={{'ssh': {ssh.endpoint!r}}})") as kernel:
        pass
    tunnels = processes_naming(f"{TUNNEL_PREFIX}{kernel.pid}-".encode())
    assert tunnels, "the kernel's ssh tunnel should outlive it (a session of its own)"
    assert reap_tunnels() >= 1
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in tunnels) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in tunnels)
