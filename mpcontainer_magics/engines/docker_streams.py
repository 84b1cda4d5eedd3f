"""Docker's multiplexed stream of a hijacked attach/exec socket, read without polling.

Each frame is an 8-byte header (stream: 1 stdout, 2 stderr; 3 zero bytes; a big-endian
32-bit size) and that many bytes. docker-py's ``frames_iter`` polls the socket before every
read; over TLS that hangs when the next frame is already decrypted and waiting in OpenSSL's
buffer (the socket itself then has nothing to read), which happens whenever two frames share
one TLS record: a session's shell on a ``tcp://`` node never answered. Reading with
``recv`` alone takes what OpenSSL holds first and blocks only when there is nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


def frames(sock: Any) -> Iterator[tuple[int, bytes]]:
    """(stream, data) of each frame until the stream ends (a cut frame ends it too)."""
    raw = getattr(sock, "_sock", sock)  # docker-py hands out a SocketIO for plain sockets
    while True:
        header = _exactly(raw, _HEADER.size)
        if header is None:
            return
        stream, size = _HEADER.unpack(header)
        data = _exactly(raw, size)
        if data is None:
            return
        yield stream, data


def _exactly(raw: Any, size: int) -> bytes | None:
    """``size`` bytes, or None when the stream ends first."""
    parts, missing = [], size
    while missing:
        chunk = raw.recv(min(missing, 1 << 16))
        if not chunk:
            return None
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)
