"""Check out one git tree into a directory with the host's ``git``, for ``client.git(url)``.

Why the ``git`` binary rather than a Python git library: it already speaks every transport
(local paths, file://, https with the user's credential helpers, ssh with their keys and
agent) and copes with every server's quirks; all we choose is its arguments and environment.

How: ``git init`` in the destination, one shallow fetch of exactly the ref asked for
(``refs/heads/NAME``, ``refs/tags/NAME``, the remote's ``HEAD`` or a commit SHA), then a
checkout of what arrived. Fetching the fully qualified ref, rather than
``git clone --branch NAME``, means a branch and a tag of the same name are never confused, and
``--depth`` is honoured for plain local paths too. Servers that refuse to hand out a commit by
SHA (protocol v0 without ``uploadpack.allowReachableSHA1InWant``) get a full fetch of branches
and tags instead, then the checkout of that commit. The ``.git`` directory is removed unless
asked to keep it; either way it never records the URL, so credentials in a URL are never
written to disk. Submodules are not checked out.

Safety: git runs from an argv list (never a shell), with stdin from /dev/null and in a
session of its own (no controlling terminal, so neither git nor ssh can prompt for a
password: they fail instead of hanging the kernel), ``ext::`` URLs (which run commands) are
refused, and every message has the userinfo of URLs (``user:token@``) redacted. Cancelling the
awaiting task kills git with its helpers and removes what was checked out; timeouts are the
caller's business (``asyncio.wait_for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

from .errors import GitError, InvalidArgument

__all__ = ["checkout"]

# Before every git command. Command-line config outranks the user's, which we otherwise keep
# (credential helpers, url.insteadOf, proxies).
_GIT_CONFIG = (
    "-c",
    "protocol.ext.allow=never",  # ext:: URLs run arbitrary commands
    # Local paths are the user's own choice; file:// is only risky inside submodules, which we
    # never fetch. "always" keeps it working when GIT_PROTOCOL_FROM_USER=0 is inherited.
    "-c",
    "protocol.file.allow=always",
    "-c",
    "maintenance.auto=false",  # no detached gc still writing into dest after we return
    "-c",
    "core.fsmonitor=false",  # no file-watching daemon outliving the checkout
)

# Variables that point git at another repository or index (`git rev-parse --local-env-vars`),
# e.g. GIT_INDEX_FILE when tests run from a pre-commit hook: inherited, they would make us
# write into the caller's repository. The GIT_CONFIG_* ones stay: they are user settings.
_REPOSITORY_ENV = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_OBJECT_DIRECTORY",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_GRAFT_FILE",
        "GIT_INDEX_FILE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_SHALLOW_FILE",
        "GIT_COMMON_DIR",
    }
)

# Userinfo of any URL in a message; greedy up to the authority's last "@".
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s'\"]*@")
# What git forbids in ref names, including what would change a refspec's meaning (":", "*").
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")
_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_LISTED = 10  # refs named in a "no such branch" message; the rest are counted


async def checkout(
    url: str,
    dest: Path,
    *,
    branch: str | None = None,
    tag: str | None = None,
    commit: str | None = None,
    keep_git_dir: bool = False,
) -> str:
    """Check out ``url`` at one branch, tag or commit (default: the remote's HEAD) into ``dest``.

    ``dest`` must be absent or an empty directory. Returns the full SHA of the commit checked
    out. On any failure or cancellation ``dest`` is left as it was found (absent or empty).
    """
    _check_arguments(url, branch, tag, commit)
    dest = Path(dest).absolute()
    created = _prepare(dest)
    try:
        sha = await _check_out(url, dest, branch, tag, commit)
        if not keep_git_dir:
            # A fresh fetch leaves a handful of files in .git: cheap enough to stay inline.
            shutil.rmtree(dest / ".git")
    except BaseException:
        # Whatever went wrong, even cancellation (git is dead by now): put dest back.
        await asyncio.to_thread(_undo, dest, created)
        raise
    return sha


def _check_arguments(url: str, branch: str | None, tag: str | None, commit: str | None) -> None:
    # A leading "-" would be read as an option by git (argument injection); "--" guards URLs
    # in our argv too, but the ref names land in places where it cannot.
    if not url or url.startswith("-"):
        raise InvalidArgument(
            f"invalid git URL {_redact(url)!r}: it must be non-empty and must not start "
            "with '-'; for a local path starting with '-', write ./PATH"
        )
    given = {
        k: v for k, v in (("branch", branch), ("tag", tag), ("commit", commit)) if v is not None
    }
    if len(given) > 1:
        raise InvalidArgument(
            f"give at most one of branch, tag, commit (got {' and '.join(given)}); "
            "leave all out for the repository's default branch"
        )
    for kind, name in given.items():
        if not name or name.startswith("-") or _BAD_REF.search(name):
            raise InvalidArgument(
                f"invalid git {kind} name {name!r}: it must be non-empty, must not start with "
                "'-' and must not contain spaces, '..', '@{', or any of ~^:?*[\\"
            )
    if commit is not None and not _SHA.fullmatch(commit):
        raise InvalidArgument(
            f"invalid commit {commit!r}: give a commit SHA (4 to 64 hexadecimal digits); "
            "for a branch or tag use branch= or tag="
        )


def _prepare(dest: Path) -> bool:
    """Make sure ``dest`` is a new or empty directory; True if we created it."""
    try:
        dest.mkdir(parents=True)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise GitError(f"cannot create {dest}: {exc.strerror}; pick another directory") from None
    if not dest.is_dir():
        raise GitError(
            f"cannot check out into {dest}: it exists and is not a directory; "
            "pass a new or empty directory"
        )
    if any(dest.iterdir()):
        raise GitError(
            f"cannot check out into {dest}: it is not empty; pass a new or empty directory"
        )
    return False


def _undo(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():  # the caller's empty directory stays, emptied again
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def _check_out(
    url: str, dest: Path, branch: str | None, tag: str | None, commit: str | None
) -> str:
    await _git_ok(
        "init", "--quiet", "--template=", "--", str(dest), what=f"create a repository in {dest}"
    )
    # Explicit --git-dir/--work-tree instead of running in dest: a relative local URL then
    # means what the caller meant, relative to their working directory.
    repo = (f"--git-dir={dest / '.git'}", f"--work-tree={dest}")
    if commit is None:
        ref = f"refs/heads/{branch}" if branch else f"refs/tags/{tag}" if tag else "HEAD"
        code, _, err = await _git(*repo, "fetch", "--depth=1", "--no-tags", "--", url, ref)
        if code:
            raise await _fetch_failed(url, err, branch, tag)
        target = "FETCH_HEAD"
        missing = f"{_redact(url)}: {ref} is not a commit (a tag of a tree?); pick another ref"
    else:
        # Fetching by SHA needs the full SHA and a server that allows it; otherwise fetch
        # every branch and tag and look for the commit among them.
        fetched = (
            len(commit) in (40, 64)
            and not (await _git(*repo, "fetch", "--depth=1", "--no-tags", "--", url, commit))[0]
        )
        if not fetched:
            code, _, err = await _git(
                *repo,
                "fetch",
                "--no-tags",
                "--",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            )
            if code:
                raise GitError(_unreachable(url, err))
        target = commit
        missing = f"{_redact(url)} has no commit {commit} on any branch or tag; check the SHA"
    code, out, _ = await _git(*repo, "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}")
    if code:
        raise GitError(missing)
    sha = out.strip()
    # A branch checks out as that local branch, so a kept .git says which branch it is.
    switch = ("-B", branch) if branch else ("--detach",)
    await _git_ok(*repo, "checkout", "--quiet", *switch, sha, what=f"check out {sha} into {dest}")
    return sha


async def _fetch_failed(url: str, stderr: str, branch: str | None, tag: str | None) -> GitError:
    if "couldn't find remote ref" not in stderr:
        return GitError(_unreachable(url, stderr))
    if tag:
        return GitError(f"{_redact(url)} has no tag {tag!r}; {await _listing(url, 'tags')}")
    if branch:
        return GitError(f"{_redact(url)} has no branch {branch!r}; {await _listing(url, 'heads')}")
    return GitError(
        f"{_redact(url)} has no default branch (it is empty, or its HEAD names a missing "
        f"branch); {await _listing(url, 'heads')}"
    )


async def _listing(url: str, kind: str) -> str:
    """Name up to ``_LISTED`` of the remote's branches ("heads") or tags, for a message."""
    noun = "branches" if kind == "heads" else "tags"
    code, out, _ = await _git("ls-remote", f"--{kind}", "--refs", "--", url)
    if code:
        return f"list its {noun} with `git ls-remote --{kind} URL`"
    prefix = f"refs/{kind}/"
    names = [line.split("\t", 1)[1].removeprefix(prefix) for line in out.splitlines()]
    if not names:
        return f"it has no {noun}"
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"its {noun}: {', '.join(names[:_LISTED])}{more}. Pick one of those"


def _unreachable(url: str, stderr: str) -> str:
    return (
        f"cannot fetch from git repository {_redact(url)}: {_detail(stderr)}; check the URL, "
        "that the repository exists and that you may read it (a git credential helper or "
        "an SSH key; git cannot ask for passwords here)"
    )


def _detail(stderr: str) -> str:
    """The line of git's stderr that says why, redacted: the first fatal/error line (later
    ones are consequences, then boilerplate), else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    line = reasons[0].split(":", 1)[1].strip() if reasons else lines[-1] if lines else ""
    line = _redact(line or "git gave no reason")
    return line if len(line) <= 300 else line[:299] + "…"


def _redact(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


async def _git_ok(*args: str, what: str) -> None:
    code, _, err = await _git(*args)
    if code:
        raise GitError(
            f"git could not {what}: {_detail(err)}; check that there is free space and "
            "write permission there"
        )


async def _git(*args: str) -> tuple[int, str, str]:
    """Run git; return its exit status, stdout and stderr. Kill it if we are cancelled."""
    # Shielded: cancelled mid-start, asyncio would kill git but not the helpers git may have
    # started already. Instead the start completes, then the whole group is killed.
    starting = asyncio.ensure_future(_start(args))
    try:
        proc = await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(GitError):  # git is not installed: nothing to kill
            await _kill(await starting)
        raise
    try:
        out, err = await proc.communicate()
    except BaseException:
        await _kill(proc)
        raise
    code = await proc.wait()  # already exited: communicate() waits for that
    return code, out.decode(errors="replace"), err.decode(errors="replace")


async def _start(args: tuple[str, ...]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            "git",
            *_GIT_CONFIG,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment(),
            # No controlling terminal (nothing can prompt on it), and a process group of its
            # own, so a kill reaches the remote helpers (git-remote-https, ssh) too.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise GitError(
            "git is not installed (no `git` on PATH); install git: apt-get install git"
        ) from None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    # The group outlives git only while a helper is left in it, so its id is not reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPOSITORY_ENV}
    env.update(
        GIT_TERMINAL_PROMPT="0",  # fail rather than prompt for a username or password
        # Empty rather than unset: git then also skips core.askPass and SSH_ASKPASS, so no
        # password dialog can pop up where nobody sees it. Credential helpers still run.
        GIT_ASKPASS="",
        SSH_ASKPASS_REQUIRE="never",  # and ssh shows no passphrase dialog either
        LC_ALL="C",  # English messages: _fetch_failed recognises a missing ref by its text
    )
    return env
