"""The fault-injecting proxy itself (tests/registry_faults.py), in front of the real test
registry: it forwards faithfully, each fault does what it says and no more, and it leaves
no thread or socket behind."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

import httpx
import pytest
from registry_faults import FaultProxy, refusing_address

from mpcontainer_magics.registry.mediatypes import ACCEPT

BLOBS = r"^GET /v2/mpc/busybox/blobs/"


@pytest.fixture(scope="module")
def layer(test_image: str) -> tuple[str, bytes]:
    """(digest, bytes) of one layer of the test image, read from the registry directly."""
    registry, _, name = test_image.partition("/")
    repo, _, tag = name.rpartition(":")
    with httpx.Client(base_url=f"http://{registry}/v2/{repo}/") as http:
        index = http.get(f"manifests/{tag}", headers={"Accept": ACCEPT}).json()
        manifest = http.get(
            f"manifests/{index['manifests'][0]['digest']}", headers={"Accept": ACCEPT}
        ).json()
        digest = manifest["layers"][0]["digest"]
        return digest, http.get(f"blobs/{digest}").content


@pytest.fixture
def http(fault_proxy: FaultProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{fault_proxy.address}/v2/mpc/busybox/") as client:
        yield client


def test_forwards_pulls_and_logs_them(fault_proxy, http, layer):
    digest, body = layer
    head = http.head(f"blobs/{digest}")
    got = http.get(f"blobs/{digest}")
    assert head.status_code == got.status_code == 200
    assert got.content == body and int(head.headers["Content-Length"]) == len(body)
    assert [(r.method, r.path, r.status, r.faults) for r in fault_proxy.log] == [
        ("HEAD", f"/v2/mpc/busybox/blobs/{digest}", 200, ()),
        ("GET", f"/v2/mpc/busybox/blobs/{digest}", 200, ()),
    ]


def test_forwards_uploads_and_keeps_them_going_through_itself(fault_proxy, http):
    blob = os.urandom(3000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    started = http.post("blobs/uploads/")
    assert started.status_code == 202
    # The registry names its own address; the proxy rewrote it to its own.
    assert started.headers["Location"].startswith(f"http://{fault_proxy.address}/")
    done = http.put(_with_digest(started, digest), content=blob)
    assert done.status_code == 201
    assert http.get(f"blobs/{digest}").content == blob
    assert [r.method for r in fault_proxy.log] == ["POST", "PUT", "GET"]


def test_answers_with_a_status_headers_and_body_a_number_of_times(fault_proxy, http, layer):
    digest, body = layer
    fault_proxy.hub_rate_limit(BLOBS, times=1)
    limited = http.get(f"blobs/{digest}")
    assert limited.status_code == 429
    assert limited.headers["ratelimit-remaining"] == "0;w=21600"
    assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert http.get(f"blobs/{digest}").content == body  # once only
    assert [(r.status, r.faults) for r in fault_proxy.log] == [(429, ("answer",)), (200, ())]


def test_a_cut_body_ends_after_n_bytes_of_the_promised_length(fault_proxy, http, layer):
    digest, body = layer
    fault_proxy.cut(BLOBS, after=1000)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", f"blobs/{digest}") as resp:
        assert int(resp.headers["Content-Length"]) == len(body)
        for piece in resp.iter_raw():
            received += piece
    assert bytes(received) == body[:1000]
    assert http.get(f"blobs/{digest}").content == body  # times=1 by default


def test_a_delayed_answer_is_the_upstreams(fault_proxy, http, layer):
    digest, body = layer
    fault_proxy.delay(BLOBS, 0.05, times=1)
    assert http.get(f"blobs/{digest}").content == body
    assert fault_proxy.log[-1].faults == ("delay",)


def test_a_corrupted_byte_and_an_ignored_range(fault_proxy, http, layer):
    digest, body = layer
    fault_proxy.corrupt(BLOBS, offset=5, times=1)
    bad = http.get(f"blobs/{digest}").content
    assert len(bad) == len(body) and bad[5] != body[5] and bad[:5] + bad[6:] == body[:5] + body[6:]

    ranged = http.get(f"blobs/{digest}", headers={"Range": "bytes=10-"})
    assert (ranged.status_code, ranged.content) == (206, body[10:])
    fault_proxy.ignore_range(BLOBS)
    ignored = http.get(f"blobs/{digest}", headers={"Range": "bytes=10-"})
    assert (ignored.status_code, ignored.content) == (200, body)
    assert [r.range for r in fault_proxy.log] == [None, "bytes=10-", "bytes=10-"]


@pytest.mark.parametrize("size", [500, 200_000])  # sent whole before the drop, or not
def test_a_dropped_upload_never_reaches_the_registry(fault_proxy, http, size):
    fault_proxy.drop(r"^PUT ", after=100)
    started = http.post("blobs/uploads/")
    blob = os.urandom(size)
    with pytest.raises(httpx.TransportError) as dropped:
        http.put(_with_digest(started, _sha(blob)), content=blob)
    assert not isinstance(dropped.value, httpx.TimeoutException)  # cut, not left hanging
    assert fault_proxy.log[-1].status is None
    assert http.head(f"blobs/{_sha(blob)}").status_code == 404


def test_a_refusing_address_refuses():
    with refusing_address() as address, pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{address}/v2/")


def test_no_thread_or_socket_outlives_the_proxy(layer):
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    with FaultProxy() as proxy:
        proxy.cut(BLOBS, after=10, times=None)
        with httpx.Client() as http:
            for _ in range(3):
                with pytest.raises(httpx.RemoteProtocolError):
                    http.get(f"http://{proxy.address}/v2/mpc/busybox/blobs/{layer[0]}")
            http.get(f"http://{proxy.address}/v2/")
        # A client that connects and goes away without a word.
        with httpx.Client() as idle, pytest.raises(httpx.TransportError):
            idle.get(f"http://{proxy.address}/v2/", timeout=httpx.Timeout(0.001, connect=5))
    assert set(threading.enumerate()) == threads
    assert set(os.listdir("/proc/self/fd")) == fds


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _with_digest(started: httpx.Response, digest: str) -> httpx.URL:
    """The upload session's URL plus ``?digest=`` (httpx's params= would drop its query)."""
    return httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
