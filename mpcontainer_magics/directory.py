"""Directories and files, lazily built (Dagger-style): on the host, from git, or taken from
a container. Builder calls return a new object; only ``entries()``, ``contents()`` and
``export()`` do work. See :mod:`.container` for the containers they come from."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._aio import in_thread
from .engines.tree import resolve_in_root
from .errors import InvalidArgument
from .evaluate import BuildContext
from .hostpaths import absolute, host_destination
from .recipes import DirSource, GitTree, HostPath, Merged, NewFile, Subdirectory, relative
from .workspace import copy_tree, move_into


@dataclass(frozen=True)
class Directory:
    """A directory tree: built on the host, checked out from git, or taken from a container."""

    _ctx: BuildContext = field(repr=False, compare=False)
    _source: DirSource

    def with_new_file(
        self, path: str, contents: str | bytes, permissions: int = 0o644
    ) -> Directory:
        """This directory plus a file at ``path`` (parents created)."""
        data = contents.encode() if isinstance(contents, str) else bytes(contents)
        return self._derive(NewFile(self._source, relative(path), data, permissions))

    def with_directory(self, path: str, directory: Directory) -> Directory:
        """This directory with ``directory``'s contents merged in at ``path``."""
        return self._derive(Merged(self._source, relative(path), directory._source))

    def directory(self, path: str) -> Directory:
        """The subdirectory at ``path``."""
        return self._derive(Subdirectory(self._source, relative(path)))

    def file(self, path: str) -> File:
        """The file at ``path``."""
        return File(self, relative(path))

    async def entries(self, path: str = ".") -> list[str]:
        """Names in the directory at ``path``, sorted."""
        target = resolve_in_root(await self._materialise(), path)
        if not target.is_dir():
            raise InvalidArgument(
                f"{path} is not a directory here; entries() lists directories, "
                "file(path).contents() reads a file"
            )
        return sorted(os.listdir(target))

    async def export(self, path: str | os.PathLike[str]) -> str:
        """Copy the tree to the host ``path`` (merged into what is there); returns the path.

        All or nothing: the copy is made beside ``path`` first, then moved in."""
        dest = absolute(path)
        tree = await self._materialise()
        with host_destination(dest, what="export") as scratch:
            await in_thread(copy_tree, tree, scratch / "tree")
            await in_thread(move_into, scratch / "tree", dest)
        return str(dest)

    def _derive(self, source: DirSource) -> Directory:
        return Directory(self._ctx, source)

    async def _materialise(self) -> Path:
        return await self._ctx.evaluator.materialise(self._source)


@dataclass(frozen=True)
class File:
    """One file of a :class:`Directory`."""

    _directory: Directory
    _path: str

    async def contents(self) -> str:
        """The file's text (UTF-8; undecodable bytes replaced)."""
        return (await self._read()).decode(errors="replace")

    async def contents_bytes(self) -> bytes:
        return await self._read()

    async def export(self, path: str | os.PathLike[str]) -> str:
        """Copy the file to the host ``path``; returns the path."""
        dest = absolute(path)
        found = await self._located()
        with host_destination(dest, what="export") as scratch:
            await in_thread(shutil.copyfile, found, scratch / "file")
            os.replace(scratch / "file", dest)
        return str(dest)

    async def _located(self) -> Path:
        found = resolve_in_root(await self._directory._materialise(), self._path)
        if not found.is_file():
            raise InvalidArgument(
                f"{self._path} is not a file in this directory; check the name with entries()"
            )
        return found

    async def _read(self) -> bytes:
        return await in_thread((await self._located()).read_bytes)


@dataclass(frozen=True)
class Host:
    """The machine the notebook runs on; ``client.host()``."""

    _ctx: BuildContext = field(repr=False, compare=False)

    def directory(self, path: str | os.PathLike[str]) -> Directory:
        """A snapshot of the host directory ``path``, taken when first used."""
        return Directory(self._ctx, HostPath(os.path.abspath(os.path.expanduser(path))))


@dataclass(frozen=True)
class GitRepository:
    """A git repository by URL or local path; ``client.git(url)``."""

    _ctx: BuildContext = field(repr=False, compare=False)
    url: str
    keep_git_dir: bool = False

    def branch(self, name: str) -> GitRef:
        return self._ref("branch", name)

    def tag(self, name: str) -> GitRef:
        return self._ref("tag", name)

    def commit(self, sha: str) -> GitRef:
        return self._ref("commit", sha)

    def head(self) -> GitRef:
        """The remote's default branch."""
        return self._ref("head", "HEAD")

    def _ref(self, kind: Literal["branch", "tag", "commit", "head"], name: str) -> GitRef:
        if not name:
            raise InvalidArgument(f"git {kind} name is empty; give the {kind} to check out")
        return GitRef(self._ctx, GitTree(self.url, kind, name, self.keep_git_dir))


@dataclass(frozen=True)
class GitRef:
    _ctx: BuildContext = field(repr=False, compare=False)
    _source: GitTree

    def tree(self) -> Directory:
        """The checked-out files (without .git unless the repository asked to keep it)."""
        return Directory(self._ctx, self._source)
