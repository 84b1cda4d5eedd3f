#!/usr/bin/env python3
"""Build the multi-platform busybox test image as an OCI image layout (stdlib only).

Usage: build_test_image.py OUT_DIR amd64=DEB arm64=DEB s390x=DEB ppc64el=DEB armhf=DEB

Each DEB is Debian's busybox-static for that architecture. The layout gets three references:
  1.35       -> an OCI image index with one manifest per platform
  amd64only  -> the linux/amd64 image manifest alone (no index)
  windows    -> an OCI image index with two windows/amd64 manifests, ltsc2019 (os.version
                10.0.17763.1) first and ltsc2022 (10.0.20348.1), whose layers have the
                Windows layout (Files/ = the filesystem, Hives/ = registry hives) but no
                real Windows binaries: enough to test reading a Windows image's files and
                choosing an entry by OS version, as containerd does

The build is reproducible: fixed mtimes/owners, sorted entries, gzip without name/mtime.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable

MTIME = 1672531200  # 2023-01-01T00:00:00Z
CREATED = "2023-01-01T00:00:00Z"
PROG = ".ci/build_test_image.py"
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

# Debian architecture -> OCI platform
PLATFORMS = {
    "amd64": {"architecture": "amd64", "os": "linux"},
    "arm64": {"architecture": "arm64", "os": "linux"},
    "s390x": {"architecture": "s390x", "os": "linux"},
    "ppc64el": {"architecture": "ppc64le", "os": "linux"},
    "armhf": {"architecture": "arm", "os": "linux", "variant": "v7"},
}

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

WINDOWS_BUILDS = {"10.0.17763.1": b"", "10.0.20348.1": b" ltsc2022"}  # os.version -> hello
WINDOWS_HOSTS = (
    b"# hosts file of the mpcontainer_magics Windows test image\r\n127.0.0.1 localhost\r\n"
)

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def busybox_from_deb(deb: str) -> bytes:
    """Return the bytes of /bin/busybox inside a busybox-static .deb."""
    proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar.getmembers():
            if member.name.lstrip("./") in ("bin/busybox", "usr/bin/busybox") and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
    raise SystemExit(f"no bin/busybox in {deb}")


def list_applets(busybox: bytes) -> list[str]:
    """Run the host (amd64) busybox to list its applets."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "busybox")
        with open(path, "wb") as f:
            f.write(busybox)
        os.chmod(path, 0o755)
        out = subprocess.run([path, "--list"], check=True, capture_output=True, text=True).stdout
    applets = sorted({a.strip() for a in out.split() if a.strip()} - {"busybox"})
    if "sh" not in applets:
        raise SystemExit("busybox --list has no 'sh' applet")
    return applets


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def layer_tar(busybox: bytes, applets: list[str]) -> bytes:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("bin", tarfile.DIRTYPE, 0o755), None),
        (_info("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)), busybox),
    ]
    for applet in applets:
        entries.append((_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"), None))
    entries += [
        (_info("etc", tarfile.DIRTYPE, 0o755), None),
        (_info("etc/group", tarfile.REGTYPE, 0o644, len(GROUP)), GROUP),
        (_info("etc/passwd", tarfile.REGTYPE, 0o644, len(PASSWD)), PASSWD),
        (_info("root", tarfile.DIRTYPE, 0o700), None),
        (_info("tmp", tarfile.DIRTYPE, 0o1777), None),
    ]
    return tar_bytes(entries)


def windows_layer_tar(build: bytes) -> bytes:
    """A layer in the Windows layout: Files/ becomes the root, Hives/ holds registry hives."""
    hello = b"hello from windows/amd64" + build + b"\n"
    hive = b"regf\0\0\0\0"
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info(name, tarfile.DIRTYPE, 0o755), None)
        for name in (
            "Files",
            "Files/Windows",
            "Files/Windows/System32",
            "Files/Windows/System32/drivers",
            "Files/Windows/System32/drivers/etc",
            "Hives",
        )
    ]
    entries += [
        (_info("Files/Windows/System32/drivers/etc/hosts", tarfile.REGTYPE, 0o644,
               len(WINDOWS_HOSTS)), WINDOWS_HOSTS),
        (_info("Files/hello.txt", tarfile.REGTYPE, 0o644, len(hello)), hello),
        (_info("Hives/DefaultUser_Delta", tarfile.REGTYPE, 0o644, len(hive)), hive),
    ]  # fmt: skip
    return tar_bytes(entries)


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    entries = sorted(entries, key=lambda e: e[0].name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gzip_n(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


class Layout:
    def __init__(self, out: str) -> None:
        self.out = out
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}


def write_top(out: str, references: dict[str, dict]) -> None:
    """The layout's index.json, naming each descriptor by its reference, and oci-layout."""
    top = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {**descriptor, "annotations": {"org.opencontainers.image.ref.name": reference}}
            for reference, descriptor in references.items()
        ],
    }
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(dumps(top))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(dumps({"imageLayoutVersion": "1.0.0"}))


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"


def image_manifest(
    layout: Layout, platform: dict, tar: bytes, settings: dict, created_by: str
) -> dict:
    """Store a one-layer image (layer, config, manifest); the manifest's index descriptor."""
    layer = layout.blob(gzip_n(tar), MT_LAYER)
    config = {
        "created": CREATED,
        **platform,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
        "history": [{"created": CREATED, "created_by": created_by}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": layout.blob(dumps(config), MT_CONFIG),
        "layers": [layer],
    }
    return layout.blob(dumps(manifest), MT_MANIFEST, platform=platform)


def image_index(descriptors: Iterable[dict]) -> dict:
    return {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": list(descriptors)}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[0]
    debs = dict(arg.split("=", 1) for arg in argv[1:])
    if set(debs) != set(PLATFORMS):
        raise SystemExit(f"need debs for {sorted(PLATFORMS)}, got {sorted(debs)}")

    if os.path.exists(out):
        shutil.rmtree(out)
    layout = Layout(out)
    binaries = {arch: busybox_from_deb(deb) for arch, deb in debs.items()}
    applets = list_applets(binaries["amd64"])
    print(f"    {len(applets)} applets", file=sys.stderr)

    descriptors = {
        arch: image_manifest(
            layout,
            platform,
            layer_tar(binaries[arch], applets),
            {"Env": ENV, "Cmd": ["sh"]},
            f"busybox-static:{arch} ({PROG})",
        )
        for arch, platform in PLATFORMS.items()
    }
    index_desc = layout.blob(dumps(image_index(descriptors.values())), MT_INDEX)
    windows = [
        image_manifest(
            layout,
            {"architecture": "amd64", "os": "windows", "os.version": version},
            windows_layer_tar(hello),
            {"Cmd": ["cmd.exe"]},
            f"files ({PROG})",
        )
        for version, hello in WINDOWS_BUILDS.items()
    ]
    windows_desc = layout.blob(dumps(image_index(windows)), MT_INDEX)

    amd64_only = {k: v for k, v in descriptors["amd64"].items() if k != "platform"}
    write_top(out, {"1.35": index_desc, "amd64only": amd64_only, "windows": windows_desc})
    print(f"    index {index_desc['digest']}, windows {windows_desc['digest']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
