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
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ImageError, UnsafeLayer

__all__ = ["apply_layer", "extract_archive"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
# Other ".wh..wh." names are aufs bookkeeping (e.g. its hard-link store), not image content.
_AUFS_META = ".wh..wh."
_MAX_SYMLINKS = 40  # Linux's limit; more means a loop
_CHUNK = 1 << 20
_NO_PRIVILEGE = ~(stat.S_ISUID | stat.S_ISGID)

Source = BinaryIO | str | os.PathLike[str]


def apply_layer(source: Source, root: Path, *, windows: bool = False) -> None:
    """Apply one OCI/Docker layer (plain or gzip tar) onto ``root``, which may hold lower layers.

    ``source`` is a binary stream (read once, front to back) or a file path. Raises
    UnsafeLayer for a member that would escape ``root``, ImageError for a corrupt or
    zstd-compressed layer.
    """
    with _open_tar(source, "layer") as tar:
        _Unpacker(Path(root), "layer", whiteouts=True, windows=windows).run(tar)


def extract_archive(source: BinaryIO, root: Path) -> None:
    """Extract a plain tar (e.g. Docker's GET /containers/{id}/archive) into ``root`` safely.

    Unlike a layer, ``.wh.`` names here are ordinary files.
    """
    with _open_tar(source, "archive") as tar:
        _Unpacker(Path(root), "archive", whiteouts=False, windows=False).run(tar)


class _Rejoined(io.RawIOBase):
    """``head`` (read to sniff the format) followed by the rest of ``stream``.

    Lets us look at the magic bytes of a stream that cannot seek, such as a pipe.
    """

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:
        data = self._head[: len(buffer)] if self._head else self._stream.read(len(buffer))
        self._head = self._head[len(data) :]
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _open_tar(source: Source, kind: str) -> Iterator[tarfile.TarFile]:
    """A streaming TarFile over ``source``; format errors while reading become ImageError."""
    with contextlib.ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            stream: BinaryIO = stack.enter_context(open(source, "rb"))
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
        raw: BinaryIO = io.BufferedReader(_Rejoined(head, stream), _CHUNK)
        if head.startswith(_GZIP_MAGIC):
            # GzipFile, not tarfile's own "r|gz": it handles multi-member gzip (pigz).
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        try:
            yield stack.enter_context(tarfile.open(fileobj=raw, mode="r|"))
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ImageError(
                f"the {kind} is not a valid plain or gzip tar archive ({exc or type(exc).__name__})"
                "; the image or archive is corrupt, re-create it"
            ) from exc


def _lstat(path: Path) -> os.stat_result | None:
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

    def __init__(self, root: Path, kind: str, *, whiteouts: bool, windows: bool) -> None:
        self.root = root
        self.kind = kind
        self.whiteouts = whiteouts
        self.windows = windows
        self.as_root = os.geteuid() == 0
        # Symlink-free paths (relative, "/"-joined) that this pass created, with their
        # ancestors: whiteouts and opaque markers hide lower layers only, never these.
        self.touched: set[str] = {""}
        # Directory mtimes are set last: creating entries inside a directory changes its mtime.
        self.dir_times: list[tuple[Path, float]] = []

    def run(self, tar: tarfile.TarFile) -> None:
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
            path = self.root.joinpath(*resolved, part)
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
                    os.unlink(path)
                os.mkdir(path, 0o755)
            resolved.append(part)
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
            with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
                data = tar.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, _CHUNK)
                os.fchmod(out.fileno(), member.mode & 0o7777 & _NO_PRIVILEGE | 0o600)
        if self.as_root:
            with contextlib.suppress(OSError):
                os.lchown(path, member.uid, member.gid)
        if not member.isdir():
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
