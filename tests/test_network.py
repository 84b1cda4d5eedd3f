"""Networks, on both real engines: what ``docker run --network`` offers, and the files a
container needs to use its network (resolv.conf, hosts, hostname), which Docker plants in
every container and the embedded engine must give too (the test image carries none)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import mpcontainer_magics as mpc

HOST_INTERFACES = "\n".join(sorted(os.listdir("/sys/class/net"))) + "\n"


def cell(shell: Any, line: str, body: str) -> mpc.RunResult:
    shell.run_cell_magic("container", f"{line} --out res", body)
    return shell.user_ns["res"]


def interfaces(shell: Any, line: str = "") -> str:
    return cell(shell, line, "ls /sys/class/net | sort")[0].stdout


def test_docker_containers_get_the_network_asked_for(shell, engine_kind):
    if engine_kind != "docker":
        pytest.skip("the embedded engine always shares this machine's network")
    # This daemon runs with --bridge=none: by default a container has only loopback.
    assert interfaces(shell) == "lo\n"
    assert interfaces(shell, "--network host") == HOST_INTERFACES
    assert interfaces(shell, "--network none") == "lo\n"
    shell.run_line_magic("config", "ContainerMagics.network = 'host'")
    try:
        assert interfaces(shell) == HOST_INTERFACES
        assert interfaces(shell, "--network none") == "lo\n"  # a cell's own choice wins
        # A session keeps the network it started with.
        assert interfaces(shell, "--session net --platform linux/arm64") == HOST_INTERFACES
        assert interfaces(shell, "--session net") == HOST_INTERFACES
        with pytest.raises(UsageError, match=r"runs .* on network host; stop it first"):
            cell(shell, "--session net --network none", "true")
    finally:
        shell.run_line_magic("config", "ContainerMagics.network = ''")
        shell.run_line_magic("container", "stop --all")
    with pytest.raises(UsageError) as missing:
        cell(shell, "--network no-such-net", "true")
    message = str(missing.value)
    assert "has no network 'no-such-net'" in message and "docker network create" in message
    assert "\n" not in message


def test_the_embedded_engine_refuses_a_network_it_cannot_give(shell, engine_kind):
    if engine_kind != "embedded":
        pytest.skip("Docker gives every network")
    assert interfaces(shell, "--network host") == HOST_INTERFACES
    with pytest.raises(UsageError, match=r"shares this machine's network .* use the Docker engine"):
        cell(shell, "--network none", "true")
    with pytest.raises(mpc.InvalidArgument, match="bad network ''"):
        mpc.connect(network="")


def network_line(engine_kind: str) -> str:
    # What reaches a name server here: the embedded engine shares the machine's network; a
    # container of this Docker daemon needs the host's (it has no bridge).
    return "--network host" if engine_kind == "docker" else ""


def test_every_container_can_resolve_names_as_with_docker(shell, engine_kind):
    # The test image has no /etc/resolv.conf, /etc/hosts or /etc/hostname of its own.
    res = cell(
        shell,
        f"--platform linux/amd64,linux/arm64 {network_line(engine_kind)}",
        "cat /etc/resolv.conf; echo ---; hostname; cat /etc/hostname; echo ---; cat /etc/hosts;"
        " echo ---; nslookup deb.debian.org >/dev/null && echo resolved",
    )
    for row in res:
        resolv, names, hosts, looked_up = row.stdout.split("---\n")
        assert resolv == Path("/etc/resolv.conf").read_text()
        assert names == f"{socket.gethostname()}\n" * 2
        assert "127.0.0.1\tlocalhost" in hosts or "127.0.0.1 localhost" in hosts
        assert socket.gethostname() in hosts
        assert looked_up == "resolved\n", row.stderr


def test_network_files_are_never_part_of_an_image_made_from_a_container(engine_kind, test_image):
    async def main() -> list[str]:
        async with mpc.connect() as client:
            edited = (
                client.container(platform="linux/arm64")
                .from_(test_image)
                .with_exec(["sh", "-c", "echo '10.1.2.3 db' >> /etc/hosts && echo x > /etc/x"])
            )
            return await edited.directory("/etc").entries()

    # As with `docker commit`: the container's own file (/etc/x) is in, Docker's are not.
    entries = asyncio.run(main())
    assert "x" in entries
    assert not {"hosts", "hostname", "resolv.conf"} & set(entries)
