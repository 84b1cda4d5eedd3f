"""Publishing multi-platform images: to the local registry, and as OCI image layouts.

Checked independently of our own client: `skopeo inspect --raw` gives the exact index bytes,
`skopeo copy` accepts the layouts, and `docker run --platform` runs what was published.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import layers_exported
from IPython.core.error import UsageError

import mpcontainer_magics as mpc

# Every test runs on both engines (MPC_ENGINE makes connect() pick it).
pytestmark = pytest.mark.usefixtures("engine_kind")

T = TypeVar("T")
THREE = ["linux/amd64", "linux/arm64", "linux/s390x"]


def run(main: Callable[[mpc.Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with mpc.connect() as client:
            return await main(client)

    return asyncio.run(go())


def fresh_ref(registry_host: str, tag: str = "v1") -> str:
    return f"{registry_host}/test/published-{uuid.uuid4().hex[:10]}:{tag}"


def skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True)
    return done.stdout


def raw_manifest(ref: str) -> bytes:
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
    )
    return done.stdout


def docker_run(ref: str, platform: str, *argv: str) -> str:
    """Run one platform of what was published, as Docker users would, pinned by digest.

    By that platform's manifest digest (read with skopeo): Docker 20.10's image store keeps
    one image per digest reference, so running an index digest for a second platform fails.
    """
    repository = ref.partition("@")[0]
    document = json.loads(raw_manifest(ref))
    digest = next(
        (
            m["digest"]
            for m in document.get("manifests", [])
            if "/".join(
                filter(
                    None,
                    (
                        m["platform"]["os"],
                        m["platform"]["architecture"],
                        m["platform"].get("variant"),
                    ),
                )
            )
            == platform
        ),
        f"sha256:{hashlib.sha256(raw_manifest(ref)).hexdigest()}",  # a plain manifest
    )
    command = ["docker", "run", "--rm", "--platform", platform, f"{repository}@{digest}"]
    done = subprocess.run([*command, *argv], capture_output=True, text=True, check=True)
    return done.stdout


def variants(client: mpc.Client, image: str) -> list[mpc.Container]:
    """One container per platform, each writing what it is into /app."""
    return [
        client.container(platform=p)
        .from_(image)
        .with_exec(["sh", "-c", "mkdir -p /app && uname -m > /app/machine"])
        .with_env_variable("APP_MODE", "published")
        .with_workdir("/app")
        for p in THREE
    ]


def test_publish_three_variants_as_one_index(test_image, registry_host, no_leaks):
    ref = fresh_ref(registry_host)

    async def main(client: mpc.Client) -> str:
        return await client.container().publish(ref, platform_variants=variants(client, test_image))

    published = run(main)
    name, _, digest = published.partition("@")
    assert name == ref.rpartition(":")[0]
    index_bytes = raw_manifest(ref)
    assert f"sha256:{hashlib.sha256(index_bytes).hexdigest()}" == digest
    index = json.loads(index_bytes)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
        {"architecture": "s390x", "os": "linux"},
    ]
    for arch in ("arm64", "s390x"):
        config = json.loads(
            skopeo(
                "inspect",
                "--tls-verify=false",
                "--override-arch",
                arch,
                "--config",
                f"docker://{ref}",
            )
        )
        assert config["architecture"] == arch
        assert "APP_MODE=published" in config["config"]["Env"]
        assert config["config"]["WorkingDir"] == "/app"
        assert config["config"]["Cmd"] == ["sh"]  # kept from the base image
        assert not any(
            k.startswith("io.mpcontainer-magics") for k in config["config"].get("Labels") or {}
        )
    assert docker_run(published, "linux/s390x", "sh", "-c", "cat machine; echo $APP_MODE") == (
        "s390x\npublished\n"
    )
    assert docker_run(published, "linux/arm64", "cat", "/app/machine") == "aarch64\n"


def test_publishing_again_uploads_nothing(test_image, registry_host, no_leaks):
    ref = fresh_ref(registry_host)

    async def main(client: mpc.Client) -> tuple[mpc.Published, mpc.Published, dict[str, int]]:
        built = variants(client, test_image)
        first = await client.publish(ref, built)
        before = dict(client.engine.registry.requests)
        second = await client.publish(ref, built)
        after = client.engine.registry.requests
        return first, second, {key: after[key] - before.get(key, 0) for key in after}

    first, second, requests = run(main)
    assert first.uploaded_bytes > 0
    assert second.uploaded_bytes == 0
    assert first.digest == second.digest
    # Every blob was only asked about: no upload started, no bytes sent.
    assert requests.get("POST upload", 0) == requests.get("PUT upload", 0) == 0
    assert requests["HEAD blob"] >= 4  # 3 configs + the new layers, at least


def test_a_session_published_again_exports_only_what_changed(test_image, registry_host, no_leaks):
    # Publishing an unchanged session again exported and hashed every layer again (over a
    # 420 MB base image, 8-9 s): layers known by digest must cost nothing.
    ref = fresh_ref(registry_host)

    async def main(client: mpc.Client) -> list[tuple[mpc.Published, list[int]]]:
        exported = layers_exported(client)
        session = await client.session("again", platforms="linux/arm64,linux/s390x",
                                       image=test_image)  # fmt: skip
        published = []
        for cell in ("echo one > /made", None, "echo two > /made", None):
            if cell is not None:
                await session.run(cell)
            exported.clear()
            published.append((await client.publish(ref, session), list(exported)))
        return published

    (first, exported1), (same, exported2), (changed, exported3), (again, exported4) = run(main)
    assert exported1 == [1, 1]  # each platform's own layer; the base's are the registry's
    assert exported2 == exported4 == []  # nothing new: nothing read from the engine
    assert exported3 == [1, 1]
    assert same.digest == first.digest and same.uploaded_bytes == 0
    assert changed.digest != first.digest and again.digest == changed.digest
    assert again.uploaded_bytes == 0
    assert docker_run(again.reference, "linux/s390x", "cat", "/made") == "two\n"


def test_base_layers_are_reused_not_recompressed(test_image, registry_host, no_leaks):
    """The busybox layer of each variant is the base image's own blob, not a re-compression."""
    ref = fresh_ref(registry_host)
    repository = test_image.rpartition(":")[0]
    index = json.loads(raw_manifest(test_image))
    base_layer = {
        entry["platform"]["architecture"]: json.loads(
            raw_manifest(f"{repository}@{entry['digest']}")
        )["layers"][0]["digest"]
        for entry in index["manifests"]
    }

    async def main(client: mpc.Client) -> mpc.Published:
        return await client.publish(ref, variants(client, test_image))

    published = run(main)
    for variant in published.variants:
        assert variant.layers[0].digest == base_layer[variant.platform.architecture]
        assert variant.layers[0].path is None  # not compressed again here
        assert len(variant.layers) == 2  # plus the with_exec's own layer


def test_export_layout_is_accepted_by_skopeo_with_the_same_digests(
    test_image, registry_host, tmp_path, no_leaks
):
    async def main(client: mpc.Client) -> tuple[mpc.Published, str]:
        built = variants(client, test_image)
        exported = await client.export(tmp_path / "layout", built, tag="v1")
        tar = await client.container().export(
            tmp_path / "image.tar", platform_variants=built, tag="v1"
        )
        return exported, tar

    exported, tar = run(main)
    assert (tmp_path / "layout" / "oci-layout").is_file() and Path(tar).is_file()
    for source in (f"oci:{tmp_path / 'layout'}:v1", f"oci-archive:{tar}:v1"):
        ref = fresh_ref(registry_host)
        skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            source,
            f"docker://{ref}",
        )
        assert f"sha256:{hashlib.sha256(raw_manifest(ref)).hexdigest()}" == exported.digest


def test_one_container_publishes_a_plain_manifest(test_image, registry_host, no_leaks):
    ref = fresh_ref(registry_host)

    async def main(client: mpc.Client) -> str:
        return await client.container(platform="linux/arm64").from_(test_image).publish(ref)

    published = run(main)
    manifest = json.loads(raw_manifest(ref))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert docker_run(published, "linux/arm64", "uname", "-m") == "aarch64\n"


def test_a_static_binary_wrapped_with_with_rootfs_is_published(test_image, registry_host, no_leaks):
    ref = fresh_ref(registry_host)

    async def main(client: mpc.Client) -> str:
        wrapped = []
        for p in ("linux/arm64", "linux/s390x"):
            binary = (
                client.container(platform=p)
                .from_(test_image)
                .with_exec(["sh", "-c", "mkdir -p /o/bin && cp /bin/busybox /o/bin/"])
                .directory("/o")
            )
            wrapped.append(client.container(platform=p).with_rootfs(binary))
        return await client.container().publish(ref, platform_variants=wrapped)

    published = run(main)
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--pull",
            "always",
            "--platform",
            "linux/s390x",
            published,
            "/bin/busybox",
            "uname",
            "-m",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "s390x\n"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("twice", "is given twice; an image index holds one variant per platform: give each"),
        ("windows", "only Linux variants can be published.*publish the Linux platforms"),
        ("digest", "publish to a tag, not a digest: .*; name a tag such as .*:1"),
    ],
)
def test_publish_errors(test_image, windows_image, registry_host, call, message, no_leaks):
    async def main(client: mpc.Client) -> Any:
        arm = client.container(platform="linux/arm64").from_(test_image)
        if call == "twice":
            return await client.container().publish(
                fresh_ref(registry_host), platform_variants=[arm, arm]
            )
        if call == "windows":
            win = client.container(platform="windows/amd64").from_(windows_image)
            return await win.publish(fresh_ref(registry_host))
        return await arm.publish(f"{registry_host}/x@sha256:{'0' * 64}")

    with pytest.raises(mpc.InvalidArgument, match=message):
        run(main)


# -- cross builds and the magics -----------------------------------------------------------


def test_cross_runs_natively_with_the_targets_variables(shell):
    shell.run_cell_magic(
        "container",
        "--cross --platform linux/arm64,linux/arm/v7,linux/s390x --out res",
        'echo "$TARGETPLATFORM $TARGETARCH ${TARGETVARIANT:--} $GOOS/$GOARCH ${GOARM:--} '
        '$BUILDPLATFORM"; uname -m',
    )
    res = shell.user_ns["res"]
    assert res.stdout == {
        "linux/arm64": "linux/arm64 arm64 - linux/arm64 - linux/amd64\nx86_64\n",
        "linux/arm/v7": "linux/arm/v7 arm v7 linux/arm 7 linux/amd64\nx86_64\n",
        "linux/s390x": "linux/s390x s390x - linux/s390x - linux/amd64\nx86_64\n",
    }
    assert not any(r.emulated for r in res)


def test_cross_needs_targets_and_no_session(shell):
    with pytest.raises(UsageError, match="--cross needs --platform targets"):
        shell.run_cell_magic("container", "--cross", "true")


def test_publish_a_session_with_the_magic(shell, registry_host, capsys):
    ref = fresh_ref(registry_host)
    shell.run_cell_magic(
        "container",
        "--session pub --platform linux/arm64,linux/s390x",
        "mkdir -p /srv && uname -m > /srv/built-on",
    )
    published = shell.run_line_magic("container", f"publish {ref} --from pub")
    assert published.reference.startswith(f"{ref.rpartition(':')[0]}@sha256:")
    text = repr(published)
    assert (
        "linux/s390x" in text and '"mediaType": "application/vnd.oci.image.index.v1+json"' in text
    )
    assert docker_run(published.reference, "linux/s390x", "cat", "/srv/built-on") == "s390x\n"
    # As a session's cells name it: --session is --from.
    again = shell.run_line_magic("container", f"publish {ref} --session pub")
    assert again.digest == published.digest
    with pytest.raises(UsageError, match="--from/-s/--session"):
        shell.run_line_magic("container", f"publish {ref}")


def test_publish_from_a_variable_of_containers(shell, registry_host, test_image):
    # Containers built with a client of the notebook's own: the magic evaluates them itself.
    async def connected() -> mpc.Client:
        return await mpc.connect()

    client = asyncio.run(connected())
    try:
        shell.user_ns["built"] = [
            client.container(platform=p).from_(test_image).with_exec(["touch", "/marker"])
            for p in ("linux/arm64", "linux/ppc64le")
        ]
        ref = fresh_ref(registry_host)
        published = shell.run_line_magic("container", f"publish {ref} --from built")
    finally:
        asyncio.run(client.aclose())
    assert [str(v.platform) for v in published.variants] == ["linux/arm64", "linux/ppc64le"]
    assert docker_run(published.reference, "linux/ppc64le", "ls", "/marker") == "/marker\n"

    shell.user_ns["res"] = 42
    with pytest.raises(UsageError, match="--from takes a session"):
        shell.run_line_magic("container", f"publish {ref} --from res")
    with pytest.raises(
        UsageError, match=r"no session or variable called 'nothing'.*Give --from one of those"
    ):
        shell.run_line_magic("container", f"publish {ref} --from nothing")


def test_publish_the_out_result_of_a_session_cell(shell, registry_host):
    shell.run_cell_magic(
        "container",
        "--session outpub --platform linux/arm64,linux/s390x --out built",
        "uname -m > /machine",
    )
    ref = fresh_ref(registry_host)
    published = shell.run_line_magic("container", f"publish {ref} --from built")
    assert docker_run(published.reference, "linux/arm64", "cat", "/machine") == "aarch64\n"

    shell.run_cell_magic("container", "--platform linux/arm64 --out oneoff", "true")
    with pytest.raises(UsageError, match="the result of a one-off run holds outputs"):
        shell.run_line_magic("container", f"publish {ref} --from oneoff")


def test_a_published_session_never_holds_its_mounts_contents(
    engine_kind, test_image, registry_host, tmp_path, no_leaks
):
    """Mounted files (a read-only mount is a copy on the embedded engine) stay out of images."""
    secrets_dir, shared = tmp_path / "secrets", tmp_path / "shared"
    secrets_dir.mkdir()
    shared.mkdir()
    (secrets_dir / "token").write_text("hunter2\n")
    reference = f"{registry_host}/mpc-test/mounts:{engine_kind}"
    look = "ls -A /secrets /shared; cat /etc/made"

    async def main(client: mpc.Client) -> Any:
        session = await client.session(
            "m",
            image=test_image,
            platforms="linux/arm64",
            mounts=[f"{secrets_dir}:/secrets:ro", f"{shared}:/shared"],
        )
        await session.run("cat /secrets/token > /shared/seen; echo made > /etc/made")
        published = await client.publish(reference, session)
        return await client.run(look, image=published.reference, platforms="linux/arm64")

    async def with_engine() -> Any:
        async with mpc.connect(engine=engine_kind) as client:
            return await main(client)

    ran = asyncio.run(with_engine())
    assert (shared / "seen").read_text() == "hunter2\n"
    # The mount points stay (empty), as Docker commits them; what was in them does not.
    assert ran[0].stdout == "/secrets:\n\n/shared:\nmade\n"
