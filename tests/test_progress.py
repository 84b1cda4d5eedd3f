"""Pull progress in bytes, per platform, on both real engines (the widget's bars: here for
their throttling, in test_widgets.py for a real run).

The engines report ``on_progress(done, total)`` while they pull: ``total`` is the compressed
size of the platform's config and layers, ``done`` grows to it. To see real bytes move on
Docker too (whose daemon already holds the suite's images, shared with other runs), the
tests pull a probe image of their own: one 3 MB layer of incompressible bytes, pushed to the
local registry under its own name, and removed from the daemon before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import random
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mpcontainer_magics as mpc
from mpcontainer_magics.registry import Reference, RegistryClient
from mpcontainer_magics.registry.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from mpcontainer_magics.widgets import PROGRESS_INTERVAL, PlatformCard

AMD64 = mpc.Platform.parse("linux/amd64")
PROBE_SIZE = 3 << 20


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def probe_blobs() -> tuple[bytes, bytes, bytes]:
    """(config, gzipped layer, manifest) of the probe image: always the same bytes."""
    payload = random.Random(6).randbytes(PROBE_SIZE)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("probe.bin")
        info.size, info.mtime = len(payload), 1_600_000_000
        tar.addfile(info, io.BytesIO(payload))
    layer_tar = tar_bytes.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    return config, layer, manifest


@pytest.fixture(scope="module")
def probe(registry_host: str) -> tuple[str, int]:
    """The probe image's reference (pushed now), and its size as the engines count it."""
    config, layer, manifest = probe_blobs()
    reference = f"{registry_host}/mpc/progress-probe:1"

    async def push() -> None:
        ref = Reference.parse(reference)
        async with RegistryClient() as client:
            await client.push_blob(ref, sha(layer), layer)
            await client.push_blob(ref, sha(config), config)
            await client.push_manifest(ref, manifest, OCI_MANIFEST)

    asyncio.run(push())
    return reference, len(config) + len(layer)


@pytest.fixture
def probe_absent(probe: tuple[str, int], engine_kind: str, docker_api: Any) -> Iterator[None]:
    """Docker does not hold the probe image (before and after the test); the embedded
    engine's cache is the test's own, empty one anyway."""

    def remove() -> None:
        if engine_kind != "docker":
            return
        name = probe[0].rsplit(":", 1)[0]
        digest = sha(probe_blobs()[2])
        with contextlib.suppress(Exception):  # not there: nothing to do
            docker_api.remove_image(docker_api.inspect_image(f"{name}@{digest}")["Id"], force=True)

    remove()
    yield
    remove()


class Recorder:
    """An ``on_progress`` (per platform) that remembers its calls and their threads."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int | None]]] = {}
        self._lock = threading.Lock()

    def __call__(self, platform: mpc.Platform, done: int, total: int | None) -> None:
        with self._lock:
            self.calls.setdefault(str(platform), []).append((done, total))


def assert_counts_up(calls: list[tuple[int, int | None]], total: int | None = None) -> int:
    """``done`` never decreases and ends at ``total`` (> 0), the total never changes once
    known; returns the total."""
    assert calls, "no progress reported"
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls
    last_done, last_total = calls[-1]
    assert last_total is not None and last_done == last_total > 0, calls
    assert {t for _, t in calls if t is not None} == {last_total}, calls
    if total is not None:
        assert last_total == total
    return last_total


def test_a_pull_reports_its_bytes_as_they_arrive(
    engine_kind: str, probe: tuple[str, int], probe_absent: None
) -> None:
    reference, size = probe

    async def main() -> tuple[Recorder, Recorder, Recorder]:
        first, again, other = Recorder(), Recorder(), Recorder()
        async with mpc.connect(engine=engine_kind) as client:
            await client.pull(reference, platforms="linux/amd64", on_progress=first)
            # Pulled by this client: reported as complete, once.
            await client.engine.pull(reference, AMD64, on_progress=lambda d, t: again(AMD64, d, t))
        async with mpc.connect(engine=engine_kind) as client:  # another kernel, say
            await client.pull(reference, platforms="linux/amd64", on_progress=other)
        return first, again, other

    first, again, other = asyncio.run(main())
    calls = first.calls["linux/amd64"]
    assert_counts_up(calls, size)
    # The bytes came in pieces: counts between nothing and everything were reported.
    assert any(0 < done < size for done, _ in calls), calls
    assert again.calls == {"linux/amd64": [(size, size)]}
    assert other.calls == {"linux/amd64": [(size, size)]}


def test_concurrent_pulls_of_one_image_share_it_and_each_follows_its_bytes(
    engine_kind: str, probe: tuple[str, int], probe_absent: None
) -> None:
    """A cell and the widget, say, pulling the same image at once: one pull, two bars."""
    reference, size = probe

    async def main() -> tuple[list[Any], Recorder, Recorder]:
        first, second = Recorder(), Recorder()
        async with mpc.connect(engine=engine_kind) as client:
            images = await asyncio.gather(
                client.engine.pull(reference, AMD64, on_progress=lambda d, t: first(AMD64, d, t)),
                client.engine.pull(reference, AMD64, on_progress=lambda d, t: second(AMD64, d, t)),
            )
        return images, first, second

    images, first, second = asyncio.run(main())
    assert images[0] is images[1]  # one pull, shared
    assert_counts_up(first.calls["linux/amd64"], size)
    assert_counts_up(second.calls["linux/amd64"], size)


def test_a_session_reports_each_platforms_pull(
    engine_kind: str, test_image: str, no_leaks: None
) -> None:
    platforms = "linux/amd64,linux/arm64"

    async def main() -> Recorder:
        progress = Recorder()
        async with mpc.connect(engine=engine_kind) as client:
            session = await client.session(
                "progress", image=test_image, platforms=platforms, on_progress=progress
            )
            assert sorted(map(str, session.platforms)) == platforms.split(",")
        return progress

    progress = asyncio.run(main())
    assert sorted(progress.calls) == platforms.split(",")
    totals = {name: assert_counts_up(calls) for name, calls in progress.calls.items()}
    assert len(set(totals.values())) == 2, "each platform has its own image and size"


def test_the_bar_moves_at_most_ten_times_a_second_from_any_thread() -> None:
    card = PlatformCard(AMD64)
    card.reset("native")
    moves: list[int] = []
    card.pull_bar.observe(lambda change: moves.append(change["new"]), names="value")
    late: list[bool] = []
    total = 10_000_000

    def pour() -> None:  # as Docker's pull thread does
        for done in range(0, total, 10_000):
            late.append(card.pull_progress(done, total))

    started = time.monotonic()
    worker = threading.Thread(target=pour)
    worker.start()
    worker.join()
    elapsed = time.monotonic() - started
    assert len(moves) <= elapsed / PROGRESS_INTERVAL + 2, (len(moves), elapsed)
    assert late.count(True) >= 1  # a count was held back: show_progress() is due
    card.show_progress()
    assert card.pull_bar.value == total - 10_000 and card.pull_bar.max == total
    card.show_progress()  # nothing due any more: no move
    assert moves[-1] == total - 10_000
    card.pull_progress(total, total)  # the end shows at once
    assert card.pull_bar.value == total and card.pull_bytes.value == "10.0/10.0 MB"
    card.close()
