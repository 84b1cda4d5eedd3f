"""A live ``sh`` in a container that runs cells sent on its stdin, as a terminal would.

Starting a process under QEMU costs tens of milliseconds, so a session does not start one
per cell: one ``sh`` keeps running (``Engine.attach_exec``) and each cell is written to its
stdin. The shell itself then keeps the working directory, variables and functions from cell
to cell; a cell of builtins (``cd``, ``export``, ``true``) costs about a millisecond.

The protocol, all shell builtins:

- a cell arrives as a quoted here-document, read into a variable and ``eval``-ed with stdin
  from /dev/null (so a command that reads stdin cannot swallow the next cell, and a syntax
  error cannot derail the protocol);
- ``mpc_end STATUS`` then saves the cwd and exported variables to ``STATE_DIR`` and prints a
  random per-cell token on stdout (followed by the exit status) and on stderr, which tells
  us where the cell's output ends on each stream;
- the EXIT trap calls ``mpc_end`` too (marking that the shell ends), so ``exit 3`` in a
  cell ends the cell with status 3;
  Ctrl-C (SIGINT to the shell's process group) makes the shell exit with 130 the same way.
  A shell that has exited is replaced on the next cell and restores the saved state first:
  files, cwd and exported variables survive it, unexported variables and functions do not.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import Mapping

from ._aio import finish_despite_cancel
from .engines.base import (
    AttachedProcess,
    Engine,
    ExecOutcome,
    OutputCallback,
)
from .errors import EngineError, SessionError

STATE_DIR = "/tmp/.mpc-session"

# Sent once to each new shell; `mpc_end $$` reports the shell's PID as the "status".
START = f"""\
mkdir -p {STATE_DIR} || exit 97
mpc_end() {{
    pwd > {STATE_DIR}/cwd
    export -p > {STATE_DIR}/env
    printf '%s:%s%s\\n' "$mpc_token" "$1" "${{2:+:$2}}"
    printf '%s\\n' "$mpc_token" >&2
}}
trap 'mpc_end $? exit' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -f {STATE_DIR}/env ]; then . {STATE_DIR}/env; fi
if {{ read -r mpc_cwd < {STATE_DIR}/cwd; }} 2>/dev/null; then cd "$mpc_cwd" 2>/dev/null || :; fi
mpc_token={{token}}; mpc_end $$
"""


def cell_text(script: str, token: str, env: Mapping[str, str], workdir: str | None) -> str:
    """What to write to the shell for one cell."""
    body = script if script.endswith("\n") else script + "\n"
    exports = "".join(f"export {shlex.quote(f'{k}={v}')}\n" for k, v in env.items())
    enter = f"cd -- {shlex.quote(workdir)} && " if workdir else ""
    return (
        f"mpc_token={token}\n"
        'mpc_cell=; while IFS= read -r mpc_line; do mpc_cell="$mpc_cell$mpc_line\n'
        f"\"; done <<'MPC_{token}'\n"
        f"{body}MPC_{token}\n"
        f"{exports}"
        f'{enter}eval "$mpc_cell" < /dev/null; mpc_end $?\n'
    )


class _Marks:
    """Passes a cell's output on, up to the token that ends it on each stream."""

    def __init__(self, token: str, on_output: OutputCallback | None) -> None:
        self._token = token.encode()
        self._on_output = on_output
        self._held = {"stdout": b"", "stderr": b""}
        self._status: bytes | None = None  # bytes after the stdout token, up to "\n"
        self._open = {"stdout", "stderr"}
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.shell_exits = False  # the cell ended the shell (exit, Ctrl-C, syntax error)

    def feed(self, stream: str, chunk: bytes) -> None:
        if stream not in self._open:
            if stream == "stdout" and self._status is not None:
                self._read_status(chunk)
            return  # output of background jobs after the cell: not this cell's
        data = self._held[stream] + chunk
        found = data.find(self._token)
        if found < 0:
            # Hold back only an end that could be the start of a token split across chunks:
            # everything else is passed on at once, so output streams live.
            keep = next(
                (
                    k
                    for k in range(min(len(data), len(self._token) - 1), 0, -1)
                    if data.endswith(self._token[:k])
                ),
                0,
            )
            self._held[stream] = data[len(data) - keep :]
            self._emit(stream, data[: len(data) - keep])
            return
        self._emit(stream, data[:found])
        self._open.discard(stream)
        if stream == "stdout":
            self._status = b""
            self._read_status(data[found + len(self._token) :])
        self._settle()

    def flush(self) -> None:
        """The shell ended without its marks: whatever is held back is output too."""
        for stream in self._open:
            self._emit(stream, self._held[stream])
            self._held[stream] = b""

    def _read_status(self, data: bytes) -> None:
        assert self._status is not None
        self._status += data
        self._settle()

    def _settle(self) -> None:
        if self._open or self._status is None or b"\n" not in self._status or self.done.done():
            return
        status, _, how = self._status.split(b"\n", 1)[0].lstrip(b":").partition(b":")
        self.shell_exits = how == b"exit"
        self.done.set_result(int(status) if status.lstrip(b"-").isdigit() else 1)

    def _emit(self, stream: str, data: bytes) -> None:
        if data and self._on_output is not None:
            self._on_output(stream, data)


class Shell:
    """One live ``sh`` in one container; cells run one at a time."""

    def __init__(self, engine: Engine, container_id: str) -> None:
        self._engine = engine
        self._container_id = container_id
        self._process: AttachedProcess | None = None
        self._pid = 0
        self._marks: _Marks | None = None
        self._turn = asyncio.Lock()
        self._generation = 0  # of self._process: output of an earlier shell is not a cell's
        #: The last cell ended because the shell died before it could mark the end (killed,
        #: or its container stopped), not because the cell finished or exited.
        self.lost = False

    async def run(
        self,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecOutcome:
        """Run ``script`` in the shell; cancellation stops it (and the shell) promptly."""
        async with self._turn:
            await self._ensure_started()
            started = time.perf_counter()
            token = secrets.token_hex(12)
            text = cell_text(script, token, env or {}, workdir)
            self.lost = False
            status = await self._send(text, token, on_output)
            return ExecOutcome(status, time.perf_counter() - started)

    async def start(self) -> None:
        """Start the shell now (a session's first cell then runs at full speed)."""
        async with self._turn:
            await self._ensure_started()

    async def _ensure_started(self) -> None:
        if self._process is not None and not self._process.exited.done():
            return
        self._generation += 1
        generation = self._generation
        self._process = None
        self._process = await self._engine.attach_exec(
            self._container_id, ["sh"], lambda stream, chunk: self._route(generation, stream, chunk)
        )
        token = secrets.token_hex(12)
        errors: list[bytes] = []
        pid = await self._send(
            START.replace("{token}", token), token, lambda _, chunk: errors.append(chunk)
        )
        if self._process.exited.done() or pid <= 1:
            detail = b"".join(errors).decode(errors="replace").strip().splitlines()
            raise SessionError(f"its sh did not start: {(detail or ['no output'])[-1][:200]}")
        self._pid = pid

    def _route(self, generation: int, stream: str, chunk: bytes) -> None:
        # A shell that was replaced may still print (its end mark, as it is interrupted):
        # that must never reach a later shell's cell, where the mark would show as output.
        if self._marks is not None and generation == self._generation:
            self._marks.feed(stream, chunk)

    async def _send(self, text: str, token: str, on_output: OutputCallback | None) -> int:
        assert self._process is not None
        process = self._process
        marks = self._marks = _Marks(token, on_output)
        try:
            await process.write(text.encode())
            await asyncio.wait({marks.done, process.exited}, return_when=asyncio.FIRST_COMPLETED)
            if marks.done.done():
                if marks.shell_exits:  # the next cell needs a new shell, not this one
                    self._process = None
                return marks.done.result()
            marks.flush()  # the shell died before it could mark the end
            self.lost = True
            return process.exited.result()
        except asyncio.CancelledError:
            if self._pid and not process.exited.done():
                await finish_despite_cancel(self._stop(process))
            raise
        finally:
            self._marks = None

    async def _stop(self, process: AttachedProcess) -> None:
        """Stop the cell that runs in ``process`` (Ctrl-C, a timeout). The next cell gets a
        new shell (this one ended, or never may); one that could not be stopped is never
        written to again, and the user is told why with the next result, since the
        cancelled cell's row cannot say it."""
        failure = ""
        try:
            await process.interrupt(self._pid)
            if await process.running():
                failure = "it ignored SIGINT, SIGTERM and SIGKILL"
        except EngineError as exc:
            failure = str(exc)
        if self._process is process:
            self._process = None  # its output may outlive it (a job started with setsid)
        if failure:
            self._engine.note(
                f"a cell's shell could not be stopped: {failure}; the next cell runs in a new shell"
            )
