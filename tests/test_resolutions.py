"""Pulls that do without their registry: a cached resolution when it is down (both engines),
and mirrors (Docker's own ``registry-mirrors``, and ours for any registry) on Docker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import required_env
from IPython.core.error import UsageError
from node_fixtures import node_env, on_node
from tcp_proxy import TcpProxy

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.docker import DockerEngine
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import HUB, RegistryClient

WHEN = r"from \d{4}-\d\d-\d\d \d\d:\d\d UTC"


def cell(shell: Any, line: str, body: str) -> mpc.RunResult:
    shell.run_cell_magic("container", f"{line} --out res", body)
    return shell.user_ns["res"]


def new_client(shell: Any) -> None:
    """A new client, as after a kernel restart; the cache on disk stays."""
    shell.run_line_magic("unload_ext", "mpcontainer_magics")
    shell.run_line_magic("load_ext", "mpcontainer_magics")


def untag(docker_api: Any, prefix: str) -> None:
    """Drop the names Docker keeps for what was pulled under ``prefix`` (an address of a
    proxy or mirror); the images stay under their other names."""
    for image in docker_api.images(all=True):
        for name in image.get("RepoDigests") or []:
            if name.startswith(prefix):
                docker_api.remove_image(name)


@pytest.fixture
def proxied(test_image: str, docker_api: Any) -> Iterator[tuple[TcpProxy, str]]:
    """The test image under the address of a proxy to the test registry (close it, and
    the registry is unreachable)."""
    registry, _, name = test_image.partition("/")
    proxy = TcpProxy(registry)
    yield proxy, f"{proxy.address}/{name}"
    proxy.close()
    untag(docker_api, f"{proxy.address}/")


def test_with_the_registry_unreachable_a_cell_runs_from_the_cached_resolution(
    shell, engine_kind, proxied, capsys
):
    proxy, image = proxied
    first = cell(shell, f"--image {image} --platform linux/s390x", "uname -m")
    proxy.close()  # the registry is gone now, as on a train
    new_client(shell)
    capsys.readouterr()

    offline = cell(shell, f"--image {image} --platform linux/s390x", "uname -m")
    assert offline.stdout == first.stdout == {"linux/s390x": "s390x\n"}
    assert offline[0].image_digest == first[0].image_digest
    said = capsys.readouterr().err
    assert re.search(
        f"registry {proxy.address} is unreachable: using the cached resolution of "
        f"{re.escape(image)} \\(sha256:[0-9a-f]{{64}}, {WHEN}\\)",
        said,
    ), said
    assert offline.notes == [said.strip().splitlines()[-1]]

    # `%container pull` says so too.
    shell.run_line_magic("container", f"pull {image} --platform linux/s390x")
    out, err = capsys.readouterr()
    assert f"{image} for linux/s390x: {first[0].image_digest}" in out
    assert f"is unreachable: using the cached resolution of {image} (" in err

    # A platform never pulled here is in no cache: the registry's own error.
    with pytest.raises(UsageError, match=f"cannot reach registry {proxy.address}"):
        cell(shell, f"--image {image} --platform linux/ppc64le", "true")


def test_a_name_never_resolved_still_fails_with_the_registrys_error(shell, proxied):
    proxy, image = proxied
    proxy.close()
    with pytest.raises(UsageError, match=f"cannot reach registry {proxy.address}"):
        cell(shell, f"--image {image} --platform linux/amd64", "true")


# -- mirrors on Docker -------------------------------------------------------------------------


@pytest.fixture
def mirror(docker_api: Any) -> Iterator[str]:
    """The mirror registry (holding mpc/busybox:1.35 and library/busybox:1.35)."""
    address = required_env("MPC_TEST_MIRROR")
    untag(docker_api, f"{address}/")  # what a run cut short left: it would hide a pull
    yield address
    untag(docker_api, f"{address}/")


def test_docker_hub_names_resolve_through_the_daemons_own_mirrors(mirror, test_nodes):
    # The ctx node's dockerd has `registry-mirrors: ["http://<mirror>"]`; Docker Hub itself
    # is unreachable from here, so only the mirror can answer.
    socket = node_env("MPC_TEST_NODE_CTX_SOCKET")

    async def main() -> tuple[Any, ...]:
        engine = await DockerEngine.connect(f"unix://{socket}")
        try:
            image = await engine.pull("busybox:1.35", Platform.parse("linux/arm64"))
            lines: list[bytes] = []
            ran = await engine.run(image, ["uname", "-m"], on_output=lambda _, b: lines.append(b))
            hub_mirrors = engine.registry.daemon_mirrors[HUB]
            return image, ran.exit_code, b"".join(lines), engine.take_notes(), hub_mirrors
        finally:
            await engine.aclose()

    try:
        image, code, out, notes, hub_mirrors = asyncio.run(main())
    finally:
        listed = on_node(
            test_nodes["ctx"], "images", "--digests", "--format", "{{.Repository}}@{{.Digest}}"
        )
        for name in listed.split():
            if name.startswith(f"{mirror}/"):
                on_node(test_nodes["ctx"], "rmi", name)
    assert f"http://{mirror}" in hub_mirrors  # as dockerd has it: plain HTTP
    assert (code, out) == (0, b"aarch64\n")
    assert image.reference == "busybox:1.35"  # the user's name, not the mirror's
    assert notes == [f"busybox:1.35: resolved through mirror {mirror}"]


def test_a_mirror_serves_a_registry_that_does_not_answer(mirror, docker_api, no_leaks):
    # Nothing listens on 127.0.0.1:1: every byte comes from the mirror, and dockerd, which
    # knows no mirrors for other registries, pulls the pinned digest from the mirror itself.
    image = "127.0.0.1:1/mpc/busybox:1.35"

    async def main() -> mpc.RunResult:
        async with mpc.connect("docker") as client:
            client.engine.registry.registry_mirrors = {"127.0.0.1:1": (mirror,)}
            return await client.run("uname -m", image=image, platforms="linux/s390x")

    result = asyncio.run(main())
    assert result.stdout == {"linux/s390x": "s390x\n"}
    assert result.notes == [f"{image}: resolved through mirror {mirror}"]
    digest = result[0].image_digest
    assert docker_api.inspect_image(f"{mirror}/mpc/busybox@{digest}")["Architecture"] == "s390x"


def test_when_docker_cannot_pull_from_the_mirror_it_pulls_from_the_registry(
    mirror, registry_host, docker_api
):
    # The mirror (a proxy to the test registry) answers the resolution, then goes away
    # before Docker pulls: the pinned digest comes from the registry itself, unchanged.
    proxy = TcpProxy(registry_host)
    image = f"{mirror}/mpc/busybox:1.35"

    async def main() -> tuple[Any, list[str]]:
        registry = RegistryClient(registry_mirrors={mirror: [proxy.address]})
        engine = await DockerEngine.connect(registry=registry)
        try:
            await engine.image_platforms(image)  # resolved through the mirror
            proxy.close()
            return await engine.pull(image, Platform.parse("linux/arm64")), engine.take_notes()
        finally:
            await engine.aclose()

    try:
        pulled, notes = asyncio.run(main())
    finally:
        proxy.close()
        untag(docker_api, f"{proxy.address}/")
    assert notes == [f"{image}: resolved through mirror {proxy.address}"]
    assert pulled.reference == image
    held = docker_api.inspect_image(f"{mirror}/mpc/busybox@{pulled.digest}")
    assert (held["Id"], held["Architecture"]) == (pulled.image_id, "arm64")
