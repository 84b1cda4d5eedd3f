"""The live-shell protocol of sessions: cells in on stdin, output out up to a token.

Unit tests of the parser, then real shells under emulation fed awkward cells.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from mpcontainer_magics.engines.base import AttachedProcess
from mpcontainer_magics.errors import EngineError
from mpcontainer_magics.shell import Shell, _Marks

TOKEN = "0123456789abcdef01234567"


def parse(chunks: list[tuple[str, bytes]]) -> tuple[dict[str, bytes], int | None, bool]:
    async def main() -> tuple[dict[str, bytes], int | None, bool]:
        seen = {"stdout": b"", "stderr": b""}

        def keep(stream: str, data: bytes) -> None:
            seen[stream] += data

        marks = _Marks(TOKEN, keep)
        for stream, chunk in chunks:
            marks.feed(stream, chunk)
        status = marks.done.result() if marks.done.done() else None
        return seen, status, marks.shell_exits

    return asyncio.run(main())


def byte_by_byte(stream: str, data: bytes) -> list[tuple[str, bytes]]:
    return [(stream, data[i : i + 1]) for i in range(len(data))]


def test_output_ends_at_the_token_on_each_stream():
    seen, status, exits = parse(
        [
            ("stdout", b"hello\n"),
            ("stderr", b"warn\n" + TOKEN.encode() + b"\n"),
            ("stdout", b"no newline" + TOKEN.encode() + b":3\n"),
        ]
    )
    assert seen == {"stdout": b"hello\nno newline", "stderr": b"warn\n"}
    assert (status, exits) == (3, False)


def test_a_token_split_across_chunks_is_still_found():
    stdout = b"abc" + TOKEN.encode() + b":0:exit\n"
    stderr = TOKEN.encode() + b"\n"
    seen, status, exits = parse(byte_by_byte("stdout", stdout) + byte_by_byte("stderr", stderr))
    assert seen == {"stdout": b"abc", "stderr": b""}
    assert (status, exits) == (0, True)


def test_the_cell_is_not_done_until_both_streams_are_marked():
    seen, status, _ = parse([("stdout", TOKEN.encode() + b":0\n"), ("stderr", b"late\n")])
    assert status is None  # stderr may still carry the cell's output
    assert seen["stderr"] == b"late\n"


def test_only_what_could_start_a_token_is_held_back():
    seen, status, _ = parse([("stdout", b"streams at once\n"), ("stderr", b"warn " + b"0123")])
    assert seen == {"stdout": b"streams at once\n", "stderr": b"warn "}
    assert status is None


def test_output_after_the_marks_is_not_this_cells():
    stdout = TOKEN.encode() + b":0\nbackground job\n"
    seen, status, _ = parse([("stderr", TOKEN.encode() + b"\n"), ("stdout", stdout)])
    assert (seen["stdout"], status) == (b"", 0)


class ScriptedShell(AttachedProcess):
    """A shell that answers START with the marks the protocol expects, cells when told."""

    def __init__(self, on_output: Any, pid: int) -> None:
        self.on_output = on_output
        self.pid = pid
        self.exited = asyncio.get_running_loop().create_future()
        self.tokens: list[str] = []

    async def write(self, data: bytes) -> None:
        token = re.search(rb"mpc_token=([0-9a-f]{24})", data).group(1).decode()  # type: ignore[union-attr]
        self.tokens.append(token)
        if len(self.tokens) == 1:  # START: the shell reports its PID; cells: the test answers
            self.answer(token, f"{self.pid}")

    def answer(self, token: str, status: str) -> None:
        self.on_output("stdout", f"{token}:{status}\n".encode())
        self.on_output("stderr", f"{token}\n".encode())

    async def running(self) -> bool:
        return not self.exited.done()

    async def interrupt(self, group: int) -> None:
        raise AssertionError("not interrupted here")


class UnstoppableShell(ScriptedShell):
    """A shell whose interrupt fails (dash misread kill's arguments), or, with ``ends``,
    works but leaves its output held by a job it started (setsid)."""

    ends = False

    async def interrupt(self, group: int) -> None:
        if not self.ends:
            raise EngineError(f"could not send SIGINT to group {group}: kill exited 2")
        self.ended = True

    async def running(self) -> bool:
        return not getattr(self, "ended", False)


class ScriptedEngine:
    def __init__(self, shell: type[ScriptedShell] = ScriptedShell) -> None:
        self.shell = shell
        self.shells: list[ScriptedShell] = []
        self.notes: list[str] = []

    async def attach_exec(self, container_id: str, argv: Any, on_output: Any) -> ScriptedShell:
        self.shells.append(self.shell(on_output, pid=11 + len(self.shells)))
        return self.shells[-1]

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.mark.parametrize("ends", [False, True])
def test_a_cell_whose_shell_cannot_be_stopped_gets_a_new_shell_next(ends):
    # The old shell must never get the next cell: it would run after the stuck one, and its
    # end marks would show in the next cell's output. Only a real failure is reported.
    UnstoppableShell.ends = ends

    async def main() -> tuple[ScriptedEngine, int]:
        engine = ScriptedEngine(UnstoppableShell)
        shell = Shell(engine, "c")  # type: ignore[arg-type]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(shell.run("sleep 60"), 0.1)
        second = asyncio.ensure_future(shell.run("pwd"))
        while len(engine.shells) < 2 or len(engine.shells[1].tokens) < 2:
            await asyncio.sleep(0)
        engine.shells[1].answer(engine.shells[1].tokens[1], "0")
        return engine, (await second).exit_code

    engine, code = asyncio.run(asyncio.wait_for(main(), 10))
    assert code == 0 and len(engine.shells) == 2
    if ends:
        assert engine.notes == []
    else:
        (note,) = engine.notes
        assert note.startswith("a cell's shell could not be stopped: could not send SIGINT")


def test_a_replaced_shells_late_marks_never_show_in_a_later_cell():
    async def main() -> list[tuple[str, bytes]]:
        engine = ScriptedEngine()
        shell = Shell(engine, "c")  # type: ignore[arg-type]
        first = asyncio.ensure_future(shell.run("sleep 60"))
        while len(engine.shells) < 1 or len(engine.shells[0].tokens) < 2:
            await asyncio.sleep(0)
        engine.shells[0].exited.set_result(137)  # killed before it could end the cell
        assert (await first).exit_code == 137 and shell.lost
        seen: list[tuple[str, bytes]] = []
        second = asyncio.ensure_future(shell.run("echo hi", on_output=lambda *o: seen.append(o)))
        while len(engine.shells) < 2 or len(engine.shells[1].tokens) < 2:
            await asyncio.sleep(0)
        # The first shell's end marks arrive late, as its output is drained.
        old, new = engine.shells
        old.answer(old.tokens[1], "130:exit")
        new.on_output("stdout", b"from the new shell\n")
        new.answer(new.tokens[1], "0")
        assert (await second).exit_code == 0 and not shell.lost
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == [("stdout", b"from the new shell\n")]


# -- real shells --------------------------------------------------------------------------


def cell(shell: Any, body: str, line: str = "--session sh1 --platform linux/arm64") -> Any:
    shell.run_cell_magic("container", f"{line} --out res", body)
    return shell.user_ns["res"][0]


AWKWARD = [
    ("printf 'no newline'", "no newline", 0),
    ("cat; echo read-nothing", "read-nothing\n", 0),  # stdin is /dev/null, not the protocol
    ('echo "it\'s" \'a "quote"\' \\\\back', 'it\'s a "quote" \\back\n', 0),
    ("echo MPC_; echo 'MPC_x'\n\n\necho blank-lines-kept", "MPC_\nMPC_x\nblank-lines-kept\n", 0),
    ("cat <<EOF\nnested $((1 + 2))\nEOF", "nested 3\n", 0),
    ("echo before; if then", "", 2),  # a syntax error: nothing of the cell runs
    ("set -e; false; echo not-reached", "", 1),
]


@pytest.mark.parametrize(("body", "stdout", "exit_code"), AWKWARD)
def test_awkward_cells_and_the_session_goes_on(shell, body, stdout, exit_code):
    cell(shell, "cd /tmp && export MARK=kept")
    got = cell(shell, body)
    assert (got.stdout, got.exit_code) == (stdout, exit_code)
    after = cell(shell, 'echo "$PWD $MARK"')
    assert after.stdout == "/tmp kept\n"


def test_a_long_cell(shell):
    body = "\n".join(f"echo line{i}" for i in range(2000))
    got = cell(shell, body)
    assert got.stdout.splitlines() == [f"line{i}" for i in range(2000)]


PROCESS_STARTS = ("create", "start", "start_and_wait", "attach_exec")


def test_builtin_cells_cost_no_process_start(shell, monkeypatch):
    # What a session saves is a process start per cell (a docker exec, or a proot under QEMU):
    # a cell of builtins is written to the shell that already runs, and nothing else starts.
    from mpcontainer_magics.engines.docker import DockerEngine
    from mpcontainer_magics.engines.embedded import EmbeddedEngine

    pid = cell(shell, "echo $$").stdout
    started: list[str] = []
    for engine in (DockerEngine, EmbeddedEngine):
        for name in PROCESS_STARTS:
            monkeypatch.setattr(engine, name, counted(getattr(engine, name), name, started))
    for _ in range(3):
        assert cell(shell, "cd /; export X=1; true").exit_code == 0
    assert cell(shell, 'echo $$ "$X" "$PWD"').stdout == f"{pid.strip()} 1 /\n"
    assert started == []


def counted(method: Any, name: str, calls: list[str]) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await method(*args, **kwargs)

    return wrapper


def test_a_shell_killed_from_outside_is_replaced(shell):
    cell(shell, "cd /tmp; export MARK=kept")
    died = cell(shell, "kill -9 $$; echo not-reached")
    assert died.exit_code == 137 and died.stdout == ""
    assert cell(shell, 'echo "$PWD $MARK"').stdout == "/tmp kept\n"
