"""How the embedded engine reads proot's reports (unit tests: proot's output is fed in)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace

from mpcontainer_magics.engines.proot import ProotProcess


def a_dead_pid() -> int:
    """The PID of a process that has ended: a stand-in proot with no children."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def exit_code_of(ended_processes: list[tuple[Callable[[int], int], int]]) -> int:
    """The exit code ProotProcess gives when proot reports ``(pid(proot's pid), status)``
    of each process in turn and then exits with the last status (as proot does), all of it
    before ProotProcess saw any of them run."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stdout, stderr = asyncio.StreamReader(), asyncio.StreamReader()
        proot = SimpleNamespace(pid=a_dead_pid(), stdout=stdout, stderr=stderr, returncode=None)
        ended: asyncio.Future[None] = loop.create_future()
        process = ProotProcess(proot, ended, None, end_with_command=False)  # type: ignore[arg-type]
        for pid, status in ended_processes:
            line = f"proot info: pid {pid(proot.pid)}: exited with status {status}\n"
            stderr.feed_data(line.encode())
        stdout.feed_eof()
        stderr.feed_eof()
        proot.returncode = ended_processes[-1][1]
        ended.set_result(None)
        return await asyncio.wait_for(process.wait(), 10)

    return asyncio.run(main())


def after(n: int) -> Callable[[int], int]:
    """The PID ``n`` after proot's."""
    return lambda proot: proot + n


def test_the_commands_status_wins_when_its_subshell_is_reported_first():
    # A busy machine: the command (proot's first child) and its `$(...)` subshell had both
    # ended before we looked, and proot reported the subshell first. The s390x row of
    # `[ "$(uname -m)" != s390x ]` read 0 this way, 11 times in 25 five-platform runs.
    assert exit_code_of([(after(4), 0), (after(1), 1)]) == 1


def test_the_first_process_proot_forked_is_the_command_even_after_others():
    # Other processes of the machine may take the PIDs right after proot's: the command is
    # still the first of proot's to be forked.
    assert exit_code_of([(after(9), 0), (after(7), 0), (after(3), 5)]) == 5


def test_pids_that_wrap_around_still_find_the_first_forked():
    # After the largest PID, numbering starts again from the bottom: later, yet smaller.
    assert exit_code_of([(lambda proot: 300, 0), (after(2), 4)]) == 4
