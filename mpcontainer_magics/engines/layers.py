"""Unpack image layers and plain archives into a directory, never writing outside it.

Why not ``tarfile.extractall``: neither of its filters fits container layers. ``'data'``
refuses the absolute symlinks every distro image has (etc/localtime -> /usr/share/zoneinfo/...);
``'tar'`` lets a hard link reach outside the root and writes through in-image absolute
symlinks such as var/run -> /run *on the host*. Both are real escapes: a layer can plant
``x -> ../outside`` and then write ``x/authorized_keys``.

So each member's parent directory is resolved the way the kernel would inside a chroot at the
root: symlinks are read and followed relative to the root, ``..`` stops at the root, and every
step uses lstat. Whatever links earlier layers left, a write lands inside the root. The member
itself is never followed: an existing entry is unlinked first (unless old and new are both
directories) and files are created with O_EXCL|O_NOFOLLOW. Symlinks are stored exactly as
written, since they are only ever read relative to the root. Hard-link targets get the same
resolution. Member names that climb above the root with ``..`` are refused with UnsafeLayer;
a leading ``/`` or ``./`` is just stripped, as Docker does.

The result must be readable and removable by an unprivileged user and must not be a way to
gain privileges: device nodes and FIFOs are skipped, setuid/setgid bits dropped, files made
u+rw and directories u+rwx (so later layers can write into them); owners are kept only when
running as root.

OCI layer rules (image-spec layer.md): ``.wh.NAME`` deletes NAME from lower layers and
``.wh..wh..opq`` hides everything the lower layers had in its directory. Both apply to lower
layers only, and an opaque marker may come after this layer's own entries in the same
directory, so we record what this layer created and delete only the rest. That keeps the
layer a single streaming pass: nothing is buffered beyond one read chunk.

Windows image layers keep the filesystem under ``Files/`` and registry hives under ``Hives/``;
with ``windows=True`` only ``Files/`` is unpacked, as the root.

Bombs: GNU-sparse members (old GNU 'S', PAX 0.0/0.1/1.0) become sparse files, holes and
all, so a 100-byte layer cannot write 10 GiB of zeros; and an ``UnpackLimit`` counts the
data actually written (holes are free) against a size and the free space of the disk,
raising ImageTooLarge before it runs out.

Speed: gzip is inflated by ISA-L (python-isal) when installed, ~2.5x zlib here, else zlib,
on a thread of its own ahead of the tar parsing and file writes (inflating releases the GIL);
and the tar is read with tarfile's random-access reader over a forward-only stream, whose
reads are not copied through tarfile's 10 KiB stream buffer.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import queue
import shutil
import stat
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ImageError, ImageTooLarge, UnsafeLayer

try:  # ISA-L's inflate, same API as zlib's; zlib where the wheel is missing
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - depends on the install
    _inflate_lib = zlib  # type: ignore[assignment]

_INFLATE_ERRORS = (zlib.error, _inflate_lib.error)

__all__ = ["LayerStats", "UnpackLimit", "apply_layer", "extract_archive", "parse_size"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
# Other ".wh..wh." names are aufs bookkeeping (e.g. its hard-link store), not image content.
_AUFS_META = ".wh..wh."
_MAX_SYMLINKS = 40  # Linux's limit; more means a loop
_CHUNK = 1 << 20
_AHEAD = 8  # chunks read (inflated) ahead of the tar parsing
_NO_PRIVILEGE = ~(stat.S_ISUID | stat.S_ISGID)
_MIN_FREE = 0.10  # an image may not leave its disk with less free than this
_FREE_CHECK = 64 << 20  # statvfs at least every this many bytes written

Source = BinaryIO | str | os.PathLike[str]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"20G"``, ``"500M"``, ``"64k"``, ``"1.5G"`` or plain bytes, as a number of bytes."""
    spelled = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = spelled[-1:] if spelled[-1:] in _UNITS else ""
    try:
        size = int(float(spelled[: len(spelled) - len(unit)]) * _UNITS[unit])
    except ValueError:
        size = -1
    if size < 0:
        raise ValueError(f"{text!r} is not a size; write it as bytes or e.g. 500M, 20G")
    return size


@dataclass
class LayerStats:
    """Where an unpack's time went (counters, cheap enough to keep always).

    The layer is read and inflated on a thread of its own, ahead of the tar parsing and file
    writes: ``inflate_s`` and ``wait_s`` (filled by the reader of a blob still downloading:
    waiting for its bytes) are that thread's, ``behind_s`` is apply_layer's time waiting for
    it, and ``unpack_s`` the rest of apply_layer: tar parsing and file writes.
    """

    compressed: int = 0  # bytes read from the source
    inflated: int = 0  # bytes of tar (after gzip)
    written: int = 0  # bytes of file data written (holes not counted)
    files: int = 0
    inflate_s: float = 0.0
    wait_s: float = 0.0
    behind_s: float = 0.0
    total_s: float = 0.0

    @property
    def unpack_s(self) -> float:
        return max(0.0, self.total_s - self.behind_s)


class UnpackLimit:
    """What one image may unpack to: ``max_size`` bytes of file data (None: no set size),
    and never so much that the filesystem of ``disk`` is left below 10 % free.

    One limit is shared by all the layers of an image; ``layer`` names the one being applied
    (for the message). ``how`` says how to raise ``max_size`` (the env var or keyword).
    """

    def __init__(
        self,
        max_size: int | None,
        disk: Path | None,
        *,
        image: str = "the image",
        how: str = "set MPC_MAX_IMAGE_SIZE (e.g. 40G)",
    ) -> None:
        self.max_size = max_size
        self.disk = disk
        self.image = image
        self.how = how
        self.layer = "?"
        self.written = 0
        self._next_check = 0

    def charge(self, size: int) -> None:
        """``size`` more bytes are about to be written; ImageTooLarge if that is too many."""
        self.written += size
        if self.max_size is not None and self.written > self.max_size:
            raise ImageTooLarge(
                f"{self.image}, layer {self.layer}: unpacks to more than the limit of "
                f"{_human(self.max_size)} per image; refusing it (if it is meant to be that "
                f"big, {self.how})"
            )
        if self.disk is not None and self.written >= self._next_check:
            self._check_disk()

    def _check_disk(self) -> None:
        fs = os.statvfs(self.disk)  # type: ignore[arg-type]
        headroom = (fs.f_bavail - fs.f_blocks * _MIN_FREE) * fs.f_frsize
        inodes = fs.f_favail - fs.f_files * _MIN_FREE if fs.f_files else 1
        if headroom <= 0 or inodes <= 0:
            what = "free space" if headroom <= 0 else "free inodes"
            raise ImageTooLarge(
                f"{self.image}, layer {self.layer}: unpacking it would leave {self.disk} with "
                f"less than {_MIN_FREE:.0%} {what} (after {_human(self.written)} written); "
                "free space there (e.g. %container prune) or point MPC_CACHE_DIR at a "
                "bigger disk"
            )
        # Check again before the headroom could be used up (at least every 1 MiB).
        self._next_check = self.written + int(max(1 << 20, min(_FREE_CHECK, headroom / 2)))


def _human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns


def apply_layer(
    source: Source,
    root: Path,
    *,
    windows: bool = False,
    limit: UnpackLimit | None = None,
    stats: LayerStats | None = None,
) -> None:
    """Apply one OCI/Docker layer (plain or gzip tar) onto ``root``, which may hold lower layers.

    ``source`` is a binary stream (read once, front to back, to its end) or a file path.
    Raises UnsafeLayer for a member that would escape ``root``, ImageError for a corrupt or
    zstd-compressed layer, ImageTooLarge when it writes more than ``limit`` allows.
    ``stats`` (if given) is added to.
    """
    stats = stats if stats is not None else LayerStats()
    started = time.perf_counter()
    try:
        with _open_tar(source, "layer", stats) as tar:
            _Unpacker(Path(root), "layer", whiteouts=True, windows=windows, limit=limit).run(
                tar, stats
            )
    finally:
        stats.total_s += time.perf_counter() - started


def extract_archive(source: BinaryIO, root: Path) -> None:
    """Extract a plain tar (e.g. Docker's GET /containers/{id}/archive) into ``root`` safely.

    Unlike a layer, ``.wh.`` names here are ordinary files.
    """
    with _open_tar(source, "archive", LayerStats()) as tar:
        _Unpacker(Path(root), "archive", whiteouts=False, windows=False).run(tar, LayerStats())


class _Rejoined(io.RawIOBase):
    """``head`` (read to sniff the format) followed by the rest of ``stream``.

    Lets us look at the magic bytes of a stream that cannot seek, such as a pipe.
    """

    def __init__(self, head: bytes, stream: BinaryIO, stats: LayerStats) -> None:
        super().__init__()
        self._head = head
        self._stream = stream
        self._stats = stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._head[: len(buffer)] if self._head else self._stream.read(len(buffer))
        self._head = self._head[len(data) :]
        buffer[: len(data)] = data
        self._stats.compressed += len(data)
        return len(data)


class _Inflated(io.RawIOBase):
    """The gzip stream ``raw`` inflated: one or more members (pigz), zero padding between.

    zlib with ``wbits=31`` checks each member's CRC and length itself.
    """

    def __init__(self, raw: BinaryIO, stats: LayerStats) -> None:
        super().__init__()
        self._raw = raw
        self._stats = stats
        self._inflater: zlib._Decompress | None = None
        self._input = b""
        self._raw_eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while True:
            if not self._input and not self._raw_eof:
                self._input = self._raw.read(_CHUNK)
                self._raw_eof = not self._input
            if self._inflater is None:  # between members
                self._input = self._input.lstrip(b"\0")
                if not self._input:
                    if self._raw_eof:
                        return 0
                    continue
                if not self._input.startswith(_GZIP_MAGIC):
                    raise gzip.BadGzipFile("trailing data after the last gzip member")
                self._inflater = _inflate_lib.decompressobj(31)
            started = time.perf_counter()
            out = self._inflater.decompress(self._input, len(buffer))
            self._stats.inflate_s += time.perf_counter() - started
            if self._inflater.eof:
                self._input = self._inflater.unused_data
                self._inflater = None
            else:
                self._input = self._inflater.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                self._stats.inflated += len(out)
                return len(out)
            if self._raw_eof and not self._input and self._inflater is not None:
                raise EOFError("the gzip stream ends before its end-of-stream marker")


class _ReadAhead(io.RawIOBase):
    """``stream`` read on a thread of its own, up to ``_AHEAD`` chunks ahead of the reader.

    Inflating releases the GIL: on its own thread it overlaps the tar parsing and file
    writes of the caller's. An error of the stream is raised to the reader where its data
    would have come. ``close()`` stops the thread after the read it is in (for a blob still
    downloading: until more bytes arrive, or its tap is aborted) and waits for that, so that
    the stream is never read once its owner has closed it.
    """

    def __init__(self, stream: io.RawIOBase, stats: LayerStats) -> None:
        super().__init__()
        self._stream = stream
        self._stats = stats
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(_AHEAD)
        self._stopped = threading.Event()
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._read_ahead, name="mpc-layer-read")
        self._thread.start()

    def _read_ahead(self) -> None:
        try:
            while not self._stopped.is_set():
                chunk = self._stream.read(_CHUNK)
                self._hand_over(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._hand_over(exc)

    def _hand_over(self, item: bytes | BaseException) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.1)
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._pending:
            if self._ended:
                return 0
            started = time.perf_counter()
            item = self._chunks.get()
            self._stats.behind_s += time.perf_counter() - started
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            self._ended = not item
            self._pending = memoryview(item)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(queue.Empty):  # a put waiting for room ends at once
            while True:
                self._chunks.get_nowait()
        self._thread.join()
        super().close()


class _Forward:
    """A stream that tarfile's random-access reader can use: ``seek`` only forward (skipping).

    tarfile's own stream mode ("r|") copies every read through a 10 KiB buffer; its
    random-access reader over this reads members straight from our 1 MiB buffer.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        got = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self._position += got
        return int(got)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._position + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._position:
            raise io.UnsupportedOperation("a layer is read front to back")
        while self._position < target and self.read(min(_CHUNK, target - self._position)):
            pass
        return self._position

    def drain(self) -> None:
        """Read to the end (tar padding, the gzip trailer): a blob is always read whole."""
        while self.read(_CHUNK):
            pass


@contextlib.contextmanager
def _open_tar(source: Source, kind: str, stats: LayerStats) -> Iterator[tarfile.TarFile]:
    """A front-to-back TarFile over ``source``; format errors while reading become ImageError."""
    with contextlib.ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            stream: BinaryIO = stack.enter_context(open(source, "rb", buffering=0))
        else:
            stream = source
        head = b""
        while len(head) < len(_ZSTD_MAGIC) and (chunk := stream.read(len(_ZSTD_MAGIC) - len(head))):
            head += chunk
        if head.startswith(_ZSTD_MAGIC):
            raise ImageError(
                f"the {kind} is zstd-compressed, which is not supported; re-push the image with "
                "gzip layers (e.g. buildx --output compression=gzip,force-compression=true)"
            )
        raw: io.RawIOBase = _Rejoined(head, stream, stats)
        if head.startswith(_GZIP_MAGIC):
            raw = _Inflated(raw, stats)  # type: ignore[arg-type]
        ahead = stack.enter_context(contextlib.closing(_ReadAhead(raw, stats)))
        tar_stream = _Forward(io.BufferedReader(ahead, _CHUNK))  # type: ignore[arg-type]
        try:
            with tarfile.open(fileobj=tar_stream, mode="r:") as tar:  # type: ignore[call-overload]
                yield tar
            tar_stream.drain()
        except (tarfile.TarError, EOFError, *_INFLATE_ERRORS, gzip.BadGzipFile) as exc:
            raise ImageError(
                f"the {kind} is not a valid plain or gzip tar archive ({exc or type(exc).__name__})"
                "; the image or archive is corrupt, re-create it"
            ) from exc


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: Path, st: os.stat_result) -> None:
    # rmtree never follows symlinks inside the tree it deletes.
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Unpacker:
    """One pass over one tar stream into ``root``."""

    def __init__(
        self,
        root: Path,
        kind: str,
        *,
        whiteouts: bool,
        windows: bool,
        limit: UnpackLimit | None = None,
    ) -> None:
        self.root = root
        self.root_text = os.fspath(root)
        # Directories resolved in this pass (name parts -> real parts). Only removing an
        # entry can make one stale (new entries never replace an existing directory without
        # removing it first), so every removal clears it.
        self.resolved: dict[tuple[str, ...], list[str]] = {}
        self.limit = limit
        self.stats = LayerStats()
        self.kind = kind
        self.whiteouts = whiteouts
        self.windows = windows
        self.as_root = os.geteuid() == 0
        # Symlink-free paths (relative, "/"-joined) that this pass created, with their
        # ancestors: whiteouts and opaque markers hide lower layers only, never these.
        self.touched: set[str] = {""}
        # Directory mtimes are set last: creating entries inside a directory changes its mtime.
        self.dir_times: list[tuple[Path, float]] = []

    def run(self, tar: tarfile.TarFile, stats: LayerStats) -> None:
        self.stats = stats
        for member in tar:
            parts = self._parts(member.name, f"{self.kind} member {member.name!r}")
            if not parts:  # the root itself, or (Windows) outside Files/
                continue
            *parent, base = parts
            if self.whiteouts and any(p.startswith(_AUFS_META) for p in parent):
                continue  # inside an aufs metadata directory
            if self.whiteouts and base.startswith(_WHITEOUT):
                self._whiteout(member.name, parent, base)
            elif not (member.ischr() or member.isblk() or member.isfifo()):
                self._unpack(tar, member, parent, base)
        for path, mtime in reversed(self.dir_times):
            # The directory may have been whited out or replaced later in this pass.
            with contextlib.suppress(OSError):
                os.utime(path, (mtime, mtime), follow_symlinks=False)

    def _parts(self, name: str, subject: str) -> list[str] | None:
        """``name`` as path components below the root; None if outside the unpacked tree.

        ``..`` is resolved lexically, as Docker does with filepath.Clean.
        """
        parts: list[str] = []
        for part in name.split("/"):
            if part == "..":
                if not parts:
                    raise UnsafeLayer(
                        f"{subject} climbs above the root with '..'; "
                        "refusing to unpack it (it is corrupt or malicious)"
                    )
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        if self.windows:
            if parts[:1] != ["Files"]:  # Hives/ (registry hives) and layer metadata
                return None
            del parts[0]
        return parts

    def _resolve(self, parts: list[str], member: str, *, create: bool) -> list[str] | None:
        """The real, symlink-free location of directory ``parts``, resolved chroot-style.

        With ``create``, missing directories are made (and a non-directory in the way is
        replaced, as an upper layer's directory hides a lower file); without, None if any
        component is missing or not a directory.
        """
        known = self.resolved.get(tuple(parts))
        if known is not None:
            return list(known)
        resolved: list[str] = []
        pending = parts[::-1]  # a stack: a symlink's target is pushed in front of the rest
        followed = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:  # at the root, ".." is the root: it cannot climb out
                    resolved.pop()
                continue
            # A string, not a Path: this runs for every component of every member.
            path = "/".join((self.root_text, *resolved, part))
            st = _lstat(path)
            if st is not None and stat.S_ISLNK(st.st_mode):
                followed += 1
                if followed > _MAX_SYMLINKS:
                    raise ImageError(
                        f"{self.kind} member {member!r}: too many levels of symbolic links in "
                        f"its directory path; the {self.kind} is corrupt"
                    )
                target = os.readlink(path)
                if target.startswith("/"):
                    resolved = []  # absolute links are relative to the root, not the host
                pending.extend(target.split("/")[::-1])
                continue
            if st is None or not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                if st is not None:
                    self.resolved.clear()
                    os.unlink(path)
                os.mkdir(path, 0o755)
            resolved.append(part)
        self.resolved[tuple(parts)] = list(resolved)
        return resolved

    def _touch(self, parts: list[str]) -> None:
        for end in range(1, len(parts) + 1):
            self.touched.add("/".join(parts[:end]))

    def _whiteout(self, member: str, parent: list[str], base: str) -> None:
        opaque = base == _OPAQUE
        name = base[len(_WHITEOUT) :]
        if not opaque and base.startswith(_AUFS_META):
            return
        if name in ("", ".", ".."):
            raise UnsafeLayer(
                f"layer member {member!r} is a whiteout of {name!r}, which is not a file name; "
                "refusing to unpack it (it is corrupt or malicious)"
            )
        where = self._resolve(parent, member, create=False)
        if where is None:
            return  # nothing below to hide
        if not opaque:
            self._hide([*where, name])
            return
        self._touch(where)  # the directory itself is part of this layer
        for child in sorted(os.listdir(self.root.joinpath(*where))):
            self._hide([*where, child])

    def _hide(self, parts: list[str]) -> None:
        """Delete what lower layers have at ``parts``, keeping anything this pass created."""
        path = self.root.joinpath(*parts)
        st = _lstat(path)
        if st is None:
            return
        if "/".join(parts) not in self.touched:
            self.resolved.clear()
            _remove(path, st)
        elif stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                self._hide([*parts, child])

    def _link_source(self, member: tarfile.TarInfo) -> Path:
        """Where hard link ``member`` points, resolved inside the root like a member's name."""
        subject = f"{self.kind} member {member.name!r}, a hard link to {member.linkname!r},"
        parts = self._parts(member.linkname, subject)
        if not parts:
            raise UnsafeLayer(
                f"{self.kind} member {member.name!r} is a hard link to {member.linkname!r}, "
                "outside the unpacked tree; refusing to unpack it"
            )
        *parent, base = parts
        where = self._resolve(parent, member.name, create=False)
        source = None if where is None else self.root.joinpath(*where, base)
        st = None if source is None else _lstat(source)
        if source is None or st is None or stat.S_ISDIR(st.st_mode):
            raise ImageError(
                f"{self.kind} member {member.name!r} is a hard link to {member.linkname!r}, "
                f"which is missing or a directory; the {self.kind} is corrupt"
            )
        return source

    def _unpack(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: list[str], base: str
    ) -> None:
        source = self._link_source(member) if member.islnk() else None
        where = self._resolve(parent, member.name, create=True)
        assert where is not None  # create=True always yields a directory
        self._touch([*where, base])
        path = self.root.joinpath(*where, base)
        if source == path:
            return  # a hard link to itself: already in place
        existing = _lstat(path)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            self.resolved.clear()
            _remove(path, existing)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            os.chmod(path, member.mode & 0o7777 & _NO_PRIVILEGE | stat.S_IRWXU)
            self.dir_times.append((path, member.mtime))
        elif member.issym():
            os.symlink(member.linkname, path)
        elif source is not None:
            os.link(source, path, follow_symlinks=False)
        else:  # regular files, and (as POSIX says) unknown types
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(path, flags, 0o600)
            try:
                self._write_data(tar, member, out)
                os.fchmod(out, member.mode & 0o7777 & _NO_PRIVILEGE | 0o600)
                self._own_and_date(out, member)  # by descriptor: no path lookups
            finally:
                os.close(out)
            self.stats.files += 1
            return
        self.stats.files += 1
        self._own_and_date(path, member)

    def _own_and_date(self, target: int | Path, member: tarfile.TarInfo) -> None:
        """Owner (as root only) and mtime of a new entry (a directory's mtime comes last)."""
        by_path = not isinstance(target, int)
        if self.as_root:
            with contextlib.suppress(OSError):
                os.chown(target, member.uid, member.gid, follow_symlinks=not by_path)
        if not member.isdir():
            if by_path:
                os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            else:
                os.utime(target, (member.mtime, member.mtime))

    def _write_data(self, tar: tarfile.TarFile, member: tarfile.TarInfo, out: int) -> None:
        """The member's data into file ``out``; a GNU-sparse one with holes where it has them.

        Its stored data is the data regions, one after the other; a hole is a seek, and the
        file is truncated to its full size, so no zero of a hole is ever written.
        """
        regions = member.sparse if member.issparse() else [(0, member.size)]
        source = tar.fileobj
        source.seek(member.offset_data)
        buffer = memoryview(bytearray(min(_CHUNK, max((n for _, n in regions), default=0))))
        for offset, length in regions:
            os.lseek(out, offset, os.SEEK_SET)
            left = length
            while left:
                got = source.readinto(buffer[: min(left, len(buffer))])
                if not got:
                    raise tarfile.ReadError(f"unexpected end of data in member {member.name!r}")
                if self.limit is not None:  # chunk by chunk: the disk check sees each
                    self.limit.charge(got)
                _write_all(out, buffer[:got])
                left -= got
            self.stats.written += length
        if member.issparse():
            os.ftruncate(out, member.size)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]
