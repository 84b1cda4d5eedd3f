"""mpcontainer_magics.git.checkout against real git and real local repositories.

Only loopback networking: a closed port, a fake HTTP server that demands a password, and a
socket that accepts and never answers (to prove cancellation kills git and its helpers).
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mpcontainer_magics.errors import GitError, InvalidArgument
from mpcontainer_magics.git import checkout

# No user or system git config may change what these tests see.
HERMETIC = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HERMETIC.items():
        monkeypatch.setenv(name, value)
    for name in ("GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS"):
        monkeypatch.delenv(name, raising=False)
    # The loopback fakes must be reached directly, never through a proxy.
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")


def git(*args: str | Path, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **HERMETIC},
        check=True,
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip()


@dataclass(frozen=True)
class Source:
    path: Path
    first: str  # oldest commit on main, tagged v1
    second: str  # on main, no branch or tag points at it
    main: str  # tip of main (the default branch), tagged "feature" too
    feature: str  # tip of branch "feature", which forks from first


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Source:
    path = tmp_path_factory.mktemp("git") / "src"
    git("init", "--quiet", "--initial-branch=main", path, cwd=path.parent)

    def commit(message: str, **files: str) -> str:
        for name, text in files.items():
            (path / name).write_text(text)
        git("add", "--all", cwd=path)
        git("commit", "--quiet", "-m", message, cwd=path)
        return git("rev-parse", "HEAD", cwd=path)

    first = commit("one", README="one\n")
    git("tag", "-a", "-m", "v1", "v1", cwd=path)
    git("switch", "--quiet", "-c", "feature", cwd=path)
    feature = commit("feature", **{"feature.txt": "f\n"})
    git("switch", "--quiet", "main", cwd=path)
    second = commit("two", README="two\n", **{"two.txt": "2\n"})
    main = commit("three", README="three\n")
    # A tag named like a branch, at another commit: tag= and branch= must not mix them up.
    git("tag", "feature", main, cwd=path)
    for n in range(12):  # enough branches for a "no such branch" message to cut its list
        git("branch", f"b{n:02}", first, cwd=path)
    return Source(path, first, second, main, feature)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def tree_of(src: Source, sha: str) -> dict[str, str]:
    names = git("ls-tree", "-r", "--name-only", sha, cwd=src.path).splitlines()
    return {n: git("show", f"{sha}:{n}", cwd=src.path) + "\n" for n in names}


@pytest.mark.parametrize(
    ("ref", "rev"),
    [
        ({}, "HEAD"),
        ({"branch": "main"}, "refs/heads/main"),
        ({"branch": "feature"}, "refs/heads/feature"),
        ({"tag": "v1"}, "refs/tags/v1"),  # annotated: peeled to its commit
        ({"tag": "feature"}, "refs/tags/feature"),  # the tag, not the branch of that name
        ({"commit": 40}, "main~1"),  # an older commit, no branch or tag at it
        ({"commit": 10}, "main~1"),  # abbreviated: found in the full history
    ],
)
def test_checks_out_the_tree_asked_for(
    src: Source, tmp_path: Path, ref: dict[str, str | int], rev: str
) -> None:
    want = git("rev-parse", f"{rev}^{{commit}}", cwd=src.path)
    kwargs = {k: want[: int(v)] if k == "commit" else str(v) for k, v in ref.items()}
    dest = tmp_path / "out"
    assert run(checkout(str(src.path), dest, **kwargs)) == want
    assert tree(dest) == tree_of(src, want)
    assert sorted(p.name for p in dest.iterdir()) == sorted(tree_of(src, want))  # no .git


def test_file_url(src: Source, tmp_path: Path) -> None:
    sha = run(checkout(src.path.as_uri(), tmp_path / "out", branch="feature"))
    assert sha == src.feature
    assert tree(tmp_path / "out") == tree_of(src, src.feature)


def test_relative_path_is_relative_to_the_callers_cwd(
    src: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(src.path.parent)
    assert run(checkout("src", tmp_path / "out")) == src.main


def test_keep_git_dir(src: Source, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    sha = run(checkout(src.path.as_uri(), dest, branch="feature", keep_git_dir=True))
    assert git("rev-parse", "HEAD", cwd=dest) == sha == src.feature
    assert git("symbolic-ref", "--short", "HEAD", cwd=dest) == "feature"
    assert git("status", "--porcelain", cwd=dest) == ""
    assert (dest / ".git" / "shallow").exists()  # fetched with --depth 1
    assert "src" not in (dest / ".git" / "config").read_text()  # the URL is not recorded


def test_commit_from_a_server_refusing_sha_requests(
    src: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protocol v0 refuses wants of unadvertised objects: the full-fetch fallback must run.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    dest = tmp_path / "out"
    sha = run(checkout(src.path.as_uri(), dest, commit=src.second, keep_git_dir=True))
    assert sha == src.second
    assert not (dest / ".git" / "shallow").exists()  # full history: the fallback ran
    assert git("status", "--porcelain", cwd=dest) == ""
    assert tree(dest) == tree_of(src, src.second)


def test_missing_branch_is_named_and_branches_listed(src: Source, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(GitError) as info:
        run(checkout(str(src.path), dest, branch="nope"))
    message = str(info.value)
    assert "no branch 'nope'" in message
    assert "b00, b01" in message and "b09 and 4 more" in message  # 14 branches, 10 named
    assert "\n" not in message
    assert not dest.exists()


def test_missing_tag_is_named_and_tags_listed(src: Source, tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"no tag 'v9'; its tags: feature, v1\."):
        run(checkout(str(src.path), tmp_path / "out", tag="v9"))


@pytest.mark.parametrize("commit", ["0" * 40, "deadbeef"])
def test_missing_commit(src: Source, tmp_path: Path, commit: str) -> None:
    with pytest.raises(GitError, match=f"has no commit {commit} on any branch or tag"):
        run(checkout(str(src.path), tmp_path / "out", commit=commit))
    assert not (tmp_path / "out").exists()


def test_missing_repository(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    dest = tmp_path / "out"
    with pytest.raises(GitError) as info:
        run(checkout(str(missing), dest))
    message = str(info.value)
    assert f"cannot fetch from git repository {missing}: '{missing}' does not appear" in message
    assert "\n" not in message
    assert not dest.exists()


def test_failure_leaves_an_existing_empty_dest_empty(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(GitError):
        run(checkout(str(tmp_path / "nowhere"), dest))
    assert dest.is_dir() and list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("--upload-pack=touch /tmp/pwned", {}),
        ("-uhelp", {}),
        ("", {}),
        ("repo", {"branch": "--orphan"}),
        ("repo", {"tag": "-x"}),
        ("repo", {"commit": "-1"}),
        ("repo", {"commit": "main"}),  # not a SHA
        ("repo", {"branch": "a:refs/heads/b"}),  # would be a refspec
        ("repo", {"branch": "*"}),
        ("repo", {"branch": "main", "tag": "v1"}),
    ],
)
def test_invalid_arguments(tmp_path: Path, url: str, ref: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        run(checkout(url, tmp_path / "out", **ref))
    assert not (tmp_path / "out").exists()


def test_ext_urls_are_refused_even_if_the_user_allows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.allow")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "always")
    marker = tmp_path / "ran"
    with pytest.raises(GitError, match="transport 'ext' not allowed"):
        run(checkout(f"ext::sh -c touch% {marker}", tmp_path / "out"))
    assert not marker.exists()


def test_inherited_repository_variables_are_ignored(
    src: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As inside a pre-commit hook: they must not redirect the checkout into that repository.
    monkeypatch.setenv("GIT_DIR", str(src.path / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "index"))
    assert run(checkout(str(src.path), tmp_path / "out")) == src.main
    assert tree(tmp_path / "out") == tree_of(src, src.main)
    assert not (tmp_path / "index").exists()


def test_credentials_in_url_are_redacted(tmp_path: Path) -> None:
    with pytest.raises(GitError) as info:
        run(checkout("https://user:s3cret@127.0.0.1:9/repo.git", tmp_path / "out"))
    message = str(info.value)
    assert "s3cret" not in message and "user" not in message
    assert "https://***@127.0.0.1:9/repo.git" in message


def test_non_empty_dest_is_refused(src: Source, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(GitError, match="it is not empty; pass a new or empty directory"):
        run(checkout(str(src.path), tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(GitError, match="is not a directory"):
        run(checkout(str(src.path), tmp_path / "keep.txt"))


def test_git_not_installed(src: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(GitError, match=r"install git: apt-get install git$"):
        run(checkout(str(src.path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


class _AskForPassword(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass


def test_password_prompt_fails_instead_of_hanging(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AskForPassword)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.git"
        started = time.monotonic()
        with pytest.raises(GitError, match=r"could not read Username .*terminal prompts disabled"):
            run(checkout(url, tmp_path / "out"))
        assert time.monotonic() - started < 10
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A loopback socket that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def test_cancel_kills_git_and_removes_dest(silent_server: socket.socket, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/x.git"

    async def go() -> tuple[socket.socket, float]:
        task = asyncio.create_task(checkout(url, dest))
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(silent_server), 10)
        assert not task.done() and dest.exists()  # git is waiting for our answer
        task.cancel()
        # Bounded: were a helper left holding git's pipes, the task would never finish.
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
        return conn

    conn = run(go())
    with conn:
        assert not dest.exists()
        # The HTTP helper (git's child) held the connection: it is closed, so it is dead too.
        conn.settimeout(5)
        while conn.recv(4096):
            pass


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        if text in argv:
            found.append(argv.replace("\0", " "))
    return found


def test_cancel_at_any_moment_leaves_no_git_behind(
    silent_server: socket.socket, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/x.git"

    async def go() -> None:
        for step in range(25):  # 0-72 ms: during `git init`, between commands, in the fetch
            dest = tmp_path / f"out{step}"
            task = asyncio.create_task(checkout(url, dest))
            await asyncio.sleep(step * 0.003)
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            assert task.done() and not dest.exists()

    run(go())
    time.sleep(0.2)  # an escaped helper may still be starting
    assert _processes_mentioning(url) == []


def test_cancel_while_git_is_starting_still_kills_it(
    silent_server: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncio's own clean-up, cancelled mid-start, kills git but not the helpers it already
    # started; widen that window (the process runs while its pipes are being connected).
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/x.git"
    start = asyncio.create_subprocess_exec

    async def slow_start(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await start(*args, **kwargs)
        await asyncio.sleep(0.5 if "fetch" in args else 0)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_start)

    async def go() -> socket.socket:
        task = asyncio.create_task(checkout(url, tmp_path / "out"))
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(silent_server), 10)
        task.cancel()  # git is connected, but its start has not returned yet
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
        return conn

    with run(go()):  # the connection stays open: only a kill ends the helper
        assert not (tmp_path / "out").exists()
        assert _processes_mentioning(url) == []
