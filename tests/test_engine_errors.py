"""Commands that cannot start, as a user meets them: the exit codes and messages of `docker run`.

A missing command exits 127 and one that cannot be executed (a directory, a file without its
x bit) 126, with the reason on stderr, on that platform only, on both engines. A foreign
platform whose QEMU binfmt handler lacks the F flag says so and how to fix it (Docker only:
the embedded engine runs qemu-user itself, binfmt_misc plays no part).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import my_containers

import mpcontainer_magics as mpc

pytestmark = pytest.mark.real

T = TypeVar("T")
AMD64, ARM64, S390X = "linux/amd64", "linux/arm64", "linux/s390x"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def run(main: Callable[[mpc.Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with mpc.connect() as client:
            return await main(client)

    return asyncio.run(go())


@pytest.mark.usefixtures("no_leaks")
def test_a_tool_one_platform_lacks_exits_127_there_and_the_others_run(test_image, registry_host):
    """A multi-platform image whose s390x variant lacks /opt/bin/tool: only that row fails."""
    ref = f"{registry_host}/test/tool-{uuid.uuid4().hex[:10]}:v1"

    async def main(client: mpc.Client) -> mpc.RunResult:
        tool = client.directory().with_new_file("tool", "#!/bin/sh\nuname -m\n", permissions=0o755)
        amd64, arm64, s390x = (
            client.container(platform=p).from_(test_image) for p in (AMD64, ARM64, S390X)
        )
        variants = [
            amd64.with_directory("/opt/bin", tool),
            arm64.with_directory("/opt/bin", tool),
            s390x,
        ]
        published = await client.container().publish(ref, platform_variants=variants)
        return await client.run(["/opt/bin/tool"], image=published, platforms=[AMD64, ARM64, S390X])

    result = run(main)
    ran = [(result[p].exit_code, result[p].stdout) for p in (AMD64, ARM64)]
    assert ran == [(0, "x86_64\n"), (0, "aarch64\n")]
    s390x = result[S390X]
    assert (s390x.exit_code, s390x.error) == (127, None)
    assert "/opt/bin/tool" in s390x.stderr
    assert "not found" in s390x.stderr or "no such file or directory" in s390x.stderr


@pytest.mark.usefixtures("no_leaks")
def test_a_missing_program_in_with_exec_is_non_zero_exit_127(test_image):
    async def main(client: mpc.Client) -> str:
        return (
            await client.container(platform=AMD64)
            .from_(test_image)
            .with_exec(["/nonexistent"])
            .stdout()
        )

    with pytest.raises(
        mpc.NonZeroExit, match=r"/nonexistent exited with 127 on linux/amd64: .*/nonexistent"
    ):
        run(main)


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("program", ["/etc", "/etc/passwd"])  # a directory; a file without x
def test_what_cannot_be_executed_exits_126(test_image, program):
    async def main(client: mpc.Client) -> tuple[int, str]:
        ran = client.container(platform=ARM64).from_(test_image).with_exec([program], expect="any")
        return await ran.exit_code(), await ran.stderr()

    exit_code, stderr = run(main)
    assert exit_code == 126
    assert program in stderr and "permission denied" in stderr.lower()


@pytest.mark.usefixtures("no_leaks")
def test_copying_under_a_file_says_so_with_the_fix_not_an_http_status(test_image):
    async def main(client: mpc.Client) -> str:
        files = client.directory().with_new_file("x", "hi\n")
        ctr = client.container(platform=AMD64).from_(test_image)
        return await ctr.with_directory("/etc/passwd/sub", files).with_exec(["true"]).stdout()

    with pytest.raises(mpc.InvalidArgument) as refused:
        run(main)
    text = str(refused.value)
    assert text.startswith("cannot copy to /etc/passwd/sub in the container: ")
    assert "not a directory" in text
    assert text.endswith("copy to a path whose parents are directories (or remove that file first)")
    assert "http+docker" not in text and "Server Error" not in text


# -- a QEMU handler without the F flag (Docker) ----------------------------------------------


def _register(name: str, fields: dict[str, str], flags: str) -> None:
    def escaped(hex_digits: str) -> str:
        return "".join(f"\\x{hex_digits[i : i + 2]}" for i in range(0, len(hex_digits), 2))

    rule = f":{name}:M:{fields['offset']}:{escaped(fields['magic'])}:{escaped(fields['mask'])}:"
    rule += f"{fields['interpreter']}:{flags}"
    descriptor = os.open(BINFMT / "register", os.O_WRONLY)
    try:
        os.write(descriptor, rule.encode())  # one write: the kernel parses each on its own
    finally:
        os.close(descriptor)


@contextmanager
def registered_without_f_flag(name: str) -> Iterator[None]:
    """The handler ``name`` re-registered without the F flag, then restored as it was.

    Other runs share this machine's handlers: keep the block short.
    """
    entry = BINFMT / name
    lines = entry.read_text().splitlines()
    assert lines[0] == "enabled", f"{entry} should be enabled by .ci/setup"
    # "interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P", "flags: PF", "magic 7f45…"
    fields = {k.rstrip(":"): v for k, _, v in (line.partition(" ") for line in lines[1:])}
    assert "F" in fields["flags"]
    entry.write_text("-1")
    try:
        _register(name, fields, fields["flags"].replace("F", ""))
        yield
    finally:
        if entry.exists():
            entry.write_text("-1")
        _register(name, fields, fields["flags"])


def test_a_handler_without_the_f_flag_is_named_with_its_fix(test_image, docker_api, monkeypatch):
    monkeypatch.setenv("MPC_ENGINE", "docker")

    async def main(client: mpc.Client) -> mpc.RunResult:
        await client.run(["true"], image=test_image, platforms=[AMD64, S390X])  # pulls first
        with registered_without_f_flag("qemu-s390x"):
            return await client.run(["uname", "-m"], image=test_image, platforms=[AMD64, S390X])

    result = run(main)
    assert "F" in (BINFMT / "qemu-s390x").read_text().partition("flags: ")[2].split()[0]
    assert result[AMD64].stdout == "x86_64\n"
    error = result[S390X].error
    assert error is not None and isinstance(result[S390X].exception, mpc.EmulationUnavailable)
    assert "linux/s390x cannot run on this engine" in error
    assert "qemu-s390x is registered without the F flag" in error
    assert "not visible inside containers" in error
    assert "exec /bin/uname: no such file or directory" in error
    assert "update-binfmts --enable qemu-s390x" in error
    assert "tonistiigi/binfmt --install s390x" in error
    assert my_containers(docker_api) == []
