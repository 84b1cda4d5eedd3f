"""What a container or directory is made of: plain, hashable recipes (no engine, no I/O).

The builders (:mod:`.container`, :mod:`.directory`) only record steps into these; the
:class:`~.evaluate.Evaluator` turns them into files and images, once per recipe. Being
values, equal recipes share their work: two containers with the same prefix run it once.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidArgument
from .platforms import Platform

# -- what a Directory is made of -------------------------------------------------------------


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class HostPath:
    path: str  # absolute


@dataclass(frozen=True)
class GitTree:
    url: str
    kind: Literal["branch", "tag", "commit", "head"]
    ref: str
    keep_git_dir: bool


@dataclass(frozen=True)
class ContainerPath:
    container: ContainerRecipe
    path: str  # absolute or relative to the container's workdir
    as_file: bool = False  # a file: the materialised directory holds just that file


@dataclass(frozen=True)
class NewFile:
    base: DirSource
    path: str
    contents: bytes
    permissions: int


@dataclass(frozen=True)
class Merged:
    base: DirSource
    path: str
    other: DirSource


@dataclass(frozen=True)
class Subdirectory:
    base: DirSource
    path: str


DirSource = Empty | HostPath | GitTree | ContainerPath | NewFile | Merged | Subdirectory


# -- what a Container is made of -------------------------------------------------------------


@dataclass(frozen=True)
class FromImage:
    reference: str


@dataclass(frozen=True)
class Rootfs:
    directory: DirSource


@dataclass(frozen=True)
class SetEnv:
    name: str
    value: str


@dataclass(frozen=True)
class SetWorkdir:
    path: str


@dataclass(frozen=True)
class MountDir:
    path: str
    directory: DirSource


@dataclass(frozen=True)
class CopyDir:
    path: str
    directory: DirSource


@dataclass(frozen=True)
class Exec:
    args: tuple[str, ...]
    expect: Literal["success", "any"]


Step = SetEnv | SetWorkdir | MountDir | CopyDir | Exec


@dataclass(frozen=True)
class ContainerRecipe:
    platform: Platform | None  # None: the engine's native platform
    base: FromImage | Rootfs = Rootfs(Empty())
    steps: tuple[Step, ...] = ()

    @property
    def is_bare(self) -> bool:
        """Nothing recorded yet (``client.container()`` as it comes)."""
        return self.base == Rootfs(Empty()) and not self.steps

    def parent(self) -> ContainerRecipe:
        """The recipe without its last step."""
        return ContainerRecipe(self.platform, self.base, self.steps[:-1])


def relative(path: str) -> str:
    """A path inside a directory ("a/b"); a leading "/" means the directory's top."""
    if ".." in path.split("/"):
        raise InvalidArgument(
            f"bad path {path!r}: '..' may not leave the directory; name a path inside it"
        )
    return posixpath.normpath("/" + path).lstrip("/") or "."
