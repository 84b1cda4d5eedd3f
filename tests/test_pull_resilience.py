"""Pulls and publishes a classroom can rely on (issue 13): rate limits, the manifest cache,
retries and resumed downloads, mirrors, and interrupted publishes.

Every registry here is real: the test registry, reached through the tests' own
fault-injecting proxy (registry_faults.py) that answers 429s and 503s, cuts a blob or an
upload mid-way, changes a byte or ignores Range; the mirror registry (MPC_TEST_MIRROR,
holding a skopeo copy of the test image); and an address that refuses connections. The
proxy's log says what our client asked for, so "each blob once" or "HEADs only" is checked
on the wire. Blob downloads are our client's on the embedded engine only (dockerd fetches
layers itself), so those tests run there; the rest run on both engines (mirrors on Docker:
test_resolutions.py). Retries wait only milliseconds here (conftest's quick_retries).
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from IPython.core.error import UsageError
from registry_faults import HUB_RATE_LIMIT_BODY, HUB_RATE_LIMIT_HEADERS, FaultProxy

import mpcontainer_magics as mpc
from mpcontainer_magics.errors import DigestMismatch, RateLimited, RegistryError
from mpcontainer_magics.registry import RegistryClient, transfer
from mpcontainer_magics.registry.mediatypes import ACCEPT

T = TypeVar("T")
S390X = "linux/s390x"
MANIFESTS = r"^(HEAD|GET) /v2/[^ ]+/manifests/"
#: Where the proxy cuts the layer: well inside its ~1 MB.
CUT_AT = 300_000


@pytest.fixture
def embedded_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded engine as "auto" (its pulls fetch every blob with our client)."""
    monkeypatch.setenv("MPC_ENGINE", "embedded")
    return "embedded"


def run(main: Callable[[mpc.Client], Awaitable[T]], **connect: Any) -> T:
    async def go() -> T:
        async with mpc.connect(**connect) as client:
            return await main(client)

    return asyncio.run(go())


def through(proxy: FaultProxy, image: str) -> str:
    """``image`` (in the test registry) as named through ``proxy``."""
    return f"{proxy.address}/{image.partition('/')[2]}"


def pull(image: str, platform: str = S390X, **connect: Any) -> list[tuple[int, int | None]]:
    """Pull ``image`` for ``platform``; the (done, total) progress reports, in order."""
    progress: list[tuple[int, int | None]] = []

    async def main(client: mpc.Client) -> None:
        await client.pull(
            image, platforms=platform, on_progress=lambda p, d, t: progress.append((d, t))
        )

    run(main, **connect)
    return progress


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def s390x_layer(test_image: str) -> tuple[str, int]:
    """(digest, size) of the s390x variant's one layer, read from the registry directly."""
    registry, _, name = test_image.partition("/")
    repo, _, tag = name.rpartition(":")
    with httpx.Client(base_url=f"http://{registry}/v2/{repo}/", headers={"Accept": ACCEPT}) as h:
        index = h.get(f"manifests/{tag}").json()
        entry = next(m for m in index["manifests"] if m["platform"]["architecture"] == "s390x")
        layer = h.get(f"manifests/{entry['digest']}").json()["layers"][0]
    return layer["digest"], layer["size"]


def blob_requests(proxy: FaultProxy, digest: str) -> list[tuple[str | None, int | None]]:
    """(Range, status) of each GET of blob ``digest`` the proxy saw."""
    return [(r.range, r.status) for r in proxy.requests(rf"^GET /v2/.+/blobs/{digest}$")]


def assert_progress_ends_complete(progress: list[tuple[int, int | None]], size: int) -> None:
    """Progress never goes backwards and ends at (total, total), the layer included."""
    done = [d for d, _ in progress]
    assert done == sorted(done), progress
    last_done, last_total = progress[-1]
    assert last_done == last_total and last_total is not None and last_total >= size


def assert_nothing_kept_of(cache: Path, digest: str) -> None:
    """Neither blob ``digest`` nor any partial download is in the blob cache, and no image
    was unpacked."""
    blobs = cache / "blobs" / "sha256"
    assert not (blobs / digest.removeprefix("sha256:")).exists()
    assert list(blobs.glob(".partial-*")) == []
    assert list((cache / "images").glob("*")) == []


# -- rate limits ---------------------------------------------------------------------------------


def test_a_long_rate_limit_says_who_when_and_both_fixes(engine_kind, fault_proxy, test_image):
    fault_proxy.rate_limit(MANIFESTS, retry_after=60)
    with pytest.raises(RateLimited) as limited:
        pull(through(fault_proxy, test_image))
    message = one_line(str(limited.value))
    assert limited.value.registry == fault_proxy.address and fault_proxy.address in message
    assert limited.value.retry_after is not None and 55 <= limited.value.retry_after <= 60
    assert "resets" in message
    assert "docker login" in message and "registry_mirrors" in message
    assert len(fault_proxy.requests(MANIFESTS)) == 1  # not hammered: asked once


def test_the_magic_says_a_rate_limit_in_one_line(shell, fault_proxy, test_image, capsys):
    fault_proxy.rate_limit(MANIFESTS, retry_after=3600)
    outcome = shell.run_cell(
        f"%container pull {through(fault_proxy, test_image)} --platform {S390X}"
    )
    assert isinstance(outcome.error_in_exec, UsageError)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("UsageError:") and "docker login" in err and fault_proxy.address in err


def test_a_short_rate_limit_is_waited_for_once(engine_kind, fault_proxy, test_image):
    fault_proxy.rate_limit(MANIFESTS, retry_after=1, times=1)
    pull(through(fault_proxy, test_image))
    first, again = fault_proxy.requests(MANIFESTS)[:2]
    assert (first.status, again.status) == (429, 200) and first.target == again.target


@pytest.mark.parametrize(
    ("status", "asked"),
    [
        (429, MANIFESTS),  # Docker Hub's HEAD at the limit: 429 and ratelimit-* headers
        (403, r"^GET /v2/[^ ]+/manifests/"),  # a 403 whose body says TOOMANYREQUESTS
    ],
)
def test_docker_hubs_rate_limit_answer(engine_kind, fault_proxy, test_image, status, asked):
    fault_proxy.answer(asked, status, HUB_RATE_LIMIT_HEADERS, HUB_RATE_LIMIT_BODY)
    with pytest.raises(RateLimited) as limited:
        pull(through(fault_proxy, test_image))
    message = one_line(str(limited.value))
    assert limited.value.retry_after is None  # Hub's ratelimit-* headers give a window only
    assert fault_proxy.address in message and "docker login" in message
    assert len(fault_proxy.requests(asked)) == 1


# -- what is spent from a limit ------------------------------------------------------------------


def test_dockers_own_pull_at_a_rate_limit_is_one_line_too(fault_proxy, test_image, monkeypatch):
    """dockerd fetches the platform's manifest itself (by digest): its 429 reads as ours."""
    monkeypatch.setenv("MPC_ENGINE", "docker")
    fault_proxy.hub_rate_limit(r"^GET /v2/[^ ]+/manifests/sha256:")
    with pytest.raises(RateLimited) as limited:
        pull(through(fault_proxy, test_image))
    message = one_line(str(limited.value))
    assert message.startswith(f"registry {fault_proxy.address} limited Docker's pull of ")
    assert "You have reached your pull rate limit" in message  # what the registry said
    assert "docker login" in message and "registry-mirrors" in message


def test_a_second_client_resolving_a_tag_sends_only_a_head(fault_proxy, test_image, tmp_path):
    image = through(fault_proxy, test_image)

    async def resolve() -> tuple[str, dict[str, int]]:
        async with RegistryClient(cache_dir=tmp_path) as client:  # a kernel of its own
            return (await client.resolve(image)).digest, dict(client.requests)

    first, _ = asyncio.run(resolve())
    asked_before = len(fault_proxy.log)
    second, spent = asyncio.run(resolve())
    assert first == second
    assert spent == {"HEAD manifest": 1}
    assert [r.method for r in fault_proxy.log[asked_before:]] == ["HEAD"]


def test_a_second_kernel_pulling_spends_no_manifest_get(engine_kind, fault_proxy, test_image):
    image = through(fault_proxy, test_image)

    async def main(client: mpc.Client) -> dict[str, int]:
        await client.pull(image, platforms=S390X)
        return dict(client.engine.registry.requests)

    run(main)
    second = run(main)  # another client, the same cache: as another kernel
    assert "GET manifest" not in second and second["HEAD manifest"] >= 1


# -- blob downloads: retried, resumed, verified (the embedded engine's own) ----------------------


def test_a_cut_blob_resumes_where_it_stopped(embedded_engine, fault_proxy, test_image, s390x_layer):
    digest, size = s390x_layer
    fault_proxy.cut(rf"^GET /v2/.+/blobs/{digest}$", after=CUT_AT)
    progress = pull(through(fault_proxy, test_image))
    assert blob_requests(fault_proxy, digest) == [(None, 200), (f"bytes={CUT_AT}-", 206)]
    assert_progress_ends_complete(progress, size)


def test_a_cut_blob_starts_over_when_ranges_are_ignored(
    embedded_engine, fault_proxy, test_image, s390x_layer
):
    digest, size = s390x_layer
    fault_proxy.cut(rf"^GET /v2/.+/blobs/{digest}$", after=CUT_AT)
    fault_proxy.ignore_range(rf"^GET /v2/.+/blobs/{digest}$")
    progress = pull(through(fault_proxy, test_image))
    assert blob_requests(fault_proxy, digest) == [(None, 200), (f"bytes={CUT_AT}-", 200)]
    assert_progress_ends_complete(progress, size)


def test_a_blob_answering_503_for_a_while_is_tried_again(
    embedded_engine, fault_proxy, test_image, s390x_layer
):
    digest, size = s390x_layer
    fault_proxy.answer(rf"^GET /v2/.+/blobs/{digest}$", 503, times=2)
    progress = pull(through(fault_proxy, test_image))
    assert [s for _, s in blob_requests(fault_proxy, digest)] == [503, 503, 200]
    assert_progress_ends_complete(progress, size)


def test_a_blob_answering_503_for_ever_is_one_error_and_nothing_cached(
    embedded_engine, fault_proxy, test_image, s390x_layer, blob_cache
):
    digest, _ = s390x_layer
    fault_proxy.answer(rf"^GET /v2/.+/blobs/{digest}$", 503)
    with pytest.raises(RegistryError) as failed:
        pull(through(fault_proxy, test_image))
    message = one_line(str(failed.value))
    assert digest in message and fault_proxy.address in message and "503" in message
    assert len(blob_requests(fault_proxy, digest)) == transfer.ATTEMPTS
    assert_nothing_kept_of(blob_cache, digest)


def test_a_wrong_byte_is_refused_and_nothing_cached(
    embedded_engine, fault_proxy, test_image, s390x_layer, blob_cache
):
    digest, _ = s390x_layer
    fault_proxy.corrupt(rf"^GET /v2/.+/blobs/{digest}$", offset=CUT_AT)
    with pytest.raises(DigestMismatch) as refused:
        pull(through(fault_proxy, test_image))
    assert digest in one_line(str(refused.value))
    assert_nothing_kept_of(blob_cache, digest)


# -- mirrors -------------------------------------------------------------------------------------


def test_a_mirror_serves_an_image_whose_registry_does_not_answer(
    embedded_engine, refusing_registry, mirror_host, test_image
):
    image = f"{refusing_registry}/{test_image.partition('/')[2]}"
    mirrors = {refusing_registry: [mirror_host]}

    async def main(client: mpc.Client) -> Any:
        resolved = await client.engine.registry.resolve(image)
        return resolved.mirror, await client.run("uname -m", image=image, platforms=S390X)

    mirror, result = run(main, registry_mirrors=mirrors)
    assert mirror == mirror_host
    assert result.stdout == {S390X: "s390x\n"}


def test_a_rate_limited_registry_is_not_asked_when_its_mirror_answers(
    embedded_engine, fault_proxy, mirror_host, test_image, monkeypatch
):
    fault_proxy.hub_rate_limit(r"^(HEAD|GET) ")
    # As a JupyterHub would set it for every kernel.
    monkeypatch.setenv("MPC_REGISTRY_MIRRORS", json.dumps({fault_proxy.address: [mirror_host]}))
    pull(through(fault_proxy, test_image))
    assert fault_proxy.log == []  # nothing spent from its limit


def test_a_rate_limited_mirror_falls_back_to_the_registry(
    embedded_engine, mirror_host, test_image, monkeypatch
):
    with FaultProxy(mirror_host) as mirror:
        mirror.hub_rate_limit(r"^(HEAD|GET) ")
        registry = test_image.partition("/")[0]
        monkeypatch.setenv("MPC_REGISTRY_MIRRORS", json.dumps({registry: [mirror.address]}))

        async def main(client: mpc.Client) -> Any:
            resolved = await client.engine.registry.resolve(test_image)
            await client.pull(test_image, platforms=S390X)
            return resolved.mirror

        assert run(main) is None  # the registry itself answered
        assert mirror.log and {r.status for r in mirror.log} == {429}


def test_mirrors_in_the_magics_config(
    ip, embedded_engine, refusing_registry, mirror_host, test_image
):
    image = f"{refusing_registry}/{test_image.partition('/')[2]}"
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        mirrors = {refusing_registry: [mirror_host]}
        ip.run_line_magic("config", f"ContainerMagics.registry_mirrors = {mirrors!r}")
        ip.run_cell_magic("container", f"--image {image} --platform {S390X} --out res", "uname -m")
        assert ip.user_ns["res"].stdout == {S390X: "s390x\n"}
    finally:
        ip.run_line_magic("config", "ContainerMagics.registry_mirrors = {}")
        ip.run_line_magic("unload_ext", "mpcontainer_magics")


# -- publishing ----------------------------------------------------------------------------------


def two_variants(client: mpc.Client, image: str) -> list[mpc.Container]:
    return [client.container(platform=p).from_(image) for p in ("linux/amd64", "linux/arm64")]


def test_a_cut_blob_upload_is_sent_again(engine_kind, fault_proxy, test_image, registry_host):
    repository = f"test/resilient-{uuid.uuid4().hex[:10]}"
    fault_proxy.drop(rf"^PUT /v2/{repository}/blobs/uploads/", after=100, times=1)

    async def main(client: mpc.Client) -> mpc.Published:
        return await client.publish(
            f"{fault_proxy.address}/{repository}:v1", two_variants(client, test_image)
        )

    published = run(main)
    uploads = [r.status for r in fault_proxy.requests(rf"^PUT /v2/{repository}/blobs/uploads/")]
    assert uploads[0] is None and uploads[1:] and set(uploads[1:]) == {201}
    assert tag_digest(registry_host, repository, "v1") == published.digest


def test_an_interrupted_publish_leaves_no_tag(engine_kind, fault_proxy, test_image, registry_host):
    repository = f"test/resilient-{uuid.uuid4().hex[:10]}"
    fault_proxy.answer(rf"^PUT /v2/{repository}/manifests/(?!sha256:)", 503)

    async def main(client: mpc.Client) -> mpc.Published:
        return await client.publish(
            f"{fault_proxy.address}/{repository}:v1", two_variants(client, test_image)
        )

    with pytest.raises(RegistryError) as failed:
        run(main)
    assert "503" in one_line(str(failed.value))
    # Blobs and per-platform manifests went first and are there; the tag, last, is not.
    assert tag_digest(registry_host, repository, "v1") is None
    pushed = fault_proxy.requests(rf"^PUT /v2/{repository}/manifests/sha256:")
    assert len(pushed) == 2 and {r.status for r in pushed} == {201}
    with httpx.Client(base_url=f"http://{registry_host}/v2/{repository}/") as direct:
        for manifest in pushed:
            reference = manifest.path.rpartition("/")[2]
            assert direct.head(f"manifests/{reference}", headers={"Accept": ACCEPT}).is_success
            body = direct.get(f"manifests/{reference}", headers={"Accept": ACCEPT}).json()
            for blob in (body["config"], *body["layers"]):
                assert direct.head(f"blobs/{blob['digest']}").is_success


def tag_digest(registry: str, repository: str, tag: str) -> str | None:
    """What ``repository:tag`` points to, asked of the registry directly (None: no such tag)."""
    resp = httpx.head(
        f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}
    )
    return resp.headers["Docker-Content-Digest"] if resp.is_success else None


# -- many kernels, one cache ---------------------------------------------------------------------

KERNEL = """
import pathlib, sys, time
from IPython.core.interactiveshell import InteractiveShell

image, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "mpcontainer_magics")
ready.touch()
while not go.exists():  # all kernels pull at once
    time.sleep(0.01)
shell.run_line_magic("container", f"pull {image} --platform linux/s390x")
"""
KERNELS = 5


def test_kernels_pulling_at_once_into_one_cache_fetch_each_blob_once(
    embedded_engine, fault_proxy, test_image, tmp_path
):
    image = through(fault_proxy, test_image)
    # Slow blobs: every kernel reaches a download while the first is still in flight, so
    # only sharing it (not luck in timing) fetches each blob once.
    fault_proxy.delay(r"^GET /v2/.+/blobs/", 1.0)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(KERNELS)]
    kernels = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL, image, str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 120  # a bound on waiting, not an assertion on speed
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            assert all(k.poll() is None for k in kernels), [k.communicate()[0] for k in kernels]
            time.sleep(0.05)
        go.touch()
        outputs = [k.communicate(timeout=300)[0] for k in kernels]
    finally:
        for k in kernels:
            if k.poll() is None:
                k.kill()
                k.wait()
    assert [k.returncode for k in kernels] == [0] * KERNELS, outputs
    fetched = collections.Counter(r.path for r in fault_proxy.requests(r"^GET /v2/.+/blobs/"))
    assert len(fetched) >= 2 and set(fetched.values()) == {1}, fetched  # config and layer
