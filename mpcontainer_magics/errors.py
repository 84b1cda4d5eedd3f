"""The exceptions of mpcontainer_magics: one root, a small tree.

Every message is one line that names what went wrong and how to fix it; the magics turn
any of these into an IPython ``UsageError`` carrying that line, so users never see a
traceback for a problem they can fix themselves.

    MPCError
    ├── InvalidArgument          (also a ValueError) a bad argument: engine name, timeout…
    │   ├── InvalidPlatform      a platform string that cannot be parsed or is unknown
    │   ├── HostPathError        a host destination that cannot be written (under a file,
    │   │                        in /proc, read-only, not ours, full disk)
    │   └── ExecUnsupported      commands cannot run on this platform (non-Linux): files only
    ├── EngineError              the container engine failed
    │   ├── EngineUnavailable    no engine reachable (Docker daemon down, bad DOCKER_HOST)
    │   │   └── PtraceDenied     the environment forbids ptrace, which proot needs
    │   └── EmulationUnavailable a foreign platform cannot run: no QEMU/binfmt handler
    ├── ImageError               resolving or pulling an image failed
    │   ├── ImageNotFound        the registry (or local store) has no such image
    │   ├── PlatformNotOffered   the image exists but not for the requested platform
    │   ├── RegistryError        the registry is unreachable or answered badly
    │   │   ├── DigestMismatch   content did not match its digest (refused, never used)
    │   │   └── RateLimited      the registry refused more requests for now (HTTP 429)
    │   ├── ImageTooLarge        an image would unpack to more than its limit or the disk
    │   └── UnsafeLayer          a layer or archive member would land outside its root
    ├── SessionError             a session is unknown, stopped, or asked to change image
    ├── GitError                 a git checkout failed (no git, no such repository or ref)
    └── RunError                 a run finished, but not as asked
        ├── RunTimeout           some platforms exceeded the time limit
        └── NonZeroExit          a platform exited non-zero and the caller asked to raise

``RunError`` carries the partial result (``.result``) so nothing computed is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .platforms import Platform


class MPCError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidArgument(MPCError, ValueError):
    """An argument that can never work, whatever the engine or image."""


class InvalidPlatform(InvalidArgument):
    """A platform string that is malformed or names an unknown os/arch."""


class HostPathError(InvalidArgument):
    """A destination on this machine (``cp``/``export``) cannot be written; nothing was left
    there. The message says why (under a file, in /proc, read-only, not writable, disk full)."""


class ExecUnsupported(InvalidArgument):
    """Commands cannot run on this platform (only Linux platforms execute); files still work."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        super().__init__(
            f"cannot run commands on {platform}: command execution is supported for Linux "
            "platforms only. What works for it: reading the image's files, e.g. "
            f"`%container ls PATH --image IMAGE --platform {platform}` or "
            "`client.container(platform=...).from_(IMAGE).rootfs().entries()`."
        )


class EngineError(MPCError):
    """The container engine failed or refused an operation."""


class EngineUnavailable(EngineError):
    """No container engine could be reached."""


class PtraceDenied(EngineUnavailable):
    """This environment forbids ptrace, without which the embedded engine (proot) runs
    nothing: a hub's seccomp profile that denies the call, or ``kernel.yama.ptrace_scope``
    above 1. ``said`` is proot's own error."""

    def __init__(self, said: str) -> None:
        self.said = said
        super().__init__(
            f"this environment forbids ptrace, which the embedded engine (proot) needs to run "
            f"anything ({said}). Ask the hub's admin to allow the ptrace system call in the "
            "pods' seccomp profile (Docker's default profile allows it) and to keep "
            "kernel.yama.ptrace_scope at 1 or below; or use a Docker engine (a node)"
        )


class EmulationUnavailable(EngineError):
    """The engine cannot run binaries of a foreign platform (no QEMU/binfmt handler)."""

    DOCKER_FIX = (
        "`docker run --privileged --rm tonistiigi/binfmt --install all`, or on Debian/Ubuntu "
        "`apt-get install qemu-user-static binfmt-support`."
    )

    def __init__(self, platform: Platform, detail: str = "", fix: str = DOCKER_FIX) -> None:
        self.platform = platform
        self.detail = detail
        super().__init__(
            f"{platform} cannot run on this engine: no QEMU emulation is available for "
            f"{platform.architecture} ({detail or 'exec format error'}). Fix: {fix}"
        )


class ImageError(MPCError):
    """Resolving or pulling an image failed."""


class ImageNotFound(ImageError):
    """The image does not exist in its registry or in the local store."""


class PlatformNotOffered(ImageError):
    """The image exists, but has no variant for the requested platform."""

    def __init__(self, image: str, platform: Platform, offered: Sequence[Platform]) -> None:
        self.image = image
        self.platform = platform
        self.offered = list(offered)
        listing = ", ".join(str(p) for p in offered) or "none"
        super().__init__(
            f"{image} has no variant for {platform}; it offers: {listing}. "
            "Pick one of those with --platform."
        )


class RegistryError(ImageError):
    """The registry is unreachable, refused access, or answered with something invalid."""


class DigestMismatch(RegistryError):
    """Downloaded content does not hash to the digest that named it."""


class RateLimited(RegistryError):
    """The registry refused more requests for now (HTTP 429, Docker Hub's toomanyrequests).

    ``retry_after``: seconds until the limit resets, when the registry said.
    """

    def __init__(self, message: str, registry: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.registry = registry
        self.retry_after = retry_after


class ImageTooLarge(ImageError):
    """An image would unpack to more than its limit (a set size, or its disk's free space)."""


class UnsafeLayer(ImageError):
    """An image layer or archive tried to write outside the directory it is unpacked into."""


class SessionError(MPCError):
    """A session is unknown, no longer running, or used in a way it cannot serve."""


class GitError(MPCError):
    """A git checkout failed: git missing, repository unreachable, or no such branch/tag."""


class RunError(MPCError):
    """A run completed (possibly partially) but not as asked; ``result`` holds what finished."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class RunTimeout(RunError):
    """One or more platforms did not finish within the time limit."""


class NonZeroExit(RunError):
    """A platform exited with a non-zero status and the caller asked for an exception."""
