"""What only the embedded engine (proot + qemu-user) has to get right.

The shared behaviour (cells, sessions, the Container API, publish, clean-up) is tested on
both engines by the other modules. These are about running without a daemon: Docker-like
exit codes and endings from proot, private rootfs copies that share the image's files,
the user's cache, picking the engine, and running as an unprivileged user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Containers, alive, tracees
from environment import required_env
from tcp_proxy import TcpProxy

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import LABEL_PID, process_start_ticks
from mpcontainer_magics.engines.container_trees import changed_since, stamp
from mpcontainer_magics.engines.proot import processes_using
from mpcontainer_magics.engines.tree import LinkedFiles, clone_tree, diff
from mpcontainer_magics.errors import EngineError, EngineUnavailable
from mpcontainer_magics.session import KEEP_ALIVE

ARM64 = "linux/arm64"


def run(coro_fn: Any) -> Any:
    async def main() -> Any:
        async with mpc.connect(engine="embedded") as client:
            return await coro_fn(client)

    return asyncio.run(main())


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, docker_api: Any, blob_cache: Path) -> Containers:
    """The embedded engine as "auto" (MPC_ENGINE), and a view of what it holds."""
    monkeypatch.setenv("MPC_ENGINE", "embedded")
    return Containers("embedded", docker_api, blob_cache)


# -- runs behave as `docker run` does ----------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "exit_code", "stderr"),
    [
        ("exit 3", 3, ""),
        ("echo one >&2\necho two\n\nexit 6", 6, "one\n"),  # proot echoes the argv: not ours
        # proot would report the *last* process to end (the sleep): the command's status wins,
        # and what it left behind is killed when it ends, as in a container.
        ("sleep 30 & exit 4", 4, ""),
        ("kill -9 $$", 137, ""),
        ("printf 'no newline' >&2; exit 5", 5, "no newline"),
    ],
)
@pytest.mark.parametrize("platform", ["linux/amd64", ARM64])  # native ones end fastest
def test_exit_codes_and_stderr_are_the_commands_own(
    embedded, test_image, platform, script, exit_code, stderr
):
    started = time.monotonic()
    result = run(lambda c: c.run(script, image=test_image, platforms=platform))[0]
    assert (result.exit_code, result.stderr) == (exit_code, stderr)
    assert time.monotonic() - started < 20


def test_a_missing_command_is_127_with_a_message(embedded, test_image):
    async def main(client: mpc.Client) -> Any:
        ctr = client.container(platform=ARM64).from_(test_image)
        return await ctr.with_exec(["no-such-tool", "x"]).sync()

    with pytest.raises(mpc.NonZeroExit) as failed:
        run(main)
    assert failed.value.result.exit_code == 127
    assert "exited with 127" in str(failed.value) and "no-such-tool: not found" in str(failed.value)


def test_a_command_that_cannot_start_says_why(embedded, test_image):
    async def main(client: mpc.Client) -> tuple[int, str]:
        script = client.directory().with_new_file("x", "#!/no/interpreter\n", permissions=0o755)
        ctr = client.container(platform=ARM64).from_(test_image).with_directory("/opt", script)
        ran = ctr.with_exec(["/opt/x"], expect="any")
        return await ran.exit_code(), await ran.stderr()

    exit_code, stderr = run(main)
    assert exit_code != 0
    assert stderr == 'proot: execve("/opt/x"): No such file or directory\n'


def test_leftover_processes_die_with_the_command(embedded, test_image, tmp_path):
    marker = tmp_path / "pid"
    script = f"sleep 60 & echo $! > /out/{marker.name}"
    mount = f"{tmp_path}:/out"
    run(lambda c: c.run(script, image=test_image, platforms=ARM64, mounts=[mount]))
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    assert not alive(pid)


def test_proot_leaves_no_temporary_directory_when_it_is_killed(embedded, test_image):
    # proot removes its /tmp/proot-PID-* directory only when it ends by itself; ending a
    # command's leftovers, or stopping a session, kills it.
    before = set(Path("/tmp").glob("proot-*"))

    async def main(client: mpc.Client) -> None:
        await client.run("sleep 30 & exit 4", image=test_image, platforms=ARM64)
        session = await client.session("tmp", image=test_image, platforms=ARM64)
        await session.run("true")

    run(main)
    assert set(Path("/tmp").glob("proot-*")) - before == set()


def test_a_container_whose_proot_was_killed_runs_nothing_more(embedded, test_image, blob_cache):
    # As `docker kill`: once its processes are gone it takes no exec, even in the moment
    # before the engine has read the last of its output (a session's next cell ran there).
    async def main(client: mpc.Client) -> None:
        engine = client.engine
        image = await engine.pull(test_image, mpc.Platform.parse("linux/amd64"))
        async with engine.container(image, KEEP_ALIVE) as cid:
            await engine.start(cid)
            rootfs = blob_cache / "containers" / cid / "rootfs"
            while not (guests := [g for p in processes_using(rootfs) for g in tracees(p)]):
                await asyncio.sleep(0.01)
            os.kill(*processes_using(rootfs), signal.SIGKILL)
            while any(map(alive, guests)):
                await asyncio.sleep(0)
            assert (await engine.state(cid)).startswith("exited")
            with pytest.raises(EngineError, match="is not running"):
                await engine.attach_exec(cid, ["true"], lambda *_: None)

    run(main)


# -- private rootfs copies ---------------------------------------------------------------------


def test_sessions_get_private_copies_and_the_image_stays_intact(embedded, test_image):
    look = "wc -c < /bin/busybox; cat /etc/motd 2>&1; ls /bin/new 2>&1; :"

    async def main(client: mpc.Client) -> list[str]:
        before = await client.run(look, image=test_image, platforms=ARM64)
        one = await client.session("one", image=test_image, platforms=ARM64)
        # A new file, a file in a copied directory, and a write *into* a file the session
        # shares with the image (a hard link): the one thing that reaches the image's inode.
        await one.run("echo x > /bin/new; echo one > /etc/motd; echo one >> /bin/busybox")
        mine = await one.run(look)
        await client.stop("one")  # the damage is found when the writer's container goes
        two = await client.session("two", image=test_image, platforms=ARM64)
        theirs = await two.run(look)
        later = await client.run(look, image=test_image, platforms=ARM64)
        return [r[0].stdout for r in (before, mine, theirs, later)]

    before, mine, theirs, later = run(main)
    size = int(before.splitlines()[0])
    assert mine.splitlines() == [str(size + 4), "one", "/bin/new"]
    # The damaged image was noticed and unpacked again from the cache for the next ones.
    assert theirs == later == before
    assert "No such file" in before


def test_commits_and_copies_never_walk_proots_mount_points(
    embedded, test_image, blob_cache, tmp_path
):
    # proot makes its mount points in the rootfs with mode 000 (as a Go build showed), which
    # only root can list: as a user, the commit failed there. host-rootfs is the host's /.
    async def main(client: mpc.Client) -> Any:
        session = await client.session("s", image=test_image, platforms=ARM64)
        await session.run("echo mine > /kept")
        point = embedded.rootfs(session.member().container_id) / "host-rootfs"
        (point / "etc").mkdir(parents=True)
        (point / "etc/secret").write_text("the host's\n")
        point.chmod(0)
        try:
            (snapshot,) = await session.snapshots()
            await session.copy_out("/", tmp_path / "copy")
        finally:
            point.chmod(0o700)
        image_dir = blob_cache / "images" / snapshot.image.image_id  # removed with the client
        (layer,) = image_dir.glob("diff-*.tar")
        with tarfile.open(layer) as tar:
            return os.listdir(image_dir / "rootfs"), tar.getnames()

    rootfs, layer = run(main)
    assert "kept" in rootfs and "host-rootfs" not in rootfs
    assert "kept" in layer and not [name for name in layer if name.startswith("host-rootfs")]
    assert (tmp_path / "copy/kept").is_file() and not (tmp_path / "copy/host-rootfs").exists()


def test_proots_preload_placeholder_never_reaches_a_commit_or_a_copy(
    embedded, test_image, blob_cache, tmp_path
):
    # Under qemu, proot binds /dev/null over /etc/ld.so.preload with an empty mode-000 file
    # in the rootfs, and leaves it there when it is killed (as the leftovers of a command are,
    # and a session's proot when it stops). Read as a user, it failed a notebook's commit.
    async def main(client: mpc.Client) -> Any:
        session = await client.session("preload", image=test_image, platforms=ARM64)
        await session.run("echo mine > /etc/kept")
        rootfs = embedded.rootfs(session.member().container_id)
        assert (rootfs / "etc" / "ld.so.preload").exists()  # made before proot would
        (snapshot,) = await session.snapshots()
        await session.copy_out("/etc", tmp_path / "etc")
        image_dir = blob_cache / "images" / snapshot.image.image_id
        (layer,) = image_dir.glob("diff-*.tar")
        with tarfile.open(layer) as tar:
            return os.listdir(image_dir / "rootfs" / "etc"), tar.getnames()

    etc, layer = run(main)
    assert "kept" in etc and "ld.so.preload" not in etc
    assert "etc/kept" in layer and "etc/ld.so.preload" not in layer
    assert sorted(os.listdir(tmp_path / "etc")) == sorted(etc)


def test_a_container_copy_is_mostly_hard_links(embedded, test_image, blob_cache):
    async def main(client: mpc.Client) -> tuple[Path, Path]:
        image = await client.engine.pull(test_image, mpc.Platform.parse(ARM64))
        async with client.engine.container(image) as container_id:
            root = blob_cache / "containers" / container_id / "rootfs"
            image_root = blob_cache / "images" / image.image_id.removeprefix("sha256:") / "rootfs"
            return (root / "bin/busybox").stat().st_ino, (image_root / "bin/busybox").stat().st_ino

    linked, original = run(main)
    assert linked == original


def test_a_cell_that_changes_nothing_hands_its_tree_to_the_next(embedded, test_image, blob_cache):
    # Most of a warm one-off cell was making, then removing, a private copy of the image: a
    # tree its command left as it was is the next container's. One that changed is not.
    spares = blob_cache / "spares"
    mode = "stat -c %a /etc/passwd; ls /new-file 2>&1; :"

    async def main(client: mpc.Client) -> tuple[str, str]:
        before = await client.run(mode, image=test_image, platforms=ARM64)
        (kept,) = await settled(spares)
        tree = (kept / "rootfs").stat().st_ino
        await client.run("cat /etc/passwd; ls -R /bin", image=test_image, platforms=ARM64)
        assert [(p / "rootfs").stat().st_ino for p in await settled(spares)] == [tree]
        await client.run("echo x > /new-file; chmod 600 /etc/passwd", image=test_image,
                         platforms=ARM64)  # fmt: skip
        assert await settled(spares) == []  # changed: removed, not handed on
        after = await client.run(mode, image=test_image, platforms=ARM64)
        return before[0].stdout, after[0].stdout

    before, after = run(main)
    assert after == before and "No such file" in before
    assert not spares.exists() or list(spares.iterdir()) == []  # gone with the client


def test_a_write_into_the_image_drops_every_spare_of_it(embedded, test_image, blob_cache):
    look = "wc -c < /bin/busybox"

    async def main(client: mpc.Client) -> tuple[str, str]:
        two = [client.run(look, image=test_image, platforms=ARM64) for _ in range(2)]
        before = (await asyncio.gather(*two))[0]
        assert len(await settled(blob_cache / "spares")) == 2  # both linking the image
        # Through one spare's hard link, into the image's inode, which the other links too.
        await client.run("echo x >> /bin/busybox", image=test_image, platforms=ARM64)
        after = await client.run(look, image=test_image, platforms=ARM64)
        return before[0].stdout, after[0].stdout

    before, after = run(main)
    assert after == before


async def settled(spares: Path) -> list[Path]:
    """The spare trees, once those of containers just removed are handed on or gone (that
    happens in the background: a result does not wait for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = list(spares.iterdir()) if spares.is_dir() else []
        if not any(e.name.startswith(".") or (e / "ready").exists() for e in entries):
            return entries
        await asyncio.sleep(0.02)
    raise AssertionError(f"the trees in {spares} did not settle within 10 s")


def test_a_tree_counts_as_changed_by_anything_a_command_can_do(tmp_path):
    image, tree = tmp_path / "image", tmp_path / "tree"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "conf").write_text("a\n")
    (image / "bin").mkdir()
    (image / "bin" / "tool").write_text("#!/bin/sh\n")
    (image / "bin" / "sh").symlink_to("tool")
    changes = {
        "nothing": lambda: None,
        "a new file": lambda: (tree / "new").write_text("x"),
        "a write into a file": lambda: (tree / "etc" / "conf").write_text("b\n"),
        "a write through a link into the image": lambda: (image / "bin" / "tool").write_text("!"),
        "a removal": lambda: (tree / "bin" / "sh").unlink(),
        "a rename": lambda: (tree / "etc" / "conf").rename(tree / "etc" / "conf2"),
        "a mode": lambda: (tree / "bin").chmod(0o700),
        "a hard link": lambda: os.link(tree / "etc" / "conf", tree / "conf"),
    }
    for name, change in changes.items():
        shutil.rmtree(tree, ignore_errors=True)
        clone_tree(image, tree, link=LinkedFiles.scan(image))
        ready = stamp(tmp_path / "ready")
        change()
        assert changed_since(tree, ready) == (name != "nothing"), name


def test_diff_records_changes_deletions_and_same_size_edits(tmp_path):
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "usr/lib").mkdir(parents=True)
    (lower / "etc/conf").write_text("aaaa\n")
    (lower / "usr/lib/big").write_bytes(b"x" * 100)
    (lower / "usr/lib/gone").write_text("bye\n")
    (lower / "link").symlink_to("/etc/conf")
    for path in lower.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    linked = LinkedFiles.scan(lower)
    upper = tmp_path / "upper"
    clone_tree(lower, upper, link=linked)
    assert (upper / "usr/lib/big").stat().st_ino == (lower / "usr/lib/big").stat().st_ino

    (upper / "etc/conf").write_text("bbbb\n")  # same size...
    os.utime(upper / "etc/conf", (1_600_000_000, 1_600_000_000))  # ...and same mtime
    (upper / "usr/lib/gone").unlink()
    (upper / "link").unlink()
    (upper / "link").symlink_to("/usr/lib/big")
    (upper / "new/deep").mkdir(parents=True)
    (upper / "new/deep/file").write_text("hi\n")
    layer = tmp_path / "layer.tar"
    diff(lower, upper, layer, linked=linked)
    with tarfile.open(layer) as tar:
        names = tar.getnames()
        assert tar.extractfile("etc/conf").read() == b"bbbb\n"  # type: ignore[union-attr]
    assert sorted(names) == sorted(
        ["etc/conf", "link", "new", "new/deep", "new/deep/file", "usr/lib/.wh.gone"]
    )
    assert (lower / "etc/conf").read_text() == "aaaa\n"


# -- the cache and the engine choice -----------------------------------------------------------


def test_a_second_pull_fetches_no_blob(embedded, test_image, blob_cache):
    async def pull(client: mpc.Client) -> Any:
        await client.pull(test_image, platforms="linux/s390x")
        return dict(client.engine.registry.requests)

    first, second = run(pull), run(pull)
    assert first.get("GET blob", 0) >= 2  # config and layer, into the cache
    assert "GET blob" not in second
    assert len(list((blob_cache / "images").iterdir())) == 1


def test_missing_proot_names_the_package(monkeypatch):
    monkeypatch.setenv("MPC_PROOT", "/nonexistent/proot")
    with pytest.raises(EngineUnavailable, match=r"apt-get install proot"):
        asyncio.run(mpc.connect(engine="embedded")._open())


def test_with_neither_engine_the_error_names_both_fixes(monkeypatch):
    monkeypatch.delenv("MPC_ENGINE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("MPC_PROOT", "/nonexistent/proot")
    with pytest.raises(EngineUnavailable) as failed:
        asyncio.run(mpc.connect()._open())
    text = str(failed.value)
    assert text.startswith("no container engine is available: cannot reach the Docker engine")
    assert "apt-get install proot" in text and "\n" not in text


def test_auto_picks_the_embedded_engine_without_a_daemon_and_says_so(
    ip, test_image, monkeypatch, embedded
):
    monkeypatch.delenv("MPC_ENGINE")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        report = ip.run_line_magic("container", f"platforms {test_image}")
        ip.run_cell_magic("container", f"--image {test_image} --platform {ARM64} --out res", "true")
    finally:
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
    assert "engine: embedded (auto: no Docker daemon answered" in repr(report)
    assert ip.user_ns["res"][0].engine == "embedded"


def test_the_engine_is_configurable_in_the_magic(ip, test_image, monkeypatch, embedded):
    monkeypatch.delenv("MPC_ENGINE")
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        ip.run_line_magic("config", 'ContainerMagics.engine = "embedded"')
        ip.run_cell_magic("container", f"--image {test_image} --out res", "true")
        embedded_row = ip.user_ns["res"][0]
        ip.run_line_magic("config", 'ContainerMagics.engine = "docker"')
        ip.run_cell_magic("container", f"--image {test_image} --out res", "true")
    finally:
        ip.run_line_magic("config", 'ContainerMagics.engine = "auto"')  # the shell is shared
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
    assert (embedded_row.engine, ip.user_ns["res"][0].engine) == ("embedded", "docker")


def test_orphans_and_their_processes_are_reaped(ip, test_image, embedded, blob_cache):
    kernel = textwrap.dedent(
        f"""
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "mpcontainer_magics")
        ip.run_cell_magic("container", "--session s --image {test_image}", "true")
        # Leaves its tree for a later arm64 container (the others run on amd64).
        ip.run_cell_magic("container", "--image {test_image} --platform linux/arm64", "true")
        print("started", flush=True)
        ip.run_cell_magic("container", "--image {test_image}", "sleep 600")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", kernel], stdout=subprocess.PIPE, text=True)
    roots: list[Path] = []
    try:
        _kill_and_reap(ip, proc, embedded, blob_cache, roots)
    finally:  # whatever failed, no proot of that kernel may outlive the test
        proc.kill()
        proc.wait()
        for pid in (pid for root in roots for pid in processes_using(root)):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def _kill_and_reap(
    ip: Any, proc: subprocess.Popen[str], embedded: Containers, cache: Path, roots: list[Path]
) -> None:
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    theirs = {LABEL_PID: str(proc.pid)}
    deadline = time.monotonic() + 30
    while len(embedded.managed(**theirs)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    roots += [cache / "containers" / c["Id"] / "rootfs" for c in embedded.managed(**theirs)]
    while not all(processes_using(root) for root in roots) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(roots) == 2 and all(processes_using(root) for root in roots)
    # As if it had died half-way through unpacking an image.
    half_made = cache / "images" / f".work-{proc.pid}-{process_start_ticks(proc.pid)}-x"
    (half_made / "rootfs").mkdir(parents=True)
    assert spares_of(cache, proc.pid) != []
    proc.send_signal(signal.SIGKILL)  # no atexit, no clean-up
    proc.wait()

    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        reaped = ip.magics_manager.registry["ContainerMagics"].startup.result(timeout=60)
    finally:
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
    assert reaped >= 4
    assert embedded.managed(**theirs) == [] and not half_made.exists()
    assert spares_of(cache, proc.pid) == []
    assert not any(processes_using(root) for root in roots)


def spares_of(cache: Path, pid: int) -> list[Path]:
    """The trees kept for later containers by the process ``pid``."""
    return [
        meta.parent
        for meta in (cache / "spares").glob("*/container.json")
        if json.loads(meta.read_text())["labels"].get(LABEL_PID) == str(pid)
    ]


# -- no root, no daemon ------------------------------------------------------------------------

PYTHON = "/usr/bin/python3"  # Debian's, readable by every user

AS_A_USER = """
import asyncio, json, os
import mpcontainer_magics as mpc

async def main():
    async with mpc.connect() as client:
        report = await client.platforms()
        res = await client.run("id -u; uname -m; touch /etc/ok && echo writable",
                               image=os.environ["IMAGE"], platforms="linux/amd64,linux/s390x")
        session = await client.session("s", image=os.environ["IMAGE"], platforms="linux/arm64")
        await session.run("cd /tmp && echo kept > f")
        again = await session.run("cat f; pwd")
        print(json.dumps({"chosen": report.chosen, "stdout": res.stdout,
                          "codes": [r.exit_code for r in res], "session": again[0].stdout}))

asyncio.run(main())
"""


@pytest.fixture
def user_home() -> Any:
    """A home directory for the unprivileged user "mpcu" (created by .ci/setup)."""
    home = Path(tempfile.mkdtemp(prefix="mpc-user-"))
    shutil.chown(home, "mpcu")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_an_unprivileged_user_without_docker(test_image, user_home, embedded):
    user, home = "mpcu", user_home
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        # Debian's python with our venv's packages: the venv's own interpreter may live
        # somewhere only root can read (pyenv under /root).
        "PYTHONPATH": os.pathsep.join(
            [
                str(Path(mpc.__file__).parent.parent),
                *{sysconfig.get_path(k) for k in ("purelib", "platlib")},
            ]
        ),
        "IMAGE": test_image,
    }
    done = subprocess.run(
        [
            shutil.which("runuser") or "runuser",
            "--preserve-environment",  # HOME too: the cache goes to this test's home
            "-u",
            user,
            "--",
            PYTHON,
            "-c",
            AS_A_USER,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["chosen"].startswith("auto: no Docker daemon answered")
    assert got["stdout"] == {
        "linux/amd64": "0\nx86_64\nwritable\n",  # proot's fake root, as in a container
        "linux/s390x": "0\ns390x\nwritable\n",
    }
    assert got["codes"] == [0, 0] and got["session"] == "kept\n/tmp\n"
    # Its cache is the user's own (XDG), blobs included, nothing of root's.
    cache = home / ".cache" / "mpcontainer_magics"
    assert any((cache / "blobs" / "sha256").iterdir())
    assert not any((cache / "containers").iterdir())


def test_an_unreachable_registry_falls_back_to_what_the_cache_knows(embedded, test_image):
    registry, _, name = test_image.partition("/")
    proxy = TcpProxy(registry)
    through_proxy = f"{proxy.address}/{name}"
    first = run(lambda c: c.run("uname -m", image=through_proxy, platforms="linux/s390x"))
    proxy.close()  # the registry is gone now, as on a train

    offline = run(lambda c: c.run("uname -m", image=through_proxy, platforms="linux/s390x"))
    assert offline.stdout == first.stdout == {"linux/s390x": "s390x\n"}
    assert offline[0].image_digest == first[0].image_digest
    with pytest.raises(mpc.errors.RegistryError, match="cannot reach registry"):
        run(lambda c: c.run("true", image=through_proxy, platforms="linux/ppc64le"))


@pytest.mark.parametrize("platform", ["linux/arm/v7", ARM64, "linux/amd64"])
def test_paths_stay_in_the_rootfs_on_32_bit_platforms_too(embedded, test_image, platform):
    # 32-bit glibc stats with statx, a syscall Debian's proot 5.1 does not translate: without
    # the engine's seccomp filter, /tmp here was the host's /tmp.
    script = "mkdir -p /tmp/deep/er && ls -A /tmp && stat -c %n /tmp/deep/er"
    result = run(lambda c: c.run(script, image=test_image, platforms=platform))[0]
    assert (result.exit_code, result.stdout) == (0, "deep\n/tmp/deep/er\n")
    assert not Path("/tmp/deep/er").exists()


EXPORT_AS_A_USER = """
import asyncio, sys
import mpcontainer_magics as mpc

async def main():
    async with mpc.connect("embedded") as client:
        try:
            await client.directory().with_new_file("a.txt", "hi").export(sys.argv[1])
        except mpc.HostPathError as exc:
            print(exc)

asyncio.run(main())
"""


def test_an_unprivileged_user_exporting_into_roots_directory_is_told_why(user_home):
    roots = user_home / "roots"
    roots.mkdir(mode=0o755)  # root's: mpcu may read it, not write in it
    search_path = [str(Path(mpc.__file__).parent.parent)]
    search_path += sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")})
    runuser = shutil.which("runuser") or "runuser"
    done = subprocess.run(
        [runuser, "-u", "mpcu", "--", PYTHON, "-c", EXPORT_AS_A_USER, str(roots / "out")],
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(user_home),
            "PYTHONPATH": os.pathsep.join(search_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cannot export to {roots / 'out'}: this user may not write in {roots}; "
        "give a destination you can write, e.g. ./out"
    )
    assert os.listdir(roots) == []


# -- a hub that forbids ptrace -----------------------------------------------------------------

#: A seccomp profile that allows everything but ptrace (some hardened JupyterHubs deny it).
DENY_PTRACE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}

IN_A_POD = """
import asyncio, json, os
import mpcontainer_magics as mpc

async def main():
    async with mpc.connect(engine="embedded") as client:
        report = await client.doctor()
        res = await client.run("true", image=os.environ["IMAGE"], platforms="linux/amd64")
    print(json.dumps({"problems": [str(p) for p in report.problems],
                      "runs": sorted({c.runs for c in report.platforms}),
                      "row": res[0].error, "code": res[0].exit_code}))

asyncio.run(main())
"""


def in_a_pod(tmp_path: Path, python_args: list[str], image: str, debian: str) -> Any:
    """Run Debian's python3 with ``python_args`` and our package in a container of the test
    set-up's Docker that denies ptrace, as uid 1000 with no capabilities (a hub's pod)."""
    profile = tmp_path / "deny-ptrace.json"
    profile.write_text(json.dumps(DENY_PTRACE))
    source = [str(Path(mpc.__file__).parent.parent)]
    source += sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")})
    mounts = [arg for path in ["/usr", *source] for arg in ("-v", f"{path}:{path}:ro")]
    settings = {"PYTHONPATH": os.pathsep.join(source), "HOME": "/tmp", "IMAGE": image}
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "--platform", "linux/amd64",
         "--security-opt", f"seccomp={profile}", "--security-opt", "no-new-privileges",
         "--cap-drop", "ALL", "--user", "1000:1000", *mounts,
         *(a for k, v in settings.items() for a in ("-e", f"{k}={v}")),
         debian, "/usr/bin/python3", *python_args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_hub_that_forbids_ptrace_is_told_so(test_image, tmp_path):
    # proot then exited 1 for every command, with a hint about PROOT_NO_SECCOMP, and the
    # doctor said "problems: none": it only ran `proot --version`.
    debian = required_env("MPC_TEST_DEBIAN_IMAGE")
    done = in_a_pod(tmp_path, ["-c", IN_A_POD], test_image, debian)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    (problem,) = got["problems"]
    assert problem.startswith("this environment forbids ptrace, so proot runs nothing here")
    assert "seccomp profile" in problem and "kernel.yama.ptrace_scope at 1 or below" in problem
    assert got["runs"] == ["no"]
    assert got["code"] is None and got["row"].startswith("this environment forbids ptrace")
    assert "PROOT_NO_SECCOMP" not in got["row"]
    # The hub's admin, at a terminal of the pod.
    doctor = in_a_pod(tmp_path, ["-m", "mpcontainer_magics", "doctor"], test_image, debian)
    assert doctor.returncode == 1, doctor.stderr
    assert "problems (1):\n  this environment forbids ptrace" in doctor.stdout
