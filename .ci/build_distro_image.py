#!/usr/bin/env python3
"""Layers and OCI image layouts for the Debian test images of .ci/distro_images (stdlib only).

Usage:
  build_distro_image.py rootfs-layer ROOTFS_TAR OUT CREATED_BY
      An mmdebstrap tarball -> one image layer, cleaned as Docker's official debian images
      are: no device nodes under /dev (the empty directory stays), no /etc/resolv.conf,
      /etc/hostname or /etc/hosts (mmdebstrap copies the build host's in; a container engine
      provides its own at run time), no apt *.bin caches, member names without "./". Owners,
      modes, mtimes, hard links, symlinks (merged-/usr: bin -> usr/bin) and xattrs are kept.
  build_distro_image.py docker-layer SAVED_TAR OUT CREATED_BY
      The top layer of a `docker save` tarball (a `docker commit` of one RUN step), byte for
      byte as Docker made it (whiteouts included); only compressed here.
  build_distro_image.py file-layer OUT CREATED_BY PATH=SRC [PATH=SRC ...]
      A layer adding host files SRC at PATH in the image (owner root, SRC's mode), with
      their parent directories (0755).
  build_distro_image.py image OUT_DIR TAG ARCH=OUT[,OUT...] [ARCH=...]
      An OCI image layout whose reference TAG is an image index with one manifest per Debian
      ARCH (platforms as in build_test_image.py), each made of the given layers, bottom
      first. Prints "index DIGEST", then "ARCH DIGEST" for each platform's manifest.

A layer OUT is OUT.tar.gz (the blob) plus OUT.json (digest, size, diff_id, created_by, and
created: its newest mtime). Every layer is checked against the rules the tests rely on: none
of the three files above, no device nodes, and no apt lists or *.bin caches left behind.
Everything is reproducible for the same input: gzip without name and mtime, configs dated by
their layers.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_test_image as bti
from build_toolchain_image import COMPRESSLEVEL, _HashingSink

ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]  # Debian's images
HOST_FILES = {"etc/resolv.conf", "etc/hostname", "etc/hosts"}
# the only files apt keeps in its trees of downloaded lists and packages when clean
APT_KEEP = {"var/lib/apt/lists/lock", "var/cache/apt/archives/lock"}
APT_DIRS = ("var/lib/apt/lists/", "var/cache/apt/")
COPYBUF = 1 << 20


def iso(timestamp: float) -> str:
    when = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def check(members: list[tarfile.TarInfo], what: str) -> None:
    """Fail on anything the tests rely on an image not having."""
    problems = []
    for ti in members:
        name = ti.name
        if name in HOST_FILES:
            problems.append(f"{name} (the engine provides it at run time)")
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            problems.append(f"{name} (device node or FIFO)")
        elif (
            name.startswith(APT_DIRS)
            and not ti.isdir()
            and name not in APT_KEEP
            and not os.path.basename(name).startswith(".wh.")  # deleting one is fine
        ):
            problems.append(f"{name} (apt lists and caches must be cleaned)")
    if problems:
        raise SystemExit(f"{what}: not a clean image layer:\n  " + "\n  ".join(problems))


class _LayerWriter:
    """OUT.tar.gz written through gzip, hashing the compressed and the plain stream; a context
    manager that publishes OUT.tar.gz and OUT.json on success and removes its temp file on
    failure."""

    def __init__(self, out: str, created_by: str) -> None:
        self.out = out
        self.created_by = created_by
        self.newest = 0.0  # the newest mtime in the layer: its date in the image config

    def __enter__(self) -> _LayerWriter:
        fd, self.tmp = tempfile.mkstemp(
            dir=os.path.dirname(os.path.abspath(self.out)), prefix=".layer-"
        )
        self.raw = os.fdopen(fd, "wb")
        self.compressed = _HashingSink(self.raw)
        self.gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=self.compressed, mtime=0, compresslevel=COMPRESSLEVEL
        )
        self.plain = _HashingSink(self.gz)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.gz.close()
        self.raw.close()
        if exc_type is not None:
            os.unlink(self.tmp)
            return
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.out + ".tar.gz")
        desc = {
            "mediaType": bti.MT_LAYER,
            "digest": f"sha256:{self.compressed.sha.hexdigest()}",
            "size": self.compressed.size,
        }
        with open(self.out + ".json", "w") as f:
            json.dump(
                {
                    **desc,
                    "diff_id": f"sha256:{self.plain.sha.hexdigest()}",
                    "created": iso(self.newest),
                    "created_by": self.created_by,
                },
                f,
                indent=2,
            )
            f.write("\n")
        print(
            f"    {os.path.basename(self.out)}: {desc['size'] / 1e6:.1f} MB gzip "
            f"({self.plain.size / 1e6:.1f} MB tar), {desc['digest']}",
            file=sys.stderr,
        )


def _strip(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _dropped(name: str) -> bool:
    """What a rootfs layer leaves out. apt's *.bin caches: mmdebstrap deletes the files that
    apt's Dir::Cache settings name, and the image's docker-clean sets those to empty."""
    return (
        name.startswith("dev/")
        or name in HOST_FILES
        or (name.startswith("var/cache/apt/") and name.endswith(".bin") and name.count("/") == 3)
    )


def rootfs_layer(rootfs: str, out: str, created_by: str) -> None:
    kept: list[tarfile.TarInfo] = []
    dropped: set[str] = set()
    with (
        _LayerWriter(out, created_by) as layer,
        tarfile.open(rootfs, "r:") as src,
        tarfile.open(fileobj=layer.plain, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for ti in src:
            name = _strip(ti.name)
            if name in ("", "."):
                continue  # the root: a layer never carries it (the engine owns its mode)
            if _dropped(name):
                dropped.add(name)
                continue
            ti.name = name
            if ti.islnk():
                ti.linkname = _strip(ti.linkname)
                if ti.linkname in dropped:
                    raise SystemExit(f"{name}: hard link to dropped {ti.linkname}")
            # only xattrs: path/linkpath/mtime headers would override the fields set above
            ti.pax_headers = {
                k: v for k, v in ti.pax_headers.items() if k.startswith("SCHILY.xattr.")
            }
            dst.addfile(ti, src.extractfile(ti) if ti.isreg() else None)
            kept.append(ti)
            layer.newest = max(layer.newest, ti.mtime)
        check(kept, rootfs)


def docker_layer(saved: str, out: str, created_by: str) -> None:
    with tarfile.open(saved, "r:") as save:
        manifest = json.load(save.extractfile("manifest.json"))
        if len(manifest) != 1:
            raise SystemExit(f"{saved}: expected one image, found {len(manifest)}")
        config = json.load(save.extractfile(manifest[0]["Config"]))
        top = manifest[0]["Layers"][-1]
        with tarfile.open(fileobj=save.extractfile(top), mode="r:") as layer_tar:
            members = layer_tar.getmembers()
        check(members, f"{saved}:{top}")
        with _LayerWriter(out, created_by) as layer:
            layer.newest = max(ti.mtime for ti in members)
            shutil.copyfileobj(save.extractfile(top), layer.plain, COPYBUF)
            want = config["rootfs"]["diff_ids"][-1]
            got = f"sha256:{layer.plain.sha.hexdigest()}"
            if got != want:
                raise SystemExit(f"{saved}: top layer is {got}, but its image config says {want}")


def file_layer(out: str, created_by: str, files: dict[str, str]) -> None:
    mtime = int(max(os.stat(src).st_mtime for src in files.values()))
    entries: dict[str, tuple[tarfile.TarInfo, str | None]] = {}
    for path, src in files.items():
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries[parent] = (bti._info(parent, tarfile.DIRTYPE, 0o755), None)
        st = os.stat(src)
        ti = bti._info("/".join(parts), tarfile.REGTYPE, st.st_mode & 0o777, st.st_size)
        entries[ti.name] = (ti, src)
    check([ti for ti, _ in entries.values()], out)
    with (
        _LayerWriter(out, created_by) as layer,
        tarfile.open(fileobj=layer.plain, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        layer.newest = mtime
        for name in sorted(entries):
            ti, src = entries[name]
            ti.mtime = mtime
            if src is None:
                dst.addfile(ti)
            else:
                with open(src, "rb") as f:
                    dst.addfile(ti, f)


def image(out: str, tag: str, platforms: dict[str, list[str]]) -> None:
    if os.path.exists(out):
        shutil.rmtree(out)
    layout = bti.Layout(out)
    blobs = os.path.join(out, "blobs", "sha256")
    descriptors = {}
    for arch, layer_names in platforms.items():
        layers = []
        for name in layer_names:
            with open(name + ".json") as f:
                layers.append(json.load(f))
            # the layout only references the layer: a hard link, not a second copy
            dest = os.path.join(blobs, layers[-1]["digest"].removeprefix("sha256:"))
            if not os.path.exists(dest):
                try:
                    os.link(name + ".tar.gz", dest)
                except OSError:
                    shutil.copyfile(name + ".tar.gz", dest)
        platform = bti.PLATFORMS[arch]
        config = {
            "created": max(la["created"] for la in layers),
            **platform,
            "config": {"Env": ENV, "Cmd": ["bash"]},
            "rootfs": {"type": "layers", "diff_ids": [la["diff_id"] for la in layers]},
            "history": [
                {"created": la["created"], "created_by": la["created_by"]} for la in layers
            ],
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": bti.MT_MANIFEST,
            "config": layout.blob(bti.dumps(config), bti.MT_CONFIG),
            "layers": [{k: la[k] for k in ("mediaType", "digest", "size")} for la in layers],
        }
        descriptors[arch] = layout.blob(bti.dumps(manifest), bti.MT_MANIFEST, platform=platform)
    index_desc = layout.blob(bti.dumps(bti.image_index(descriptors.values())), bti.MT_INDEX)
    bti.write_top(out, {tag: index_desc})
    print("index", index_desc["digest"])
    for arch, desc in descriptors.items():
        print(arch, desc["digest"])


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "rootfs-layer" and len(args) == 3:
        rootfs_layer(*args)
    elif cmd == "docker-layer" and len(args) == 3:
        docker_layer(*args)
    elif cmd == "file-layer" and len(args) >= 3:
        file_layer(args[0], args[1], dict(a.split("=", 1) for a in args[2:]))
    elif cmd == "image" and len(args) >= 3:
        platforms = {k: v.split(",") for k, v in (a.split("=", 1) for a in args[2:])}
        unknown = set(platforms) - set(bti.PLATFORMS)
        if unknown:
            raise SystemExit(f"unknown architectures {sorted(unknown)}")
        image(args[0], args[1], platforms)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
