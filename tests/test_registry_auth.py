"""The registry client against real registries that demand credentials (loopback only).

Two docker-registry processes started for this module's session (see auth_fixtures): one
with htpasswd Basic auth, one behind a bearer-token server of ours. Credentials always come
from a config.json in a temporary DOCKER_CONFIG directory, as `docker login` writes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_fixtures import (
    Account,
    Registry,
    TokenServer,
    htpasswd_auth,
    start_registry,
    token_auth,
    write_docker_config,
)

from mpcontainer_magics.errors import RegistryError
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import Reference, RegistryClient
from mpcontainer_magics.registry.mediatypes import OCI_MANIFEST

pytestmark = pytest.mark.real


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def account() -> Account:
    return Account()


@pytest.fixture(scope="session")
def basic_registry(
    tmp_path_factory: pytest.TempPathFactory, account: Account
) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("basic-registry")
    registry = start_registry(workdir, htpasswd_auth(workdir, account))
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def token_server(
    tmp_path_factory: pytest.TempPathFactory, account: Account
) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("token-server"), account)
    yield server
    server.close()


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("token-registry")
    registry = start_registry(workdir, token_auth(token_server))
    yield registry
    registry.stop()


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest) -> Registry:
    """Each auth-protected registry in turn (started only when a test needs it)."""
    return request.getfixturevalue(f"{request.param}_registry")


def fresh_ref(registry: Registry) -> Reference:
    return Reference.parse(f"{registry.host}/team/{uuid.uuid4().hex[:12]}:v1")


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Remembers (method, path, Authorization) of every request the client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, request.headers.get("Authorization")))
        return await super().handle_async_request(request)


def run(config_dir: Path, coro_fn: Callable[[RegistryClient], Any], **kw: Any) -> Any:
    async def go() -> Any:
        async with RegistryClient(docker_config=config_dir, **kw) as client:
            return await coro_fn(client)

    return asyncio.run(go())


def image(arch: str) -> tuple[bytes, bytes, bytes]:
    """(layer, config, manifest) of a small image for linux/``arch``."""
    layer = os.urandom(2000)
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return layer, config, manifest


async def push_image(client: RegistryClient, ref: Reference, arch: str = "s390x") -> bytes:
    layer, config, manifest = image(arch)
    assert await client.push_blob(ref, sha(layer), layer)
    assert await client.push_blob(ref, sha(config), config)
    assert await client.push_manifest(ref, manifest, OCI_MANIFEST) == sha(manifest)
    return manifest


def test_push_then_pull_with_credentials_from_docker_config(registry, account, tmp_path):
    config_dir = write_docker_config(
        tmp_path / "docker", registry.host, account.user, account.password
    )
    ref = fresh_ref(registry)
    manifest = run(config_dir, lambda c: push_image(c, ref))

    async def pull(client: RegistryClient) -> tuple[Any, bytes, bytes]:
        resolved = await client.resolve(ref)
        body, media_type, digest = await client.get_manifest(ref)
        assert (media_type, digest) == (OCI_MANIFEST, sha(manifest))
        layer_digest = json.loads(body)["layers"][0]["digest"]
        return resolved, body, await client.get_blob(ref, layer_digest)

    resolved, body, layer = run(config_dir, pull)  # a new client: no token cached
    assert body == manifest
    assert resolved.platforms() == [Platform.parse("linux/s390x")]
    assert sha(layer) == json.loads(manifest)["layers"][0]["digest"]


def test_without_credentials_the_registry_refuses(registry, account, tmp_path):
    # Proves the registries really demand credentials, so the other tests use them.
    ref = fresh_ref(registry)
    config_dir = write_docker_config(tmp_path / "ok", registry.host, account.user, account.password)
    run(config_dir, lambda c: push_image(c, ref))
    with pytest.raises(RegistryError) as info:
        run(tmp_path, lambda c: c.resolve(ref))  # no config.json there
    message = str(info.value)
    assert f"run `docker login {registry.host}`" in message and "\n" not in message


@pytest.mark.parametrize("action", ["pull", "push"])
def test_wrong_credentials_are_a_clear_error(registry, account, tmp_path, action):
    config_dir = write_docker_config(tmp_path, registry.host, account.user, "not-the-password")
    ref = fresh_ref(registry)

    async def act(client: RegistryClient) -> None:
        if action == "pull":
            await client.resolve(ref)
        else:
            await push_image(client, ref)

    with pytest.raises(RegistryError) as info:
        run(config_dir, act)
    assert str(info.value) == (
        f"registry {registry.host} refused the credentials stored for it in the Docker config "
        f"{tmp_path / 'config.json'} (HTTP 401); run `docker login {registry.host}` again"
    )


def test_push_asks_for_a_push_token_and_never_reuses_the_pull_token(
    token_registry, token_server, account, tmp_path
):
    config_dir = write_docker_config(tmp_path, token_registry.host, account.user, account.password)
    a, b = fresh_ref(token_registry), fresh_ref(token_registry)
    blob, other = os.urandom(100), os.urandom(100)
    transport = RecordingTransport()
    before = len(token_server.requests)

    async def go(client: RegistryClient) -> None:
        assert not await client.blob_exists(a, sha(blob))  # a pull token first
        assert await client.push_blob(a, sha(blob), blob)  # needs a push token
        assert await client.push_blob(a, sha(other), other)  # reuses both tokens
        assert not await client.push_blob(b, sha(blob), blob, mount_from=a)  # one token, 2 scopes

    run(config_dir, go, transport=transport)
    asked = token_server.requests[before:]
    pull_a, pull_b = (f"repository:{r.repository}:pull" for r in (a, b))
    push_a, push_b = (f"repository:{r.repository}:pull,push" for r in (a, b))
    # One token request per scope set, in order: HEAD a, upload to a, HEAD b, mount a → b.
    assert [(scopes, ok) for scopes, ok, _ in asked] == [
        ((pull_a,), True),
        ((push_a,), True),
        ((pull_b,), True),
        ((push_b, pull_a), True),
    ]
    pull_token, push_token, _, mount_token = (f"Bearer {token}" for _, _, token in asked)
    writes = [(method, auth) for method, _, auth in transport.seen if method in ("POST", "PUT")]
    assert pull_token not in {auth for _, auth in writes}
    assert writes.count(("PUT", push_token)) == 2  # both uploads to a, none retried
    assert ("POST", mount_token) in writes


def test_secrets_never_appear_in_errors_reprs_or_logs(registry, account, tmp_path, caplog, request):
    caplog.set_level(logging.DEBUG)
    good = write_docker_config(tmp_path / "good", registry.host, account.user, account.password)
    wrong_password = "wrong-" + uuid.uuid4().hex
    bad = write_docker_config(tmp_path / "bad", registry.host, account.user, wrong_password)
    ref = fresh_ref(registry)
    texts: list[str] = []

    async def use(client: RegistryClient, fn: Callable[[], Any]) -> None:
        texts.append(repr(client))
        try:
            await fn()
        except RegistryError as exc:
            texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        texts.append(repr(client))

    run(good, lambda c: use(c, lambda: push_image(c, ref)))
    run(good, lambda c: use(c, lambda: c.resolve(ref)))
    run(good, lambda c: use(c, lambda: c.push_manifest(fresh_ref(registry), b"{}", OCI_MANIFEST)))
    run(bad, lambda c: use(c, lambda: c.resolve(ref)))
    run(bad, lambda c: use(c, lambda: push_image(c, ref)))
    assert sum("RegistryError" in t for t in texts) >= 3  # the failures were captured
    assert "HTTP Request: PUT" in caplog.text  # httpx's log was captured
    secrets = [account.password, account.auth, wrong_password]
    if request.node.callspec.params["registry"] == "token":
        secrets += request.getfixturevalue("token_server").tokens()
        assert len(secrets) > 3
    for secret in secrets:
        assert all(secret not in t for t in texts)
        assert secret not in caplog.text
