"""The Dagger-style API on the real engine: containers, directories, host paths, git trees.

Each test is a small example of use: build a container step by step with plain calls
(``from_``, ``with_exec``, ``with_env_variable``…), then ``await`` a terminal call
(``stdout()``, ``entries()``, ``export()``…). Every test opens its own client, and closing it
must remove every container and snapshot image it made (``no_leaks``, and the last section).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import assert_says_what_and_how, everything_under
from IPython.core.error import UsageError

import mpcontainer_magics as mpc

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("no_leaks")]

T = TypeVar("T")

AMD64, ARM64, S390X = "linux/amd64", "linux/arm64", "linux/s390x"
WINDOWS = "windows/amd64"


# -- helpers ---------------------------------------------------------------------------------


def run(coro_fn: Callable[[mpc.Client], Awaitable[T]]) -> T:
    """``await coro_fn(client)`` with a fresh client, closed (all it made removed) afterwards."""

    async def main() -> T:
        async with mpc.connect() as client:
            return await coro_fn(client)

    return asyncio.run(main())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_sums(sha256sum_output: str) -> dict[str, str]:
    """``sha256sum`` lines ("DIGEST  NAME") as {NAME: DIGEST}."""
    return {
        name: digest
        for digest, name in (line.split(maxsplit=1) for line in sha256sum_output.splitlines())
    }


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative and sorted (directories end with "/")."""
    return sorted(
        str(p.relative_to(root)) + ("/" if p.is_dir() and not p.is_symlink() else "")
        for p in root.rglob("*")
    )


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


# -- the first program: one command, three architectures -------------------------------------


def test_uname_on_three_architectures_concurrently(test_image, capsys):
    """The seed's first program, through the API: each platform reports its own machine."""

    async def main(client: mpc.Client) -> list[str]:
        async def machine(platform: str) -> str:
            ctr = client.container(platform=platform).from_(test_image)
            out = await ctr.with_exec(["uname", "-m"]).stdout()
            print(f"I'm executing on architecture: {out.strip()}")
            return out

        return await asyncio.gather(*(machine(p) for p in (AMD64, ARM64, S390X)))

    assert run(main) == ["x86_64\n", "aarch64\n", "s390x\n"]
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == [
        "I'm executing on architecture: aarch64",
        "I'm executing on architecture: s390x",
        "I'm executing on architecture: x86_64",
    ]


# -- chains keep state -----------------------------------------------------------------------


def test_chained_execs_share_files_env_and_workdir(test_image):
    """Each with_exec starts from the previous one's filesystem; env and workdir carry on."""

    async def main(client: mpc.Client) -> tuple[str, str, str]:
        ctr = (
            client.container(platform=ARM64)
            .from_(test_image)
            .with_exec(["sh", "-c", "mkdir -p /work/sub && echo one > /work/notes"])
            .with_env_variable("GREETING", "hello arm")
            .with_workdir("/work")
        )
        appended = ctr.with_exec(["sh", "-c", "echo two >> notes && cat notes"])
        # A relative workdir extends the current one: /work + sub.
        inner = appended.with_workdir("sub").with_exec(["sh", "-c", 'pwd; echo "$GREETING"'])
        notes = await inner.file("/work/notes").contents()
        return await appended.stdout(), await inner.stdout(), notes

    appended, inner, notes = run(main)
    assert appended == "one\ntwo\n"
    assert inner == "/work/sub\nhello arm\n"
    assert notes == "one\ntwo\n"


# -- immutability and evaluate-once ----------------------------------------------------------


def test_branches_from_one_base_do_not_see_each_other(test_image):
    """Builder calls return new objects: two execs on one base are two separate histories."""

    async def main(client: mpc.Client) -> tuple[str, str, str]:
        base = (
            client.container(platform=AMD64)
            .from_(test_image)
            .with_exec(["sh", "-c", "echo base > /tmp/base"])
        )
        a = base.with_exec(["sh", "-c", "echo a > /tmp/a"])
        b = base.with_exec(["sh", "-c", "echo b > /tmp/b"])
        listing = ["ls", "/tmp"]
        return (
            await a.with_exec(listing).stdout(),
            await b.with_exec(listing).stdout(),
            await base.with_exec(listing).stdout(),
        )

    assert run(main) == ("a\nbase\n", "b\nbase\n", "base\n")


def test_a_container_runs_its_command_once(test_image):
    """Awaiting the same container twice reuses its result; derived containers see its files."""

    async def main(client: mpc.Client) -> tuple[str, str, str, str]:
        ctr = (
            client.container(platform=S390X)
            .from_(test_image)
            .with_exec(["sh", "-c", "cat /proc/sys/kernel/random/uuid | tee /tmp/id"])
        )
        first = await ctr.stdout()
        second = await ctr.stdout()
        from_file = await ctr.with_exec(["cat", "/tmp/id"]).stdout()
        return first, second, from_file, await ctr.file("/tmp/id").contents()

    first, second, from_file, contents = run(main)
    assert len(first) == 37 and first.count("-") == 4  # a fresh uuid and a newline
    assert second == first
    assert from_file == first
    assert contents == first


def test_concurrent_awaits_of_one_container_run_it_once(test_image):
    """gather() over one container (and a child of it) must still run the command once."""

    async def main(client: mpc.Client) -> list[str]:
        ctr = (
            client.container(platform=AMD64)
            .from_(test_image)
            .with_exec(["sh", "-c", "cat /proc/sys/kernel/random/uuid | tee /tmp/id"])
        )
        return await asyncio.gather(
            ctr.stdout(), ctr.stdout(), ctr.with_exec(["cat", "/tmp/id"]).stdout()
        )

    outputs = run(main)
    assert len(set(outputs)) == 1, f"one command, several results: {outputs}"


# -- commands that fail ----------------------------------------------------------------------


FAILING = ["sh", "-c", "echo partial; echo warming up >&2; echo disk on fire >&2; exit 3"]


def test_nonzero_exit_raises_one_line_naming_command_code_platform_and_stderr(test_image):
    async def main(client: mpc.Client) -> None:
        ctr = client.container(platform=S390X).from_(test_image).with_exec(FAILING)
        await ctr.stdout()

    with pytest.raises(mpc.NonZeroExit) as caught:
        run(main)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("sh -c 'echo partial;")  # the command, shell-quoted
    assert "exited with 3 on linux/s390x: disk on fire" in message  # the last stderr line
    assert "expect='any'" in message  # and how to carry on
    assert caught.value.result.exit_code == 3
    assert caught.value.result.stdout == "partial\n"


def test_expect_any_makes_the_exit_code_data(test_image):
    async def main(client: mpc.Client) -> tuple[int, str, str]:
        ctr = client.container(platform=S390X).from_(test_image)
        ctr = ctr.with_exec(FAILING, expect="any")
        return await ctr.exit_code(), await ctr.stdout(), await ctr.stderr()

    assert run(main) == (3, "partial\n", "warming up\ndisk on fire\n")


# -- exporting what a container made ---------------------------------------------------------


WRITE_OUT = """
set -e
mkdir -p /out/nested/deeper && cd /out
echo hello > hello.txt
head -c 200000 /dev/urandom > random.bin
uname -m > nested/deeper/arch.txt
printf '#!/bin/sh\\necho ran\\n' > run.sh && chmod 755 run.sh
ln -s hello.txt link
sha256sum hello.txt random.bin nested/deeper/arch.txt run.sh
"""


def test_exported_directory_is_what_the_emulated_container_wrote(test_image, tmp_path):
    """Bytes, nesting, modes and symlinks all survive the trip from arm64 to the host."""

    async def main(client: mpc.Client) -> tuple[str, str]:
        ctr = client.container(platform=ARM64).from_(test_image)
        ctr = ctr.with_exec(["sh", "-c", WRITE_OUT])
        return await ctr.stdout(), await ctr.directory("/out").export(tmp_path / "x")

    sums_text, exported = run(main)
    dest = Path(exported)
    assert dest == tmp_path / "x"
    sums = parse_sums(sums_text)
    assert sorted(sums) == ["hello.txt", "nested/deeper/arch.txt", "random.bin", "run.sh"]
    assert {name: sha256_of(dest / name) for name in sums} == sums
    assert (dest / "random.bin").stat().st_size == 200000
    assert (dest / "nested/deeper/arch.txt").read_text() == "aarch64\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert (dest / "link").is_symlink() and os.readlink(dest / "link") == "hello.txt"
    assert tree(dest) == [
        "hello.txt",
        "link",
        "nested/",
        "nested/deeper/",
        "nested/deeper/arch.txt",
        "random.bin",
        "run.sh",
    ]


# -- a directory made on one architecture, used on another -----------------------------------


MAKE_DATA = (
    "mkdir /data && cd /data && uname -m > arch && head -c 50000 /dev/urandom > blob"
    " && sha256sum arch blob > SUMS"
)


def amd64_data(client: mpc.Client, image: str) -> mpc.Directory:
    """/data as written by an amd64 container: its arch, random bytes, and their sums."""
    ctr = client.container(platform=AMD64).from_(image).with_exec(["sh", "-c", MAKE_DATA])
    return ctr.directory("/data")


def test_amd64_directory_mounted_in_an_arm64_container(test_image, tmp_path):
    """A mount is a copy: later steps see writes to it, the source directory never does."""

    async def main(client: mpc.Client) -> dict[str, Any]:
        data = amd64_data(client, test_image)
        arm = client.container(platform=ARM64).from_(test_image)
        arm = arm.with_mounted_directory("/mnt/data", data)
        checked = arm.with_exec(["sh", "-c", "cd /mnt/data && sha256sum -c SUMS && uname -m"])
        wrote = checked.with_exec(
            ["sh", "-c", "echo from-arm > /mnt/data/new && uname -m >> /mnt/data/arch"]
        )
        return {
            "checked": await checked.stdout(),
            "later": await wrote.with_exec(["cat", "/mnt/data/new", "/mnt/data/arch"]).stdout(),
            "mount": await wrote.directory("/mnt/data").entries(),
            "mount_arch": await wrote.directory("/mnt/data").file("arch").contents(),
            "source": await data.entries(),
            "source_arch": await data.file("arch").contents(),
            "exported": await data.export(tmp_path / "data"),
            # The rootfs holds only the (empty) mount point Docker made, not what was written.
            "rootfs_mount_point": await wrote.rootfs().entries("mnt/data"),
        }

    got = run(main)
    assert got["checked"] == "arch: OK\nblob: OK\naarch64\n"
    assert got["later"] == "from-arm\nx86_64\naarch64\n"
    assert got["mount"] == ["SUMS", "arch", "blob", "new"]
    assert got["mount_arch"] == "x86_64\naarch64\n"
    # Neither the source Directory nor its copy on the host saw the arm64 writes.
    assert got["source"] == ["SUMS", "arch", "blob"]
    assert got["source_arch"] == "x86_64\n"
    assert tree(Path(got["exported"])) == ["SUMS", "arch", "blob"]
    assert got["rootfs_mount_point"] == []


def test_amd64_directory_copied_into_an_arm64_rootfs(test_image):
    """with_directory copies into the filesystem itself: rootfs() shows it."""

    async def main(client: mpc.Client) -> tuple[list[str], list[str], str]:
        arm = client.container(platform=ARM64).from_(test_image)
        arm = arm.with_directory("/opt/data", amd64_data(client, test_image))
        checked = arm.with_exec(["sh", "-c", "cd /opt/data && sha256sum -c SUMS && cat arch"])
        return (
            await arm.rootfs().entries(),
            await arm.rootfs().entries("opt/data"),
            await checked.stdout(),
        )

    rootfs, copied, checked = run(main)
    assert rootfs == ["bin", "etc", "opt", "root", "tmp"]
    assert copied == ["SUMS", "arch", "blob"]
    assert checked == "arch: OK\nblob: OK\nx86_64\n"


def test_with_directory_into_an_existing_directory_keeps_its_mode(test_image):
    """Copying files into /tmp adds them; /tmp stays world-writable and sticky."""

    async def main(client: mpc.Client) -> str:
        files = client.directory().with_new_file("a.txt", "hi")
        ctr = client.container().from_(test_image).with_directory("/tmp", files)
        return await ctr.with_exec(["stat", "-c", "%a %n", "/tmp", "/tmp/a.txt"]).stdout()

    assert run(main) == "1777 /tmp\n644 /tmp/a.txt\n"


# -- a container from nothing but a directory ------------------------------------------------


def test_with_rootfs_of_a_static_binary(test_image, containers):
    """A directory holding arm64 busybox becomes an arm64 container with exactly those files."""

    async def main(client: mpc.Client) -> dict[str, Any]:
        arm = client.container(platform=ARM64).from_(test_image)
        busybox = await arm.file("/bin/busybox").contents_bytes()
        root = (
            client.directory()
            .with_new_file("bin/busybox", busybox, permissions=0o755)
            .with_new_file("etc/motd", "tiny\n")
        )
        before = set(containers.my_images())
        ctr = client.container(platform=ARM64).with_rootfs(root)
        got = {
            "entries": await ctr.rootfs().entries(),
            "uname": await ctr.with_exec(["/bin/busybox", "uname", "-m"]).stdout(),
            "motd": await ctr.with_exec(["/bin/busybox", "cat", "/etc/motd"]).stdout(),
            "elf": busybox[:4],
        }
        made = [containers.image_facts(i) for i in containers.my_images() if i not in before]
        got["made"] = sorted(made)
        return got

    got = run(main)
    assert got["elf"] == b"\x7fELF"
    assert got["entries"] == ["bin", "etc"]  # no .dockerenv, dev, proc, sys
    assert got["uname"] == "aarch64\n"
    assert got["motd"] == "tiny\n"
    # Docker holds the rootfs as a one-layer arm64 image, plus one snapshot per exec on top of
    # it (an exec that writes nothing adds no layer, so those may have one layer too).
    assert len(got["made"]) == 3
    assert {(os_, arch) for os_, arch, _ in got["made"]} == {("linux", "arm64")}
    assert got["made"][0][2] == 1


# -- reading an image's files ----------------------------------------------------------------


def test_rootfs_of_an_image_is_exactly_its_content(test_image):
    async def main(client: mpc.Client) -> tuple[list[str], str, list[str]]:
        ctr = client.container(platform=S390X).from_(test_image)
        return (
            await ctr.rootfs().entries(),
            await ctr.file("/etc/passwd").contents(),
            await ctr.directory("/root").entries(),
        )

    entries, passwd, root_home = run(main)
    assert entries == ["bin", "etc", "root", "tmp"]
    assert passwd.startswith("root:x:0:0")
    assert root_home == []


@pytest.mark.parametrize(
    ("read", "message"),
    [
        ("directory:/etc/passwd", "/etc/passwd is a file in the container; use file()"),
        ("file:/etc", "/etc is not a file"),
        ("file:/bin", "/bin is a directory in the container; use directory()"),
        (
            "directory:/no/such/dir",
            "/no/such/dir does not exist in the container; check the name, e.g. list "
            "/no/such with ls",
        ),
        (
            "file:/no/such/file",
            "/no/such/file does not exist in the container; check the name, e.g. list "
            "/no/such with ls",
        ),
    ],
)
def test_wrong_kind_or_missing_path_is_invalid_argument(test_image, read, message):
    kind, path = read.split(":")

    async def main(client: mpc.Client) -> object:
        ctr = client.container().from_(test_image)
        if kind == "file":
            return await ctr.file(path).contents()
        return await ctr.directory(path).entries()

    with pytest.raises(mpc.InvalidArgument) as caught:
        run(main)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_file_through_a_symlink_reads_its_target(test_image):
    """/bin/sh -> busybox: reading it gives busybox's bytes, as `cat /bin/sh` would."""

    async def main(client: mpc.Client) -> tuple[bytes, bytes]:
        ctr = client.container().from_(test_image)
        return (
            await ctr.file("/bin/sh").contents_bytes(),
            await ctr.file("/bin/busybox").contents_bytes(),
        )

    sh, busybox = run(main)
    assert sh == busybox


# -- directories built on the host -----------------------------------------------------------


def test_built_directory_lists_reads_and_exports(tmp_path):
    async def main(client: mpc.Client) -> tuple[list[str], list[str], str, str]:
        d = client.directory().with_new_file("a/b.txt", "hi").with_new_file("top.txt", b"\x00\x01")
        return (
            await d.entries(),
            await d.entries("a"),
            await d.file("a/b.txt").contents(),
            await d.export(tmp_path / "out"),
        )

    top, inner, contents, exported = run(main)
    assert top == ["a", "top.txt"]
    assert inner == ["b.txt"]
    assert contents == "hi"
    assert tree(Path(exported)) == ["a/", "a/b.txt", "top.txt"]
    assert (tmp_path / "out/top.txt").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize(
    "build",
    [
        lambda d: d.with_new_file("../escape.txt", "x"),
        lambda d: d.with_new_file("a/../../escape.txt", "x"),
        lambda d: d.directory(".."),
        lambda d: d.file("a/../../etc/passwd"),
        lambda d: d.with_directory("..", d),
    ],
)
def test_paths_leaving_a_directory_are_refused(build):
    async def main(client: mpc.Client) -> object:
        return build(client.directory())

    with pytest.raises(mpc.InvalidArgument, match=r"'\.\.' may not leave the directory"):
        run(main)


def test_host_directory_is_a_snapshot_taken_on_first_use(test_image, tmp_path):
    """Mounted host files are read in the container; neither later host edits nor container
    writes cross over."""
    (tmp_path / "note.txt").write_text("before\n")

    async def main(client: mpc.Client) -> tuple[str, str]:
        host = client.host().directory(tmp_path)
        ctr = client.container(platform=ARM64).from_(test_image)
        ctr = ctr.with_mounted_directory("/host", host)
        first = await ctr.with_exec(
            ["sh", "-c", "cat /host/note.txt && echo scribble > /host/note.txt"]
        ).stdout()
        (tmp_path / "note.txt").write_text("after\n")
        again = await ctr.with_exec(["cat", "/host/note.txt"]).stdout()
        return first, again

    assert run(main) == ("before\n", "before\n")
    assert (tmp_path / "note.txt").read_text() == "after\n"  # the container's write stayed in


@pytest.mark.parametrize(
    ("name", "message"), [("nope", "does not exist"), ("a-file", "is not a directory")]
)
def test_host_path_that_is_no_directory_is_invalid_argument(tmp_path, name, message):
    (tmp_path / "a-file").write_text("x")

    async def main(client: mpc.Client) -> list[str]:
        return await client.host().directory(tmp_path / name).entries()

    with pytest.raises(mpc.InvalidArgument) as caught:
        run(main)
    assert str(caught.value) == (
        f"host path {tmp_path / name} {message}; give host().directory() an existing directory"
    )


# -- git -------------------------------------------------------------------------------------


def test_git_branch_tree_in_an_arm64_container(test_image, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "README").write_text("on main\n")
    git("add", ".", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    git("checkout", "-qb", "feature", cwd=repo)
    (repo / "src").mkdir()
    (repo / "src/feature.txt").write_text("feature work\n")
    git("add", ".", cwd=repo)
    git("commit", "-qm", "feature", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    (repo / "README").write_text("main moved on\n")
    git("commit", "-qam", "later", cwd=repo)

    async def main(client: mpc.Client) -> tuple[list[str], list[str], str, str]:
        feature = client.git(str(repo)).branch("feature").tree()
        main_tree = client.git(str(repo)).branch("main").tree()
        ctr = client.container(platform=ARM64).from_(test_image)
        ctr = ctr.with_directory("/src", feature)
        shown = ctr.with_exec(["sh", "-c", "cat /src/README /src/src/feature.txt; uname -m"])
        try:
            await client.git(str(repo)).branch("no-such-branch").tree().entries()
        except mpc.GitError as exc:
            missing = str(exc)
        else:
            missing = "no error"
        return await feature.entries(), await main_tree.entries(), await shown.stdout(), missing

    feature, main_entries, shown, missing = run(main)
    assert feature == ["README", "src"]  # no .git
    assert main_entries == ["README"]
    assert shown == "on main\nfeature work\naarch64\n"
    assert "no-such-branch" in missing and "\n" not in missing


# -- images that cannot run here: files only -------------------------------------------------


def test_windows_image_files_are_readable(windows_image):
    async def main(client: mpc.Client) -> tuple[list[str], str, list[str], str]:
        win = client.container(platform=WINDOWS).from_(windows_image)
        return (
            await win.rootfs().entries(),
            await win.file("/hello.txt").contents(),
            await win.directory("/Windows/System32/drivers/etc").entries(),
            str(await win.platform()),
        )

    assert run(main) == (
        ["Windows", "hello.txt"],
        "hello from windows/amd64\n",
        ["hosts"],
        "windows/amd64",
    )


def test_exec_on_windows_is_refused_at_once(windows_image):
    async def main(client: mpc.Client) -> object:
        return client.container(platform=WINDOWS).from_(windows_image).with_exec(["cmd"])

    with pytest.raises(mpc.ExecUnsupported) as caught:
        run(main)
    message = str(caught.value)
    assert "cannot run commands on windows/amd64" in message
    assert "Linux platforms only" in message and "\n" not in message
    assert isinstance(caught.value, mpc.InvalidArgument)


def test_ls_and_cat_magics_read_a_windows_image(shell, windows_image, capsys):
    where = f"--image {windows_image} --platform {WINDOWS}"
    shell.run_line_magic("container", f"ls / {where}")
    assert capsys.readouterr().out == "Windows\nhello.txt\n"
    shell.run_line_magic("container", f"cat /hello.txt {where}")
    assert capsys.readouterr().out == "hello from windows/amd64\n"
    shell.run_line_magic("container", f"ls /Windows/System32/drivers/etc {where}")
    assert capsys.readouterr().out == "hosts\n"


def test_a_windows_os_version_picks_its_build_as_containerd_does(shell, windows_image, capsys):
    # The index has ltsc2019 (10.0.17763) first and ltsc2022 (10.0.20348): a host of build
    # 20348 runs the ltsc2022 entry; without a version the first windows/amd64 entry is read.
    for platform, hello in [
        ("windows(10.0.20348)/amd64", "hello from windows/amd64 ltsc2022\n"),
        ("windows(10.0.17763)/amd64", "hello from windows/amd64\n"),
    ]:
        shell.run_line_magic(
            "container", f"cat /hello.txt --image {windows_image} --platform {platform}"
        )
        assert capsys.readouterr().out == hello


def test_cell_magic_on_windows_is_a_usage_error(shell, windows_image):
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic(
            "container", f"--image {windows_image} --platform {WINDOWS}", "echo hi"
        )
    assert "Linux platforms only" in str(caught.value) and "\n" not in str(caught.value)


def test_ls_magic_on_an_emulated_linux_platform(shell, test_image, capsys):
    shell.run_line_magic("container", f"ls / --image {test_image} --platform {S390X}")
    assert capsys.readouterr().out == "bin\netc\nroot\ntmp\n"


# -- mistakes are typed, one-line errors -----------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda c: c.from_(""), "from_() needs an image reference"),
        (lambda c: c.from_("   "), "from_() needs an image reference"),
        (lambda c: c.with_exec("uname -m"), "with_exec() takes a non-empty argv list"),
        (lambda c: c.with_exec([]), "with_exec() takes a non-empty argv list"),
        (lambda c: c.with_exec(["true"], expect="maybe"), "expect must be 'success' or 'any'"),
        (lambda c: c.with_env_variable("A=B", "x"), "bad environment variable name 'A=B'"),
    ],
)
def test_bad_builder_calls_raise_invalid_argument_at_once(build, message):
    async def main(client: mpc.Client) -> object:
        return build(client.container(platform=ARM64))

    with pytest.raises(mpc.InvalidArgument) as caught:
        run(main)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_stdout_before_any_exec_is_invalid_argument(test_image):
    async def main(client: mpc.Client) -> str:
        return await client.container().from_(test_image).with_workdir("/tmp").stdout()

    with pytest.raises(mpc.InvalidArgument, match=r"call with_exec\(\[\.\.\.\]\) before stdout"):
        run(main)


# -- clean-up --------------------------------------------------------------------------------


def test_closing_the_client_removes_its_snapshot_images(test_image, containers):
    """with_exec snapshots and with_rootfs images live as long as the client, no longer."""

    before = set(containers.my_images())

    async def main(client: mpc.Client) -> set[str]:
        ctr = client.container(platform=ARM64).from_(test_image)
        await ctr.with_exec(["touch", "/tmp/x"]).with_exec(["touch", "/tmp/y"]).sync()
        root = client.directory().with_new_file("hello", "hi")
        await client.container(platform=ARM64).with_rootfs(root).rootfs().entries()
        return set(containers.my_images()) - before

    made = run(main)
    assert len(made) == 3  # two snapshots and one rootfs image, while the client was open
    assert before == set(), "an earlier test's client left images behind"
    assert containers.my_images() == []


# -- writing to the host: a destination that cannot be written ------------------------------


def test_every_export_to_an_unwritable_destination_raises_host_path_error(
    test_image, bad_destinations, tmp_path
):
    async def main(client: mpc.Client) -> dict[tuple[str, str], BaseException | None]:
        ctr = (
            client.container()
            .from_(test_image)
            .with_exec(["sh", "-c", "mkdir /out && echo hi > /out/f"])
        )
        session = await client.session("to-host", image=test_image)
        await session.run("mkdir -p /out && echo hi > /out/f")
        writers: dict[str, Callable[[Path], Awaitable[Any]]] = {
            "Directory.export": lambda dest: ctr.directory("/out").export(dest),
            "File.export": lambda dest: ctr.file("/out/f").export(dest),
            "Container.export": lambda dest: ctr.export(dest),
            "Client.export as tar": lambda dest: client.export(f"{dest}.tar", [ctr]),
            "Session.copy_out": lambda dest: session.copy_out("/out", dest),
        }
        raised: dict[tuple[str, str], BaseException | None] = {}
        for why, dest in bad_destinations.items():
            for name, write in writers.items():
                try:
                    await write(dest)
                    raised[why, name] = None
                except Exception as exc:  # checked below, one by one
                    raised[why, name] = exc
        return raised

    before = everything_under(tmp_path)
    for (why, name), exc in run(main).items():
        assert isinstance(exc, mpc.HostPathError), f"{name}, {why}: {exc!r}"
        assert_says_what_and_how(str(exc), why)
    assert everything_under(tmp_path) == before  # nothing half-written left there
