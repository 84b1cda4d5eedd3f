"""Tests of safe layer unpacking, on tar streams crafted here.

Every escape test unpacks into ``tmp_path/"root"`` and then checks that nothing appeared (or
changed) in ``tmp_path/"outside"`` or on the host: the point of layers.py is that no layer,
however crafted, writes outside its root.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpcontainer_magics.engines.layers import (
    LayerStats,
    UnpackLimit,
    apply_layer,
    extract_archive,
    parse_size,
)
from mpcontainer_magics.errors import ImageError, ImageTooLarge, UnsafeLayer

MTIME = 1672531200  # 2023-01-01T00:00:00Z
PROBE = "mpc-escape-probe"  # a name no host directory has

Member = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, linkname, MTIME
    return info


def file(name: str, data: bytes = b"data", mode: int = 0o644) -> Member:
    info = _info(name, tarfile.REGTYPE, mode)
    info.size = len(data)
    return info, data


def directory(name: str, mode: int = 0o755) -> Member:
    return _info(name, tarfile.DIRTYPE, mode), None


def symlink(name: str, target: str) -> Member:
    return _info(name, tarfile.SYMTYPE, 0o777, target), None


def hardlink(name: str, target: str) -> Member:
    return _info(name, tarfile.LNKTYPE, 0o644, target), None


def special(name: str, kind: bytes) -> Member:
    return _info(name, kind, 0o666), None


def tar(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply(root: Path, *members: Member, windows: bool = False) -> None:
    apply_layer(io.BytesIO(tar(*members)), root, windows=windows)


def tree(root: Path) -> dict[str, object]:
    """Everything under ``root``: directories as "/", symlinks as "-> target", files' bytes."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "/"
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where an escape from root would land; must not exist after any test."""
    return tmp_path / "outside"


# --- names climbing out with .. ----------------------------------------------------------------


@pytest.mark.parametrize(
    "member",
    [
        file("../outside/x"),
        file("a/../../outside/x"),
        file("./../outside/x"),
        file("/../outside/x"),
        directory("../outside"),
        symlink("../outside", "/etc"),
        hardlink("../outside/x", "etc/passwd"),
    ],
    ids=lambda m: m[0].name,
)
@pytest.mark.parametrize("unpack", ["layer", "archive"])
def test_dotdot_escapes_are_refused(root, outside, member, unpack):
    data = tar(file("etc/passwd"), member)
    message = f"member {member[0].name!r} climbs above the root with '..'; refusing"
    with pytest.raises(UnsafeLayer, match=re.escape(message)):
        if unpack == "layer":
            apply_layer(io.BytesIO(data), root)
        else:
            extract_archive(io.BytesIO(data), root)
    assert not outside.exists()


def test_dotdot_escape_from_windows_files(root, outside):
    with pytest.raises(UnsafeLayer, match=re.escape("'Files/../../outside/x' climbs above")):
        apply(root, file("Files/../../outside/x"), windows=True)
    assert not outside.exists()


def test_escape_message_is_one_line(root):
    with pytest.raises(UnsafeLayer) as info:
        apply(root, file("../x"))
    assert "\n" not in str(info.value)


def test_leading_slash_and_dot_are_stripped(root):
    apply(root, file("/etc/a", b"a"), file("./etc/b", b"b"), file("//c", b"c"), file("d/./e"))
    assert tree(root) == {"etc": "/", "etc/a": b"a", "etc/b": b"b", "c": b"c", "d": "/",
                          "d/e": b"data"}  # fmt: skip


def test_harmless_dotdot_inside_the_root(root):
    apply(root, file("a/b/../c", b"c"))
    assert tree(root) == {"a": "/", "a/c": b"c"}


# --- symlinks planted by lower layers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "target", "member", "lands_at"),
    [
        ("var/run", "/run", f"var/run/{PROBE}", f"run/{PROBE}"),
        ("x", "../../outside", "x/y", "outside/y"),
        ("a/b", "../../../outside", "a/b/c/d", "outside/c/d"),
        ("host", "{outside}", "host/y", "{outside_in_root}/y"),
        ("up", "..", "up/up/y", "y"),
        ("etc", "/", "etc/etc/y", "y"),
        ("chain", "var/run", f"chain/{PROBE}", f"run/{PROBE}"),
    ],
)
def test_writes_through_planted_symlinks_stay_inside(root, outside, link, target, member, lands_at):
    target = target.format(outside=outside)
    lands_at = lands_at.format(outside_in_root=str(outside).lstrip("/"))
    lower = [directory("var"), symlink("var/run", "/run"), directory("a")]
    if link != "var/run":
        lower.append(symlink(link, target))
    apply(root, *lower)
    apply(root, file(member, b"through"))
    assert (root / lands_at).read_bytes() == b"through"
    assert os.readlink(root / link) == target  # the link itself is untouched
    assert not outside.exists()
    assert not Path("/run", PROBE).exists()


@pytest.mark.parametrize(
    "replacement",
    [file("f", b"new", 0o777), directory("f", 0o777), symlink("f", "elsewhere")],
    ids=["file", "directory", "symlink"],
)
def test_replacing_a_planted_symlink_never_follows_it(root, outside, replacement):
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"secret")
    secret.chmod(0o600)
    before = secret.stat()
    apply(root, symlink("f", str(secret)))
    apply(root, replacement)
    after = secret.stat()
    assert secret.read_bytes() == b"secret" and list(outside.iterdir()) == [secret]
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    kind = replacement[0]
    assert os.path.islink(root / "f") == kind.issym()
    assert os.path.isdir(root / "f") == kind.isdir()


def test_symlink_targets_are_kept_as_written(root):
    apply(root, directory("etc"), symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
          symlink("etc/rel", "../x/../y"), symlink("dangling", "/no/such/file"))  # fmt: skip
    assert tree(root) == {"etc": "/", "etc/localtime": "-> /usr/share/zoneinfo/UTC",
                          "etc/rel": "-> ../x/../y", "dangling": "-> /no/such/file"}  # fmt: skip


def test_symlink_loop_in_a_parent_is_an_error(root):
    apply(root, symlink("loop", "loop"))
    with pytest.raises(ImageError, match="too many levels of symbolic links"):
        apply(root, file("loop/x"))


# --- hard links --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "linkname", "error"),
    [
        ([], "../outside/secret", UnsafeLayer),
        ([], "/../outside/secret", UnsafeLayer),
        ([symlink("h", "{outside}")], "h/secret", ImageError),
        ([symlink("h", "../../outside")], "h/secret", ImageError),
        ([symlink("h", "{outside}/secret")], "h", None),  # links the symlink, not its target
    ],
)
def test_hard_links_cannot_reach_outside(root, outside, lower, linkname, error):
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"secret")
    apply(root, *[symlink(i.name, i.linkname.format(outside=outside)) for i, _ in lower])
    if error is None:
        apply(root, hardlink("l", linkname))
        assert os.path.samestat(os.lstat(root / "l"), os.lstat(root / "h"))
    else:
        with pytest.raises(error, match="hard link"):
            apply(root, hardlink("l", linkname))
        assert not os.path.lexists(root / "l")
    assert secret.stat().st_nlink == 1 and secret.read_bytes() == b"secret"


def test_hard_links_inside_the_root(root):
    apply(root, file("a", b"A"), hardlink("b", "a"), hardlink("c", "/a"), hardlink("a", "a"))
    assert os.path.samestat(os.stat(root / "a"), os.stat(root / "b"))
    assert os.path.samestat(os.stat(root / "a"), os.stat(root / "c"))
    assert (root / "a").read_bytes() == b"A"


@pytest.mark.parametrize("linkname", ["missing", "dir"])
def test_hard_link_to_missing_or_directory_is_an_error(root, linkname):
    with pytest.raises(ImageError, match="missing or a directory"):
        apply(root, directory("dir"), hardlink("l", linkname))


def test_windows_hard_link_outside_files_is_refused(root):
    with pytest.raises(UnsafeLayer, match="outside the unpacked tree"):
        apply(root, file("Hives/x"), hardlink("Files/l", "Hives/x"), windows=True)


# --- OCI whiteouts -----------------------------------------------------------------------------


LOWER = [directory("a"), file("a/x"), file("a/y"), file("b"), directory("c"), file("c/z"),
         symlink("s", "a")]  # fmt: skip


def test_whiteouts_delete_lower_entries(root):
    apply(root, *LOWER)
    apply(root, file("a/.wh.x"), file(".wh.b"), file(".wh.c"), file(".wh.s"), file(".wh.none"))
    assert tree(root) == {"a": "/", "a/y": b"data"}


@pytest.mark.parametrize(
    ("upper", "expected"),
    [
        # The marker first, as most tools write it.
        ([file("d/.wh..wh..opq"), file("d/new", b"new")], {"d/new": b"new"}),
        # The marker after this layer's own entries in the same directory: they stay.
        (
            [file("d/new", b"new"), file("d/sub/new2", b"new"), file("d/.wh..wh..opq")],
            {"d/new": b"new", "d/sub": "/", "d/sub/new2": b"new"},
        ),
        # Only the marker: the directory stays, empty.
        ([directory("d"), file("d/.wh..wh..opq")], {}),
    ],
    ids=["marker-first", "marker-last", "marker-only"],
)
def test_opaque_whiteout_hides_only_lower_contents(root, upper, expected):
    apply(root, directory("d"), file("d/old"), directory("d/sub"), file("d/sub/old2"),
          symlink("d/link", "/"), directory("e"), file("e/keep"))  # fmt: skip
    apply(root, *upper)
    assert tree(root) == {"d": "/", "e": "/", "e/keep": b"data", **expected}


def test_whiteout_of_this_layers_own_entry_keeps_it(root):
    apply(root, directory("a"), file("a/lower"))
    apply(root, file("a/mine", b"mine"), file(".wh.a"))
    assert tree(root) == {"a": "/", "a/mine": b"mine"}


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "a/.wh..."])
def test_whiteouts_naming_no_file_are_refused(root, outside, name):
    with pytest.raises(UnsafeLayer, match="whiteout"):
        apply(root, directory("a"), file(name))
    assert (root / "a").is_dir() and not outside.exists()


def test_aufs_metadata_is_skipped(root):
    apply(root, directory(".wh..wh.plnk"), file(".wh..wh.plnk/1.2"), file(".wh..wh.aufs"))
    assert tree(root) == {}


# --- replacing entries -------------------------------------------------------------------------


def test_unlink_then_recreate_unless_both_are_directories(root):
    apply(root, file("p"), directory("q"), file("q/inner"), directory("r"), file("r/keep"),
          symlink("s", "r"))  # fmt: skip
    apply(root, directory("p"), file("p/c"), file("q", b"Q"), directory("r", 0o700),
          directory("s"))  # fmt: skip
    assert tree(root) == {"p": "/", "p/c": b"data", "q": b"Q", "r": "/", "r/keep": b"data",
                          "s": "/"}  # fmt: skip
    assert stat.S_IMODE(os.stat(root / "r").st_mode) == 0o700


def test_implicit_parent_replaces_a_lower_file(root):
    apply(root, file("p"))
    apply(root, file("p/child", b"c"))
    assert tree(root) == {"p": "/", "p/child": b"c"}


# --- modes, special files, times ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "mode"),
    [
        (file("f", mode=0o4755), 0o755),
        (file("f", mode=0o2755), 0o755),
        (file("f", mode=0o6711), 0o711),
        (file("f", mode=0o000), 0o600),
        (file("f", mode=0o444), 0o644),
        (directory("f", 0o2775), 0o775),
        (directory("f", 0o500), 0o700),
        (directory("f", 0o1777), 0o1777),
    ],
)
def test_modes_drop_privileges_and_keep_the_owner_able_to_write(root, member, mode):
    apply(root, member)
    assert stat.S_IMODE(os.lstat(root / "f").st_mode) == mode


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_nodes_and_fifos_are_skipped(root, kind):
    apply(root, directory("dev"), special("dev/node", kind), file("dev/after"))
    assert tree(root) == {"dev": "/", "dev/after": b"data"}


def test_mtimes_are_set_without_following_links(root, tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"")
    before = target.stat().st_mtime_ns
    apply(root, directory("d"), file("d/f"), symlink("d/l", str(target)))
    assert os.lstat(root / "d").st_mtime == MTIME  # set after its entries were created
    assert os.lstat(root / "d/f").st_mtime == MTIME
    assert os.lstat(root / "d/l").st_mtime == MTIME
    assert target.stat().st_mtime_ns == before


# --- Windows layers ----------------------------------------------------------------------------


def test_windows_layers_map_files_and_skip_hives(root):
    apply(root, file("old"), file("gone"), windows=False)
    apply(
        root,
        directory("Files"),
        file("Files/hello.txt", b"hello"),
        directory("Files/Windows"),
        file("Files/Windows/System32/x", b"x"),
        file("Files/.wh.gone"),
        directory("Hives"),
        file("Hives/DefaultUser_Delta", b"regf"),
        file("UtilityVM/Files/y"),
        file("top"),
        windows=True,
    )
    assert tree(root) == {"old": b"data", "hello.txt": b"hello", "Windows": "/",
                          "Windows/System32": "/", "Windows/System32/x": b"x"}  # fmt: skip


def test_windows_opaque_whiteout(root):
    apply(root, directory("d"), file("d/old"))
    apply(root, file("Files/d/.wh..wh..opq"), file("Files/d/new"), windows=True)
    assert tree(root) == {"d": "/", "d/new": b"data"}


# --- formats and sources -----------------------------------------------------------------------


class Trickle:
    """A non-seekable stream handing out at most 3 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        size = 3 if size < 0 else min(size, 3)
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


def multi_member_gzip(data: bytes) -> bytes:
    # pigz and concatenated gzip streams: one tar split across several gzip members.
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


@pytest.mark.parametrize(
    "encode",
    [lambda d: d, gzip.compress, multi_member_gzip],
    ids=["plain", "gzip", "multi-member-gzip"],
)
@pytest.mark.parametrize("source", ["bytesio", "trickle", "path", "str"])
def test_compression_is_detected_from_the_bytes(root, tmp_path, encode, source):
    data = encode(tar(directory("etc"), file("etc/hostname", b"box\n")))
    path = tmp_path / "layer.bin"
    path.write_bytes(data)
    stream = {"bytesio": io.BytesIO(data), "trickle": Trickle(data), "path": path,
              "str": str(path)}[source]  # fmt: skip
    apply_layer(stream, root)
    assert tree(root) == {"etc": "/", "etc/hostname": b"box\n"}


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x28\xb5\x2f\xfd" + b"\0" * 64, "zstd-compressed, which is not supported; re-push"),
        (b"", "not a valid plain or gzip tar"),
        (b"this is not a tar archive" * 40, "not a valid plain or gzip tar"),
        (gzip.compress(b"x" * 600), "not a valid plain or gzip tar"),
        (half(gzip.compress(tar(file("f", b"x" * 5000)))), "not a valid plain or gzip tar"),
        (half(tar(file("f", b"x" * 5000))), "not a valid plain or gzip tar"),
    ],
    ids=["zstd", "empty", "garbage", "gzip-of-garbage", "truncated-gzip", "truncated-tar"],
)
def test_unsupported_or_corrupt_layers(root, data, match):
    with pytest.raises(ImageError, match=match) as info:
        apply_layer(io.BytesIO(data), root)
    assert "\n" not in str(info.value)


class Download(io.RawIOBase):
    """A layer still downloading: ``data`` as it arrives, then (optionally) a failure."""

    def __init__(self, data: bytes, then: BaseException | None = None) -> None:
        super().__init__()
        self.data, self.then = data, then
        self.more = threading.Event()  # the rest "arrives" only when set

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self.data:
            self.more.wait(5)
            if self.then is not None:
                raise self.then
            return 0
        size = min(len(buffer), len(self.data), 4096)
        buffer[:size], self.data = self.data[:size], self.data[size:]
        return size


def reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mpc-layer-read"]


def test_a_failing_download_fails_the_layer_with_its_own_error(root):
    # The layer is read (and inflated) on a thread ahead of the unpacking: what went wrong
    # there is raised here, as it was.
    data = gzip.compress(tar(*(file(f"f{i}", os.urandom(3000)) for i in range(40))))
    source = Download(data[: len(data) // 2], then=ImageError("the download failed"))
    source.more.set()
    with pytest.raises(ImageError, match=r"^the download failed$"):
        apply_layer(source, root)
    assert reading_threads() == []


def test_the_read_ahead_has_ended_when_a_bad_layer_fails(root):
    # Its owner closes the source next: a thread still in a read could then read a closed
    # descriptor (or another file's, reusing its number).
    members = [file("../escape"), *(file(f"f{i}", os.urandom(3000)) for i in range(40))]
    source = Download(gzip.compress(tar(*members))[:8192])  # then the download stalls
    more_arrives = threading.Timer(0.3, source.more.set)
    more_arrives.start()
    with pytest.raises(UnsafeLayer):
        apply_layer(source, root)
    assert reading_threads() == []
    more_arrives.join()


# --- plain archives ----------------------------------------------------------------------------


def test_extract_archive_treats_whiteout_names_as_files(root):
    (root / "x").write_bytes(b"keep")
    archive = tar(file(".wh.x"), file(".wh..wh..opq"), directory("d"), file("d/.wh..wh..opq"))
    extract_archive(io.BytesIO(archive), root)
    assert tree(root) == {"x": b"keep", ".wh.x": b"data", ".wh..wh..opq": b"data", "d": "/",
                          "d/.wh..wh..opq": b"data"}  # fmt: skip


def test_extract_archive_is_safe_too(root, outside):
    (root / "link").symlink_to(outside)
    extract_archive(io.BytesIO(tar(file("link/x"))), root)
    assert (root / str(outside).lstrip("/") / "x").exists() and not outside.exists()


def test_a_directory_replaced_by_a_link_later_in_the_layer_is_resolved_again(root, outside):
    # The unpacker remembers resolved directories within a pass; replacing one with a
    # symlink must not leave a write going where the directory was resolved to before.
    outside.mkdir()
    apply(
        root,
        directory("a"),
        file("a/x", b"first"),
        symlink("a", str(outside)),  # absolute: it means <root>/<outside>, not the host's
        file("a/y", b"second"),
    )
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "y").read_bytes() == b"second"
    assert os.readlink(root / "a") == str(outside)


# -- bombs: sparse members, and what an image may unpack to ------------------------------------

GIB = 1 << 30
SPARSE_SIZE = 10 * GIB
#: Where the sparse test file has data; everything else is a hole.
SPARSE_DATA = {0: b"head", 5 * GIB: b"middle", SPARSE_SIZE - 3: b"end"}
#: GNU tar's sparse formats: the old GNU 'S' type, and the three PAX ones.
SPARSE_FORMATS = {
    "gnu": ["--format=gnu"],
    "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
    "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
    "pax-1.0": ["--format=pax", "--sparse-version=1.0"],
}


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 GiB file of a few bytes and holes (GNU tar archives it as a sparse member)."""
    path = tmp_path_factory.mktemp("sparse") / "big"
    with open(path, "wb") as out:
        for offset, data in SPARSE_DATA.items():
            out.seek(offset)
            out.write(data)
    return path


@pytest.mark.parametrize("form", SPARSE_FORMATS)
def test_a_sparse_member_is_written_as_a_sparse_file(tmp_path, sparse_file, form):
    # Before, a 102-byte layer like this became 10 GiB of real zeros on disk.
    layer = tmp_path / "layer.tar.gz"
    subprocess.run(
        ["tar", "--sparse", *SPARSE_FORMATS[form], "-czf", layer, "-C", sparse_file.parent,
         sparse_file.name], check=True,
    )  # fmt: skip
    assert layer.stat().st_size < 512  # a tiny layer
    stats = LayerStats()
    (tmp_path / "root").mkdir()
    # Holes are not data: a 1 MiB limit is plenty.
    apply_layer(layer, tmp_path / "root", limit=UnpackLimit(1 << 20, tmp_path), stats=stats)
    unpacked = tmp_path / "root" / "big"
    st = unpacked.stat()
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 <= 1 << 20  # a few blocks, not 10 GiB
    assert stats.written < 64 << 10
    with open(unpacked, "rb") as back:
        for offset, data in SPARSE_DATA.items():
            assert os.pread(back.fileno(), len(data), offset) == data
        assert os.pread(back.fileno(), 8, GIB) == bytes(8)  # a hole reads as zeros


class Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read (a bomb's member, never in memory)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def gzip_bomb(size: int, name: str = "zeros") -> bytes:
    """A gzip layer of one member of ``size`` zero bytes (about a thousandth of it)."""
    out = io.BytesIO()
    info = _info(name, tarfile.REGTYPE, 0o644)
    info.size = size
    with (
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        archive.addfile(info, io.BufferedReader(Zeros(size)))
    return out.getvalue()


def test_a_gzip_bomb_stops_at_the_size_limit(tmp_path):
    bomb = gzip_bomb(256 << 20)
    assert len(bomb) < 1 << 20
    limit = UnpackLimit(16 << 20, tmp_path, image="bomb:1 (linux/amd64)")
    limit.layer = "sha256:" + "ab" * 32
    (tmp_path / "root").mkdir()
    with pytest.raises(ImageTooLarge) as caught:
        apply_layer(io.BytesIO(bomb), tmp_path / "root", limit=limit)
    message = str(caught.value)
    assert message.startswith(f"bomb:1 (linux/amd64), layer {limit.layer}: ")
    assert "16.0 MiB" in message and "MPC_MAX_IMAGE_SIZE" in message and "\n" not in message
    assert limit.written <= (16 << 20) + (1 << 20)  # stopped within a chunk of the limit
    assert (tmp_path / "root" / "zeros").stat().st_size <= 16 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB filesystem of its own (tmpfs), for the free-space rule."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", disk], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", disk], check=True)


def test_an_image_may_not_leave_its_disk_below_a_tenth_free(small_disk):
    # No set size: the disk's free space is the limit.
    limit = UnpackLimit(None, small_disk, image="bomb:1 (linux/amd64)")
    (small_disk / "root").mkdir()
    with pytest.raises(ImageTooLarge, match=r"less than 10% free space.* free space there"):
        apply_layer(io.BytesIO(gzip_bomb(64 << 20)), small_disk / "root", limit=limit)
    fs = os.statvfs(small_disk)
    assert fs.f_bavail * fs.f_frsize >= 0.09 * fs.f_blocks * fs.f_frsize  # within a chunk


def test_a_layer_within_its_limit_unpacks(tmp_path):
    limit = UnpackLimit(1 << 20, tmp_path)
    apply_layer(io.BytesIO(gzip.compress(tar(file("etc/a", b"a" * 1000)))), tmp_path, limit=limit)
    assert limit.written == 1000 and (tmp_path / "etc/a").read_bytes() == b"a" * 1000


@pytest.mark.parametrize(
    ("text", "size"),
    [("500M", 500 << 20), ("20G", 20 << 30), ("20GiB", 20 << 30), ("1.5k", 1536), ("123", 123)],
)
def test_sizes_as_people_write_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-5M", "", "5X"])
def test_a_size_that_is_not_one(text):
    with pytest.raises(ValueError, match=r"is not a size; write it as bytes or e\.g\. 500M"):
        parse_size(text)
