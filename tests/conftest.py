"""Shared fixtures: the real engine's test images, a real IPython shell, and leak checks.

The real parts are set up by `.ci/setup` (dockerd, QEMU binfmt handlers, a registry on
127.0.0.1 holding a multi-platform busybox image) and named by MPC_TEST_* variables, which
`.ci/test` exports. Run outside it, real tests skip; under CI (CI=true) they fail instead,
so a broken set-up can never turn the suite green by skipping.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mpcontainer_magics.engines.base import LABEL_MANAGED, LABEL_PID, owner_is_gone

FIVE_PLATFORMS = "linux/amd64,linux/arm64,linux/s390x,linux/ppc64le,linux/arm/v7"


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        message = f"{name} is not set: run the suite with `bash .ci/test`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture(autouse=True)
def blob_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test its own blob cache (never the user's): what one test cached cannot hide
    what another checks, such as a tampered blob being refused."""
    cache = tmp_path_factory.mktemp("blob-cache")
    monkeypatch.setenv("MPC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def test_image() -> str:
    return required_env("MPC_TEST_IMAGE")


@pytest.fixture(scope="session")
def amd64_only_image() -> str:
    return required_env("MPC_TEST_IMAGE_AMD64_ONLY")


@pytest.fixture(scope="session")
def windows_image() -> str:
    return required_env("MPC_TEST_IMAGE_WINDOWS")


@pytest.fixture(scope="session")
def registry_host() -> str:
    return required_env("MPC_TEST_REGISTRY")


@pytest.fixture(scope="session")
def docker_api(test_image: str) -> Iterator[Any]:
    """A docker-py client of our own, to check the engine independently of the code under test."""
    import docker

    api = docker.from_env().api
    yield api
    # Zero leaked containers after the whole suite: none of ours, none of a dead process.
    # (Containers of other live processes, say a benchmark running meanwhile, are theirs.)
    leaked = [c for c in managed_containers(api) if owner_is_gone(c["Labels"])]
    assert my_containers(api) + leaked == []
    api.close()


def managed_containers(api: Any, **labels: str) -> list[dict[str, Any]]:
    wanted = [f"{LABEL_MANAGED}=1", *(f"{k}={v}" for k, v in labels.items())]
    return api.containers(all=True, filters={"label": wanted})


def my_containers(api: Any) -> list[dict[str, Any]]:
    """Containers created by this test process (not by a benchmark running meanwhile)."""
    return managed_containers(api, **{LABEL_PID: str(os.getpid())})


@pytest.fixture
def no_leaks(docker_api: Any) -> Iterator[None]:
    yield
    assert my_containers(docker_api) == [], "this test left containers behind"


@pytest.fixture(scope="session")
def ip() -> Any:
    """A real IPython InteractiveShell (the one IPython's own test suite uses)."""
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def shell(ip: Any, test_image: str, no_leaks: None) -> Iterator[Any]:
    """The shell with the extension loaded and the test image as the default image."""
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    ip.run_line_magic("config", f"ContainerMagics.default_image = {test_image!r}")
    yield ip
    ip.run_line_magic("unload_ext", "mpcontainer_magics")


class StampedOutput(io.StringIO):
    """Remembers when each piece of text was written."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.stamps.append((time.monotonic(), text))
        return super().write(text)
