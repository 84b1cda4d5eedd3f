"""The notebooks in notebooks/, executed headless in a real Jupyter kernel, as a reader would.

Each notebook runs on a copy (the repository's files keep no outputs) with nbclient on the
venv's python3 kernel, against the local test images and registry (MPC_TEST_*): CI's
busybox image stands in for MPC_DEMO_IMAGE, the local Go toolchain image for
MPC_GOLANG_IMAGE and the local registry for MPC_REGISTRY. Every cell must run without an
error, the key results must be in the printed output, and the kernel must leave no
containers or snapshot images behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import Containers, required_env
from nbclient import NotebookClient
from registry_faults import FaultProxy

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import LABEL_PID
from mpcontainer_magics.platforms import Platform, host_platform

# Every test runs on both engines (MPC_ENGINE makes connect() pick it).
pytestmark = pytest.mark.usefixtures("engine_kind")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 300
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/s390x"]
NATIVE = host_platform()  # the engine's is this machine's: the tests' dockerd is local


def text_outputs(nb: nbformat.NotebookNode) -> str:
    """Every stream text and text/plain result of the executed notebook, in order.

    A PNG image (a matplotlib figure) is one line: ``[image/png: N base64 chars]``.
    """
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif out.get("output_type") in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
                if png := out.get("data", {}).get("image/png"):
                    parts.append(f"[image/png: {len(png)} base64 chars]")
    return "\n".join(parts)


def errors_of(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"cell {n}: {out['ename']}: {out['evalue']}"
        for n, cell in enumerate(nb.cells, start=1)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def check_01(text: str) -> None:
    assert "I'm executing on architecture: s390x" in text
    assert "I'm executing on architecture: aarch64" in text
    assert re.search(r"\[linux/s390x\] byte order: big-endian \(01020304\)", text)
    assert re.search(r"\[linux/arm64\] byte order: little-endian \(04030201\)", text)
    for platform in ("linux/amd64", "linux/arm64", "linux/s390x"):
        assert f"[{platform}] word size:  64" in text
        assert f"[{platform}] page size:  4096 bytes" in text  # QEMU's, emulated or not


def check_02(text: str) -> None:
    registry = required_env("MPC_TEST_REGISTRY")
    # publish's reference, pinned to the pushed index, and the index's platforms
    assert re.search(rf"{re.escape(registry)}/mpc-hello-emulated-\w+@sha256:[0-9a-f]{{64}}", text)
    assert '"mediaType": "application/vnd.oci.image.index.v1+json"' in text
    # the final table: every platform built (emulated but the native one), ran back its binary
    for platform in PLATFORMS:
        emulated = not NATIVE.matches(platform)
        row = rf"{platform}\s+[\d.]+\s+{emulated}\s+hello from {platform}"
        assert re.search(row, text), f"no table row for {platform}"


def check_03(text: str) -> None:
    registry = required_env("MPC_TEST_REGISTRY")
    assert re.search(rf"{re.escape(registry)}/mpc-hello-cross-\w+@sha256:[0-9a-f]{{64}}", text)
    for platform in PLATFORMS:
        row = rf"{platform}\s+[\d.]+\s+{NATIVE}\s+hello from {platform}"
        assert re.search(row, text), f"no table row for {platform}"
    # the magic form: $GOLANG expanded, each target built on the native platform
    for platform in ("linux/arm64", "linux/s390x"):
        goos, goarch = platform.split("/")
        assert f"[{platform}] go env GOOS GOARCH: {goos} {goarch}" in text
        machine = NATIVE.uname_machine
        assert f"[{platform}] uname -m: {machine}, TARGETPLATFORM: {platform}" in text
    # plain build: different work (std precompiled for arm64 in the arm64 image only) ...
    plain = dict(
        re.findall(r"^\s*go build\s+(emulated|cross)\s+[\d.]+\s+[\d.]+\s+(\d+)", text, re.M)
    )
    assert int(plain["emulated"]) < int(plain["cross"]), plain
    # ... go build -a: the same packages both ways, and emulation costs clearly more
    full = dict(re.findall(r"go build -a\s+(emulated|cross)\s+[\d.]+\s+[\d.]+\s+(\d+)", text))
    assert full["emulated"] == full["cross"] == plain["cross"], full
    found = re.search(r"emulation needs ([\d.]+)x the CPU time", text)
    assert found, "no emulation/cross ratio printed"
    assert float(found.group(1)) > 2, found.group(0)


def check_04(text: str) -> None:
    little = ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/arm/v7"]
    for platform in little:
        assert f"[{platform}] byte order: little-endian (04030201)" in text
        assert f"[{platform}] od -tx2:    0201 0403 0605 0807" in text
    assert "[linux/s390x] byte order: big-endian (01020304)" in text
    assert "[linux/s390x] od -tx2:    0102 0304 0506 0708" in text
    # od's sizes of C's short, int, long (and busybox's ELF class): ILP32 vs LP64
    for platform in ["linux/amd64", "linux/arm64", "linux/s390x", "linux/ppc64le"]:
        assert f"[{platform}] sizeof(short, int, long): 2, 4, 8" in text
        assert f"[{platform}] ELF class: 2" in text
    assert "[linux/arm/v7] sizeof(short, int, long): 2, 4, 4" in text
    assert "[linux/arm/v7] ELF class: 1" in text
    # the Go probe: GOARCH, int bits, pointer bytes, int64 alignment, offset of b, sizeof(pair)
    go = {
        m.group(1): m.group(2).split()
        for m in re.finditer(r"^\s*(linux/\S+)\s+(\w+(?:\s+\d+){5})\s*$", text, re.M)
    }
    for platform in PLATFORMS:
        assert go[platform] == [platform.split("/")[1], "64", "8", "8", "8", "16"], go
    assert go["linux/arm/v7"] == ["arm", "32", "4", "4", "4", "12"], go


def check_05(text: str) -> None:
    # the ratio table: platform, emulated, start, loop, work, slowdown, slowdown_total
    number = r"(-?[\d.]+)"
    row = rf"^\s*(linux/\S+)\s+(True|False)\s+{number}\s+{number}\s+{number}\s+{number}\s+{number}$"
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(row, text, re.M)}
    assert sorted(rows) == sorted([*PLATFORMS, "linux/ppc64le", "linux/arm/v7"]), rows
    for platform, (emulated, start, loop, work, slowdown, total) in rows.items():
        assert emulated == str(not NATIVE.matches(platform)), (platform, emulated)
        assert float(start) >= 0 and float(work) > 0, (platform, start, loop, work)
        if emulated == "True":
            assert float(slowdown) > 1 and float(total) > 1, (platform, slowdown, total)
        else:
            assert float(slowdown) == float(total) == 1, (platform, slowdown, total)
    assert re.search(r"emulation runs the loop [\d.]+x to [\d.]+x slower than native", text)
    assert re.search(r"\[image/png: \d+ base64 chars\]", text), "no figure was plotted"


def check_06(text: str) -> None:
    image = required_env("MPC_TEST_IMAGE")  # what the test passes as MPC_DEMO_IMAGE
    registry = required_env("MPC_TEST_REGISTRY")
    five = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le"]
    # The picker's lookup, read from the registry: what the image offers, how each runs.
    offered = re.search(rf"{re.escape(image)} offers: (.*)", text)
    assert offered, "no platform report printed"
    for platform in five:
        how = "native" if NATIVE.matches(platform) else "emulated"
        assert f"{platform} ({how})" in offered.group(1), platform
    # The scripted Run click, on every platform the image offers (the picker's default).
    assert "exit code: same on all 5 platforms ('0')" in text
    machines = re.search(r"stdout line 1 differs: (.*)", text)
    assert machines, "no per-platform machine names"
    for platform in five:
        machine = Platform.parse(platform).uname_machine
        assert f"'{machine}' on {platform}" in machines.group(1), platform
    assert re.search(
        r"stdout line 2 differs: '04030201' on [^;]+; '01020304' on linux/s390x$", text, re.M
    )
    # Publish: the session's files pushed under one name, pinned to the index's digest.
    assert re.search(
        rf"^{re.escape(registry)}/mpc-widget-demo-\w+@sha256:[0-9a-f]{{64}}$", text, re.M
    )


#: Notebook 07's nodes: the extra daemons of .ci/nodes, each claiming a foreign platform.
DEMO_CLAIMS = {"ctx": "linux/arm64", "tls": "linux/s390x", "ssh": "linux/ppc64le"}


def demo_nodes(nodes: dict[str, Any]) -> dict[str, Any]:
    demo: dict[str, Any] = {}
    for name, platform in DEMO_CLAIMS.items():
        node = nodes[name]
        demo[name] = {"endpoint": node.endpoint, "platforms": [platform]}
        if node.tls_certs is not None:
            demo[name]["tls"] = str(node.tls_certs)
    return demo


def check_07(text: str) -> None:
    registry = required_env("MPC_TEST_REGISTRY")
    # the nodes table: every node answers, and its engine is named
    for name, platform in DEMO_CLAIMS.items():
        assert re.search(rf"^\d\s+{name}\s.*Docker 20\.10", text, re.M), name
        assert re.search(rf"^\d\s+{name}\s.*{re.escape(platform)}", text, re.M), name
    # where each platform would run, before anything runs
    assert "linux/arm64 (emulated on ctx)" in text and "linux/amd64 (native on local)" in text
    # the spread cell: each claimed platform on its node, the native one here
    rows: dict[str, str] = {}  # the first table's (the pinned cell's follows)
    for platform, node in re.findall(r"^\d\s+(linux/\S+)\s.*\s(local|ctx|tls|ssh)\s*$", text, re.M):
        rows.setdefault(platform, node)
    assert rows == {"linux/amd64": "local", **{p: n for n, p in DEMO_CLAIMS.items()}}, rows
    # a pin: arm64 here; the session: state kept on every node
    assert re.search(r"^\d\s+linux/arm64\s+aarch64\\n\s+local$", text, re.M)
    for platform, machine in [("linux/arm64", "aarch64"), ("linux/s390x", "s390x")]:
        assert f"[{platform}] /tmp kept: built on {machine}" in text
    assert re.search(rf"{re.escape(registry)}/mpc-nodes-demo-\w+@sha256:[0-9a-f]{{64}}", text)
    # a node that is gone: said before the output, and the platform ran here instead
    assert "node gone is unreachable (connection refused: is the daemon running?): runs " in text
    assert "stdout line 1 differs: 'x86_64' on linux/amd64; 'aarch64' on linux/arm64" in text


def check_07_without_nodes(text: str) -> None:
    # As on a fresh Binder: no node but the engine itself, which is the node "local".
    registry = required_env("MPC_TEST_REGISTRY")
    assert "linux/arm64 (emulated)" in text and "linux/amd64 (native)" in text
    assert re.search(r"^\d\s+linux/arm64\s+aarch64\\n\s+local$", text, re.M)  # the @local pin
    for platform, machine in [("linux/arm64", "aarch64"), ("linux/s390x", "s390x")]:
        assert f"[{platform}] /tmp kept: built on {machine}" in text
    assert re.search(rf"{re.escape(registry)}/mpc-nodes-demo-\w+@sha256:[0-9a-f]{{64}}", text)
    assert "node gone is unreachable (connection refused: is the daemon running?): runs " in text


CHECKS: dict[str, Callable[[str], None]] = {
    "01-architectures.ipynb": check_01,
    "02-build-and-publish.ipynb": check_02,
    "03-cross-compile.ipynb": check_03,
    "04-byte-order-and-word-size.ipynb": check_04,
    "05-cost-of-emulation.ipynb": check_05,
    "06-widget-app.ipynb": check_06,
    "07-nodes.ipynb": check_07,
}


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_committed_notebook_has_no_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for n, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {n} has outputs"


# On the embedded engine these run as an unprivileged user without Docker, as on Binder, and
# only so (their emulated Go builds take minutes). Their parallel Go builds under proot 5.1 +
# qemu-user now and then fail with "fork/exec ...: bad address" (a race in proot; README,
# embedded engine): the notebooks retry such a build up to twice and say so.
AS_A_USER = {
    "02-build-and-publish.ipynb",
    "03-cross-compile.ipynb",
    "04-byte-order-and-word-size.ipynb",
}
USER = "mpcu"  # created by .ci/setup


@dataclass
class Kernel:
    """The kernelspec a notebook runs with, and where its embedded engine keeps its cache."""

    name: str
    jupyter_path: str
    cache: Path | None = None  # None: the test's own (MPC_CACHE_DIR)


@pytest.fixture(scope="module")
def user_kernel() -> Iterator[Kernel]:
    """A kernelspec whose kernel runs as USER (Debian's python with our packages, as
    tests/test_embedded.py runs things as that user), its home and cache shared by the
    module's notebooks so the Go image is unpacked once."""
    home = Path(tempfile.mkdtemp(prefix="mpc-nb-user-"))
    spec = home / "jupyter" / "kernels" / "as-user"
    spec.mkdir(parents=True)
    paths = [str(Path(mpc.__file__).parent.parent)]
    paths += sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")})
    # The connection file is root's (mode 600): the user's kernel reads its own copy.
    launch = (
        'copy="$HOME/${0##*/}"; cp "$0" "$copy" && chown ' + USER + ' "$copy" && exec setpriv '
        f"--reuid={USER} --regid={USER} --init-groups /usr/bin/python3 -m ipykernel_launcher "
        '-f "$copy"'
    )
    kernel = {
        "argv": ["/bin/sh", "-c", launch, "{connection_file}"],
        "display_name": f"Python 3 as {USER}",
        "language": "python",
        "env": {
            "HOME": str(home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(paths),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # no Docker, as on Binder
            "MPC_CACHE_DIR": str(home / "cache"),
        },
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    shutil.chown(home, USER)
    try:
        yield Kernel("as-user", str(home / "jupyter"), home / "cache")
    finally:
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            with contextlib.suppress(OSError):  # whatever failed, no proot of the user's stays
                if os.fsencode(home) in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def execute(name: str, kernel: Kernel, tmp_path: Path) -> tuple[nbformat.NotebookNode, list[int]]:
    """Run notebook ``name`` in a new kernel (its copy is kept in ``tmp_path`` for a look
    after a failure); the executed notebook, and the kernel's PID. Every cell must run."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)  # a copy in memory: the file stays
    kernel_pids: list[int] = []
    client = NotebookClient(
        nb,
        kernel_name=kernel.name,
        timeout=CELL_TIMEOUT,
        allow_errors=True,  # run every cell, then report every error at once
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.on_notebook_start = lambda **_: kernel_pids.append(client.km.provisioner.process.pid)
    client.execute()  # shuts the kernel down at the end
    nbformat.write(nb, tmp_path / name)
    assert errors_of(nb) == [], f"executed copy: {tmp_path / name}"
    return nb, kernel_pids


#: Only notebook 07 configures nodes (MPC_DEMO_NODES); it also runs with none, as on Binder.
RUNS = [(name, True) for name in sorted(CHECKS)] + [("07-nodes.ipynb", False)]


@pytest.mark.parametrize(
    ("name", "with_nodes"), RUNS, ids=[f"{n}{'' if w else '-no-nodes'}" for n, w in RUNS]
)
def test_notebook_runs(
    name: str,
    with_nodes: bool,
    engine_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    docker_api: Any,
    blob_cache: Path,
    request: pytest.FixtureRequest,
    test_nodes: dict[str, Any],
) -> None:
    monkeypatch.setenv("MPC_DEMO_IMAGE", required_env("MPC_TEST_IMAGE"))
    monkeypatch.setenv("MPC_GOLANG_IMAGE", required_env("MPC_TEST_GOLANG_IMAGE"))
    monkeypatch.setenv("MPC_REGISTRY", required_env("MPC_TEST_REGISTRY"))
    if with_nodes:
        monkeypatch.setenv("MPC_DEMO_NODES", json.dumps(demo_nodes(test_nodes)))
    else:
        monkeypatch.delenv("MPC_DEMO_NODES", raising=False)
    # The venv's kernelspec (its own python) wins over any python3 kernelspec of the user's.
    kernel = Kernel("python3", str(Path(sys.prefix) / "share" / "jupyter"))
    if engine_kind == "embedded" and name in AS_A_USER:
        kernel = request.getfixturevalue("user_kernel")
    monkeypatch.setenv("JUPYTER_PATH", kernel.jupyter_path)
    nb, kernel_pids = execute(name, kernel, tmp_path)
    text = text_outputs(nb)
    (CHECKS[name] if with_nodes else check_07_without_nodes)(text)
    if "race (bad address); retrying" in text:  # the proot race: shown, worth counting
        warnings.warn(f"{name}: a Go build hit proot's fork/exec race; retried", stacklevel=1)

    # The kernel (and every client in it) cleaned up after itself, on the engine it used.
    containers = Containers(engine_kind, docker_api, kernel.cache or blob_cache)
    assert containers.managed(**{LABEL_PID: str(kernel_pids[0])}) == []
    assert containers.images_of(kernel_pids[0]) == []


def test_a_prefetched_class_asks_no_registry(engine_kind, monkeypatch, tmp_path):
    # Thirty students behind one address: what a Binder or hub image prefetched at build
    # time (binder/postBuild) must cost the registry nothing at class time, not even a HEAD.
    if engine_kind != "embedded":
        pytest.skip("Binder has no Docker daemon: the prefetch fills the embedded engine's cache")
    cache = tmp_path / "cache"
    with FaultProxy() as registry:
        image = f"{registry.address}/mpc/busybox:1.35"
        pull = [sys.executable, "-m", "mpcontainer_magics", "--cache-dir", str(cache), "pull",
                image, "--platform", ",".join(PLATFORMS), "--engine", "embedded"]  # fmt: skip
        done = subprocess.run(pull, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        asked = len(registry.log)
        registry.drop(".", times=None)  # unreachable from now on: every request refused
        monkeypatch.setenv("MPC_DEMO_IMAGE", image)
        monkeypatch.setenv("MPC_CACHE_DIR", str(cache))
        monkeypatch.setenv("MPC_RESOLVE", "cache")
        monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        nb, _ = execute("01-architectures.ipynb", Kernel("python3", ""), tmp_path)
        assert registry.log[asked:] == []
    text = text_outputs(nb)
    check_01(text)
    assert "the registry was not asked (MPC_RESOLVE=cache)" in text


def test_binder_prefetches_every_image_the_notebooks_default_to():
    # A Binder class starts with them on disk, and asks no registry for them (binder/start).
    binder = NOTEBOOKS.parent / "binder"
    defaults = set()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        for cell in nbformat.read(notebook, as_version=4).cells:
            defaults.update(re.findall(r'environ\.get\("MPC_\w+_IMAGE", "([^"]+)"\)', cell.source))
    assert defaults == {"alpine:3.23", "golang:1.26-alpine"}
    post_build = (binder / "postBuild").read_text()
    assert {image for image in defaults if f"pull {image} --platform" not in post_build} == set()
    assert "export MPC_RESOLVE=cache" in (binder / "start").read_text()
