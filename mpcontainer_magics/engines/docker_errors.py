"""Docker's failures in this package's words: docker-py's exceptions translated in one place.

docker-py raises ``APIError`` whose text is an HTTP status line ("500 Server Error for
http+docker://localhost/v1.41/containers/create: Internal Server Error ("…")"): not a
message for users. Every call into docker-py runs inside :func:`docker_errors`, which says
what failed, keeps Docker's own explanation and says how to fix it::

    docker-py                       ours
    APIError, 404 (NotFound)        DockerNotFound      (a DockerAPIError; may mean "gone")
    APIError, any other status      DockerAPIError      (an EngineError: explanation, status)
    DockerException, no API answer  EngineUnavailable   (cannot reach the engine)
    requests' ConnectionError       EngineUnavailable   (it went away: stopped, or the
                                                         network between us is down)

The rest of this module reads Docker's answers where they mean more than "failed": a
command Docker refuses to start (``docker run`` exits 127 or 126 then), and the two ways
emulation fails (``exec format error``; a binfmt handler without the F flag).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from ..errors import EmulationUnavailable, EngineError, EngineUnavailable, MPCError
from ..platforms import Platform

#: How to get a Docker engine running, for every "cannot reach" message.
START_DOCKER = "start it (`sudo systemctl start docker`, or `sudo dockerd &`)"


class DockerAPIError(EngineError):
    """Docker answered an API call with an error; ``explanation`` is Docker's own text."""

    def __init__(self, message: str, explanation: str, status: int | None) -> None:
        super().__init__(message)
        self.explanation = explanation
        self.status = status


class DockerNotFound(DockerAPIError):
    """What the call named (container, image, path) does not exist (any more)."""


def explanation(exc: BaseException) -> str:
    """Docker's own words for a failure, on one line, without docker-py's HTTP wrapping."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _fix(status: int | None) -> str:
    if status is not None and status >= 500:  # Docker answers 500 for many bad requests too
        return (
            "change what Docker's reason names; if it names nothing of yours, the Docker "
            "engine failed and its log says why (`journalctl -u docker`, or dockerd's output)"
        )
    if status == 404:
        return "it is gone (removed meanwhile, e.g. by `docker rm` or a prune): run it again"
    if status == 409:
        return "it is busy or being changed by another request: retry"
    if status in (401, 403):
        return "Docker denied the request: check the daemon's authorization settings"
    return "Docker refused the request as made: change what its message names"


def unreachable(where: str, why: str) -> EngineUnavailable:
    """No Docker engine answers at ``where``."""
    return EngineUnavailable(
        f"cannot reach the Docker engine at {where} ({why}); {START_DOCKER} or set DOCKER_HOST "
        f"to a running engine (DOCKER_HOST is {os.environ.get('DOCKER_HOST', 'unset')})"
    )


@contextmanager
def docker_errors(
    action: str,
    *,
    where: str = "",
    refine: Callable[[str], MPCError | None] | None = None,
) -> Iterator[None]:
    """docker-py's exceptions raised in the block as ours (see the module's table).

    ``action`` says what failed ("create a container"); ``refine(explanation)`` may give a
    more precise error for an API error (e.g. emulation missing); ``where`` names the engine
    for "cannot reach" messages.
    """
    try:
        yield
    except docker.errors.APIError as exc:
        text, status = explanation(exc), exc.status_code
        refined = refine(text) if refine is not None else None
        if refined is not None:
            raise refined from None
        kind = DockerNotFound if status == 404 else DockerAPIError
        raise kind(f"Docker could not {action}: {text}; {_fix(status)}", text, status) from None
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise unreachable(where or "DOCKER_HOST", connection_problem(exc)) from None


def connection_problem(exc: BaseException) -> str:
    """What went wrong reaching an engine, in a few words, from docker-py's (and urllib3's)
    long text."""
    text = explanation(exc)
    lower = text.lower()
    if "certificate_verify_failed" in lower or "sslcertverification" in lower:
        return "TLS: its certificate is not signed by the CA in ca.pem, or not for this host"
    if "ssl" in lower and ("handshake" in lower or "alert" in lower or "sslerror" in lower):
        return "TLS handshake failed: check that cert.pem and key.pem are a client pair it trusts"
    if "timed out" in lower or "timeout" in lower:
        return "no answer in time"
    if "refused" in lower or "no such file" in lower:
        return "connection refused: is the daemon running?"
    if "reset by peer" in lower or "aborted" in lower:
        return "the connection was cut"
    return text[:200]


# -- what Docker's answers mean --------------------------------------------------------------


def exec_format_error(text: str) -> bool:
    """The kernel cannot run a binary of this architecture: no emulation registered."""
    return "exec format error" in text.lower()


def refused_start(explained: str) -> tuple[int, str] | None:
    """The exit code and message ``docker run`` gives when Docker refuses to start a command:
    127 when it is not found, 126 when it cannot be executed (docker/cli's rules)."""
    lowered = explained.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        code = 127
    elif "permission denied" in lowered or "is a directory" in lowered:
        code = 126
    else:
        return None
    # "failed to create shim task: OCI runtime create failed: runc create failed: unable to
    # start container process: exec: "x": executable file not found in $PATH: unknown"
    return code, explained.rpartition("container process: ")[2].removesuffix(": unknown")


_NO_NETWORK = re.compile(r"\bnetwork (\S+) not found\b")


def missing_network(explained: str) -> str | None:
    """The network Docker says it lacks ("network NAME not found"), if that is the error."""
    found = _NO_NETWORK.search(explained)
    return found.group(1) if found else None


#: What runc prints when execve finds no interpreter for a binary that exists: a foreign one
#: whose binfmt handler was registered without the F flag (the interpreter path is then
#: looked up inside the container, which lacks it).
_NO_INTERPRETER = re.compile(r"^exec (\S+): no such file or directory$", re.MULTILINE)


def missing_interpreter(stderr: str) -> str | None:
    """runc's line saying a binary's interpreter is missing, if ``stderr`` has one."""
    found = _NO_INTERPRETER.search(stderr)
    return found.group(0) if found else None


def handler_without_f_flag(
    platform: Platform, said: str, handler: str, interpreter: str
) -> EmulationUnavailable:
    """``platform``'s binfmt ``handler`` lacks the F flag, so containers cannot see its
    ``interpreter``; ``said`` is what the container printed."""
    return EmulationUnavailable(
        platform,
        f"{said}: the binfmt handler {handler} is registered without the F flag, so its "
        f"interpreter {interpreter} is not visible inside containers",
        f"register it again with the F flag: remove it (`echo -1 > "
        f"/proc/sys/fs/binfmt_misc/{handler}`), then `update-binfmts --enable {handler}` "
        "(Debian's qemu-user-static) or `docker run --privileged --rm tonistiigi/binfmt "
        f"--install {platform.architecture}`",
    )
