"""The extra nodes `.ci/nodes` sets up are real, separate daemons, reached each its own way.

What the node tests build on: each node answers through its way in (Docker context, TLS,
ssh, Podman's socket), none is the main dockerd, a container shows in the event log of the
node it ran on and no other, and a node can be stopped and started again.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import docker
import pytest
from node_fixtures import (
    NODE_NAMES,
    Node,
    answers,
    on_node,
    ran_on,
    start_node,
    stop_node,
)

DOCKERD_NODES = ("ctx", "tls", "ssh")


def daemon_id(argv: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*argv, "info", "--format", "{{.ID}}"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def main_id() -> str:
    return daemon_id(("docker", "-H", "unix:///var/run/docker.sock"))


@pytest.mark.parametrize("name", DOCKERD_NODES)
def test_each_dockerd_node_is_a_daemon_of_its_own(
    name: str, test_nodes: dict[str, Node], main_id: str
) -> None:
    node_id = daemon_id(test_nodes[name].docker)
    others = {daemon_id(test_nodes[n].docker) for n in DOCKERD_NODES if n != name}
    assert node_id and node_id != main_id
    assert node_id not in others


def test_podman_answers_the_docker_api(test_nodes: dict[str, Node]) -> None:
    api = docker.APIClient(base_url=test_nodes["podman"].endpoint)
    try:
        version = api.version()
    finally:
        api.close()
    assert "Podman Engine" in [c["Name"] for c in version["Components"]]
    assert tuple(map(int, version["ApiVersion"].split("."))) >= (1, 41)


def test_docker_py_reaches_the_tls_node_with_the_client_certificates(
    test_nodes: dict[str, Node], main_id: str
) -> None:
    node = test_nodes["tls"]
    assert node.tls_certs is not None
    tls = docker.tls.TLSConfig(
        client_cert=(str(node.tls_certs / "cert.pem"), str(node.tls_certs / "key.pem")),
        ca_cert=str(node.tls_certs / "ca.pem"),
        verify=True,
    )
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on these machines) override the
    # session's CA: our CA then fails verification. trust_env=False keeps ours; that must be
    # set before the first request, so the API version is given rather than asked.
    api = docker.APIClient(
        base_url=node.endpoint.replace("tcp://", "https://"), tls=tls, version="1.41"
    )
    api.trust_env = False
    try:
        assert api.info()["ID"] not in ("", main_id)
    finally:
        api.close()


def test_the_tls_node_refuses_a_client_without_a_certificate(test_nodes: dict[str, Node]) -> None:
    bare = ("docker", "-H", test_nodes["tls"].endpoint)
    done = subprocess.run([*bare, "version"], capture_output=True, text=True, check=False)
    assert done.returncode != 0


@pytest.fixture(scope="module")
def one_container_per_node(
    test_nodes: dict[str, Node], test_image: str
) -> Iterator[tuple[float, dict[str, str]]]:
    """A short container run on each node (each pulls the test image from the local
    registry itself): when they started and each one's name, by node."""
    since = time.time()
    names = {}
    for name, node in test_nodes.items():
        names[name] = f"mpc-node-probe-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        on_node(node, "run", "--rm", "--name", names[name], test_image, "true")
    yield since, names


@pytest.mark.parametrize("name", NODE_NAMES)
def test_a_container_shows_in_its_own_nodes_events_only(
    name: str, test_nodes: dict[str, Node], one_container_per_node: tuple[float, dict[str, str]]
) -> None:
    since, names = one_container_per_node
    seen = ran_on(test_nodes[name], since)
    assert names[name] in seen
    assert not seen & {names[other] for other in NODE_NAMES if other != name}


# One dockerd node (all three share one start command; ssh's way in is the longest) and
# Podman: a dockerd takes ~5 s to stop and start here.
@pytest.mark.parametrize("name", ["ssh", "podman"])
def test_a_stopped_node_answers_again_once_started(name: str, test_nodes: dict[str, Node]) -> None:
    node = test_nodes[name]
    stop_node(node)
    try:
        assert not node.pidfile.exists()
        assert not answers(node)
    finally:
        start_node(node)
    assert answers(node)
    assert int(node.pidfile.read_text()) > 0
