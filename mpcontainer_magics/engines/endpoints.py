"""Nodes: named Docker-API endpoints, reached the ways Docker users already reach them.

    Node("pi", "ssh://me@pi.local")                    # the system ssh, the user's keys
    Node("z", "tcp://lnx1:2376", tls="~/.docker/z")    # ca.pem, cert.pem, key.pem
    Node("mac", "desktop-linux")                       # a context of `docker context ls`
    Node("pod", "unix:///run/user/1000/podman/podman.sock", platforms=["linux/arm64"])

An endpoint is a Docker context name, or a ``unix://``, ``tcp://`` or ``ssh://`` URL. Plain
``tcp://`` is refused unless it is loopback: the Docker API gives root on the node to
whoever can reach it, so a remote one needs TLS client certificates (``tls=``, laid out as
DOCKER_CERT_PATH is). An ``ssh://`` node keeps *one* ssh process for as long as it is open,
forwarding a local socket to the node's Docker socket; every API call is a channel of that
one connection (docker-py's own ssh transport starts an ssh process per call, ~0.3 s each).
We never store or print a password or key: ssh uses the user's agent, keys and ssh config.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import EngineUnavailable, InvalidArgument
from ..platforms import Platform, parse_platforms
from .base import owned_prefix, owner_is_gone, owner_of_name, processes_naming

if TYPE_CHECKING:
    from docker.api.client import APIClient

#: The name of the engine the client opened itself (Docker or embedded): always a node.
LOCAL = "local"
#: How long a node may take to answer before it counts as unreachable (seconds).
CONNECT_TIMEOUT_S = 3.0
#: docker-py's timeout for calls once connected (its own default).
CALL_TIMEOUT_S = 60
#: What a node's ssh runs to find the Docker socket its own CLI would use.
REMOTE_SOCKET_QUERY = ["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"]
DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
TUNNEL_PREFIX = "mpc-ssh-"
#: What an ssh tunnel's session runs on the node: nothing, for as long as the tunnel lives.
KEEP_OPEN = ["exec", "sleep", "2147483647"]
_TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
#: What a reset on the first call through the tunnel means. OpenSSH's sshd allows socket
#: forwarding only when AllowTcpForwarding allows local forwarding too.
FORWARD_DENIED = (
    "the node's sshd refused to forward its Docker socket: set AllowTcpForwarding local (or "
    "yes) and AllowStreamLocalForwarding yes in its sshd_config"
)


@dataclass(frozen=True)
class Node:
    """A named Docker-API endpoint; ``platforms`` it claims are routed to it first."""

    name: str
    endpoint: str
    platforms: tuple[Platform, ...] = ()
    tls: str | None = field(default=None, repr=False)  # a directory: never shown, as keys

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(
                f"bad node name {self.name!r}: use letters, digits, '-' or '_', e.g. pi or arm-box"
            )
        if not isinstance(self.endpoint, str) or not self.endpoint.strip():
            raise InvalidArgument(
                f"node {self.name} has no endpoint: give a Docker context name or a "
                "unix://, tcp:// or ssh:// URL"
            )
        claimed = self.platforms
        if isinstance(claimed, str) or not isinstance(claimed, tuple):
            claimed = tuple(parse_platforms(claimed)) if claimed else ()
        object.__setattr__(self, "platforms", claimed)
        if self.name == LOCAL:
            raise InvalidArgument(
                "the node name 'local' is the engine this client opened: pick another name"
            )
        kind = endpoint_kind(self.endpoint)
        if self.tls is not None and kind != "tcp":
            raise InvalidArgument(
                f"node {self.name}: tls= is for tcp:// endpoints, not {self.endpoint}"
            )

    @classmethod
    def of(cls, name: str, spec: str | Mapping[str, Any] | Node) -> Node:
        """A node from configuration: an endpoint string, or a mapping with ``endpoint``
        and optionally ``platforms`` and ``tls`` (what MPC_NODES and %config hold)."""
        if isinstance(spec, Node):
            return spec
        if isinstance(spec, str):
            return cls(name, spec)
        if isinstance(spec, Mapping) and isinstance(spec.get("endpoint"), str):
            unknown = set(spec) - {"endpoint", "platforms", "tls"}
            if unknown:
                raise InvalidArgument(
                    f"node {name}: unknown settings {sorted(unknown)}; use endpoint, "
                    "platforms and tls"
                )
            return cls(name, spec["endpoint"], spec.get("platforms") or (), spec.get("tls"))
        raise InvalidArgument(
            f"node {name}: expected an endpoint string or "
            '{"endpoint": "ssh://me@pi", "platforms": ["linux/arm64"]}, '
            f"not {type(spec).__name__}"
        )


def nodes_from(spec: Mapping[str, Any] | Iterable[Node] | str | None) -> list[Node]:
    """Nodes as ``connect(nodes=)``, ``%config ContainerMagics.nodes`` and ``MPC_NODES``
    give them: a mapping name → endpoint (or settings), a list of Nodes, or that mapping as
    JSON text."""
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            raise InvalidArgument(
                'MPC_NODES must be a JSON object, e.g. {"pi": "ssh://me@pi.local"}'
            )
    if isinstance(spec, Mapping):
        nodes = [Node.of(str(name), value) for name, value in spec.items()]
    else:
        nodes = [Node.of(getattr(n, "name", "?"), n) for n in spec]
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"node names must be unique; got {names}")
    return nodes


def endpoint_kind(endpoint: str) -> str:
    """ "unix", "tcp", "ssh" or "context" (a bare name)."""
    scheme = endpoint.partition("://")[0] if "://" in endpoint else ""
    if not scheme:
        if "/" in endpoint or ":" in endpoint:
            raise InvalidArgument(
                f"bad endpoint {endpoint!r}: give a Docker context name (see `docker context "
                "ls`) or a unix://, tcp:// or ssh:// URL"
            )
        return "context"
    if scheme not in ("unix", "tcp", "ssh"):
        raise InvalidArgument(
            f"bad endpoint {endpoint!r}: the scheme must be unix://, tcp:// or ssh://"
        )
    return scheme


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SshTunnel:
    """One ``ssh -N -L LOCAL.sock:REMOTE.sock`` per node: a local socket docker-py speaks
    to, every connection through it a channel of the same ssh connection."""

    def __init__(self, target: str, port: int | None, remote_socket: str) -> None:
        # Named after this process: a killed kernel's tunnels are found and ended.
        self._dir = Path(tempfile.mkdtemp(prefix=owned_prefix(TUNNEL_PREFIX)))
        self.socket = self._dir / "docker.sock"
        self._argv = [
            *ssh_argv(
                target,
                port,
                "-tt",  # see below
                "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindUnlink=yes",
                "-L", f"{self.socket}:{remote_socket}",
            ),
            # A session with a terminal, not `-N`: OpenSSH turns Nagle's algorithm off
            # (TCP_NODELAY) only for interactive sessions, and without that a warm session
            # cell waited ~40 ms for delayed ACKs. The command just keeps the session open.
            *KEEP_OPEN,
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def open(self, timeout: float) -> None:
        """Start ssh and wait for the forwarded socket (blocking: run it on a thread)."""
        self._process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the kernel must not kill the tunnel
        )
        deadline = time.monotonic() + timeout
        while not self.socket.exists():  # ssh makes it once logged in and forwarding
            if self._process.poll() is not None or time.monotonic() > deadline:
                why = self._stop_and_read()
                raise EngineUnavailable(f"ssh could not connect ({why or 'timed out'})")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(0.02)

    def _stop_and_read(self) -> str:
        assert self._process is not None
        if self._process.poll() is None:
            self._process.kill()
        _, err = self._process.communicate()
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def reap_tunnels() -> int:
    """End the ssh tunnels of processes of this machine that no longer exist (a killed
    kernel's: they run in sessions of their own, so nothing else ends them)."""
    reaped = 0
    for path in Path(tempfile.gettempdir()).glob(f"{TUNNEL_PREFIX}*-*-*"):
        if not path.is_dir() or not owner_is_gone(owner_of_name(path.name, TUNNEL_PREFIX)):
            continue
        for pid in processes_naming(os.fsencode(path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(path, ignore_errors=True)
        reaped += 1
    return reaped


def ssh_argv(target: str, port: int | None, *options: str) -> list[str]:
    """The system ssh, non-interactive: keys, agent and ssh config are the user's own; a
    remote command goes after what this returns."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(CONNECT_TIMEOUT_S)}"]
    # A node that vanishes (unplugged, network down) ends the tunnel in ~10 s, not at TCP's
    # own timeout minutes later: calls through it then fail instead of hanging.
    argv += ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]
    if port is not None:
        argv += ["-p", str(port)]
    return [*argv, *options, "--", target]


def remote_docker_socket(target: str, port: int | None, timeout: float) -> str:
    """The socket the node's own ``docker`` CLI uses (its current context), else the default."""
    try:
        done = subprocess.run(
            [*ssh_argv(target, port), *REMOTE_SOCKET_QUERY],
            capture_output=True,
            timeout=timeout + 2,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineUnavailable("ssh could not connect (timed out)") from None
    if done.returncode == 255:  # ssh's own failure, not the remote command's
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise EngineUnavailable(f"ssh could not connect ({lines[-1] if lines else 'exit 255'})")
    host = done.stdout.decode(errors="replace").strip()
    return host.removeprefix("unix://") if host.startswith("unix://") else DEFAULT_REMOTE_SOCKET


@dataclass
class Connection:
    """An open node: docker-py's client, and the ssh tunnel it goes through, if any."""

    api: APIClient
    tunnel: SshTunnel | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()
        if self.tunnel is not None:
            self.tunnel.close()


def open_connection(node: Node, timeout: float = CONNECT_TIMEOUT_S) -> Connection:
    """Reach ``node`` and check it answers within ``timeout`` (blocking: on a thread).

    Raises EngineUnavailable with the reason; never shows a key or a password.
    """
    import docker
    from docker.constants import MINIMUM_DOCKER_API_VERSION

    from .docker_errors import connection_problem  # imports docker-py: only when connecting

    kind = endpoint_kind(node.endpoint)
    tunnel = None
    tls: Any = None
    base_url = node.endpoint
    if kind == "context":
        base_url, tls = _context_endpoint(node.endpoint)
    elif kind == "tcp":
        host = urlsplit(node.endpoint).hostname or ""
        if node.tls is not None:
            tls = _tls_config(node)
        elif not is_loopback(host):
            raise InvalidArgument(
                f"node {node.name}: plain tcp:// to {host} would give anyone on the network "
                "root on it; give tls='DIR' (ca.pem, cert.pem, key.pem, as DOCKER_CERT_PATH) "
                "or use ssh://"
            )
    elif kind == "ssh":
        url = urlsplit(node.endpoint)
        if url.password:
            raise InvalidArgument(
                f"node {node.name}: no passwords in ssh:// URLs; use a key (ssh-copy-id)"
            )
        target = f"{url.username}@{url.hostname}" if url.username else str(url.hostname)
        remote = remote_docker_socket(target, url.port, timeout)
        tunnel = SshTunnel(target, url.port, remote)
        tunnel.open(timeout)
        base_url = f"unix://{tunnel.socket}"
    try:
        api = docker.APIClient(
            base_url=base_url, version=MINIMUM_DOCKER_API_VERSION, timeout=timeout, tls=tls
        )
        # requests lets REQUESTS_CA_BUNDLE (set by many distributions and CI images) win over
        # the session's own CA file (requests#3829): a node's TLS would then check its
        # certificate against the system's CAs. Nor should a proxy variable reach a node.
        api.trust_env = False
        api._version = api._retrieve_server_version()  # what version="auto" does
        api.ping()
        api.timeout = CALL_TIMEOUT_S
    except BaseException as exc:
        if tunnel is not None:
            tunnel.close()
        if isinstance(exc, docker.errors.DockerException | OSError):
            if tunnel is not None and "reset by peer" in str(exc):
                raise EngineUnavailable(FORWARD_DENIED) from None
            raise EngineUnavailable(connection_problem(exc)) from None
        raise
    return Connection(api, tunnel)


def _tls_config(node: Node) -> Any:
    import docker

    cert_dir = Path(os.path.expanduser(str(node.tls)))
    missing = [f for f in _TLS_FILES if not (cert_dir / f).is_file()]
    if missing:
        raise InvalidArgument(
            f"node {node.name}: the TLS directory lacks {', '.join(missing)}; it must hold "
            "ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does"
        )
    return docker.tls.TLSConfig(
        client_cert=(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem")),
        ca_cert=str(cert_dir / "ca.pem"),
        verify=True,
    )


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _context_endpoint(name: str) -> tuple[str, Any]:
    """The host and TLS settings of a Docker context, from the Docker CLI's context store.

    Read here, in the store's documented layout (``contexts/meta/<sha256 of the name>/
    meta.json``, TLS files under ``contexts/tls/<same>/docker/``): docker-py 7.2's
    ContextAPI finds no context at all when ``config.json`` does not exist, which is the
    case until the first ``docker login``.
    """
    import docker

    store = docker_config_dir() / "contexts"
    key = hashlib.sha256(name.encode()).hexdigest()
    try:
        meta = json.loads((store / "meta" / key / "meta.json").read_text())
        host = meta["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        metas = sorted(store.glob("meta/*/meta.json"))
        known = ", ".join(_context_name(m) for m in metas) or "none besides default"
        raise InvalidArgument(
            f"no Docker context named {name!r} (known: {known}); create it with "
            f"`docker context create {name} --docker host=…`, or give a URL"
        ) from None
    if not isinstance(host, str) or not host:
        raise InvalidArgument(f"the Docker context {name!r} has no host")
    if host.startswith("ssh://"):
        raise InvalidArgument(
            f"the Docker context {name!r} uses ssh: add the node with its URL, {host}"
        )
    tls_dir = store / "tls" / key / "docker"
    tls = None
    if (tls_dir / "ca.pem").is_file() or (tls_dir / "cert.pem").is_file():
        skip = bool(meta["Endpoints"]["docker"].get("SkipTLSVerify"))
        cert = (tls_dir / "cert.pem", tls_dir / "key.pem")
        tls = docker.tls.TLSConfig(
            client_cert=tuple(map(str, cert)) if cert[0].is_file() else None,
            ca_cert=str(tls_dir / "ca.pem") if (tls_dir / "ca.pem").is_file() else None,
            verify=not skip,
        )
    return host, tls


def _context_name(meta_file: Path) -> str:
    try:
        return str(json.loads(meta_file.read_text())["Name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"
