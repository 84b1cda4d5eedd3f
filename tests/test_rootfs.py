"""Tests of unpacking an image's files for one platform, without a daemon.

Real tests read the local registry's test images (the busybox index and the Windows-layout
image that `.ci/setup` pushes). A registry does not serve tampered or odd images on request,
so those cases use an in-memory registry over httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_layers import gzip_bomb

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import ProgressCallback
from mpcontainer_magics.engines.rootfs import UnpackedImage, unpack_image
from mpcontainer_magics.errors import (
    DigestMismatch,
    ImageError,
    ImageTooLarge,
    InvalidArgument,
    PlatformNotOffered,
    RegistryError,
    UnsafeLayer,
)
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import Reference, RegistryClient
from mpcontainer_magics.registry.mediatypes import OCI_INDEX, OCI_MANIFEST

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
EM_AARCH64, EM_S390 = 183, 22


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_id(layer_blob: bytes) -> str:
    """The digest of the uncompressed tar, as an image config lists it."""
    return sha(gzip.decompress(layer_blob) if layer_blob[:2] == b"\x1f\x8b" else layer_blob)


def unpack(
    reference: str,
    platform: str,
    dest: Path,
    on_progress: ProgressCallback | None = None,
    **client: object,
) -> UnpackedImage:
    async def go() -> UnpackedImage:
        async with RegistryClient(**client) as registry:  # type: ignore[arg-type]
            return await unpack_image(
                registry, reference, Platform.parse(platform), dest, on_progress=on_progress
            )

    return asyncio.run(go())


def elf_machine(path: Path) -> tuple[str, int]:
    """(byte order, e_machine) from an ELF header."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    order = {1: "little", 2: "big"}[header[5]]
    return order, int.from_bytes(header[18:20], order)


def skopeo_manifest_digest(image: str, platform: dict[str, str]) -> str:
    """The platform's manifest digest in the published index, as skopeo reads it."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    for entry in json.loads(raw)["manifests"]:
        if platform.items() <= entry["platform"].items():
            return entry["digest"]
    raise AssertionError(f"{platform} not in the index of {image}")


# --- against the real local registry ----------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    ("platform", "elf"),
    [("linux/arm64", ("little", EM_AARCH64)), ("linux/s390x", ("big", EM_S390))],
)
def test_unpack_real_linux_image(test_image, tmp_path, platform, elf):
    image = unpack(test_image, platform, tmp_path / "root")
    root = tmp_path / "root"
    assert image.root == root and image.platform == Platform.parse(platform)
    assert elf_machine(root / "bin" / "busybox") == elf
    assert os.readlink(root / "bin" / "sh") == "busybox"
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert image.config["Cmd"] == ["sh"]
    os_, arch = platform.split("/")
    assert image.digest == skopeo_manifest_digest(test_image, {"os": os_, "architecture": arch})
    assert image.reference == test_image


@pytest.mark.real
def test_unpack_real_windows_image(windows_image, tmp_path):
    image = unpack(windows_image, "windows/amd64", tmp_path / "root")
    root = image.root
    assert (root / "hello.txt").read_bytes() == b"hello from windows/amd64\n"
    assert (root / "Windows" / "System32" / "drivers" / "etc" / "hosts").is_file()
    assert sorted(os.listdir(root)) == ["Windows", "hello.txt"]  # no Files/, no Hives/
    assert image.platform == Platform("windows", "amd64")
    assert image.config == {"Cmd": ["cmd.exe"]}
    expected = skopeo_manifest_digest(windows_image, {"os": "windows", "architecture": "amd64"})
    assert image.digest == expected


@pytest.mark.real
def test_platform_not_offered(test_image, tmp_path):
    with pytest.raises(PlatformNotOffered, match="no variant for linux/riscv64"):
        unpack(test_image, "linux/riscv64", tmp_path / "root")
    assert not (tmp_path / "root").exists()


# --- an in-memory registry ---------------------------------------------------------------------


def layer(*files: tuple[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue()) if compress else buf.getvalue()


class CountedStream(httpx.AsyncByteStream):
    """A body sent in 64 KiB pieces, as a network sends it, counting what was read."""

    def __init__(self, data: bytes, name: str, served: dict[str, int]) -> None:
        self.data, self.name, self.served = data, name, served

    async def __aiter__(self) -> Any:
        for start in range(0, len(self.data), 1 << 16):
            chunk = self.data[start : start + (1 << 16)]
            self.served[self.name] = self.served.get(self.name, 0) + len(chunk)
            yield chunk


class FakeRegistry:
    """reg.example.com/o/r:1, an index with one image of the given layers; blobs editable."""

    def __init__(
        self,
        layers: list[tuple[str, bytes]],
        platform: dict[str, str] | None = None,
        config_platform: dict[str, str] | None = None,
        edit_config: Callable[[dict[str, Any]], object] = lambda config: None,
        edit_manifest: Callable[[dict[str, Any]], object] = lambda manifest: None,
    ) -> None:
        """``edit_config``/``edit_manifest`` change those documents before they are stored."""
        platform = platform or {"os": "linux", "architecture": "amd64"}
        self.blobs: dict[str, bytes] = {}
        self.served: dict[str, int] = {}  # bytes of each blob the client read
        descriptors = [self.add(data, media_type) for media_type, data in layers]
        self.layer_digests = [str(d["digest"]) for d in descriptors]
        config = {
            **(config_platform or platform),
            "config": {"Cmd": ["true"], "WorkingDir": "/w"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id(data) for _, data in layers]},
        }
        edit_config(config)
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.add(json.dumps(config).encode(), OCI_CONFIG),
            "layers": descriptors,
        }
        edit_manifest(document)
        manifest = json.dumps(document).encode()
        self.manifest_digest = sha(manifest)
        entry = {"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest)}
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{**entry, "platform": platform}],
            }
        ).encode()
        self.manifests = {"1": (index, OCI_INDEX), self.manifest_digest: (manifest, OCI_MANIFEST)}

    def add(self, data: bytes, media_type: str) -> dict[str, object]:
        self.blobs[sha(data)] = data
        return {"mediaType": media_type, "digest": sha(data), "size": len(data)}

    def handler(self, request: httpx.Request) -> httpx.Response:
        kind, _, name = request.url.path.removeprefix("/v2/o/r/").partition("/")
        if kind == "manifests" and name in self.manifests:
            body, media_type = self.manifests[name]
            return httpx.Response(200, content=body, headers={"Content-Type": media_type})
        if kind == "blobs" and name in self.blobs:
            return httpx.Response(200, stream=CountedStream(self.blobs[name], name, self.served))
        return httpx.Response(404, json={"errors": [{"code": f"{kind.upper()}_UNKNOWN"}]})

    def unpack(
        self,
        dest: Path,
        platform: str = "linux/amd64",
        on_progress: ProgressCallback | None = None,
    ) -> UnpackedImage:
        transport = httpx.MockTransport(self.handler)
        # An empty Docker config directory: the user's real credentials are never read.
        config_dir = dest.parent / "docker-config"
        config_dir.mkdir(exist_ok=True)
        return unpack("reg.example.com/o/r:1", platform, dest, on_progress, transport=transport,
                      docker_config=config_dir)  # fmt: skip


def test_layers_are_applied_in_order(tmp_path):
    registry = FakeRegistry(
        [
            (GZIP_LAYER, layer(("etc/a", b"a"), ("etc/b", b"b"))),
            ("application/vnd.oci.image.layer.v1.tar", layer(("etc/.wh.a", b""), compress=False)),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", layer(("etc/b", b"B"))),
        ]
    )
    image = registry.unpack(tmp_path / "root")
    assert sorted(os.listdir(tmp_path / "root" / "etc")) == ["b"]
    assert (tmp_path / "root" / "etc" / "b").read_bytes() == b"B"
    assert image.config == {"Cmd": ["true"], "WorkingDir": "/w"}
    assert image.digest == registry.manifest_digest
    assert image.reference == "reg.example.com/o/r:1"
    assert sorted(os.listdir(tmp_path)) == ["docker-config", "root"]  # no temp files left


def test_tampered_layer_is_refused(tmp_path):
    registry = FakeRegistry([(GZIP_LAYER, layer(("etc/a", b"a")))])
    digest = registry.layer_digests[0]
    registry.blobs[digest] = layer(("etc/a", b"b"))  # as long as the original, not it
    assert len(registry.blobs[digest]) == len(layer(("etc/a", b"a")))
    with pytest.raises(DigestMismatch, match=f"blob {digest} .* does not hash to {digest}"):
        registry.unpack(tmp_path / "root")
    assert not (tmp_path / "root" / "etc").exists()


def test_a_blob_longer_than_its_descriptor_is_cut_off_and_refused(tmp_path, blob_cache):
    # Before, a 136-byte descriptor's blob was read for as long as the registry sent (a
    # probe stopped at 256 MiB) and only then refused as "does not hash".
    registry = FakeRegistry([(GZIP_LAYER, layer(("etc/a", b"a")))])
    digest = registry.layer_digests[0]
    size = len(registry.blobs[digest])
    registry.blobs[digest] += b"\0" * (64 << 20)  # what an endless stream starts with
    with pytest.raises(DigestMismatch) as caught:
        registry.unpack(tmp_path / "root")
    message = str(caught.value)
    assert f"blob {digest} of " in message and f"longer than the {size} bytes" in message
    assert "stopped reading" in message and "\n" not in message
    assert registry.served[digest] <= size + (1 << 20)  # stopped at the first chunk past it
    assert not (tmp_path / "root" / "etc").exists()
    kept = [p.name for p in Path(blob_cache).rglob("*") if p.is_file()]
    assert digest.partition(":")[2] not in kept and not [k for k in kept if "partial" in k]


def test_a_manifest_over_the_limit_is_refused(tmp_path):
    registry = FakeRegistry([], edit_manifest=lambda m: m.update(padding="x" * (5 << 20)))
    with pytest.raises(DigestMismatch, match=r"manifest .* longer than the 4194304 bytes"):
        registry.unpack(tmp_path / "root")


def test_unsafe_layer_names_image_and_layer(tmp_path):
    registry = FakeRegistry([(GZIP_LAYER, layer(("../escape", b"x")))])
    digest = registry.layer_digests[0]
    with pytest.raises(UnsafeLayer) as info:
        registry.unpack(tmp_path / "root")
    message = str(info.value)
    assert message.startswith(f"reg.example.com/o/r:1 (linux/amd64), layer {digest}: ")
    assert "'../escape' climbs above the root" in message and "\n" not in message
    assert not (tmp_path / "escape").exists()


def test_missing_foreign_layer(tmp_path):
    registry = FakeRegistry([(FOREIGN_LAYER, layer(("Files/x", b"x")))],
                            platform={"os": "windows", "architecture": "amd64"})  # fmt: skip
    del registry.blobs[registry.layer_digests[0]]
    with pytest.raises(ImageError, match=r"foreign \(non-distributable\) layer") as info:
        registry.unpack(tmp_path / "root", "windows/amd64")
    assert not isinstance(info.value, RegistryError) and "\n" not in str(info.value)


def test_present_foreign_layer_is_used(tmp_path):
    registry = FakeRegistry([(FOREIGN_LAYER, layer(("Files/x", b"x"), ("Hives/h", b"h")))],
                            platform={"os": "windows", "architecture": "amd64"})  # fmt: skip
    registry.unpack(tmp_path / "root", "windows/amd64")
    assert os.listdir(tmp_path / "root") == ["x"]


@pytest.mark.parametrize(
    ("media_type", "match"),
    [
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd-compressed layer .* re-push"),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "zstd-compressed"),
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", "unsupported type"),
    ],
)
def test_unsupported_layer_types(tmp_path, media_type, match):
    registry = FakeRegistry([(media_type, layer(("x", b"x")))])
    with pytest.raises(ImageError, match=match):
        registry.unpack(tmp_path / "root")


def test_config_platform_must_match_the_index(tmp_path):
    registry = FakeRegistry([], config_platform={"os": "linux", "architecture": "arm64"})
    with pytest.raises(ImageError, match="describes an image for linux/arm64; the index is"):
        registry.unpack(tmp_path / "root")


def test_config_without_variant_matches(tmp_path):
    registry = FakeRegistry(
        [], platform={"os": "linux", "architecture": "arm", "variant": "v6"},
        config_platform={"os": "linux", "architecture": "arm"},
    )  # fmt: skip
    assert registry.unpack(tmp_path / "root", "linux/arm/v6").platform == Platform.parse(
        "linux/arm/v6"
    )


@pytest.mark.parametrize("bug", [KeyError, TypeError, AttributeError, ValueError])
def test_a_bug_in_the_caller_is_not_blamed_on_the_registry(tmp_path, bug):
    def on_progress(done: int, total: int | None) -> None:
        raise bug("the caller's own mistake")

    registry = FakeRegistry([(GZIP_LAYER, layer(("etc/a", b"a")))])
    with pytest.raises(bug, match="the caller's own mistake") as info:
        registry.unpack(tmp_path / "root", on_progress=on_progress)
    assert not isinstance(info.value, RegistryError)


def test_a_lost_connection_is_not_called_a_malformed_manifest(tmp_path):
    registry = FakeRegistry([(GZIP_LAYER, layer(("etc/a", b"a")))])
    serve = registry.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if "/blobs/" in request.url.path:
            raise httpx.ReadError("connection reset by peer")
        return serve(request)

    registry.handler = handler  # type: ignore[method-assign]
    tried = r"blob .* from registry reg\.example\.com: tried 5 times"
    with pytest.raises(RegistryError, match=tried) as info:
        registry.unpack(tmp_path / "root")
    assert "malformed" not in str(info.value)


def drop(document: dict[str, Any], *path: str | int) -> None:
    """Delete ``document[path[0]][path[1]]...``."""
    *parents, last = path
    for key in parents:
        document = document[key]
    del document[last]


@pytest.mark.parametrize(
    ("edit_manifest", "edit_config", "problem"),
    [
        (lambda m: m.update(layers="layer.tar"), None, "its 'layers' is not a list of descriptors"),
        (lambda m: drop(m, "config"), None, "'config' is not a descriptor object"),
        (lambda m: drop(m, "layers", 0, "digest"), None, "layers[0] has no valid 'digest'"),
        (lambda m: m["layers"][0].update(digest="md5:x"), None, "has no valid 'digest'"),
        (lambda m: m["layers"][0].update(size="12"), None, "layers[0] has no 'size' in bytes"),
        (lambda m: drop(m, "layers", 0, "mediaType"), None, "layers[0] has no 'mediaType'"),
        (lambda m: drop(m, "config", "size"), None, "'config' has no 'size' in bytes"),
        (None, lambda c: drop(c, "architecture"), "it has no 'architecture' and 'os' strings"),
        (None, lambda c: c.update(config=["Cmd"]), "its 'config' is not an object"),
        (None, lambda c: drop(c, "rootfs"), "its rootfs.diff_ids is not a list of 1 digests"),
        (None, lambda c: c["rootfs"]["diff_ids"].append(sha(b"")), "not a list of 1 digests"),
        (None, lambda c: c["rootfs"].update(diff_ids=[7]), "holds something not a digest"),
    ],
)
def test_a_malformed_manifest_or_config_says_what_is_wrong(
    tmp_path, edit_manifest, edit_config, problem
):
    edits = {"edit_manifest": edit_manifest, "edit_config": edit_config}
    registry = FakeRegistry(
        [(GZIP_LAYER, layer(("etc/a", b"a")))], **{k: v for k, v in edits.items() if v}
    )
    with pytest.raises(RegistryError) as info:
        registry.unpack(tmp_path / "root")
    message = str(info.value)
    document = "manifest" if edit_manifest else "config"
    assert message.startswith(
        f"the registry sent a malformed {document} for reg.example.com/o/r:1 (linux/amd64): "
    )
    assert problem in message and message.endswith("; re-push the image (e.g. with docker "
                                                   "buildx or skopeo copy)")  # fmt: skip
    assert "\n" not in message and not (tmp_path / "root").exists()


def test_a_config_that_is_not_json(tmp_path):
    html = b"<html>"  # pushed so, under its right digest: the registry serves what it was given
    descriptor = {"mediaType": OCI_CONFIG, "digest": sha(html), "size": len(html)}
    registry = FakeRegistry([], edit_manifest=lambda m: m.update(config=descriptor))
    registry.add(html, OCI_CONFIG)
    with pytest.raises(RegistryError, match=r"malformed config .*: it is not JSON \("):
        registry.unpack(tmp_path / "root")


def test_destination_must_be_empty(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "old").touch()
    with pytest.raises(InvalidArgument, match="must be missing or an empty directory"):
        FakeRegistry([]).unpack(tmp_path / "root")


# --- RegistryClient.download_blob ------------------------------------------------------------


def download(handler, digest: str, cfg: Path) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        dest = io.BytesIO()
        async with RegistryClient(docker_config=cfg, transport=httpx.MockTransport(handler)) as c:
            size = await c.download_blob(Reference.parse("reg.example.com/o/r:1"), digest, dest)
        return size, dest.getvalue()

    return asyncio.run(go())


def test_download_blob_streams_through_a_token_challenge(tmp_path):
    blob = os.urandom(3 << 20)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json={"token": "T"})
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer T":
            challenge = 'Bearer realm="https://auth.example.com/token",service="reg.example.com"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        # Many chunks, as a real body arrives.
        chunks = [blob[i : i + 65536] for i in range(0, len(blob), 65536)]
        return httpx.Response(200, stream=httpx.ByteStream(b"".join(chunks)))

    assert download(handler, sha(blob), tmp_path) == (len(blob), blob)
    assert seen == [None, "Bearer T"]


def test_download_blob_errors(tmp_path):
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})

    digest = sha(b"blob")
    with pytest.raises(RegistryError) as info:
        download(missing, digest, tmp_path)
    assert str(info.value) == (
        f"registry reg.example.com lacks blob {digest} of reg.example.com/o/r:1; "
        "the image is incomplete there, re-push it"
    )

    def tampered(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"bolb")

    with pytest.raises(DigestMismatch, match="refusing to use it") as info:
        download(tampered, digest, tmp_path)
    assert "\n" not in str(info.value)

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"errors": [{"code": "UNKNOWN"}]})

    with pytest.raises(RegistryError, match=r"tried 5 times; last: HTTP 500 \(UNKNOWN\)"):
        download(broken, digest, tmp_path)


def test_a_second_unpack_fetches_no_blob(test_image, tmp_path, blob_cache):
    async def twice() -> tuple[dict[str, int], dict[str, int]]:
        async with RegistryClient() as registry:
            await unpack_image(registry, test_image, Platform.parse("linux/s390x"), tmp_path / "a")
            first = dict(registry.requests)
            await unpack_image(registry, test_image, Platform.parse("linux/s390x"), tmp_path / "b")
            return first, dict(registry.requests)

    first, second = asyncio.run(twice())
    assert first.get("GET blob", 0) >= 2  # the config and the layer, once
    assert second.get("GET blob", 0) == first.get("GET blob", 0)  # nothing more
    assert (tmp_path / "b/bin/busybox").read_bytes() == (tmp_path / "a/bin/busybox").read_bytes()
    assert any(blob_cache.glob("blobs/sha256/*"))


def test_a_refused_blob_leaves_nothing_in_the_cache(tmp_path, blob_cache):
    registry = FakeRegistry([(GZIP_LAYER, layer(("etc/a", b"a")))])
    digest = registry.layer_digests[0]
    registry.blobs[digest] = layer(("etc/a", b"evil"))
    with pytest.raises(DigestMismatch):
        registry.unpack(tmp_path / "root")
    cached = [p.name for p in blob_cache.rglob("*") if p.is_file()]
    assert digest.partition(":")[2] not in cached
    assert not [name for name in cached if name.startswith(".partial-")]


# -- what an image may unpack to, through the real registry ------------------------------------


async def push_one_layer_image(reference: str, layer_blob: bytes, arch: str = "amd64") -> str:
    """Push a linux/``arch`` image of the single gzip layer ``layer_blob``; its layer digest."""
    unpacked = hashlib.sha256(gzip.decompress(layer_blob)).hexdigest()
    config = json.dumps(
        {"architecture": arch, "os": "linux", "config": {},
         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{unpacked}"]}}
    ).encode()  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [
                {"mediaType": GZIP_LAYER, "digest": sha(layer_blob), "size": len(layer_blob)}
            ],
        }
    ).encode()
    ref = Reference.parse(reference)
    async with RegistryClient() as registry:
        await registry.push_blob(ref, sha(layer_blob), layer_blob)
        await registry.push_blob(ref, sha(config), config)
        await registry.push_manifest(ref, manifest, OCI_MANIFEST)
    return sha(layer_blob)


def test_a_gzip_bomb_is_refused_at_the_set_size_and_leaves_nothing(
    registry_host, blob_cache, monkeypatch
):
    # Before, a 10 MiB gzip layer unpacked to 10 GiB "successfully". Here: 320 MiB of zeros
    # in a layer of a few hundred KiB, pulled by the embedded engine with a 64 MiB limit.
    image = f"{registry_host}/mpc-test/bomb-{uuid.uuid4().hex[:12]}:1"
    layer_digest = asyncio.run(push_one_layer_image(image, gzip_bomb(320 << 20)))
    monkeypatch.setenv("MPC_MAX_IMAGE_SIZE", "64M")

    async def pull() -> None:
        async with mpc.connect(engine="embedded") as client:
            await client.pull(image, platforms="linux/amd64")

    with pytest.raises(ImageTooLarge) as caught:
        asyncio.run(pull())
    assert str(caught.value) == (
        f"{image} (linux/amd64), layer {layer_digest}: unpacks to more than the limit of "
        "64.0 MiB per image; refusing it (if it is meant to be that big, raise "
        "MPC_MAX_IMAGE_SIZE (now 64M))"
    )
    # Nothing partial: no unpacked image or work directory, and the verified blob alone.
    assert list((blob_cache / "images").iterdir()) == []
    assert not list((blob_cache / "blobs" / "sha256").glob(".partial-*"))


def test_max_size_keyword_overrides_the_environment(registry_host, tmp_path, monkeypatch):
    image = f"{registry_host}/mpc-test/bomb-{uuid.uuid4().hex[:12]}:1"
    asyncio.run(push_one_layer_image(image, gzip_bomb(32 << 20)))
    monkeypatch.setenv("MPC_MAX_IMAGE_SIZE", "1G")

    async def go(max_size: int) -> UnpackedImage:
        async with RegistryClient() as registry:
            return await unpack_image(
                registry, image, Platform.parse("linux/amd64"), tmp_path / "root",
                max_size=max_size,
            )  # fmt: skip

    with pytest.raises(ImageTooLarge, match=r"pass a larger max_size than 8388608"):
        asyncio.run(go(8 << 20))
    assert not (tmp_path / "root").exists()  # what it had unpacked is gone again
    unpacked = asyncio.run(go(64 << 20))
    assert (tmp_path / "root" / "zeros").stat().st_size == 32 << 20
    assert unpacked.stats.written == 32 << 20


def test_a_pull_cancelled_mid_layer_leaves_nothing(test_image, blob_cache):
    # Ctrl-C while a layer is being unpacked from its download: the unpacking thread stops
    # at its next read, and neither a partial blob nor a partial image stays.
    async def pull_and_cancel() -> None:
        async with mpc.connect(engine="embedded") as client:
            task = asyncio.current_task()
            assert task is not None

            def on_progress(_platform: Platform, done: int, total: int | None) -> None:
                if total and 4096 < done < total:  # the config is in; a layer is arriving
                    task.cancel()

            await client.pull(test_image, platforms="linux/s390x", on_progress=on_progress)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(pull_and_cancel())
    assert [p.name for p in (blob_cache / "images").iterdir()] == []
    assert not list((blob_cache / "blobs" / "sha256").glob(".partial-*"))


STOPPED_KERNEL = """
import asyncio, sys, threading
import mpcontainer_magics as mpc

image = sys.argv[1]
loop = asyncio.new_event_loop()
thread = threading.Thread(target=loop.run_forever)  # the magics' loop thread
thread.start()

def on_progress(_platform, done, total):
    if total and 4096 < done < total:  # a layer is arriving: the kernel shuts down
        print(f"stopping at {done} of {total}", flush=True)
        loop.stop()

async def pull():
    client = await mpc.connect(engine="embedded")
    await client.pull(image, platforms="linux/s390x", on_progress=on_progress)

asyncio.run_coroutine_threadsafe(pull(), loop)
thread.join()  # the loop stopped with the pull unfinished; now the interpreter exits
print("exiting")
"""


def test_a_kernel_whose_loop_stops_mid_pull_still_exits(test_image, blob_cache, fault_proxy):
    # The unpacking thread waits for a layer's bytes; with the loop gone none will come,
    # and Python's exit joins that thread: it must give up rather than wait for ever.
    # The proxy cuts every blob answer after 64 kB (each retry resumes and is cut again),
    # so the loop surely stops while the layer is half-way.
    fault_proxy.cut(r"^GET /v2/.+/blobs/", after=64_000, times=None)
    image = f"{fault_proxy.address}/{test_image.partition('/')[2]}"
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_KERNEL, image],
        capture_output=True,
        text=True,
        timeout=120,  # a bound on waiting for the exit, not a speed assertion
    )
    assert done.returncode == 0, done.stderr
    assert "stopping at" in done.stdout and "exiting" in done.stdout, done.stdout
