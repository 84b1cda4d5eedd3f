"""A process exec'd in a Docker container with its stdin open (a session's live shell):
what we write to it, and how its process group is signalled, whatever shell the image has.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..errors import EngineError
from .base import AttachedProcess

if TYPE_CHECKING:
    from docker.api.client import APIClient

    from .probe import DockerCall

#: Writes up to this size go straight into a socket's send buffer (Linux's minimum is
#: larger), so they never wait for the reader.
SOCKET_BUFFER_FLOOR = 16 * 1024


class DockerProcess(AttachedProcess):
    """``docker exec -i``'s process (``exec_id``): ``stdin`` is the exec's socket, and
    ``exited`` resolves once its output ends; ``docker`` runs blocking docker-py work on a
    thread, its errors translated (the engine's ``_docker``)."""

    def __init__(
        self,
        api: APIClient,
        docker: DockerCall,
        container_id: str,
        exec_id: str,
        stdin: Any,
        exited: asyncio.Future[int],
    ) -> None:
        self._api = api
        self._docker = docker
        self._container_id = container_id
        self._exec_id = exec_id
        self._stdin = stdin
        self.exited = exited

    async def write(self, data: bytes) -> None:
        try:
            if len(data) <= SOCKET_BUFFER_FLOOR:
                # Fits in the socket's send buffer, so it cannot block; a thread hop per
                # platform would cost more than the rest of a builtin-only cell.
                self._stdin.sendall(data)
            else:
                await self._docker("write to a shell", self._stdin.sendall, data)
        except OSError as exc:
            raise EngineError(
                f"lost the connection to a shell in container {self._container_id[:12]}: "
                f"{exc}; the session's container may have stopped: start the session again"
            ) from None

    async def interrupt(self, group: int) -> None:
        # SIGINT first, as Ctrl-C; then SIGTERM and SIGKILL to what is left of the group (a
        # non-interactive shell's background jobs ignore SIGINT), unless it is gone. The
        # output ends only when those jobs end too: the shell's own end is Docker's to say.
        await self._signal("INT", group)
        await self._shell_ended(within_s=2)
        if await self._signal("TERM", group):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 1)
            await self._signal("KILL", group)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 5)

    async def running(self) -> bool:
        if self.exited.done():
            return False
        info = await self._docker("inspect a shell", self._api.exec_inspect, self._exec_id)
        return bool(info.get("Running"))

    async def _shell_ended(self, within_s: float) -> None:
        """Wait until the exec'd process itself has ended, at most ``within_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline and await self.running():
            await asyncio.sleep(0.05)

    async def _signal(self, signal_name: str, group: int) -> bool:
        """Send ``signal_name`` to process group ``group`` in the container; False when the
        group is gone.

        Docker cannot signal an exec'd process, so a second exec does (each exec leads a
        process group of its own: runc calls setsid). It runs the shell's ``kill`` in the
        one form dash, bash and busybox all read alike, ``kill -INT -1974``: dash takes
        ``kill -s INT -1974`` for an option, and busybox takes the ``--`` POSIX adds for
        that for a PID. A group already gone is no failure; any other is an EngineError.
        """
        api, container_id = self._api, self._container_id
        argv = ["sh", "-c", 'kill -"$0" -"$1"', signal_name, str(int(group))]

        def signal() -> tuple[int, str]:
            exec_id = api.exec_create(container_id, argv)["Id"]
            said = api.exec_start(exec_id)  # returns when kill is done
            code = api.exec_inspect(exec_id).get("ExitCode")
            return int(code if code is not None else -1), said.decode("utf-8", "replace")

        code, said = await self._docker("signal a shell", signal)
        if code == 0:
            return True
        if "no such process" in said.lower():  # dash, bash and busybox all say so
            return False
        raise EngineError(
            f"could not send SIG{signal_name} to the shell's processes in container "
            f"{container_id[:12]}: kill exited {code} ({said.strip()[:200]}); stop the "
            "session and start it again"
        )
