"""Layers unpacked by a worker process, as in a multi-platform pull while another layer
unpacks on the kernel's thread: the same tree, the same errors, and no process left behind.

A pull sends a layer to a worker only when one is already unpacking on a thread and the
layer is big (``rootfs.WORKER_MIN_SIZE``); ``workers_only()`` makes every layer go there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import alive
from test_layers import directory, file, hardlink, symlink, tar
from test_rootfs import GZIP_LAYER, CountedStream, FakeRegistry, unpack

from mpcontainer_magics.engines import rootfs
from mpcontainer_magics.engines.base import processes_naming
from mpcontainer_magics.engines.layer_worker import LayerWorker
from mpcontainer_magics.engines.layers import LayerStats, UnpackLimit, apply_layer
from mpcontainer_magics.errors import ImageError
from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.registry import RegistryClient

WORKER_MODULE = b"mpcontainer_magics.engines.layer_worker"
AMD64 = Platform.parse("linux/amd64")


@contextlib.contextmanager
def workers_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LayerWorker]]:
    """Every layer unpacked in the block goes to a worker; yields the workers used."""
    used: list[LayerWorker] = []

    class Recorded(LayerWorker):
        def run(self, open_source: Any, stats: LayerStats) -> bool:
            used.append(self)
            return super().run(open_source, stats)

    monkeypatch.setattr(rootfs, "WORKER_MIN_SIZE", 0)
    monkeypatch.setattr(rootfs, "LayerWorker", Recorded)
    assert rootfs._THREAD_SLOT.acquire(blocking=False)  # as if a layer unpacked on a thread
    try:
        yield used
    finally:
        rootfs._THREAD_SLOT.release()


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Each entry's kind, mode, mtime and contents (bytes' digest, or link target); not the
    mtime of a directory, which is when the last layer changing it was unpacked."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if path.is_symlink():
                content: object = os.readlink(path)
            elif path.is_dir():
                content = None
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            mtime = None if path.is_dir() and not path.is_symlink() else int(st.st_mtime)
            found[str(path.relative_to(root))] = (st.st_mode, mtime, content)
    return found


def worker_processes(root: Path) -> list[int]:
    """Worker processes unpacking into ``root``."""
    workers = set(processes_naming(WORKER_MODULE))
    return [pid for pid in processes_naming(str(root).encode()) if pid in workers and alive(pid)]


@pytest.mark.real
def test_a_real_image_unpacks_the_same_through_workers(test_image, tmp_path, monkeypatch):
    on_thread = unpack(test_image, "linux/s390x", tmp_path / "thread")
    with workers_only(monkeypatch) as used:
        by_worker = unpack(test_image, "linux/s390x", tmp_path / "worker")
    assert len(used) == len(on_thread.layers) >= 1
    assert snapshot(by_worker.root) == snapshot(on_thread.root) != {}
    assert by_worker.stats.files == on_thread.stats.files
    assert by_worker.stats.written == on_thread.stats.written > 0


def test_layers_in_workers_apply_in_order_under_one_limit(tmp_path, monkeypatch):
    lower = gzip.compress(tar(directory("etc"), file("etc/a", b"1" * 100), file("etc/b")))
    upper = gzip.compress(
        tar(file("etc/.wh.b", b""), symlink("etc/link", "a"), hardlink("etc/c", "etc/a"))
    )
    registry = FakeRegistry([(GZIP_LAYER, lower), (GZIP_LAYER, upper)])
    on_thread = registry.unpack(tmp_path / "thread")
    with workers_only(monkeypatch) as used:
        by_worker = registry.unpack(tmp_path / "worker")
    assert len(used) == 2
    assert snapshot(by_worker.root) == snapshot(on_thread.root)
    assert sorted(os.listdir(by_worker.root / "etc")) == ["a", "c", "link"]
    # The limit counts across layers: the second worker started where the first one stopped.
    assert used[1]._job["written"] == 100 + len(b"data")


def test_without_a_process_to_start_the_layer_unpacks_on_the_thread(tmp_path, monkeypatch, caplog):
    registry = FakeRegistry([(GZIP_LAYER, gzip.compress(tar(file("etc/a", b"1"))))])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))  # e.g. at ulimit -u
    with workers_only(monkeypatch) as used:
        image = registry.unpack(tmp_path / "root")
    assert len(used) == 1
    assert (image.root / "etc" / "a").read_bytes() == b"1"
    assert "cannot start a process to unpack a layer" in caplog.text


@pytest.mark.parametrize(
    ("data", "max_size"),
    [
        (tar(file("../escape")), None),
        (tar(hardlink("x", "../outside/secret")), None),  # roots are next to tmp_path/outside
        (gzip.compress(tar(file("big", b"x" * 5000))), 1000),
        (b"\x1f\x8b\x08\x00" + b"\xff" * 64, None),
        (gzip.compress(tar(file("f", b"y" * 4096)))[:-40], None),
    ],
    ids=["climbs above the root", "hard link out", "too big", "corrupt gzip", "cut short"],
)
def test_a_worker_raises_what_a_thread_raises(tmp_path, data, max_size):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")

    def failure(how: str) -> BaseException:
        root = tmp_path / how
        root.mkdir()
        limit = UnpackLimit(max_size, root, image="img (linux/amd64)")
        limit.layer = "sha256:abc"
        with pytest.raises(ImageError) as raised:
            if how == "thread":
                apply_layer(io.BytesIO(data), root, limit=limit)
            else:
                worker = LayerWorker(root, windows=False, limit=limit)
                assert worker.run(lambda: io.BytesIO(data), LayerStats())
        return raised.value

    on_thread, by_worker = failure("thread"), failure("worker")
    assert type(by_worker) is type(on_thread)
    assert str(by_worker) == str(on_thread) and "\n" not in str(by_worker)
    assert (outside / "secret").read_text() == "host file"


class SlowLayer(io.RawIOBase):
    """A layer whose bytes come only as long as ``more`` is set, as a stalled download."""

    def __init__(self) -> None:
        super().__init__()
        self.more = threading.Event()
        self.data = iter([gzip.compress(tar(file("first")))[:100]])

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        chunk = next(self.data, None)
        if chunk is not None:
            return chunk
        self.more.wait(30)
        raise ImageError("the download was aborted")


def test_a_killed_worker_stops_at_once_and_leaves_no_process(tmp_path):
    worker = LayerWorker(tmp_path, windows=False, limit=UnpackLimit(None, None))
    layer = SlowLayer()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(lambda: layer, LayerStats())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not worker_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    (pid,) = worker_processes(tmp_path)
    worker.kill()  # while the kernel's thread still waits for the layer's bytes
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)
    layer.more.set()  # what an aborted tap does: its next read raises
    thread.join(10)
    assert not thread.is_alive() and isinstance(outcome[0], ImageError)


def test_a_worker_ends_with_its_kernel(tmp_path):
    kernel = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import io, sys, time
                from pathlib import Path
                from mpcontainer_magics.engines.layer_worker import LayerWorker
                from mpcontainer_magics.engines.layers import LayerStats, UnpackLimit

                class Endless(io.RawIOBase):
                    def readable(self): return True
                    def read(self, size=-1):
                        time.sleep(0.05)
                        return b"\\0" * 512

                LayerWorker(Path({str(tmp_path)!r}), windows=False,
                            limit=UnpackLimit(None, None)).run(Endless, LayerStats())
            """),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not worker_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        (pid,) = worker_processes(tmp_path)
        kernel.send_signal(signal.SIGKILL)  # no clean-up of its own
        kernel.wait(10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(pid)
    finally:
        kernel.kill()
        kernel.wait()


class StalledRegistry(FakeRegistry):
    """Sends the first 64 KiB of each layer, then nothing more."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)
        if request.url.path.endswith(tuple(d.removeprefix("sha256:") for d in self.layer_digests)):
            return httpx.Response(200, stream=Stalled(response.stream))  # type: ignore[arg-type]
        return response


class Stalled(httpx.AsyncByteStream):
    def __init__(self, stream: CountedStream) -> None:
        self.stream = stream

    async def __aiter__(self) -> Any:
        async for chunk in self.stream:
            yield chunk
            await asyncio.sleep(3600)


def test_cancelling_a_pull_stops_its_workers_and_keeps_nothing(tmp_path, monkeypatch):
    big = gzip.compress(tar(*(file(f"f{i}", os.urandom(4096)) for i in range(64))))
    registry = StalledRegistry([(GZIP_LAYER, big)])
    dest = tmp_path / "root"
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()

    async def pull_then_ctrl_c() -> None:
        transport = httpx.MockTransport(registry.handler)
        async with RegistryClient(transport=transport, docker_config=config_dir) as client:
            pull = asyncio.ensure_future(
                rootfs.unpack_image(client, "reg.example.com/o/r:1", AMD64, dest)
            )
            deadline = time.monotonic() + 10
            while not worker_processes(dest) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert worker_processes(dest), "no worker started"
            pull.cancel()
            await pull

    with workers_only(monkeypatch), pytest.raises(asyncio.CancelledError):
        asyncio.run(pull_then_ctrl_c())
    assert worker_processes(dest) == []
    assert not dest.exists()
