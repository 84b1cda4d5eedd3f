"""mpcontainer_magics: run one notebook cell on many CPU architectures, side by side.

    %load_ext mpcontainer_magics
    %%container --platform linux/amd64,linux/arm64,linux/s390x --image alpine:3.23

From Python (or awaited directly in a notebook cell)::

    import mpcontainer_magics as mpc
    async with mpc.connect() as client:
        result = await client.run("uname -m", platforms="linux/amd64,linux/arm64")
        arm = client.container(platform="linux/arm64").from_("alpine:3.23")
        print(await arm.with_exec(["uname", "-m"]).stdout())

Importing this package stays cheap: pandas, docker-py and httpx load on first use.
"""

from __future__ import annotations

import atexit
import importlib
from typing import TYPE_CHECKING, Any

from .defaults import DEFAULT_IMAGE
from .errors import (
    DigestMismatch,
    EmulationUnavailable,
    EngineError,
    EngineUnavailable,
    ExecUnsupported,
    GitError,
    HostPathError,
    ImageError,
    ImageNotFound,
    ImageTooLarge,
    InvalidArgument,
    InvalidPlatform,
    MPCError,
    NonZeroExit,
    PlatformNotOffered,
    PtraceDenied,
    RateLimited,
    RegistryError,
    RunError,
    RunTimeout,
    SessionError,
    UnsafeLayer,
)
from .platforms import Platform, cross_env, host_platform, parse_platforms

# The rest loads on first use (PEP 562): `%load_ext` must not wait for the client, the
# engines and pandas' friends; the background start-up imports them on its own thread.
_LAZY = {
    "Client": "client",
    "PlatformReport": "platform_report",
    "connect": "client",
    "Container": "container",
    "Directory": "directory",
    "File": "directory",
    "GitRef": "directory",
    "GitRepository": "directory",
    "Host": "directory",
    "Mount": "engines.base",
    "Node": "engines.endpoints",
    "NodesReport": "engines.fleet",
    "ExecResult": "evaluate",
    "Published": "publish",
    "PlatformResult": "results",
    "RunResult": "results",
    "Session": "session",
}

if TYPE_CHECKING:
    from .client import Client, connect
    from .container import Container
    from .directory import Directory, File, GitRef, GitRepository, Host
    from .engines.base import Mount
    from .engines.endpoints import Node
    from .engines.fleet import NodesReport
    from .evaluate import ExecResult
    from .magics import ContainerMagics
    from .platform_report import PlatformReport
    from .publish import Published
    from .results import PlatformResult, RunResult
    from .session import Session
    from .widgets import ContainerApp

__all__ = [
    "DEFAULT_IMAGE",
    "Client",
    "Container",
    "DigestMismatch",
    "Directory",
    "EmulationUnavailable",
    "EngineError",
    "EngineUnavailable",
    "ExecResult",
    "ExecUnsupported",
    "File",
    "GitError",
    "GitRef",
    "GitRepository",
    "Host",
    "HostPathError",
    "ImageError",
    "ImageNotFound",
    "ImageTooLarge",
    "InvalidArgument",
    "InvalidPlatform",
    "MPCError",
    "Mount",
    "Node",
    "NodesReport",
    "NonZeroExit",
    "Platform",
    "PlatformNotOffered",
    "PlatformReport",
    "PlatformResult",
    "PtraceDenied",
    "Published",
    "RateLimited",
    "RegistryError",
    "RunError",
    "RunResult",
    "RunTimeout",
    "Session",
    "SessionError",
    "UnsafeLayer",
    "connect",
    "cross_env",
    "host_platform",
    "load_ipython_extension",
    "parse_platforms",
    "ui",
    "unload_ipython_extension",
]

_loaded: dict[int, ContainerMagics] = {}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def ui(image: str | None = None, **options: Any) -> ContainerApp:
    """The widget app (image, platform picker, command, Run/Stop, live output per platform,
    result table, Publish); see :class:`mpcontainer_magics.widgets.ContainerApp` for the
    options. ipywidgets is imported on this first call only."""
    from .widgets import ContainerApp

    return ContainerApp(image, **options)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mpcontainer_magics``: register the magics, reap dead kernels' containers."""
    from .magics import ContainerMagics

    if id(ipython) in _loaded:
        return
    magics = ContainerMagics(ipython)
    ipython.register_magics(magics)
    magics.start()
    _loaded[id(ipython)] = magics
    atexit.register(magics.close)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext mpcontainer_magics``: remove this kernel's containers and the magics."""
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    atexit.unregister(magics.close)
    magics.close()
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("container", None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
