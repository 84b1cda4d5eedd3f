"""What users run, on both real engines: Debian images (dash as /bin/sh, apt, no resolver
files of their own), one with gcc and python3, and Debian 13's arm64 python3, whose code
authenticates pointers (`.ci/distro_images` builds them from Debian's packages).

Each test is what a user would do with them; each defect this found has its test here. The
images are big, so the module shares one cache (each embedded image is unpacked once) and
the tests stay on few platforms.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import MARKER, bounded, layers_exported
from environment import required_env
from IPython.core.error import UsageError

import mpcontainer_magics as mpc

TWO = "linux/amd64,linux/arm64"
STILL_SLEEPING = (
    "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done "
    "| grep '^sleep 6[123] ' || :"
)


@pytest.fixture(scope="module")
def debian() -> str:
    return required_env("MPC_TEST_DEBIAN_IMAGE")


@pytest.fixture(scope="module")
def debian_dev() -> str:
    return required_env("MPC_TEST_DEBIAN_DEV_IMAGE")


@pytest.fixture(scope="module")
def trixie() -> str:
    return required_env("MPC_TEST_TRIXIE_IMAGE")


@pytest.fixture(scope="module")
def distro_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distro-cache")


@pytest.fixture(autouse=True)
def blob_cache(distro_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache for the module (the conftest's is one per test): unpacked once."""
    monkeypatch.setenv("MPC_CACHE_DIR", str(distro_cache))
    return distro_cache


def network(engine_kind: str) -> str:
    """What reaches Debian's mirror: the embedded engine shares the machine's network; this
    Docker daemon has no bridge, so its containers need the host's."""
    return "--network host" if engine_kind == "docker" else ""


def cell(shell: Any, line: str, body: str) -> mpc.RunResult:
    shell.run_cell_magic("container", f"{line} --out res", body)
    return shell.user_ns["res"]


# -- dash: a session's timeout and Ctrl-C ------------------------------------------------------


def test_timeout_and_ctrl_c_stop_a_cell_on_dash(shell, debian, capsys):
    # dash read the signal sent to the cell's process group as an option: nothing stopped,
    # the next cell waited for the old one and showed its end markers.
    line = f"--session dash --image {debian} --platform {TWO}"
    assert cell(shell, line, "readlink -f /bin/sh")[0].stdout == "/usr/bin/dash\n"
    started = time.monotonic()
    with pytest.raises(UsageError, match="did not finish within the 2 s limit"):
        cell(shell, "--session dash --timeout 2", "sleep 61 & sleep 62")
    assert time.monotonic() - started < 8  # ~2.4 s here
    assert not [n for n in shell.user_ns["res"].notes if "could not be stopped" in n]
    main = threading.main_thread().ident
    threading.Timer(1.5, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        cell(shell, "--session dash", "sleep 63")
    capsys.readouterr()
    started = time.monotonic()
    res = bounded(functools.partial(cell, shell, "--session dash", "pwd"), 10)
    assert time.monotonic() - started < 2
    assert res.stdout == {"linux/amd64": "/\n", "linux/arm64": "/\n"}
    # Nothing the cells started runs on (the embedded engine's /proc is this machine's).
    res = cell(shell, "--session dash", STILL_SLEEPING)
    assert res.stdout == {"linux/amd64": "", "linux/arm64": ""}
    out = capsys.readouterr()
    assert not MARKER.search(out.out + out.err), out
    shell.run_line_magic("container", "stop dash")


# -- what Docker plants in every container: resolv.conf, hosts, hostname -----------------------


def test_names_resolve_though_the_image_carries_no_resolver_files(shell, engine_kind, debian):
    res = cell(
        shell,
        f"--image {debian} --platform {TWO} {network(engine_kind)}",
        "ls /etc/resolv.conf /etc/hosts /etc/hostname >/dev/null && getent hosts localhost "
        "&& getent hosts $(hostname) >/dev/null && getent hosts deb.debian.org >/dev/null "
        "&& echo resolved",
    )
    for row in res:
        assert row.stdout.endswith("resolved\n"), row.stderr
        assert "127.0.0.1" in row.stdout or "::1" in row.stdout


# -- package managers --------------------------------------------------------------------------


def test_two_sessions_of_one_image_install_packages_at_once(engine_kind, debian, blob_cache):
    # Linked to the cached image, dpkg's and apt's locks were one file for every container:
    # the second session failed "locked by another process", and each apt run counted as a
    # write into the image, which was then unpacked again (4.85 s a platform).
    update = "apt-get update -qq"
    install = "apt-get install -y -qq --no-install-recommends hello >/dev/null && hello"
    # Holds apt's lock a while, so that the other session's install meets it.
    slow_install = f"apt-get -o 'DPkg::Pre-Invoke::=sleep 6' {install.removeprefix('apt-get')}"

    async def main(client: mpc.Client) -> tuple[list[mpc.RunResult], dict[str, int]]:
        sessions = [
            await client.session(name, image=debian, platforms="linux/amd64",
                                 network="host" if engine_kind == "docker" else None)
            for name in ("apt1", "apt2")
        ]  # fmt: skip
        before = unpacked_images(blob_cache)
        updated = await asyncio.gather(*(s.run(update) for s in sessions))

        async def second() -> mpc.RunResult:
            await asyncio.sleep(2)  # the first holds the lock by now
            return await sessions[1].run(install)

        installed = await asyncio.gather(sessions[0].run(slow_install), second())
        await client.stop()
        assert unpacked_images(blob_cache) == before, "the image was unpacked again after apt"
        return [*updated, *installed]

    results = asyncio.run(connected(main, engine_kind))
    for res in results:
        assert res[0].exit_code == 0, res[0].stderr
    assert results[2][0].stdout == results[3][0].stdout == "Hello, world!\n"


async def connected(main: Any, engine_kind: str) -> Any:
    async with mpc.connect(engine=engine_kind) as client:
        return await main(client)


def unpacked_images(cache: Path) -> dict[str, int]:
    """The embedded engine's unpacked images and their directories' inodes: one set aside
    and unpacked again has a new directory."""
    return {p.name: p.stat().st_ino for p in (cache / "images").glob("[0-9a-f]*")}


# -- C and Python ------------------------------------------------------------------------------

C_PROGRAM = r"""
#include <stdio.h>
int main(void) {
    unsigned int one = 1;
    printf("%s %zu %s\n", (char)-1 < 0 ? "signed" : "unsigned", sizeof(long),
           *(unsigned char *)&one ? "little" : "big");
    return 0;
}
"""


def test_c_and_python_answer_as_each_architecture_does(shell, debian_dev, tmp_path):
    (tmp_path / "abi.c").write_text(C_PROGRAM)
    res = cell(
        shell,
        f"--image {debian_dev} --platform linux/amd64,linux/arm64,linux/s390x "
        f"--mount {tmp_path}:/src:ro",
        "gcc -O2 -o /tmp/abi /src/abi.c && /tmp/abi && python3 -c "
        "'import struct, sys; print(sys.byteorder, struct.calcsize(\"P\"))'",
    )
    assert res.stdout == {
        "linux/amd64": "signed 8 little\nlittle 8\n",
        "linux/arm64": "unsigned 8 little\nlittle 8\n",
        "linux/s390x": "unsigned 8 big\nbig 8\n",
    }


def test_bin_sh_counts_one_link_as_in_docker(shell, debian):
    res = cell(shell, f"--image {debian} --platform {TWO}", "stat -c %h /bin/sh /usr/bin/sh")
    assert res.stdout == {"linux/amd64": "1\n1\n", "linux/arm64": "1\n1\n"}


# -- publishing a session over a big base ------------------------------------------------------


def test_publishing_a_session_again_over_a_big_base_reads_nothing(
    engine_kind, debian_dev, registry_host, no_leaks
):
    ref = f"{registry_host}/mpc-test/dev-session:{engine_kind}"

    async def main(client: mpc.Client) -> list[tuple[mpc.Published, int]]:
        exported = layers_exported(client)
        session = await client.session("big", image=debian_dev, platforms="linux/arm64")
        await session.run("echo built > /srv/out")
        published = []
        for _ in range(2):
            exported.clear()
            published.append((await client.publish(ref, session), sum(exported)))
        return published

    (first, exported1), (again, exported2) = asyncio.run(connected(main, engine_kind))
    assert exported1 == 1  # the session's own layer; the two below are the registry's
    assert exported2 == 0 and again.uploaded_bytes == 0 and again.digest == first.digest
    done = subprocess.run(
        ["docker", "run", "--rm", "--pull", "always", "--platform", "linux/arm64",
         again.reference, "cat", "/srv/out"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout == "built\n"


# -- Debian 13: code that authenticates pointers ----------------------------------------------

PAC_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
/* Signs a pointer, then authenticates it unchanged and with one bit of its signature
   flipped: a CPU with pointer authentication gives the pointer back only in the first case
   (or traps in the second). Without it, both would give it back. */
int main(void) {
    uint64_t pointer = (uint64_t)&main, signed_ = pointer, good, bad;
    __asm__("pacia %0, %1" : "+r"(signed_) : "r"((uint64_t)42));
    good = signed_;
    bad = signed_ ^ (1ULL << 53);
    __asm__("autia %0, %1" : "+r"(good) : "r"((uint64_t)42));
    __asm__("autia %0, %1" : "+r"(bad) : "r"((uint64_t)42));
    printf("signed %s, intact %s, tampered %s\n", signed_ != pointer ? "yes" : "no",
           good == pointer ? "accepted" : "refused", bad == pointer ? "accepted" : "refused");
    return 0;
}
"""


@pytest.fixture(scope="module")
def pac_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static arm64 program that shows whether pointers are really authenticated."""
    compiler = shutil.which("aarch64-linux-gnu-gcc")
    if compiler is None:
        pytest.fail("aarch64-linux-gnu-gcc is missing: .ci/distro_images installs it")
    where = tmp_path_factory.mktemp("pac")
    (where / "pac.c").write_text(PAC_PROGRAM)
    subprocess.run(
        [compiler, "-O1", "-static", "-march=armv8.3-a", "-o", str(where / "pac-check"),
         str(where / "pac.c")],
        check=True,
    )  # fmt: skip
    (where / "pac.c").unlink()
    return where


def test_arm64_code_runs_as_on_hardware_under_the_fast_cpu_model(shell, trixie, pac_check):
    res = cell(
        shell,
        f"--image {trixie} --platform linux/arm64 --mount {pac_check}:/pac:ro",
        "echo $QEMU_CPU; /pac/pac-check; echo $?; fib-pac 25; "
        "python3 -c 'import sys; print(sys.version_info[:2], sum(range(10**5)))'",
    )
    model, *checked, fib, python = res[0].stdout.splitlines()
    assert model == "max,pauth-impdef=on"
    # Authenticated for real: a tampered pointer is refused, or the CPU traps (FEAT_FPAC).
    assert checked in (["signed yes, intact accepted, tampered refused", "0"], ["132"])
    assert (fib, python) == ("75025", "(3, 13) 4999950000")
