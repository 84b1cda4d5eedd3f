"""Docker's side of images: pulls metered in bytes, images loaded from a directory, layers saved.

Blocking functions over docker-py's low-level ``APIClient``; the engine runs each on a
thread of its own (``DockerEngine._call``) inside ``docker_errors``.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import EngineError, ImageError, ImageNotFound, RateLimited, RegistryError
from ..platforms import Platform
from ..registry import Reference
from ..registry.auth import login_command
from ..registry.manifests import image_manifest_blobs
from ..registry.reference import display_host
from .archives import stream_digest, write_layer
from .base import ImageConfig, ProgressCallback, owner_labels
from .docker_errors import docker_errors

if TYPE_CHECKING:
    from docker.api.client import APIClient

    from ..registry import RegistryClient


def platform_of(image: Mapping[str, Any]) -> Platform:
    """The platform of an image, from Docker's ``inspect_image``."""
    return Platform.from_oci(
        {
            "os": image.get("Os", "linux"),
            "architecture": image.get("Architecture", ""),
            "variant": image.get("Variant", ""),
        }
    )


def docker_config(config: ImageConfig) -> dict[str, Any]:
    """An image config in Docker's spelling; our labels mark it for clean-up."""
    return {**config.to_oci(), "Labels": {**config.labels, **owner_labels()}}


class PullMeter:
    """The bytes of a ``docker pull``, summed per layer from its progress stream.

    With ``sizes`` from the manifest (the config's size, {short layer ID: size}) the total is
    known from the start; without them it is the sum of the layer sizes the stream named so
    far. A layer counts in full once Docker has it ("Download complete", "Already exists",
    "Pull complete"...). ``feed`` runs on the pull's thread, and so does ``on_progress``.
    """

    _COMPLETE = frozenset(
        {"Verifying Checksum", "Download complete", "Extracting", "Pull complete", "Already exists"}
    )

    def __init__(
        self, on_progress: ProgressCallback, sizes: tuple[int, dict[str, int]] | None
    ) -> None:
        self._report = on_progress
        self._known = sizes is not None
        self._config = sizes[0] if sizes else 0
        self._sizes = dict(sizes[1]) if sizes else {}
        self._got: dict[str, int] = {}
        self._last: tuple[int, int | None] = (-1, None)
        if self._known:
            self._emit()

    @property
    def total(self) -> int | None:
        if self._known:
            return self._config + sum(self._sizes.values())
        return sum(self._sizes.values()) or None

    def feed(self, item: Mapping[str, Any]) -> None:
        """Count one item of the stream, e.g. {"status": "Downloading", "id": "4b5f…",
        "progressDetail": {"current": 1024, "total": 772788}}."""
        layer, status = item.get("id"), item.get("status")
        if not isinstance(layer, str) or not isinstance(status, str):
            return
        if self._known and layer not in self._sizes:
            return  # not a layer of this manifest (e.g. the "Pulling from" line)
        detail = item.get("progressDetail")
        detail = detail if isinstance(detail, dict) else {}
        if status == "Downloading":
            size, current = detail.get("total"), detail.get("current")
            if not self._known and isinstance(size, int) and size > 0:
                self._sizes[layer] = size
            if isinstance(current, int):
                self._got[layer] = max(self._got.get(layer, 0), current)
        elif status in self._COMPLETE:
            self._got[layer] = max(self._got.get(layer, 0), self._sizes.get(layer, 0))
        else:
            return
        self._emit()

    def _emit(self) -> None:
        total = self.total
        done = sum(min(got, self._sizes.get(layer, got)) for layer, got in self._got.items())
        done = max(done if total is None else min(done, total), self._last[0], 0)
        if (done, total) != self._last:
            self._last = (done, total)
            self._report(done, total)

    def finish(self) -> int:
        """The pull is over: the total in bytes (what the pull reports last)."""
        total = self.total if self._known else max(self.total or 0, self._last[0], 0)
        assert total is not None
        return total


async def blob_sizes(
    registry: RegistryClient, pinned: Reference
) -> tuple[int, dict[str, int]] | None:
    """The compressed size of the config and of each layer (by the short ID Docker's
    progress stream names layers with) of manifest ``pinned``; None if unknown."""
    try:
        body, media_type, _ = await registry.get_manifest(pinned)
        config, layers = image_manifest_blobs(body, media_type, pinned.familiar)
    except RegistryError:
        return None  # progress then counts what the stream says
    return config.size, {layer.digest.partition(":")[2][:12]: layer.size for layer in layers}


def daemon_mirrors(info: Mapping[str, Any], *, loopback: bool = True) -> tuple[str, ...]:
    """The daemon's ``registry-mirrors`` (``/info``'s ``RegistryConfig.Mirrors``, URLs such
    as "http://127.0.0.1:5056/"), as ``RegistryClient.registry_mirrors`` takes them: without
    "https://" or the slash, "http://" kept (plain HTTP, as Docker reaches it). Loopback
    ones only when ``loopback``."""
    config = info.get("RegistryConfig")
    urls = config.get("Mirrors") if isinstance(config, dict) else None
    mirrors = []
    for url in urls if isinstance(urls, list) else ():
        if not isinstance(url, str) or not url.strip():
            continue
        mirror = re.sub(r"^https://", "", url.strip(), flags=re.IGNORECASE).rstrip("/")
        host = mirror.partition("://")[2] or mirror
        if loopback or not _is_loopback(host):
            mirrors.append(mirror)
    return tuple(dict.fromkeys(mirrors))


def _is_loopback(host: str) -> bool:
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def pull_sources(pinned: Reference, mirror: str | None) -> list[str]:
    """What to hand ``docker pull`` for the digest ``pinned``, in order: the mirror's copy
    when a mirror served the resolution (the digest pins the content, so a mirror cannot
    change it), then the registry's own."""
    own = pinned.pull_name
    if mirror is None or pinned.digest is None:
        return [own]
    return [f"{mirror}/{pinned.repository}@{pinned.digest}", own]


def _pull_error(pinned: str, platform: Platform, text: str) -> ImageError:
    # We pull a single manifest the registry listed for this platform, so a platform
    # mismatch here means the index lies about it; Docker's text says how.
    if "toomanyrequests" in text.lower() or "429 too many requests" in text.lower():
        ref = Reference.parse(pinned)
        return RateLimited(
            f"registry {display_host(ref.registry)} limited Docker's pull of {pinned} ({text}); "
            f"log in (`{login_command(ref.registry)}` on the daemon's machine) "
            'for a higher limit, or give the daemon a mirror ("registry-mirrors" in its '
            "daemon.json), or ours: %config ContainerMagics.registry_mirrors",
            display_host(ref.registry),
        )
    if "not found" in text or "manifest unknown" in text:
        return ImageNotFound(
            f"Docker could not find {pinned}: {text}; check the name and tag, and that the "
            "registry still has it"
        )
    return ImageError(f"Docker failed to pull {pinned} for {platform}: {text}")


def pull(api: APIClient, pinned: str, platform: Platform, meter: PullMeter) -> None:
    """``docker pull --platform`` of a reference pinned by digest, fed to ``meter``."""
    with docker_errors(f"pull {pinned}", refine=lambda text: _pull_error(pinned, platform, text)):
        # Drain the progress stream; errors arrive as {"error": ...} items, not exceptions.
        for item in api.pull(pinned, platform=str(platform), stream=True, decode=True):
            if "error" in item:
                raise _pull_error(pinned, platform, str(item["error"]))
            meter.feed(item)


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    found = archive.extractfile(name)
    if found is None:
        raise EngineError(
            f"Docker's image archive has no file {name}; the daemon's image store may be "
            "damaged: remove the image (`docker rmi`) and pull it again"
        )
    return found


def save_layers(
    api: APIClient, image_id: str, dest: Path, only: Sequence[int] | None = None
) -> list[Path]:
    """``docker save``'s layers of ``image_id`` as tar files in ``dest``, bottom first
    (with ``only``, those of these indexes, in that order)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as archive:
        for chunk in api.get_image(image_id):
            archive.write(chunk)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as saved:
            names = json.load(_member(saved, "manifest.json"))[0]["Layers"]
            layers = []
            for number in range(len(names)) if only is None else only:
                layers.append(dest / f"layer-{number}.tar")
                with open(layers[-1], "wb") as out:
                    shutil.copyfileobj(_member(saved, names[number]), out, 1 << 20)
            return layers


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _load_archive(out: IO[bytes], root: Path, platform: Platform, config: ImageConfig) -> None:
    """A ``docker load`` archive of one layer, ``root``'s files, for ``platform``.

    `docker import` ignores the platform on this API version; a `docker load` archive
    carries it in the image config.
    """
    with tempfile.TemporaryFile() as layer:
        write_layer(layer, root)
        layer.seek(0)
        diff_id = stream_digest(layer)
        image_config = {
            **platform.to_oci(),
            "config": docker_config(config),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        with tarfile.open(fileobj=out, mode="w") as tar:
            _add_bytes(tar, "config.json", json.dumps(image_config).encode())
            info = tarfile.TarInfo("layer.tar")
            info.size = layer.seek(0, os.SEEK_END)
            layer.seek(0)
            tar.addfile(info, layer)
            manifest = [{"Config": "config.json", "Layers": ["layer.tar"]}]
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())


def load_directory(api: APIClient, root: Path, platform: Platform, config: ImageConfig) -> str:
    """Load an image of the host directory ``root`` into Docker; its image ID."""
    with tempfile.TemporaryFile() as archive:
        _load_archive(archive, root, platform, config)
        archive.seek(0)
        for item in api.load_image(archive.read()):
            if "error" in item:
                raise EngineError(
                    f"Docker could not load an image of {root}: {item['error']}; check that "
                    "the daemon has room for it (`docker system df`)"
                )
            found = re.search(r"Loaded image ID: (sha256:[0-9a-f]{64})", item.get("stream", ""))
            if found:
                return found.group(1)
    raise EngineError(
        f"Docker loaded the image archive of {root} but named no image; retry, and check the "
        "daemon's log if it happens again"
    )
