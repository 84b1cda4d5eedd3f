"""A content-addressed cache of image blobs on this machine, shared by all of a user's kernels.

Blobs live under their digest, ``blobs/sha256/<hex>``, in ``$MPC_CACHE_DIR`` or
``$XDG_CACHE_HOME/mpcontainer_magics`` (``~/.cache/mpcontainer_magics`` by default). A blob
enters the cache only after its digest checked out: the registry client verifies it while
downloading into a temporary file of the same directory, which is then renamed into place
atomically. So whatever the cache holds is right, and a second pull of the same image
fetches no blob bytes.

Kernels sharing the cache fetch each blob once: a download holds ``flock`` on
``.lock-<hex>`` next to the blob (polled, so the event loop never blocks), and a second
kernel waits for it and then uses the verified file. Downloads per process are bounded
(MAX_DOWNLOADS at a time). A ``BlobTap`` lets a thread read a blob while it downloads (the
unpacker inflates a layer as its bytes arrive); it hashes what it read, so even a download
that restarted cannot hand it bytes other than the verified blob's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError
from ..registry import check_digest
from ..registry.cache import content_path, default_cache_dir

if TYPE_CHECKING:
    from ..registry import Reference, RegistryClient
    from .layers import LayerStats

MAX_DOWNLOADS = 6  # blob downloads at once per process (per event loop)
_LOCK_POLL_S = (0.005, 0.1)  # first and longest wait between tries of another's lock
_LOOP_CHECK_S = 0.5  # how often a waiting reader checks that the event loop still runs
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


class BlobStore:
    """Verified blobs on disk, fetched from a registry on first use."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, digest: str) -> Path:
        return content_path(self.root, digest)

    def add(self, source: Path, digest: str) -> Path:
        """Put the local file ``source``, whose content the caller knows to be ``digest``,
        into the store (a hard link where it can, a copy otherwise); its path there."""
        path = self.path(digest)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
        try:
            try:
                os.link(source, partial)
            except OSError:  # another filesystem, or one without hard links
                shutil.copyfile(source, partial)
            os.replace(partial, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return path

    async def fetch(
        self,
        registry: RegistryClient,
        ref: Reference,
        digest: str,
        on_bytes: Callable[[int], None] | None = None,
        *,
        size: int | None = None,
        tap: BlobTap | None = None,
    ) -> Path:
        """The cached file of blob ``digest`` of ``ref``'s repository, downloaded if missing
        (at most ``size`` bytes: its descriptor's).

        ``on_bytes(n)`` follows the bytes as they arrive; a cached blob counts at once.
        ``tap`` (if given) is told where to read the blob from, while it downloads.
        """
        path = self.path(digest)
        try:
            downloaded = False
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                async with _locked(path.parent / f".lock-{path.name}"):
                    if not path.is_file():  # nobody fetched it while we waited for the lock
                        await self._download(registry, ref, digest, path, on_bytes, size, tap)
                        downloaded = True
            if on_bytes is not None and not downloaded:
                on_bytes(path.stat().st_size)
        except BaseException as exc:
            if tap is not None:
                tap.finish(None, exc)
            raise
        if tap is not None:
            tap.finish(path)
        return path

    @staticmethod
    async def _download(
        registry: RegistryClient,
        ref: Reference,
        digest: str,
        path: Path,
        on_bytes: Callable[[int], None] | None,
        size: int | None,
        tap: BlobTap | None,
    ) -> None:
        """Into a temporary file, verified, then renamed into place."""
        async with _download_slot():
            handle, partial = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
            try:
                with _TappedFile(handle, tap) as out:
                    await registry.download_blob(ref, digest, out, on_bytes, size=size)
                os.replace(partial, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)


@contextlib.asynccontextmanager
async def _locked(lock: Path) -> AsyncIterator[None]:
    """``flock`` on ``lock``, waited for without blocking the event loop (and cancellable)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        wait, longest = _LOCK_POLL_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(wait)
                wait = min(wait * 2, longest)
            except OSError:  # a filesystem without locks: kernels may then fetch it twice
                break
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def _download_slot() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_DOWNLOADS)
    async with slots:
        yield


class BlobTap:
    """One blob as it reaches the cache, readable by another thread while it downloads.

    The store (on the event loop) says where the bytes are: a partial file growing, or the
    cached file; ``open()`` (on a thread) waits for that and reads front to back, waiting
    for bytes as needed. The reader hashes what it reads and refuses anything but
    ``digest``'s bytes at the end.
    """

    def __init__(self, digest: str) -> None:
        self.digest = check_digest(digest)
        # The loop the download runs on: if it stops (a kernel shutting down) without
        # finishing the tap, the reader must not wait for ever (exit joins its thread).
        self._loop = asyncio.get_running_loop()
        self._changed = threading.Condition()
        self._fd: int | None = None  # a dup of the partial file, read with pread
        self._size = 0  # bytes written so far (less after a restart)
        self._path: Path | None = None  # the verified file, once there
        self._error: BaseException | None = None
        self._finished = False

    # -- the writer (the store, on the event loop) -------------------------------------------

    def _attach(self, fd: int) -> None:
        with self._changed:
            if self._finished:  # aborted: nobody will read it
                return
            self._fd = os.dup(fd)
            self._changed.notify_all()

    def _grew(self, size: int) -> None:
        with self._changed:
            self._size = size
            self._changed.notify_all()

    def finish(self, path: Path | None, error: BaseException | None = None) -> None:
        """The blob is verified at ``path``, or could not be had (``error``)."""
        with self._changed:
            if not self._finished:
                self._finished = True
                self._path, self._error = path, error
            self._changed.notify_all()

    def abort(self) -> None:
        """Stop the reader at its next read (the unpack was cancelled)."""
        self.finish(None, ImageError("the unpack was cancelled"))

    # -- the reader (a thread) ---------------------------------------------------------------

    def open(self, stats: LayerStats | None = None) -> io.RawIOBase:
        """A stream of the blob's bytes; raises BlobUnavailable if its download failed."""
        with self._changed:
            while self._fd is None and not self._finished:
                self._wait()
            if self._error is not None:
                raise BlobUnavailable(self.digest) from self._error
            if self._fd is None:  # it was in the cache already
                assert self._path is not None
                return open(self._path, "rb", buffering=0)
            fd, self._fd = self._fd, None  # the reader owns the dup now
        return _Follower(self, fd, stats)

    def _wait(self) -> None:
        """Wait (holding ``_changed``) for news; the download's loop stopping is news too."""
        self._changed.wait(_LOOP_CHECK_S)
        if not self._finished and not self._loop.is_running():
            self._finished = True
            self._error = ImageError("the event loop downloading it stopped")

    def close(self) -> None:
        """Release the partial file if no reader took it."""
        with self._changed:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class BlobUnavailable(ImageError):
    """The blob a tap's reader wanted did not download (the download's error says why)."""


class _TappedFile(io.RawIOBase):
    """The partial file that download_blob writes, telling ``tap`` how far it has got.

    Unbuffered, so what the tap reports is in the file. ``seek`` and ``truncate`` are what
    a download that restarts from the beginning uses.
    """

    def __init__(self, fd: int, tap: BlobTap | None) -> None:
        super().__init__()
        self._fd = fd
        self._tap = tap
        self._written = 0
        if tap is not None:
            tap._attach(fd)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written = max(self._written, os.lseek(self._fd, 0, os.SEEK_CUR))
        if self._tap is not None:
            self._tap._grew(self._written)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        os.ftruncate(self._fd, size)
        self._written = size
        if self._tap is not None:
            self._tap._grew(size)
        return size

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _Follower(io.RawIOBase):
    """Reads a tapped blob front to back as it grows; EOF only once it is verified."""

    def __init__(self, tap: BlobTap, fd: int, stats: LayerStats | None) -> None:
        super().__init__()
        self._tap = tap
        self._fd = fd
        self._stats = stats
        self._position = 0
        self._hash = hashlib.new(tap.digest.partition(":")[0])

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        tap, view = self._tap, memoryview(buffer).cast("B")
        while True:
            with tap._changed:
                started = time.perf_counter()
                while self._position >= tap._size and not tap._finished:
                    tap._wait()
                if self._stats is not None:
                    self._stats.wait_s += time.perf_counter() - started
                if tap._error is not None:
                    raise BlobUnavailable(tap.digest) from tap._error
                size, finished = tap._size, tap._finished
            if self._position >= size and finished:
                self._check()
                return 0
            got = os.preadv(self._fd, [view[: size - self._position]], self._position)
            if got:  # none: truncated under us by a restarting download; wait for it again
                self._hash.update(view[:got])
                self._position += got
                return got

    def _check(self) -> None:
        if f"{self._tap.digest.partition(':')[0]}:{self._hash.hexdigest()}" != self._tap.digest:
            raise ImageError(
                f"blob {self._tap.digest} changed while it downloaded (a restarted download "
                "sent other bytes); try again"
            )

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
