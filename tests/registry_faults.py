"""A fault-injecting HTTP proxy of the tests' own, in front of a real registry; loopback only.

``FaultProxy`` listens on 127.0.0.1 and forwards every request (any method, headers and
streamed bodies) to an upstream registry (by default the test registry, MPC_TEST_REGISTRY),
rewriting absolute ``Location`` headers that point at the upstream to point at itself, so
upload sessions keep going through it. Faults are set from Python, each matched by a regex
searched in ``"METHOD /path?query"`` and used at most ``times`` times (None: forever)::

    with FaultProxy() as proxy:
        proxy.answer(r"^GET /v2/.+/blobs/", 503, times=2)      # 503 for a while
        proxy.cut(r"^GET /v2/.+/blobs/", after=1000)           # body cut after 1000 bytes
        image = f"{proxy.address}/mpc/busybox:1.35"
        ...
        assert [r.status for r in proxy.requests(r"^GET /v2/.+/blobs/")] == [503, 503, 200, ...]

An answering fault (``answer``, ``drop``) replaces the upstream's answer; the others
(``cut``, ``corrupt``, ``delay``, ``ignore_range``) change a forwarded one and combine.
``log`` keeps every request: method, path, Range header, the status sent and which faults
acted on it.

``refusing_address()`` gives a 127.0.0.1 port that refuses connections: "a registry that
does not answer". The fixtures at the end are imported by conftest.py.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest
from environment import required_env

#: Docker Hub's answer once an address used up its anonymous pulls (read from Docker's docs).
HUB_RATE_LIMIT_HEADERS = {
    "ratelimit-limit": "100;w=21600",
    "ratelimit-remaining": "0;w=21600",
    "docker-ratelimit-source": "127.0.0.1",
}
HUB_RATE_LIMIT_BODY = (
    b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. '
    b"You may increase the limit by authenticating and upgrading: "
    b'https://www.docker.com/increase-rate-limit"}]}'
)
#: Headers that describe one hop, not the message: never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}
_CHUNK = 64 << 10
_ANSWERING = ("answer", "drop")  # faults that replace the upstream's answer


@dataclass
class Fault:
    """One fault: what it does, to which requests, and how many more times."""

    kind: str  # "answer", "drop", "cut", "corrupt", "delay" or "ignore_range"
    pattern: re.Pattern[str]
    times: int | None  # None: forever
    status: int = 0  # answer
    headers: dict[str, str] = field(default_factory=dict)  # answer
    body: bytes = b""  # answer
    offset: int = 0  # cut: bytes sent before the cut; corrupt: the byte changed; drop: read
    wait: float = 0.0  # delay: seconds
    used: int = 0

    def take(self, target: str) -> bool:
        """Whether this fault acts on ``target`` ("METHOD /path?query"); counts it if so."""
        used_up = self.times is not None and self.used >= self.times
        if used_up or not self.pattern.search(target):
            return False
        self.used += 1
        return True


@dataclass(frozen=True)
class Logged:
    """One request the proxy saw, and what it sent back."""

    method: str
    path: str  # without the query
    range: str | None  # the request's Range header
    status: int | None  # None when the connection was dropped without an answer
    faults: tuple[str, ...] = ()  # kinds of the faults that acted on it

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


class FaultProxy:
    """The proxy; a context manager (``with FaultProxy() as proxy``), or call ``close()``."""

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream or os.environ.get("MPC_TEST_REGISTRY", "127.0.0.1:5055")
        self.log: list[Logged] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        host, port = self._server.server_address[:2]
        self.address = f"{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- faults --------------------------------------------------------------------------------

    def answer(
        self,
        pattern: str,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        times: int | None = None,
    ) -> Fault:
        """Answer matching requests with ``status``, ``headers`` and ``body`` instead."""
        return self._add(Fault("answer", re.compile(pattern), times, status, headers or {}, body))

    def rate_limit(self, pattern: str, retry_after: float, *, times: int | None = None) -> Fault:
        """Answer 429 with ``Retry-After`` (seconds), as a registry that limits us does."""
        headers = {"Retry-After": f"{retry_after:g}"}
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests"}]}'
        return self.answer(pattern, 429, headers, body, times=times)

    def hub_rate_limit(self, pattern: str, *, times: int | None = None) -> Fault:
        """Answer as Docker Hub does at its pull limit: 429, ``ratelimit-*``, TOOMANYREQUESTS."""
        return self.answer(pattern, 429, HUB_RATE_LIMIT_HEADERS, HUB_RATE_LIMIT_BODY, times=times)

    def drop(self, pattern: str, *, after: int = 0, times: int | None = 1) -> Fault:
        """Read ``after`` bytes of the request's body, then close the connection unanswered
        (an upload cut mid-way: the upstream never sees the request)."""
        return self._add(Fault("drop", re.compile(pattern), times, offset=after))

    def cut(self, pattern: str, *, after: int, times: int | None = 1) -> Fault:
        """Send ``after`` bytes of the response body, then close the connection (the headers
        still promise the full length)."""
        return self._add(Fault("cut", re.compile(pattern), times, offset=after))

    def corrupt(self, pattern: str, *, offset: int = 0, times: int | None = None) -> Fault:
        """Change the response body's byte at ``offset`` (of what is sent)."""
        return self._add(Fault("corrupt", re.compile(pattern), times, offset=offset))

    def delay(self, pattern: str, seconds: float, *, times: int | None = None) -> Fault:
        """Hold matching requests ``seconds`` before forwarding them: a slow registry, which
        keeps downloads in flight long enough for concurrent clients to overlap."""
        return self._add(Fault("delay", re.compile(pattern), times, wait=seconds))

    def ignore_range(self, pattern: str, *, times: int | None = None) -> Fault:
        """Forward matching requests without their Range header: the answer is a 200 with the
        whole body, as from a server that does not support ranges."""
        return self._add(Fault("ignore_range", re.compile(pattern), times))

    def clear(self) -> None:
        """Remove every fault (the log stays)."""
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def _faults_for(self, target: str) -> tuple[Fault | None, list[Fault]]:
        """The answering fault for ``target`` (if any), else the faults changing the answer."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in _ANSWERING and fault.take(target):
                    return fault, []
            return None, [f for f in self._faults if f.kind not in _ANSWERING and f.take(target)]

    # -- the log -------------------------------------------------------------------------------

    def requests(self, pattern: str = "") -> list[Logged]:
        """Logged requests whose "METHOD /path" matches ``pattern`` (re.search), in order."""
        with self._lock:
            return [r for r in self.log if re.search(pattern, r.target)]

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)

    # -- life ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving and wait for every connection's thread; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()  # joins the handler threads (block_on_close)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.address} -> {self.upstream})"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False  # server_close joins them: no thread outlives the proxy
    block_on_close = True
    proxy: FaultProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that connects and sends nothing cannot hold close() forever
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the proxy's own log is the record; stderr stays quiet

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if self.raw_requestline and self.parse_request():
            with contextlib.suppress(ConnectionError, TimeoutError):
                self._proxy()
        # One request per connection (parse_request would keep HTTP/1.1 ones alive): a
        # dropped or cut one must end here, and no idle connection outlives the proxy.
        self.close_connection = True

    def _proxy(self) -> None:
        proxy = self.server.proxy
        path = self.path.partition("?")[0]
        target = f"{self.command} {self.path}"
        answering, changes = proxy._faults_for(target)
        kinds = tuple(f.kind for f in ([answering] if answering else changes))

        def record(status: int | None) -> None:
            proxy._record(Logged(self.command, path, self.headers.get("Range"), status, kinds))

        if answering is not None and answering.kind == "drop":
            self._read_body(limit=answering.offset)
            record(None)
            _reset(self.connection)
            return
        if answering is not None:
            self._read_body()
            record(answering.status)
            self._answer(answering)
            return
        time.sleep(sum(f.wait for f in changes))
        ignore_range = any(f.kind == "ignore_range" for f in changes)
        upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            self._forward_request(upstream, ignore_range)
            resp = upstream.getresponse()
            record(resp.status)
            self._forward_response(resp, changes)
        finally:
            upstream.close()

    def _forward_request(self, upstream: http.client.HTTPConnection, ignore_range: bool) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        for name, value in self.headers.items():
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or (ignore_range and lowered in ("range", "if-range")):
                continue
            upstream.putheader(name, self._upstream_host() if lowered == "host" else value)
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        if chunked:
            for piece in self._chunked_body():
                upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            upstream.send(b"0\r\n\r\n")
        else:
            for piece in self._body_pieces(int(self.headers.get("Content-Length") or 0)):
                upstream.send(piece)

    def _upstream_host(self) -> str:
        return self.server.proxy.upstream

    def _forward_response(self, resp: http.client.HTTPResponse, changes: list[Fault]) -> None:
        proxy = self.server.proxy
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue
            if name.lower() == "location":
                value = value.replace(f"//{proxy.upstream}/", f"//{proxy.address}/", 1)
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = next((f.offset for f in changes if f.kind == "cut"), None)
        corrupt = [f.offset for f in changes if f.kind == "corrupt"]
        sent = 0
        while piece := resp.read(_CHUNK):
            for offset in corrupt:
                if sent <= offset < sent + len(piece):
                    i = offset - sent
                    piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1 :]
            if cut is not None and sent + len(piece) >= cut:
                self.wfile.write(piece[: cut - sent])
                # A clean end after exactly ``cut`` bytes (a reset could drop unsent ones).
                self.connection.shutdown(socket.SHUT_WR)
                return
            self.wfile.write(piece)
            sent += len(piece)

    def _answer(self, fault: Fault) -> None:
        self.send_response_only(fault.status)
        headers = {k.lower(): v for k, v in fault.headers.items()}
        if fault.body and "content-type" not in headers:
            self.send_header("Content-Type", "application/json")
        for name, value in fault.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(fault.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(fault.body)

    # -- request bodies ------------------------------------------------------------------------

    def _read_body(self, limit: int | None = None) -> None:
        """Read (and discard) the request's body, or its first ``limit`` bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces: Iterable[bytes] = self._chunked_body()
        else:
            pieces = self._body_pieces(int(self.headers.get("Content-Length") or 0))
        got = 0
        for piece in pieces:
            got += len(piece)
            if limit is not None and got >= limit:
                return

    def _body_pieces(self, length: int) -> Iterator[bytes]:
        while length > 0:
            piece = self.rfile.read(min(length, _CHUNK))
            if not piece:
                raise ConnectionError("the client closed the connection mid-body")
            length -= len(piece)
            yield piece

    def _chunked_body(self) -> Iterator[bytes]:
        rfile: BinaryIO = self.rfile  # type: ignore[assignment]
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._body_pieces(size)
            rfile.readline()  # the CRLF after each chunk


def _reset(sock: socket.socket) -> None:
    """End ``sock`` with a TCP reset (a connection cut, not a clean end): no linger, so its
    closing, as soon as the handler's file objects let go of it, sends RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """A 127.0.0.1 host:port that refuses connections, for as long as the block runs: the
    port is bound (so nothing else takes it) but never listened on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        yield f"{host}:{port}"
    finally:
        sock.close()


# -- fixtures (conftest.py imports them) ---------------------------------------------------------


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxy]:
    """A fresh FaultProxy in front of the test registry, with no faults yet."""
    with FaultProxy(required_env("MPC_TEST_REGISTRY")) as proxy:
        yield proxy


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    """host:port of "a registry" on 127.0.0.1 that refuses every connection."""
    with refusing_address() as address:
        yield address


@pytest.fixture(scope="session")
def mirror_host() -> str:
    """The mirror registry (.ci/setup): the test image as mpc/busybox:1.35 and as
    library/busybox:1.35, digests preserved."""
    return required_env("MPC_TEST_MIRROR")
