"""The command line (``mpcontainer-magics``, ``python -m mpcontainer_magics``), run as a
teacher or a hub's admin runs it: a real process, a real registry, the embedded engine's
cache in a directory of the test's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PLATFORMS = "linux/amd64,linux/arm64"


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mpcontainer_magics --cache-dir CACHE ARGS``, finished."""
    command = [sys.executable, "-m", "mpcontainer_magics", "--cache-dir", str(cache), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_pull_fills_the_cache_and_shows_its_progress(test_image, tmp_path):
    cache = tmp_path / "cache"
    done = cli(cache, "pull", test_image, "--platform", PLATFORMS, "--engine", "embedded")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{test_image} for linux/amd64",
        f"{test_image} for linux/arm64",
    ]
    assert all(line.split(": ")[1].startswith("sha256:") for line in lines)
    assert "linux/arm64: " in done.stderr and " MB" in done.stderr  # the bytes, as they came
    listed = cli(cache, "cache")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"cache: {cache}, ")
    rows = [line.split() for line in listed.stdout.splitlines()[2:]]
    assert sorted((row[0], row[1]) for row in rows) == [
        (test_image, "linux/amd64"),
        (test_image, "linux/arm64"),
    ]


def test_a_bad_pull_is_one_line_and_exit_status_2(tmp_path, registry_host):
    done = cli(tmp_path / "cache", "pull", f"{registry_host}/no/such-image:1", "--engine",
               "embedded")  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("mpcontainer-magics: error: ") and "no/such-image" in line
    bad = cli(tmp_path / "cache", "cache", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "'soon' is not an age" in bad.stderr


def test_the_doctor_exits_0_when_all_runs(tmp_path):
    done = cli(tmp_path / "cache", "doctor", "--engine", "embedded")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("engine: embedded") and "problems: none" in done.stdout


KERNEL = """
import asyncio, sys
import mpcontainer_magics as mpc

async def main():
    async with mpc.connect(engine="embedded") as client:
        await client.session("held", image=sys.argv[1], platforms="linux/arm64")
        print("holding", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


def test_prune_never_removes_what_a_running_kernel_uses(test_image, golang_image, tmp_path):
    cache = tmp_path / "cache"
    for image, platforms in ((test_image, PLATFORMS), (golang_image, "linux/amd64")):
        done = cli(cache, "pull", image, "--platform", platforms, "--engine", "embedded")
        assert done.returncode == 0, done.stderr
    env = {**os.environ, "MPC_CACHE_DIR": str(cache)}
    kernel = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KERNEL), test_image],
        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        assert kernel.stdout is not None and kernel.stdout.readline() == "holding\n"
        # Down to 1 MB: least recently used first, but never the kernel's image.
        squeezed = cli(cache, "cache", "prune", "--max-size", "1M")
        assert squeezed.returncode == 0, squeezed.stderr
        assert f"removed {golang_image} for linux/amd64" in squeezed.stdout
        assert f"removed {test_image} for linux/amd64" in squeezed.stdout
        assert "linux/arm64" not in squeezed.stdout
        listed = cli(cache, "cache").stdout
        assert f"{test_image}  linux/arm64" in listed and listed.rstrip().endswith("yes")
        assert cli(cache, "cache", "prune", "--unused").stdout.startswith("0 image(s)")
    finally:
        os.killpg(kernel.pid, signal.SIGKILL)
        kernel.wait()
    # Gone with its kernel (whose leftovers prune reaps first): now it goes too, and its
    # layers with it.
    pruned = cli(cache, "cache", "prune", "--unused").stdout
    assert "left by dead kernels removed" in pruned
    assert f"removed {test_image} for linux/arm64" in pruned
    assert cli(cache, "cache").stdout.splitlines()[1] == "no images"
    assert not [p for p in (cache / "blobs" / "sha256").iterdir() if p.stat().st_size > 100_000]


def test_prune_by_age_keeps_what_was_used_lately(test_image, tmp_path):
    cache = tmp_path / "cache"
    done = cli(cache, "pull", test_image, "--platform", PLATFORMS, "--engine", "embedded")
    assert done.returncode == 0, done.stderr
    assert cli(cache, "cache", "prune", "--older-than", "1h").stdout.startswith("0 image(s)")
    old = time.time() - 7200
    for image_dir in (cache / "images").iterdir():
        if "arm64" in (image_dir / "image.json").read_text():
            os.utime(image_dir / "image.json", (old, old))
    pruned = cli(cache, "cache", "prune", "--older-than", "1h").stdout
    assert f"removed {test_image} for linux/arm64" in pruned and "amd64" not in pruned


@pytest.fixture
def golang_image() -> str:
    from environment import required_env

    return required_env("MPC_TEST_GOLANG_IMAGE")
