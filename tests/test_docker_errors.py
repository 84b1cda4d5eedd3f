"""docker-py's exceptions in our words (engines/docker_errors.py), from docker-py's own types.

What users see of them on the real engine is tested in test_engine_errors.py; here every
kind is shown once, with the texts Docker 20.10 sends.
"""

from __future__ import annotations

import docker.errors
import pytest
import requests

from mpcontainer_magics.engines.docker_errors import (
    DockerAPIError,
    DockerNotFound,
    docker_errors,
    refused_start,
)
from mpcontainer_magics.errors import EngineUnavailable, InvalidArgument

NO_SUCH_NETWORK = "network mpc-none not found"
START_FAILED = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
    'start container process: exec: "{program}": {why}: unknown'
)


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    """What docker-py raises for an error answer of the daemon (NotFound for a 404)."""
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/containers/create"
    response.reason = "Internal Server Error" if status >= 500 else "Not Found"
    kind = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return kind("HTTP error", response=response, explanation=explanation)


def translated(exc: BaseException) -> Exception:
    with pytest.raises(Exception) as raised, docker_errors("create a container", where="unix:///x"):
        raise exc
    return raised.value


def test_an_api_error_says_what_failed_and_dockers_reason_never_the_http_status():
    exc = api_error(500, "Conflict. The container name is already in use")
    assert str(exc).startswith("500 Server Error for http+docker://localhost/")  # docker-py's
    failed = translated(exc)
    assert type(failed) is DockerAPIError and failed.status == 500
    assert str(failed).startswith(
        "Docker could not create a container: Conflict. The container name is already in use; "
    )
    assert "its log says why (`journalctl -u docker`" in str(failed)
    assert "http+docker" not in str(failed) and "Server Error" not in str(failed)


def test_not_found_is_its_own_kind_so_callers_can_mean_gone():
    failed = translated(api_error(404, NO_SUCH_NETWORK))
    assert isinstance(failed, DockerNotFound)
    assert str(failed) == (
        f"Docker could not create a container: {NO_SUCH_NETWORK}; it is gone (removed "
        "meanwhile, e.g. by `docker rm` or a prune): run it again"
    )


def test_a_refined_error_replaces_the_generic_one():
    exc = api_error(500, "open /etc/passwd/x: not a directory")
    with (
        pytest.raises(InvalidArgument, match=r"^/etc/passwd is a file$"),
        docker_errors("copy", refine=lambda text: InvalidArgument("/etc/passwd is a file")),
    ):
        raise exc


def test_no_daemon_says_where_and_how_to_start_one(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    failed = translated(docker.errors.DockerException("Error while fetching server API version"))
    assert isinstance(failed, EngineUnavailable)
    assert str(failed) == (
        "cannot reach the Docker engine at unix:///x (Error while fetching server API "
        "version); start it (`sudo systemctl start docker`, or `sudo dockerd &`) or set "
        "DOCKER_HOST to a running engine (DOCKER_HOST is unset)"
    )


@pytest.mark.parametrize(
    ("program", "why", "code"),
    [
        ("no-such-cmd", "executable file not found in $PATH", 127),
        ("/nonexistent", "stat /nonexistent: no such file or directory", 127),
        ("/etc", "permission denied", 126),
    ],
)
def test_a_refused_start_is_the_exit_code_docker_run_gives(program, why, code):
    assert refused_start(START_FAILED.format(program=program, why=why)) == (
        code,
        f'exec: "{program}": {why}',
    )


def test_other_start_failures_are_not_exit_codes():
    assert refused_start("cgroups: cannot find cgroup mount destination: unknown") is None
