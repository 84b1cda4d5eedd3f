"""Shared fixtures: the real engine's test images, a real IPython shell, and leak checks.

The real parts are set up by `.ci/setup` (dockerd, QEMU binfmt handlers, a registry on
127.0.0.1 holding a multi-platform busybox image) and named by MPC_TEST_* variables, which
`.ci/test` exports. Run outside it, real tests skip; under CI (CI=true) they fail instead,
so a broken set-up can never turn the suite green by skipping.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from environment import required_env

from mpcontainer_magics.engines.base import LABEL_MANAGED, LABEL_PID, owner_is_gone
from mpcontainer_magics.engines.proot import processes_using

FIVE_PLATFORMS = "linux/amd64,linux/arm64,linux/s390x,linux/ppc64le,linux/arm/v7"


@pytest.fixture(scope="session", autouse=True)
def no_stray_proot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the suite, no proot of ours may still run (the embedded engine's leak check):
    every test's cache lives under this run's temporary directory."""
    yield
    ours = os.fsencode(tmp_path_factory.getbasetemp())
    stray = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if ours in f.read():
                    stray.append(pid)
                    os.killpg(pid, signal.SIGKILL)  # proot leads its guests' group
        except OSError:
            continue
    assert stray == [], "proot processes of the embedded engine outlived the suite"


@pytest.fixture(autouse=True)
def blob_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test its own blob cache (never the user's): what one test cached cannot hide
    what another checks, such as a tampered blob being refused."""
    cache = tmp_path_factory.mktemp("blob-cache")
    monkeypatch.setenv("MPC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait 10 ms, then 20 ms...: what is retried is tested, not how long it waits."""
    from mpcontainer_magics.registry import transfer

    monkeypatch.setattr(transfer, "RETRY_BACKOFF_S", 0.01)


@pytest.fixture(scope="session")
def test_image() -> str:
    return required_env("MPC_TEST_IMAGE")


@pytest.fixture(scope="session")
def amd64_only_image() -> str:
    return required_env("MPC_TEST_IMAGE_AMD64_ONLY")


@pytest.fixture(scope="session")
def windows_image() -> str:
    return required_env("MPC_TEST_IMAGE_WINDOWS")


@pytest.fixture(scope="session")
def registry_host() -> str:
    return required_env("MPC_TEST_REGISTRY")


@pytest.fixture(scope="session")
def docker_api(test_image: str) -> Iterator[Any]:
    """A docker-py client of our own, to check the engine independently of the code under test."""
    import docker

    api = docker.from_env().api
    yield api
    # Zero leaked containers after the whole suite: none of ours, none of a dead process.
    # (Containers of other live processes, say a benchmark running meanwhile, are theirs.)
    leaked = [c for c in managed_containers(api) if owner_is_gone(c["Labels"])]
    assert my_containers(api) + leaked == []
    api.close()


def managed_containers(api: Any, **labels: str) -> list[dict[str, Any]]:
    wanted = [f"{LABEL_MANAGED}=1", *(f"{k}={v}" for k, v in labels.items())]
    return api.containers(all=True, filters={"label": wanted})


def my_containers(api: Any) -> list[dict[str, Any]]:
    """Containers created by this test process (not by a benchmark running meanwhile)."""
    return managed_containers(api, **{LABEL_PID: str(os.getpid())})


ENGINE_KINDS = ("docker", "embedded")


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine the test runs against: every real-engine test runs on both, with the same
    assertions. MPC_ENGINE makes the extension's and ``connect()``'s "auto" pick it."""
    monkeypatch.setenv("MPC_ENGINE", request.param)
    return str(request.param)


class Containers:
    """What the engine under test holds, seen independently of the code under test: Docker's
    own API, or the embedded engine's directories (its cache is the test's MPC_CACHE_DIR)."""

    def __init__(self, kind: str, docker_api: Any, cache: Path) -> None:
        self.kind = kind
        self._api = docker_api
        self._cache = cache

    def managed(self, **labels: str) -> list[dict[str, Any]]:
        """Containers of ours as {"Id", "Labels", "State"}, filtered by labels."""
        if self.kind == "docker":
            return managed_containers(self._api, **labels)
        found = []
        for entry in sorted((self._cache / "containers").glob("*/container.json")):
            meta = json.loads(entry.read_text())
            if all(meta["labels"].get(k) == v for k, v in labels.items()):
                running = processes_using(self.rootfs(entry.parent.name))
                found.append(
                    {
                        "Id": entry.parent.name,
                        "Labels": meta["labels"],
                        "State": "running" if running else "created",
                    }
                )
        return found

    def mine(self, **labels: str) -> list[dict[str, Any]]:
        """Containers created by this test process."""
        return self.managed(**{LABEL_PID: str(os.getpid()), **labels})

    def rootfs(self, container_id: str) -> Path:
        """Where an embedded container's files are."""
        return self._cache / "containers" / container_id / "rootfs"

    def exists(self, container_id: str) -> bool:
        if self.kind == "docker":
            return bool(self._api.containers(all=True, filters={"id": container_id}))
        return (self._cache / "containers" / container_id).exists()

    def image_facts(self, image_id: str) -> tuple[str, str, int]:
        """(os, architecture, number of layers) of an image the engine holds."""
        if self.kind == "docker":
            info = self._api.inspect_image(image_id)
            return info["Os"], info["Architecture"], len(info["RootFS"]["Layers"])
        meta = json.loads((self._cache / "images" / image_id / "image.json").read_text())
        config = meta["config"]
        return config["os"], config["architecture"], len(config["rootfs"]["diff_ids"])

    def pulled_architecture(self, reference: str, digest: str) -> str:
        """The architecture of the image the engine holds for ``reference`` at ``digest``."""
        if self.kind == "docker":
            pinned = f"{reference.rsplit(':', 1)[0]}@{digest}"
            return str(self._api.inspect_image(pinned)["Architecture"])
        return self.image_facts(digest.removeprefix("sha256:"))[1]

    def my_images(self) -> list[str]:
        """Images (snapshots) this test process made and has not removed."""
        return self.images_of(os.getpid())

    def images_of(self, pid: int) -> list[str]:
        """Images (snapshots) process ``pid`` made and has not removed."""
        if self.kind == "docker":
            theirs = {"label": [f"{LABEL_PID}={pid}"]}
            return [i["Id"] for i in self._api.images(all=True, filters=theirs)]
        found = []
        for entry in sorted((self._cache / "images").glob("snap-*/image.json")):
            if json.loads(entry.read_text())["labels"].get(LABEL_PID) == str(pid):
                found.append(entry.parent.name)
        return found


@pytest.fixture
def containers(engine_kind: str, docker_api: Any, blob_cache: Path) -> Containers:
    return Containers(engine_kind, docker_api, blob_cache)


@pytest.fixture
def no_leaks(containers: Containers) -> Iterator[None]:
    yield
    assert containers.mine() == [], "this test left containers behind"


@pytest.fixture(scope="session")
def ip() -> Any:
    """A real IPython InteractiveShell (the one IPython's own test suite uses)."""
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def shell(ip: Any, test_image: str, no_leaks: None) -> Iterator[Any]:
    """The shell with the extension loaded and the test image as the default image."""
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    ip.run_line_magic("config", f"ContainerMagics.default_image = {test_image!r}")
    yield ip
    ip.run_line_magic("unload_ext", "mpcontainer_magics")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def tracees(tracer: int) -> list[int]:
    """The processes ``tracer`` ptrace-attaches (what a proot runs)."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            if f"TracerPid:\t{tracer}\n" in Path(f"/proc/{pid}/status").read_text():
                found.append(pid)
    return found


# The session protocol's per-cell token (not a digest in the table: "sha256:" + 64 digits).
MARKER = re.compile(r"(?<![0-9a-f:])[0-9a-f]{24}(?![0-9a-f])")


def bounded(call: Callable[[], Any], seconds: float) -> Any:
    """``call()`` in a thread, failing the test if it has not returned within ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the cell did not return within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def layers_exported(client: Any) -> list[int]:
    """A list that grows by the number of layers each export from ``client``'s engine
    reads (``save_layers``): what publishing had to read back from the engine."""
    exported: list[int] = []
    save_layers = client.engine.save_layers

    async def counted(image: Any, dest: Any, only: Any = None) -> Any:
        saved = await save_layers(image, dest, only)
        exported.append(len(saved))
        return saved

    client.engine.save_layers = counted
    return exported


class StampedOutput(io.StringIO):
    """Remembers when each piece of text was written."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.stamps.append((time.monotonic(), text))
        return super().write(text)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def bad_destinations(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Host destinations that cannot be written, each named by why: under a regular file,
    inside /proc, on a read-only filesystem, and on a full one (tiny tmpfs mounts of ours,
    unmounted afterwards)."""
    regular = tmp_path / "a-file"
    regular.write_text("not a directory\n")
    read_only, full = tmp_path / "read-only", tmp_path / "full"
    read_only.mkdir()
    full.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(read_only))
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full))
        try:
            with open(full / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
                while True:  # until the disk is full
                    filler.write(b"\0" * 4096)
            yield {
                "under a file": regular / "x",
                "in /proc": Path("/proc/mpc-nowhere/x"),
                "read-only": read_only / "x",
                "full disk": full / "x",
            }
        finally:
            _umount(full)
    finally:
        _umount(read_only)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


def everything_under(root: Path) -> list[str]:
    """Every path under ``root`` (mounts included): compared before and after a failed
    write, it shows that nothing partial was left behind."""
    return sorted(str(Path(d, n)) for d, dirs, files in os.walk(root) for n in dirs + files)


#: What each bad destination's message must say: the problem, then the fix.
BAD_DESTINATION_MESSAGES = {
    "under a file": ("is a file, not a directory", "give a destination inside a directory"),
    "in /proc": ("/proc is a kernel filesystem", "give a destination on disk"),
    "read-only": ("read-only filesystem", "give a destination you can write"),
    "full disk": ("is full", "free some space there or give a destination on another"),
}


def assert_says_what_and_how(message: str, why: str) -> None:
    """A bad destination's one-line message names the problem and the fix."""
    problem, fix = BAD_DESTINATION_MESSAGES[why]
    assert problem in message and fix in message and "\n" not in message, message


from node_fixtures import test_nodes  # noqa: E402, F401  (the extra nodes; see node_fixtures)
from registry_faults import fault_proxy, mirror_host, refusing_registry  # noqa: E402, F401 (the fault proxy; see registry_faults)
