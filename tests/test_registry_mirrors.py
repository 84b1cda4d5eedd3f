"""How mirrors are configured and tried, and how a rate limit reads, over httpx.MockTransport.

The same behaviours against the real registry, a real mirror registry and a fault-injecting
proxy, on both engines, are in test_pull_resilience.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from mpcontainer_magics.errors import InvalidArgument, RateLimited
from mpcontainer_magics.registry import RegistryClient
from mpcontainer_magics.registry.mediatypes import OCI_INDEX, OCI_MANIFEST
from mpcontainer_magics.registry.reference import HUB

INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": "sha256:" + "ab" * 32,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64"},
            }
        ],
    }
).encode()
INDEX_DIGEST = "sha256:" + hashlib.sha256(INDEX).hexdigest()


def serve_index(request: httpx.Request) -> httpx.Response:
    headers = {"Content-Type": OCI_INDEX, "Docker-Content-Digest": INDEX_DIGEST}
    return httpx.Response(200, content=b"" if request.method == "HEAD" else INDEX, headers=headers)


def resolve_with(handler, ref: str, tmp_path: Path, **settings: object):
    async def go():
        transport = httpx.MockTransport(handler)
        async with RegistryClient(
            docker_config=tmp_path, cache_dir=tmp_path / "cache", transport=transport, **settings
        ) as client:
            return await client.resolve(ref)

    return asyncio.run(go())


def test_mirror_settings_read_as_docker_writes_them(tmp_path, monkeypatch):
    monkeypatch.delenv("MPC_REGISTRY_MIRRORS", raising=False)
    client = RegistryClient(
        docker_config=tmp_path,
        registry_mirrors={
            "docker.io": ["https://mirror.example/", "http://10.0.0.5:5000"],
            "ghcr.io": "ghcr-cache.example:443",
        },
    )
    assert client.registry_mirrors == {
        HUB: ("mirror.example", "http://10.0.0.5:5000"),  # as given: plain HTTP
        "ghcr.io": ("ghcr-cache.example:443",),
    }


def test_a_mirror_written_with_http_is_reached_over_plain_http(tmp_path):
    schemes: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        schemes[request.url.host] = request.url.scheme
        if request.url.host != "reg.example":
            raise httpx.ConnectError("Connection refused")
        return serve_index(request)

    mirrors = {"reg.example": ["http://plain.example:5000", "tls.example"]}
    resolve_with(handler, "reg.example/o/r:1", tmp_path, registry_mirrors=mirrors)
    assert schemes == {"plain.example": "http", "tls.example": "https", "reg.example": "https"}


@pytest.mark.parametrize(
    ("mirrors", "complaint"),
    [
        ({"docker.io": ["not a host"]}, "a mirror of docker.io, 'not a host', is not a registry"),
        ({"docker.io": [5000]}, "is not a registry host"),
        ({"": ["m.example"]}, "a registry named in registry_mirrors"),
    ],
)
def test_a_bad_mirror_setting_is_one_line_saying_how_to_write_it(tmp_path, mirrors, complaint):
    with pytest.raises(InvalidArgument, match=complaint) as caught:
        RegistryClient(docker_config=tmp_path, registry_mirrors=mirrors)
    assert "\n" not in str(caught.value) and "mirror.example:5000" in str(caught.value)


def test_mirrors_for_a_whole_hub_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MPC_REGISTRY_MIRRORS", '{"docker.io": ["hub-mirror.example:5000"]}')
    assert RegistryClient(docker_config=tmp_path).registry_mirrors == {
        HUB: ("hub-mirror.example:5000",)
    }
    monkeypatch.setenv("MPC_REGISTRY_MIRRORS", "docker.io=hub-mirror.example")
    with pytest.raises(InvalidArgument, match="MPC_REGISTRY_MIRRORS must be JSON"):
        RegistryClient(docker_config=tmp_path)


def test_mirrors_are_asked_in_order_then_the_registry(tmp_path):
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url.host}")
        if request.url.host == "down.example":
            raise httpx.ConnectError("Connection refused")
        if request.url.host == "empty.example":
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        return serve_index(request)

    mirrors = {"reg.example": ["down.example", "empty.example"]}
    resolved = resolve_with(handler, "reg.example/o/r:1", tmp_path, registry_mirrors=mirrors)
    assert resolved.mirror is None and resolved.digest == INDEX_DIGEST
    assert asked == [
        "HEAD down.example",
        "HEAD empty.example",
        "HEAD reg.example",
        "GET reg.example",
    ]

    asked.clear()
    mirrors = {"reg.example": ["good.example"]}
    resolved = resolve_with(handler, "reg.example/o/r:1", tmp_path, registry_mirrors=mirrors)
    assert resolved.mirror == "good.example"
    assert str(resolved.reference) == "reg.example/o/r:1"  # the name as written
    assert asked == ["HEAD good.example"]  # the manifest is in the cache since the first


def test_a_mirror_serving_other_bytes_is_passed_over(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "evil.example":
            altered = INDEX.replace(b"arm64", b"amd64")
            return httpx.Response(
                200,
                content=b"" if request.method == "HEAD" else altered,
                headers={"Content-Type": OCI_INDEX, "Docker-Content-Digest": INDEX_DIGEST},
            )
        return serve_index(request)

    mirrors = {"reg.example": ["evil.example"]}
    resolved = resolve_with(handler, "reg.example/o/r:1", tmp_path, registry_mirrors=mirrors)
    assert resolved.mirror is None
    assert [str(p) for p in resolved.platforms()] == ["linux/arm64"]


def limited(**headers: str) -> httpx.Response:
    body = {"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your limit"}]}
    return httpx.Response(429, json=body, headers=headers)


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Retry-After": "3600"}, r"resets in 60 min \(at \d\d:\d\d:\d\d UTC\)"),
        ({"Retry-After": "an HTTP date 2 h 5 min from now"}, r"resets in 2 h"),
        ({"RateLimit-Reset": "90"}, r"resets in 90 s"),
        (
            {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"},
            r"did not say when it resets \(its window is 6 h\)",
        ),
    ],
)
def test_a_rate_limit_says_when_it_resets_and_the_ways_out(tmp_path, headers, says):
    if headers.get("Retry-After", "").startswith("an HTTP date"):  # now, not at collection
        headers = {"Retry-After": email.utils.formatdate(time.time() + 7500, usegmt=True)}
    with pytest.raises(RateLimited, match=says) as caught:
        resolve_with(lambda request: limited(**headers), "alpine:3.16", tmp_path)
    message = str(caught.value)
    assert message.startswith("registry docker.io limited our requests (HTTP 429: You have")
    assert "`docker login`" in message and "registry_mirrors" in message
    assert "MPC_REGISTRY_MIRRORS" in message and "\n" not in message
    assert caught.value.registry == "docker.io"


def test_a_limit_resetting_within_seconds_is_waited_for_once(tmp_path):
    answers = [limited(**{"Retry-After": "0"}), limited(**{"Retry-After": "0"})]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else serve_index(request)

    with pytest.raises(RateLimited, match="resets in 0 s"):
        resolve_with(handler, "reg.example/o/r:1", tmp_path)  # limited twice: given up
    answers[:] = [limited(**{"Retry-After": "0"})]
    assert resolve_with(handler, "reg.example/o/r:1", tmp_path).digest == INDEX_DIGEST
