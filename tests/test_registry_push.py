"""The push side of the registry client: blobs, manifests, an index, mounts, refusals.

The real tests push to fresh repositories of the local registry (MPC_TEST_REGISTRY, e.g.
127.0.0.1:5055, no auth) and read the result back with skopeo, an independent client. The
unit tests over httpx.MockTransport cover what that registry never does: relative upload
locations, a Location on another host, registries listed as insecure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mpcontainer_magics.errors import DigestMismatch, ImageNotFound, RegistryError
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import Reference, RegistryClient
from mpcontainer_magics.registry.mediatypes import OCI_INDEX, OCI_MANIFEST

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(coro_fn: Callable[[RegistryClient], Any], **kw: Any) -> Any:
    """Run ``coro_fn(client)`` with a client that never reads the user's Docker config."""

    async def go(config_dir: str) -> Any:
        async with RegistryClient(**{"docker_config": config_dir, **kw}) as client:
            return await coro_fn(client)

    with tempfile.TemporaryDirectory() as empty:  # no config.json: no credentials
        return asyncio.run(go(empty))


def image_docs(layer: bytes, arch: str) -> tuple[bytes, bytes]:
    """(config, manifest) bytes of a one-layer image for linux/``arch``."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha(layer), "size": len(layer)}],
        },
        indent=1,  # not what json.dumps would re-serialise to by default: bytes must survive
    ).encode()
    return config, manifest


# --- against the real local registry --------------------------------------------------------


@pytest.fixture
def repo(registry_host: str) -> Callable[[str], Reference]:
    """Fresh repositories of the local registry, so no test sees another's blobs."""
    base = f"{registry_host}/mpc-push-test/{uuid.uuid4().hex[:12]}"
    return lambda name="x": Reference.parse(f"{base}-{name}:v1")


def skopeo_raw(ref: str) -> bytes:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed; it is the independent check")
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


@pytest.mark.real
def test_push_image_and_index_read_back_by_skopeo(repo, tmp_path):
    ref = repo()
    layer_file = tmp_path / "layer"
    layer_file.write_bytes(os.urandom(3 << 20))  # > one read chunk: streamed in pieces
    layer = layer_file.read_bytes()
    config, manifest = image_docs(layer, "arm64")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "arm64"},
                }
            ],
        },
        separators=(",", ":"),
    ).encode()

    async def push(client: RegistryClient) -> tuple[str, str, bytes]:
        assert await client.push_blob(ref, sha(layer), layer_file) is True
        assert await client.push_blob(ref, sha(config), config) is True
        # "repo:v1@digest" is pushed by digest: the tag is not touched until the index goes.
        manifest_digest = await client.push_manifest(
            ref.with_digest(sha(manifest)), manifest, OCI_MANIFEST
        )
        with pytest.raises(ImageNotFound):
            await client.get_manifest(ref)
        index_digest = await client.push_manifest(ref, index, OCI_INDEX)
        return manifest_digest, index_digest, await client.get_blob(ref, sha(layer))

    manifest_digest, index_digest, layer_back = run(push)
    assert manifest_digest == sha(manifest) and index_digest == sha(index)
    assert layer_back == layer
    assert skopeo_raw(str(ref)) == index
    assert skopeo_raw(f"{ref.registry}/{ref.repository}@{manifest_digest}") == manifest
    resolved = run(lambda c: c.resolve(ref))
    assert resolved.digest == index_digest
    assert resolved.manifest_digest(Platform.parse("linux/arm64")) == manifest_digest


@pytest.mark.real
def test_pushing_a_blob_twice_uploads_it_once(repo):
    ref = repo()
    blob = os.urandom(1000)

    async def twice(client: RegistryClient) -> tuple[bool, bool, dict[str, int]]:
        first = await client.push_blob(ref, sha(blob), blob)
        second = await client.push_blob(ref, sha(blob), blob)
        return first, second, dict(client.requests)

    first, second, requests = run(twice)
    assert (first, second) == (True, False)
    assert requests == {"HEAD blob": 2, "POST upload": 1, "PUT upload": 1}


@pytest.mark.real
def test_cross_repository_mount(repo):
    a, b = repo("a"), repo("b")
    blob = os.urandom(1000)
    run(lambda c: c.push_blob(a, sha(blob), blob))

    async def mount(client: RegistryClient) -> tuple[bool, dict[str, int], bytes]:
        uploaded = await client.push_blob(b, sha(blob), blob, mount_from=a)
        requests = dict(client.requests)
        return uploaded, requests, await client.get_blob(b, sha(blob))

    uploaded, requests, back = run(mount)
    assert uploaded is False
    assert requests == {"HEAD blob": 1, "POST mount": 1}
    assert back == blob


@pytest.mark.real
def test_mount_of_a_blob_the_other_repository_lacks_uploads_it(repo):
    a, b = repo("a"), repo("b")
    blob = os.urandom(1000)

    async def mount(client: RegistryClient) -> tuple[bool, dict[str, int], bool]:
        uploaded = await client.push_blob(b, sha(blob), blob, mount_from=a)
        requests = dict(client.requests)
        return uploaded, requests, await client.blob_exists(b, sha(blob))

    # The registry answers 202 (an upload started) instead of 201: it goes on from there.
    uploaded, requests, exists = run(mount)
    assert uploaded is True and exists
    assert requests == {"HEAD blob": 1, "POST mount": 1, "PUT upload": 1}


@pytest.mark.real
def test_mount_blob_alone(repo):
    a, b, c = repo("a"), repo("b"), repo("c")
    blob = os.urandom(1000)
    run(lambda client: client.push_blob(a, sha(blob), blob))

    async def mount(client: RegistryClient) -> tuple[bool, bool, dict[str, int], bool]:
        into_b = await client.mount_blob(b, sha(blob), a)
        # c lacks it: the upload the registry starts instead is cancelled, nothing is left.
        from_c = await client.mount_blob(a, sha(os.urandom(8)), c)
        return into_b, from_c, dict(client.requests), await client.blob_exists(b, sha(blob))

    into_b, from_c, requests, in_b = run(mount)
    assert (into_b, from_c, in_b) == (True, False, True)
    assert requests == {"POST mount": 2, "DELETE upload": 1}
    other_registry = Reference.parse(f"localhost:1/{a.repository}:v1")
    assert run(lambda client: client.mount_blob(b, sha(blob), other_registry)) is False


@pytest.mark.real
@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_source_not_matching_its_digest_is_never_pushed(repo, tmp_path, as_file):
    ref = repo()
    claimed, actual = os.urandom(500), os.urandom(500)
    path = tmp_path / "blob"
    path.write_bytes(actual)

    async def push(client: RegistryClient) -> None:
        try:
            await client.push_blob(ref, sha(claimed), path if as_file else actual)
        finally:
            assert client.requests == {"HEAD blob": 1}  # no upload even started

    with pytest.raises(DigestMismatch) as info:
        run(push)
    message = str(info.value)
    assert f"does not hash to {sha(claimed)}; refusing to push it" in message
    assert "\n" not in message

    async def check(client: RegistryClient) -> list[bool]:
        return [await client.blob_exists(ref, d) for d in (sha(claimed), sha(actual))]

    assert run(check) == [False, False]


class FileChangingTransport(httpx.AsyncHTTPTransport):
    """Overwrites the tail of ``path`` as the PUT starts: after it was hashed, before it is read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            with open(self.path, "r+b") as f:
                f.seek(-10, os.SEEK_END)
                f.write(os.urandom(10))
        return await super().handle_async_request(request)


@pytest.mark.real
def test_file_changing_during_upload_is_refused(repo, tmp_path):
    ref = repo()
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    digest = sha(path.read_bytes())
    transport = FileChangingTransport(path)

    with pytest.raises(DigestMismatch, match="refusing to push it"):
        run(lambda c: c.push_blob(ref, digest, path), transport=transport)
    new_digest = sha(path.read_bytes())
    assert run(lambda c: c.blob_exists(ref, digest)) is False
    assert run(lambda c: c.blob_exists(ref, new_digest)) is False


@pytest.mark.real
def test_manifest_with_wrong_content_type_is_refused(repo):
    ref = repo()
    layer = os.urandom(100)
    config, manifest = image_docs(layer, "amd64")

    async def push(client: RegistryClient) -> None:
        await client.push_blob(ref, sha(layer), layer)
        await client.push_blob(ref, sha(config), config)
        await client.push_manifest(ref, manifest, OCI_INDEX)

    with pytest.raises(RegistryError) as info:
        run(push)
    message = str(info.value)
    assert "HTTP 400 MANIFEST_INVALID" in message and ref.familiar in message
    assert f"Content-Type ({OCI_INDEX})" in message and "\n" not in message
    with pytest.raises(ImageNotFound):
        run(lambda c: c.get_manifest(ref))


@pytest.mark.real
def test_index_naming_a_missing_manifest_is_refused(repo):
    ref = repo()
    missing = sha(b"never pushed")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 12}],
        }
    ).encode()
    with pytest.raises(RegistryError, match=r"MANIFEST_BLOB_UNKNOWN.*push those first"):
        run(lambda c: c.push_manifest(ref, index, OCI_INDEX))


def test_manifest_not_matching_the_digest_in_its_reference_is_never_sent():
    seen: list[httpx.Request] = []
    ref = Reference.parse(f"reg.example.com/o/r@{sha(b'other')}")
    transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(201))
    with pytest.raises(DigestMismatch, match="refusing to push it"):
        run(lambda c: c.push_manifest(ref, b"{}", OCI_MANIFEST), transport=transport)
    assert seen == []


# --- protocol details, over httpx.MockTransport ---------------------------------------------


def upload_registry(location: str, seen: list[httpx.Request], **put_headers: str):
    """A registry without the blob, answering the upload POST with ``location``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": location})
        return httpx.Response(201, headers=put_headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("location", "put_url"),
    [
        ("/v2/o/r/blobs/uploads/u1?_state=s%3D", "https://reg.example.com/v2/o/r/blobs/uploads/u1"),
        ("https://reg.example.com/up/u2", "https://reg.example.com/up/u2"),
        ("https://store.example.net/u3?sig=abc", "https://store.example.net/u3"),
    ],
)
def test_upload_location_relative_absolute_with_query(location, put_url):
    seen: list[httpx.Request] = []
    blob = b"hello"
    ref = Reference.parse("reg.example.com/o/r:1")
    transport = upload_registry(location, seen)
    assert run(lambda c: c.push_blob(ref, sha(blob), blob), transport=transport) is True
    put = seen[-1]
    assert put.method == "PUT" and put.content == blob
    assert str(put.url.copy_with(query=None)) == put_url
    params = dict(put.url.params)
    assert params.pop("digest") == sha(blob)
    assert params == dict(httpx.URL(location).params)  # the registry's own query is kept
    assert put.headers["Content-Type"] == "application/octet-stream"


def test_credentials_never_go_to_another_host(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"reg.example.com": {"auth": "dTpzZWNyZXQ="}}})  # u:secret
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "reg.example.com" and "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "https://store.example.net/u?x=1"})
        return httpx.Response(201)

    blob = b"hello"
    ref = Reference.parse("reg.example.com/o/r:1")
    transport = httpx.MockTransport(handler)
    run(lambda c: c.push_blob(ref, sha(blob), blob), transport=transport, docker_config=tmp_path)
    put = seen[-1]
    assert put.url.host == "store.example.net" and "Authorization" not in put.headers
    assert seen[-2].headers["Authorization"] == "Basic dTpzZWNyZXQ="  # the POST had them


def test_upload_location_over_plain_http_is_refused():
    seen: list[httpx.Request] = []
    ref = Reference.parse("reg.example.com/o/r:1")
    transport = upload_registry("http://reg.example.com/v2/o/r/blobs/uploads/u?sig=SECRET", seen)
    with pytest.raises(RegistryError) as info:
        run(lambda c: c.push_blob(ref, sha(b"x"), b"x"), transport=transport)
    message = str(info.value)
    assert "http://reg.example.com, which is not https; refusing" in message
    assert "SECRET" not in message
    assert [r.method for r in seen] == ["HEAD", "POST"]


@pytest.mark.parametrize(
    ("listed", "registry", "scheme"),
    [
        (["reg.internal:5000"], "reg.internal:5000", "http"),
        (["http://REG.internal:5000/"], "reg.internal:5000", "http"),
        (["reg.internal:5000"], "reg.internal:5001", "https"),
        (["reg.internal"], "reg.internal:5000", "https"),
        ([], "127.0.0.1:5000", "http"),
    ],
)
def test_insecure_registries(listed, registry, scheme):
    seen: list[httpx.Request] = []
    ref = Reference.parse(f"{registry}/o/r:1")
    transport = upload_registry(f"{scheme}://{registry}/v2/o/r/blobs/uploads/u", seen)
    run(
        lambda c: c.push_blob(ref, sha(b"x"), b"x"), transport=transport, insecure_registries=listed
    )
    assert {r.url.scheme for r in seen} == {scheme}
    assert len(seen) == 3


@pytest.mark.parametrize("what", ["blob", "manifest"])
def test_registry_storing_other_bytes_is_a_digest_mismatch(what):
    body = b"{}"
    ref = Reference.parse("reg.example.com/o/r:1")
    other = sha(b"other")
    transport = upload_registry("/u", [], **{"Docker-Content-Digest": other})

    async def push(client: RegistryClient) -> object:
        if what == "blob":
            return await client.push_blob(ref, sha(body), body)
        return await client.push_manifest(ref, body, OCI_MANIFEST)

    name = f"blob {sha(body)}" if what == "blob" else "manifest"
    with pytest.raises(DigestMismatch, match=f"stored the {name} of .* as {other}, which is not"):
        run(push, transport=transport)
