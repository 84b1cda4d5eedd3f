"""Real registries that demand credentials, for the auth tests; loopback only.

Two kinds, both Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1:

- htpasswd Basic auth. Distribution accepts only bcrypt hashes in the htpasswd file, and
  the ``htpasswd`` CLI (apache2-utils) is not on our machines, so the ``bcrypt`` package
  (test extra) writes the file.
- Bearer tokens from a token server of our own (``TokenServer``): a stdlib HTTP server that
  checks Basic credentials and answers ``{"token": JWT}``. Distribution verifies the JWT's
  RS256 signature with the certificate in the JWT's ``x5c`` header, which must chain to its
  ``rootcertbundle``: here one self-signed certificate is both. The ``openssl`` CLI makes
  the key and certificate and signs, so no crypto package is needed.

The token server grants every scope it is asked for (it checks who, not what) and records
each request's scopes and the token it issued, which is what the tests inspect.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
import pytest

REGISTRY_BINARY = "docker-registry"
SERVICE = "mpc-test-registry"
ISSUER = "mpc-test-token-issuer"


def require_tool(name: str) -> str:
    """The tool's path; skip without it, but fail under CI, where set-up must provide it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: run the suite with `bash .ci/test`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a race with others is unlikely)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Account:
    """A user of a test registry; the password is random so a leak is unmistakable."""

    user: str = "mpc-tester"
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(18))

    @property
    def auth(self) -> str:
        """The ``auth`` value of a Docker config.json entry: base64 of user:password."""
        return b64(f"{self.user}:{self.password}")


def write_docker_config(directory: Path, registry: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"auths": {registry: {"auth": b64(f"{user}:{password}")}}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def htpasswd_file(path: Path, account: Account) -> Path:
    hashed = bcrypt.hashpw(account.password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"{account.user}:{hashed}\n")
    return path


def openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        [require_tool("openssl"), *args], input=data, capture_output=True, check=True, timeout=60
    ).stdout


class TokenServer:
    """A Docker-style token server on 127.0.0.1 issuing RS256 JWTs to one account."""

    def __init__(self, workdir: Path, account: Account) -> None:
        self.account = account
        self.key = workdir / "token-key.pem"
        self.cert = workdir / "token-cert.pem"
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={ISSUER}", "-keyout", str(self.key), "-out", str(self.cert),
        )  # fmt: skip
        self._x5c = base64.b64encode(openssl("x509", "-in", str(self.cert), "-outform", "DER"))
        # (scopes asked for, whether the credentials were right, token issued or "")
        self.requests: list[tuple[tuple[str, ...], bool, str]] = []
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def tokens(self) -> list[str]:
        with self._lock:
            return [token for _, _, token in self.requests if token]

    def scopes_asked(self) -> list[tuple[str, ...]]:
        with self._lock:
            return [scopes for scopes, ok, _ in self.requests if ok]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def issue(self, scopes: tuple[str, ...]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c.decode()]}
        claims = {
            "iss": ISSUER,
            "sub": self.account.user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = openssl("dgst", "-sha256", "-sign", str(self.key), data=signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self
        expected = f"Basic {self.account.auth}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = tuple(query.get("scope", []))
                ok = self.headers.get("Authorization") == expected and query.get("service") == [
                    SERVICE
                ]
                token = server.issue(scopes) if ok else ""
                with server._lock:
                    server.requests.append((scopes, ok, token))
                if ok:
                    self._reply(200, {"token": token, "expires_in": 300})
                else:
                    self._reply(401, {"details": "incorrect username or password"})

            def _reply(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output clean

        return Handler


@dataclass
class Registry:
    """A running docker-registry process on 127.0.0.1."""

    host: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_registry(workdir: Path, auth: dict) -> Registry:
    """Run ``docker-registry serve`` with ``auth`` and wait until /v2/ demands credentials."""
    binary = require_tool(REGISTRY_BINARY)
    host = f"127.0.0.1:{free_port()}"
    config = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": host, "secret": secrets.token_hex(16)},
        "auth": auth,
    }
    # JSON is YAML, which is what distribution reads.
    (workdir / "config.yml").write_text(json.dumps(config))
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    registry = Registry(host, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        if _v2_status(host) == 401:
            return registry
        time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"docker-registry did not answer on {host}: {log.read_text()[-2000:]}")


def _v2_status(host: str) -> int | None:
    name, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=2)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def htpasswd_auth(workdir: Path, account: Account) -> dict:
    return {
        "htpasswd": {"realm": "mpc-test", "path": str(htpasswd_file(workdir / "htpasswd", account))}
    }


def token_auth(server: TokenServer) -> dict:
    return {
        "token": {
            "realm": server.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(server.cert),
        }
    }
