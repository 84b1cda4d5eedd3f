"""The files a container of the embedded engine needs to use the network it shares.

proot has no network namespace: a command reaches the network exactly as this machine does,
as a ``docker run --network host`` container would. Docker then bind-mounts its own
``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/hostname`` into the container, so images
need not carry usable ones (Docker's official images carry none). The embedded engine does
the same: each container gets private copies, bound over the image's paths, of

- this machine's resolver configuration (a missing or stale ``resolv.conf`` in the image
  would make every name lookup fail: ``apt-get update`` could not resolve its mirror);
- this machine's hosts file, plus ``localhost`` and this machine's name where it lacks them;
- this machine's name (proot shares it: ``hostname`` prints it too).

They are the container's to edit, as Docker's are, and never part of a commit.
"""

from __future__ import annotations

import socket
from pathlib import Path

#: Where each file goes in the container (relative to its rootfs).
NETWORK_FILES = ("etc/resolv.conf", "etc/hosts", "etc/hostname")

_LOCALHOST = ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback")


def hostname() -> str:
    return socket.gethostname()


def hosts_file(host_hosts: str, name: str) -> str:
    """``host_hosts`` (this machine's /etc/hosts) with the lines every container needs."""
    names = {word for line in host_hosts.splitlines() for word in line.split("#")[0].split()[1:]}
    lines = host_hosts.splitlines()
    if "localhost" not in names:
        lines += _LOCALHOST
    if name not in names:
        lines.append(f"127.0.1.1\t{name}")
    return "\n".join(lines) + "\n"


def write_network_files(directory: Path) -> list[tuple[str, str]]:
    """Write the files into ``directory``; the (host, guest) binds."""
    directory.mkdir(exist_ok=True)
    name = hostname()
    contents = {
        "etc/resolv.conf": _read("/etc/resolv.conf"),
        "etc/hosts": hosts_file(_read("/etc/hosts"), name),
        "etc/hostname": f"{name}\n",
    }
    binds = []
    for guest, text in contents.items():
        path = directory / guest.rpartition("/")[2]
        path.write_text(text)
        binds.append((str(path), f"/{guest}"))
    return binds


def _read(path: str) -> str:
    """A file of this machine's (through symlinks: systemd-resolved's stub), "" if none."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
