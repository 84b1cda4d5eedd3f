"""Tests of the registry client: unit tests over httpx.MockTransport, then real ones.

The real tests (marked ``real``) talk to the local registry named by MPC_TEST_REGISTRY
(e.g. 127.0.0.1:5055) holding MPC_TEST_IMAGE (an index of five platforms) and
MPC_TEST_IMAGE_AMD64_ONLY (a single amd64 manifest).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from mpcontainer_magics.errors import (
    DigestMismatch,
    ImageError,
    ImageNotFound,
    PlatformNotOffered,
    RegistryError,
)
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import Reference, RegistryClient
from mpcontainer_magics.registry.auth import parse_challenge
from mpcontainer_magics.registry.manifests import checked_image_config
from mpcontainer_magics.registry.mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from mpcontainer_magics.registry.reference import HUB

D = "sha256:" + "ab" * 32
Handler = Callable[[httpx.Request], httpx.Response]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def index_bytes(*platforms: dict, media_type: str = OCI_INDEX) -> bytes:
    manifests = [
        {"mediaType": OCI_MANIFEST, "digest": sha(json.dumps(p).encode()), "size": 1, "platform": p}
        for p in platforms
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    ).encode()


def resolve(handler: Handler, ref: str, config_dir: Path, **kw: object):
    async def go():
        transport = httpx.MockTransport(handler)
        async with RegistryClient(docker_config=config_dir, transport=transport, **kw) as client:
            return await client.resolve(ref)

    return asyncio.run(go())


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """An empty Docker config directory, so the user's real credentials are never read."""
    return tmp_path


def write_config(directory: Path, config: dict) -> None:
    (directory / "config.json").write_text(json.dumps(config))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- WWW-Authenticate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            "bearer",
            {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
             "scope": "repository:library/alpine:pull"},
        ),
        (
            'Bearer realm="https://r/token",scope="repository:a/b:pull,push",error="insufficient_scope"',
            "bearer",
            {"realm": "https://r/token", "scope": "repository:a/b:pull,push",
             "error": "insufficient_scope"},
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ('Bearer realm="x", service="a \\"quoted\\", b"', "bearer",
         {"realm": "x", "service": 'a "quoted", b'}),
        ("bearer Realm=https://u/t,Service=s", "bearer", {"realm": "https://u/t", "service": "s"}),
    ],
)  # fmt: skip
def test_parse_challenge(header, scheme, params):
    assert parse_challenge(header) == (scheme, params)


# --- HTTP behaviour -------------------------------------------------------------------------


def manifest_response(body: bytes, media_type: str, **headers: str) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": media_type, **headers})


def test_bearer_token_flow(cfg):
    body = index_bytes({"os": "linux", "architecture": "amd64"})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json={"token": "T0K3N", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer T0K3N":
            challenge = (
                'Bearer realm="https://auth.example.com/token",service="reg.example.com",'
                'scope="repository:o/r:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return manifest_response(body, OCI_INDEX, **{"Docker-Content-Digest": sha(body)})

    async def go():
        transport = httpx.MockTransport(handler)
        async with RegistryClient(docker_config=cfg, transport=transport) as client:
            first = await client.resolve("reg.example.com/o/r:1")
            await client.resolve("reg.example.com/o/r:2")  # reuses the cached token
            return first

    resolved = asyncio.run(go())
    assert resolved.digest == sha(body) and resolved.is_index
    token_requests = [r for r in seen if r.url.host == "auth.example.com"]
    assert len(token_requests) == 1
    assert dict(token_requests[0].url.params) == {
        "service": "reg.example.com",
        "scope": "repository:o/r:pull",
    }
    assert "Authorization" not in token_requests[0].headers  # anonymous: no credentials
    manifest_requests = [r for r in seen if r.url.host == "reg.example.com"]
    assert [r.url.scheme for r in manifest_requests] == ["https"] * 4
    # The tag is HEADed first; the manifest is fetched once, then known by its digest.
    assert [(r.method, r.headers.get("Authorization")) for r in manifest_requests] == [
        ("HEAD", None),
        ("HEAD", "Bearer T0K3N"),
        ("GET", "Bearer T0K3N"),
        ("HEAD", "Bearer T0K3N"),
    ]
    accept = manifest_requests[0].headers["Accept"]
    assert all(t in accept for t in (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))


def test_credentials_never_go_to_a_plain_http_token_service_of_an_https_registry(cfg):
    """A registry reached over HTTPS may not send us to an unencrypted token realm with the
    user's password: Basic credentials would cross the network in clear text."""
    write_config(cfg, {"auths": {"reg.example.com": {"auth": b64("me:s3cret")}}})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json={"token": "T0K3N"})
        challenge = 'Bearer realm="http://auth.example.com/token",service="reg.example.com"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with pytest.raises(RegistryError, match="plain HTTP") as caught:
        resolve(handler, "reg.example.com/o/r:1", cfg)
    assert "s3cret" not in str(caught.value) and "fix" in str(caught.value).lower()
    assert [r.url.host for r in seen] == ["reg.example.com"]  # the realm was never asked


def test_docker_hub_token_request_carries_basic_credentials(cfg):
    write_config(cfg, {"auths": {"https://index.docker.io/v1/": {"auth": b64("bob:hub-pw")}}})
    body = index_bytes({"os": "linux", "architecture": "arm64"})
    token_auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.docker.io":
            token_auth.append(request.headers.get("Authorization"))
            return httpx.Response(200, json={"access_token": "HUBTOKEN"})
        assert request.url.host == HUB
        if request.headers.get("Authorization") != "Bearer HUBTOKEN":
            challenge = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return manifest_response(body, OCI_INDEX)

    resolved = resolve(handler, "alpine", cfg)
    assert token_auth == [f"Basic {b64('bob:hub-pw')}"]
    assert resolved.platforms() == [Platform("linux", "arm64")]


def basic_registry(expected_auth: str, body: bytes, seen: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != expected_auth:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return manifest_response(body, OCI_INDEX)

    return handler


def test_basic_credentials_from_docker_config(cfg):
    write_config(cfg, {"auths": {"reg.example.com": {"auth": b64("alice:s3cret-pw")}}})
    body = index_bytes({"os": "linux", "architecture": "amd64"})
    seen: list[httpx.Request] = []
    expected = f"Basic {b64('alice:s3cret-pw')}"
    resolved = resolve(basic_registry(expected, body, seen), "reg.example.com/o/r:1", cfg)
    assert resolved.digest == sha(body)
    assert seen[-1].headers["Authorization"] == expected


def test_credential_helper(cfg, tmp_path_factory, monkeypatch):
    bindir = tmp_path_factory.mktemp("bin")
    stdin_copy = bindir / "stdin"
    helper = bindir / "docker-credential-fake"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 3\ncat > "{stdin_copy}"\n'
        'echo \'{"ServerURL": "reg.example.com", "Username": "carol", "Secret": "helper-pw"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    write_config(cfg, {"credHelpers": {"reg.example.com": "fake"}, "credsStore": "missing"})
    body = index_bytes({"os": "linux", "architecture": "amd64"})
    seen: list[httpx.Request] = []
    expected = f"Basic {b64('carol:helper-pw')}"
    resolve(basic_registry(expected, body, seen), "reg.example.com/o/r:1", cfg)
    assert seen[-1].headers["Authorization"] == expected
    assert stdin_copy.read_text() == "reg.example.com"


def test_missing_credential_store_means_no_credentials(cfg):
    write_config(cfg, {"credsStore": "no-such-helper-here"})
    seen: list[httpx.Request] = []
    with pytest.raises(RegistryError, match=r"docker login reg\.example\.com"):
        resolve(basic_registry("never", b"", seen), "reg.example.com/o/r:1", cfg)
    assert [r.headers.get("Authorization") for r in seen] == [None]


@pytest.mark.parametrize(
    "config",
    [["not", "an", "object"], {"auths": ["reg.example.com"]}, {"credHelpers": "pass"}],
    ids=["list", "auths-list", "helpers-string"],
)
def test_docker_config_of_the_wrong_shape_is_a_registry_error_or_ignored(cfg, config):
    # A list where an object belongs: the whole config is unusable; a section of the wrong
    # type counts as absent (as a missing section does), so the registry asks for a login.
    (cfg / "config.json").write_text(json.dumps(config))
    seen: list[httpx.Request] = []
    with pytest.raises(RegistryError) as info:
        resolve(basic_registry("never", b"", seen), "reg.example.com/o/r:1", cfg)
    if isinstance(config, list):
        assert str(info.value) == (
            f"the Docker config {cfg / 'config.json'} is not a JSON object; fix or remove it"
        )
    else:
        assert "run `docker login reg.example.com`" in str(info.value)


def test_forbidden_message_never_shows_the_password(cfg):
    write_config(cfg, {"auths": {"reg.example.com": {"auth": b64("alice:s3cret-pw")}}})

    def handler(request: httpx.Request) -> httpx.Response:
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})

    with pytest.raises(RegistryError) as info:
        resolve(handler, "reg.example.com/o/r:1", cfg)
    message = str(info.value)
    assert "docker login reg.example.com" in message and "HTTP 403" in message
    assert "s3cret-pw" not in message and b64("alice:s3cret-pw") not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("registry", "scheme"),
    [
        ("127.0.0.1:5055", "http"),
        ("127.1.2.3", "http"),
        ("localhost:5000", "http"),
        ("[::1]:5000", "http"),
        ("ghcr.io", "https"),
        ("10.0.0.1:5000", "https"),
        ("localhost.example.com", "https"),
    ],
)
def test_plain_http_only_for_loopback(cfg, registry, scheme):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    with pytest.raises(ImageNotFound):
        resolve(handler, f"{registry}/x:1", cfg)
    assert seen[0].url.scheme == scheme


def test_not_found(cfg):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    with pytest.raises(ImageNotFound) as info:
        resolve(handler, "127.0.0.1:5055/mpc/nope:1", cfg)
    assert str(info.value) == (
        "image 127.0.0.1:5055/mpc/nope:1 not found in registry 127.0.0.1:5055; "
        "check the name and tag (docker pull would fail too)"
    )


def test_unreachable(cfg):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(RegistryError, match=r"cannot reach registry reg\.example\.com: .*refused"):
        resolve(handler, "reg.example.com/o/r:1", cfg)


def test_digest_mismatch_by_digest(cfg):
    body = index_bytes({"os": "linux", "architecture": "amd64"})

    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_response(body, OCI_INDEX)

    with pytest.raises(DigestMismatch, match="refusing to use it"):
        resolve(handler, f"reg.example.com/o/r@{D}", cfg)
    assert resolve(handler, f"reg.example.com/o/r@{sha(body)}", cfg).digest == sha(body)


def test_digest_mismatch_in_header(cfg):
    body = index_bytes({"os": "linux", "architecture": "amd64"})

    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_response(body, OCI_INDEX, **{"Docker-Content-Digest": D})

    with pytest.raises(DigestMismatch):
        resolve(handler, "reg.example.com/o/r:1", cfg)


def single_manifest_registry(config: bytes, served_config: bytes, content_type: str) -> Handler:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [],
        }
    ).encode()  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v2/o/r/blobs/{sha(config)}":
            return httpx.Response(200, content=served_config)
        assert request.url.path == "/v2/o/r/manifests/1"
        return manifest_response(manifest, content_type)

    return handler


def test_single_manifest_platform_comes_from_config(cfg):
    config = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8"}).encode()
    # A generic Content-Type: the media type then comes from the document itself.
    handler = single_manifest_registry(config, config, "application/json")
    resolved = resolve(handler, "reg.example.com/o/r:1", cfg)
    assert not resolved.is_index
    assert resolved.media_type == DOCKER_MANIFEST
    assert resolved.platforms() == [Platform.parse("linux/arm64")]
    assert resolved.manifest_digest(Platform.parse("aarch64")) == resolved.digest


def test_corrupted_config_blob_is_refused(cfg):
    config = json.dumps({"architecture": "arm64", "os": "linux"}).encode()
    handler = single_manifest_registry(config, config.replace(b"arm64", b"amd64"), DOCKER_MANIFEST)
    with pytest.raises(DigestMismatch, match="blob"):
        resolve(handler, "reg.example.com/o/r:1", cfg)


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"<html>hello</html>", "text/html", "not a JSON object"),
        (b'{"schemaVersion": 1}', "application/vnd.docker.distribution.manifest.v1+prettyjws",
         "unsupported type"),
        (b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": 3}', OCI_INDEX,
         "malformed manifest"),
        (b'{"manifests": [3]}', OCI_INDEX,
         r"malformed manifest .*\(an entry of its 'manifests' is not an object\); re-push"),
        (json.dumps({"manifests": [{"digest": "sha256:x", "platform": {"architecture": "arm"}}]})
         .encode(), OCI_INDEX, r"an index entry has the invalid digest 'sha256:x'"),
        (json.dumps({"manifests": [{"digest": D, "platform": {"os": "linux"}}]}).encode(),
         OCI_INDEX, r"an index entry's platform: platform object .* no 'architecture' string"),
        (b'{"layers": []}', OCI_MANIFEST, r"malformed manifest .*\(it has no 'config' object\)"),
    ],
)  # fmt: skip
def test_unexpected_manifests_are_registry_errors(cfg, body, content_type, match):
    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_response(body, content_type)

    with pytest.raises(RegistryError, match=match):
        resolve(handler, "reg.example.com/o/r:1", cfg)


def test_index_skips_attestations_and_matches_normalised(cfg):
    body = json.loads(
        index_bytes(
            {"os": "linux", "architecture": "amd64"},
            {"os": "linux", "architecture": "arm64"},
            {"os": "unknown", "architecture": "unknown"},
            media_type=DOCKER_LIST,
        )
    )
    body["manifests"][2]["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
    raw = json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_response(raw, DOCKER_LIST)

    resolved = resolve(handler, "reg.example.com/o/r:1", cfg)
    assert resolved.is_index and len(resolved.manifests) == 3
    assert resolved.platforms() == [Platform("linux", "amd64"), Platform("linux", "arm64")]
    arm64_digest = body["manifests"][1]["digest"]
    assert resolved.manifest_digest(Platform.parse("linux/arm64/v8")) == arm64_digest
    with pytest.raises(PlatformNotOffered):
        resolved.manifest_digest(Platform("unknown", "unknown"))
    with pytest.raises(PlatformNotOffered) as info:
        resolved.manifest_digest(Platform.parse("linux/s390x"))
    message = str(info.value)
    assert "reg.example.com/o/r:1" in message and "linux/s390x" in message
    assert "linux/amd64, linux/arm64" in message and "unknown" not in message


LTSC2019 = {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5820"}
LTSC2022 = {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2340"}


def served_index(cfg: Path, *platforms: dict):
    """What the client resolves from a registry serving an index of ``platforms``."""
    raw = index_bytes(*platforms)

    def handler(request: httpx.Request) -> httpx.Response:
        return manifest_response(raw, OCI_INDEX)

    return resolve(handler, "reg.example.com/o/r:1", cfg)


@pytest.mark.parametrize(
    ("offered", "request_", "chosen"),
    [
        # The best entry the request runs, as containerd's platforms.Only ranks them.
        ([{"os": "linux", "architecture": "386"}, {"os": "linux", "architecture": "amd64"}],
         "linux/amd64", 1),
        ([{"os": "linux", "architecture": "amd64"},
          {"os": "linux", "architecture": "amd64", "variant": "v2"}], "linux/amd64/v3", 1),
        ([{"os": "linux", "architecture": "386"}], "linux/amd64", 0),
        ([{"os": "linux", "architecture": "arm", "variant": "v5"},
          {"os": "linux", "architecture": "arm", "variant": "v6"}], "linux/arm/v7", 1),
        ([{"os": "linux", "architecture": "arm64"},
          {"os": "linux", "architecture": "arm64", "variant": "v8.2"}], "linux/arm64/v8.2", 1),
        # Windows: a request with an OS version takes the build a host of that version runs.
        ([LTSC2019, LTSC2022], "windows(10.0.20348)/amd64", 1),
        ([LTSC2022, LTSC2019], "windows(10.0.17763)/amd64", 1),
        ([LTSC2019, LTSC2022], "windows(10.0.26100)/amd64", 1),  # stable ABI: 2025 runs 2022
        # Without an OS version: the first entry, as before.
        ([LTSC2019, LTSC2022], "windows/amd64", 0),
        ([LTSC2022, LTSC2019], "windows/amd64", 0),
    ],
)  # fmt: skip
def test_index_selection_picks_the_best_compatible_entry(cfg, offered, request_, chosen):
    resolved = served_index(cfg, *offered)
    assert resolved.manifest_digest(Platform.parse(request_)) == sha(
        json.dumps(offered[chosen]).encode()
    )
    assert resolved.select(Platform.parse(request_))[0] == Platform.from_oci(offered[chosen])


def test_index_entries_keep_their_os_version(cfg):
    resolved = served_index(cfg, LTSC2019, LTSC2022)
    assert [str(p) for p in resolved.platforms()] == [
        "windows(10.0.17763.5820)/amd64",
        "windows(10.0.20348.2340)/amd64",
    ]


def test_index_selection_refuses_what_the_request_does_not_run(cfg):
    resolved = served_index(cfg, LTSC2019, {"os": "linux", "architecture": "arm", "variant": "v7"})
    with pytest.raises(PlatformNotOffered) as info:
        resolved.manifest_digest(Platform.parse("windows(10.0.20348)/amd64"))
    message = str(info.value)
    assert "windows(10.0.20348)/amd64" in message
    assert "windows(10.0.17763.5820)/amd64, linux/arm/v7" in message
    # 32-bit arm images run on an arm64 CPU only if it has a 32-bit mode: the caller knows.
    with pytest.raises(PlatformNotOffered):
        resolved.manifest_digest(Platform.parse("linux/arm64"))
    arm64 = Platform.parse("linux/arm64")
    assert resolved.select(arm64, arm32=True)[0] == Platform.parse("linux/arm/v7")


def image_config(platform: dict) -> bytes:
    return json.dumps({**platform, "rootfs": {"type": "layers", "diff_ids": [D]}}).encode()


@pytest.mark.parametrize(
    ("config", "request_"),
    [
        ({"os": "linux", "architecture": "arm", "variant": "v6"}, "linux/arm/v7"),
        ({"os": "linux", "architecture": "arm"}, "linux/arm/v6"),  # old configs lack variants
        ({"os": "linux", "architecture": "386"}, "linux/amd64"),
        ({**LTSC2022, "os.features": ["win32k"]}, "windows(10.0.20348)/amd64"),
    ],
)
def test_a_config_of_a_platform_the_request_runs_is_consistent(config, request_):
    checked = checked_image_config(image_config(config), "img", Platform.parse(request_), 1)
    assert checked["architecture"] == config["architecture"]


@pytest.mark.parametrize(
    ("config", "request_"),
    [
        ({"os": "linux", "architecture": "s390x"}, "linux/arm64"),
        ({"os": "linux", "architecture": "arm", "variant": "v7"}, "linux/arm/v6"),
        (LTSC2019, "windows(10.0.20348)/amd64"),
    ],
)
def test_a_config_of_another_platform_is_an_inconsistent_index(config, request_):
    with pytest.raises(ImageError, match=r"describes an image for .*; the index is inconsistent"):
        checked_image_config(image_config(config), "img", Platform.parse(request_), 1)


# --- against the real local registry --------------------------------------------------------

REGISTRY = os.environ.get("MPC_TEST_REGISTRY", "").removeprefix("http://").rstrip("/")
IMAGE = os.environ.get("MPC_TEST_IMAGE", f"{REGISTRY}/mpc/busybox:1.35")
AMD64_ONLY = os.environ.get("MPC_TEST_IMAGE_AMD64_ONLY", f"{REGISTRY}/mpc/busybox-amd64only:1")
real = pytest.mark.skipif(
    not REGISTRY, reason="MPC_TEST_REGISTRY is unset (e.g. 127.0.0.1:5055); no local registry"
)


def real_resolve(ref: str | Reference):
    async def go():
        async with RegistryClient() as client:
            return await client.resolve(ref)

    return asyncio.run(go())


@pytest.mark.real
@real
def test_real_index():
    resolved = real_resolve(IMAGE)
    assert resolved.is_index
    assert sorted(map(str, resolved.platforms())) == [
        "linux/amd64",
        "linux/arm/v7",
        "linux/arm64",
        "linux/ppc64le",
        "linux/s390x",
    ]
    digests = [resolved.manifest_digest(p) for p in resolved.platforms()]
    assert len(set(digests)) == 5
    # Each per-platform manifest, fetched by digest, names the same platform in its config.
    arm64 = Platform.parse("linux/arm64")
    pinned = real_resolve(resolved.reference.with_digest(resolved.manifest_digest(arm64)))
    assert pinned.platforms() == [arm64] and not pinned.is_index


@pytest.mark.real
@real
def test_real_index_digest_matches_skopeo():
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed; it is the independent check")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{IMAGE}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert real_resolve(IMAGE).digest == sha(raw)


@pytest.mark.real
@real
def test_real_single_manifest():
    resolved = real_resolve(AMD64_ONLY)
    assert not resolved.is_index
    assert resolved.platforms() == [Platform.parse("linux/amd64")]
    with pytest.raises(PlatformNotOffered, match="it offers: linux/amd64"):
        resolved.manifest_digest(Platform.parse("linux/arm64"))


@pytest.mark.real
@real
def test_real_missing_tag():
    with pytest.raises(ImageNotFound, match="not found in registry"):
        real_resolve(replace(Reference.parse(IMAGE), tag="no-such-tag", digest=None))


def test_real_unreachable():
    # Port 1 on loopback: nothing listens there, so this needs no registry.
    with pytest.raises(
        RegistryError, match=r"cannot reach registry 127\.0\.0\.1:1: Connection refused; check"
    ):
        real_resolve("127.0.0.1:1/x:1")
