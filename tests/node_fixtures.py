"""Extra Docker-API nodes on this machine, for the node tests; loopback only.

`.ci/nodes` (run by `.ci/setup`) brings them up and writes their endpoints to
/var/lib/mpcontainer-test/nodes.env, which env.sh sources:

- ``ctx``: a dockerd reached through the Docker context ``mpc-node-ctx``;
- ``tls``: a dockerd on tcp://127.0.0.1:5076 with --tlsverify (client certificates in a
  DOCKER_CERT_PATH-style directory);
- ``ssh``: a dockerd reached as ssh://mpcnode@127.0.0.1:2222 (our own sshd; root's
  ~/.ssh/config and known_hosts make it prompt-free);
- ``podman``: Podman's Docker-compatible API on a unix socket.

Each is a daemon of its own (own ID, containers, images and events). `stop_node` and
`start_node` stop and start one through `.ci/nodes stop|start NAME`, the very commands
set-up uses; `ran_on` reads a node's own event log to prove where a container ran.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from environment import required_env

NODE_NAMES = ("ctx", "tls", "ssh", "podman")
#: How long a node may take to answer again after `start_node` (dockerd needs ~1 s here).
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Node:
    """One node: how a user names it and how a test reaches it directly."""

    name: str  # ctx, tls, ssh or podman
    endpoint: str  # what a user gives: a context name, tcp://…, ssh://… or unix://…
    docker: tuple[str, ...]  # docker CLI argv prefix reaching this node, e.g. docker -H …
    pidfile: Path  # the node daemon's; `stop_node` stops that process
    engine: str  # "dockerd" or "podman"
    tls_certs: Path | None = None  # DOCKER_CERT_PATH layout: ca.pem, cert.pem, key.pem


def node_env(name: str) -> str:
    """A MPC_TEST_NODE_* variable (`.ci/nodes` writes them); see required_env."""
    return required_env(name)


def nodes_from_env() -> dict[str, Node]:
    """The four nodes, by name, from the MPC_TEST_NODE_* variables."""
    certs = Path(node_env("MPC_TEST_NODE_TLS_CERTS"))
    tls = node_env("MPC_TEST_NODE_TLS")
    tls_flags = (
        "--tlsverify",
        f"--tlscacert={certs / 'ca.pem'}",
        f"--tlscert={certs / 'cert.pem'}",
        f"--tlskey={certs / 'key.pem'}",
    )
    ssh, podman = node_env("MPC_TEST_NODE_SSH"), node_env("MPC_TEST_NODE_PODMAN")
    ctx = node_env("MPC_TEST_NODE_CTX")

    def pidfile(name: str) -> Path:
        return Path(node_env(f"MPC_TEST_NODE_{name.upper()}_PIDFILE"))

    return {
        "ctx": Node("ctx", ctx, ("docker", "--context", ctx), pidfile("ctx"), "dockerd"),
        "tls": Node(
            "tls", tls, ("docker", *tls_flags, "-H", tls), pidfile("tls"), "dockerd", certs
        ),
        "ssh": Node("ssh", ssh, ("docker", "-H", ssh), pidfile("ssh"), "dockerd"),
        "podman": Node("podman", podman, ("docker", "-H", podman), pidfile("podman"), "podman"),
    }


@pytest.fixture(scope="session")
def test_nodes() -> dict[str, Node]:
    """Every extra node by name (ctx, tls, ssh, podman); CI always has them all."""
    return nodes_from_env()


def on_node(node: Node, *args: str, timeout: float = 120) -> str:
    """Runs the docker CLI against ``node`` and gives its stdout (raises when it fails)."""
    done = subprocess.run(
        [*node.docker, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(node.docker)} {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def answers(node: Node) -> bool:
    """Whether the node's daemon answers now, through its own way in."""
    try:
        on_node(node, "version", "--format", "{{.Server.Version}}", timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def _nodes_script(action: str, node: Node) -> None:
    script = node_env("MPC_TEST_NODES_SCRIPT")
    subprocess.run(["bash", script, action, node.name], check=True, capture_output=True)


def stop_node(node: Node) -> None:
    """Stops the node's daemon (TERM by its pidfile, waited for). Its running containers
    stop with it: dockerd gives each its stop timeout (10 s for a shell that ignores TERM)."""
    _nodes_script("stop", node)


def start_node(node: Node) -> None:
    """Starts the node's daemon again with set-up's own command and waits until it answers."""
    _nodes_script("start", node)
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(node):
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node.name} did not answer {START_TIMEOUT:.0f} s after start")
        time.sleep(0.2)


def ran_on(node: Node, since: float) -> set[str]:
    """IDs and names of the containers started on ``node`` since ``since`` (a time.time()),
    read from the node's own event log."""
    # Podman 4.3 returns no events when --until is not in the future (it stops streaming
    # at --until): give it one second to read its event log.
    until = time.time() + (1.0 if node.engine == "podman" else 0.0)
    out = on_node(
        node,
        "events",
        f"--since={since:.9f}",
        f"--until={until:.9f}",
        "--filter=type=container",
        "--filter=event=start",
        "--format={{.Actor.ID}} {{.Actor.Attributes.name}}",
    )
    return {word for line in out.splitlines() for word in line.split()}
