"""Commands in an unpacked rootfs, run with proot (and qemu-user for foreign platforms).

proot is a ptrace-based ``chroot``/bind-mount emulator that needs no privileges, which is
what makes containers possible where there is no Docker daemon and no root (Binder). What it
does not do, and this module does instead so runs behave as Docker's do:

- **Exit codes.** proot exits with the status of the *last* traced process to end, so
  ``sh -c 'sleep 1 & exit 3'`` would report 0. With ``-v 1`` it reports every traced process's
  end on stderr (``proot info: pid N: exited with status S``); we take the status of the
  command itself, the first process proot starts. Its own messages are taken out of the
  command's stderr.
- **Ending.** A container ends when its command does: processes it left behind are killed
  (``docker run`` parity), whereas proot would wait for them.
- **Stopping.** Debian's proot 5.1 has no ``--kill-on-exit``: each proot starts a session of
  its own, and stopping kills that process group *and* every process proot still traces (a
  command may leave the group with ``setsid``). Ctrl-C goes to the guest processes, not to
  proot, which must stay alive to keep tracing them.
- **proot killed from outside.** A tracer that dies does not take its tracees along: they
  are detached and run on, *untraced*, so their paths are the host's (a session's ``sh``
  then ran the next cell against the host's /tmp). Whenever a proot is gone, what is left
  of its session and group, and their descendants, is killed at once.

proot is not a security boundary: the guest can reach the host's files (with ``-q`` the host
root is even bound at ``/host-rootfs``), and it runs as the calling user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import EngineError, EngineUnavailable, InvalidArgument, PtraceDenied
from ..platforms import Platform
from .base import OutputCallback, processes_naming

log = logging.getLogger(__name__)

#: Host paths every container gets, as Docker gives a /dev, /proc and /sys.
SYSTEM_BINDS = ("/dev", "/proc", "/sys")
#: Directories proot creates in a rootfs as mount points (not part of what a command wrote).
MOUNT_POINTS = ("dev", "proc", "sys", "host-rootfs")
#: With qemu (-q), proot also binds /dev/null over /etc/ld.so.preload (qemu, a host program,
#: must not preload the guest's libraries), making an empty mode-000 file there in the
#: rootfs while it runs. It removes that when it ends by itself, not when it is killed (a
#: command's leftovers, a stopped session): then the file stays, and only root can read it.
QEMU_MOUNT_POINTS = ("etc/ld.so.preload",)

_MARKERS = (b"proot info: ", b"proot warning: ", b"proot error: ", b"fatal error: see `proot")
_ENDED = re.compile(rb"proot info: pid (\d+): (exited with status|terminated with signal) (\d+)")
_NOT_FOUND = re.compile(rb"proot error: '(.*)' not found")
_NOT_EXECUTABLE = re.compile(rb"proot error: '(.*)' is not (?:a regular file|executable)")
# proot cannot trace its command: the environment forbids ptrace (a seccomp profile, or Yama).
_PTRACE_DENIED = re.compile(rb"proot error: (ptrace\(\w+\): Operation not permitted)")
# Started once the command has ended, to let proot finish on its own before we kill the rest.
_LINGER_S = 0.05
# How long output may still arrive once proot is gone and its guests are killed: a process
# outside our reach (double-forked away) may hold the pipes open for ever.
_DRAIN_S = 2.0
# How long the command's own report may trail those of its children, once it has ended.
_REPORT_S = 0.2


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22  # Linux's largest


_PID_MAX = _pid_max()


def find_proot() -> str:
    """The proot binary ($MPC_PROOT, else on PATH); EngineUnavailable naming the fix."""
    explicit = os.environ.get("MPC_PROOT")
    found = shutil.which(explicit or "proot")
    if found is None:
        raise EngineUnavailable(
            "the embedded engine needs proot, which is not installed: `apt-get install proot` "
            "(Debian/Ubuntu; on Binder list it in binder/apt.txt), or set MPC_PROOT to its path"
            + (f" (MPC_PROOT={explicit} is not an executable)" if explicit else "")
        )
    return found


def find_qemu(platform: Platform) -> str | None:
    """The qemu-user binary emulating ``platform`` on this host, None if not installed."""
    if platform.qemu_arch is None:
        return None
    for name in (f"qemu-{platform.qemu_arch}-static", f"qemu-{platform.qemu_arch}"):
        found = shutil.which(name)
        if found:
            return found
    return None


def proot_command(
    proot: str,
    rootfs: Path,
    argv: Sequence[str],
    *,
    workdir: str,
    qemu: str | None,
    binds: Sequence[tuple[str, str]],
    user: str | None,
) -> list[str]:
    """The host argv running ``argv`` in ``rootfs`` (``user`` "uid:gid", None for root)."""
    if not argv:
        raise InvalidArgument("nothing to run: the command is empty")
    if argv[0].startswith("-"):
        # proot has no "--": an argv[0] like "-x" would be taken as one of its options.
        raise InvalidArgument(
            f"command {argv[0]!r} starts with '-'; give a path such as ./{argv[0]}"
        )
    command = [proot, "-v", "1", "-r", str(rootfs), "-w", workdir]
    command += ["-0"] if user is None else ["-i", user]
    if qemu is not None:
        command += ["-q", qemu]
    for host, guest in binds:
        if ":" in host or ":" in guest:
            raise InvalidArgument(
                f"cannot bind {host} at {guest} with proot: paths must not contain ':'"
            )
        command += ["-b", f"{host}:{guest}"]
    return command + list(argv)


def proot_env() -> dict[str, str]:
    """Host settings proot itself reads (e.g. PROOT_NO_SECCOMP=1 for odd kernels)."""
    return {k: v for k, v in os.environ.items() if k.startswith("PROOT_")}


class ProotProcess:
    """One proot run: its output streamed, its command's exit code, and a way to stop it all.

    ``exited`` resolves with the command's exit code (128+N when signal N killed it, 127 when
    it was not found) as soon as the command has ended. With ``end_with_command`` (a
    container's main process) what it left behind is killed then; otherwise (an exec in a
    running container) it keeps running, as with ``docker exec``.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        ended: asyncio.Future[None],
        on_output: OutputCallback | None,
        *,
        end_with_command: bool,
        argv_newlines: int = 0,
    ) -> None:
        self._process = process
        self._ended = ended  # proot has exited (its pipes may still be open)
        self.pid = process.pid  # also the process group and session: proot leads both
        self._on_output = on_output
        self._end_with_command = end_with_command
        self._main: int | None = None
        self._deciding: asyncio.TimerHandle | None = None  # see _main_ended_unseen
        self._statuses: dict[int, int] = {}
        self._held = b""  # stderr that may be the start of one of proot's messages
        self._argv_newlines = argv_newlines
        self._continued = 0  # lines still to come of a multi-line message of proot's
        self._causes = False
        # A command that cannot start: a shell's exit code and message (127 or 126).
        self._refused: tuple[int, str] | None = None
        self._errors: list[str] = []
        self._ptrace_denied = ""  # proot's error, when it could not trace the command
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        # Retrieved here too: nobody awaits a background process's failure to start.
        self.exited.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._tasks = [
            loop.create_task(self._find_main()),
            loop.create_task(self._pump(process.stdout, "stdout")),
            loop.create_task(self._pump(process.stderr, "stderr")),
        ]
        self._finished = loop.create_task(self._finish())

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        argv: Sequence[str],
        env: dict[str, str],
        on_output: OutputCallback | None,
        *,
        stdin: bool = False,
        end_with_command: bool = True,
    ) -> ProotProcess:
        loop = asyncio.get_running_loop()
        try:
            # asyncio.create_subprocess_exec, with a protocol that also tells when proot ends.
            transport, protocol = await loop.subprocess_exec(
                lambda: _EndProtocol(loop),
                *command,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd="/",
                start_new_session=True,
                preexec_fn=deny_unknown_syscalls,
            )
        except OSError as exc:
            raise EngineError(f"cannot start proot ({command[0]}): {exc}") from None
        return cls(
            asyncio.subprocess.Process(transport, protocol, loop),
            protocol.ended,
            on_output,
            end_with_command=end_with_command,
            argv_newlines=" ".join(argv).count("\n"),
        )

    # -- reading -----------------------------------------------------------------------------

    async def _find_main(self) -> None:
        """The command's PID: proot's only child (the command's own children are its)."""
        while self._process.returncode is None and self._main is None:
            found = _children(self.pid)
            if found:
                self._main = found[0]
                self._check_ended()
                return
            await asyncio.sleep(0.001)

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        assert stream is not None
        while chunk := await stream.read(65536):
            if name == "stderr":
                chunk = self._filter(chunk)
            if chunk and self._on_output is not None:
                self._on_output(name, chunk)
        if name == "stderr" and self._held:
            held, self._held = self._held, b""
            if self._on_output is not None:
                self._on_output("stderr", held)

    def _filter(self, chunk: bytes) -> bytes:
        """The command's own stderr in ``chunk``; proot's messages are taken out and read."""
        data, self._held = self._held + chunk, b""
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self._continued or (self._causes and line.startswith(b"  * ")):
                # The rest of a multi-line message of proot's (an argv with newlines).
                if not line.endswith(b"\n"):
                    self._held = line
                    break
                self._continued = max(0, self._continued - 1)
                continue
            at = min((i for i in (line.find(m) for m in _MARKERS) if i >= 0), default=-1)
            if at >= 0 and line.endswith(b"\n"):
                out += line[:at]
                self._message(line[at:].rstrip(b"\n"))
                continue
            if not line.endswith(b"\n"):
                # A last, unfinished line: hold back what may become one of proot's messages.
                keep = at if at >= 0 else _partial_marker(line)
                out += line[:keep]
                self._held = line[keep:]
                break
            out += line
        return bytes(out)

    def _message(self, text: bytes) -> None:
        if (denied := _PTRACE_DENIED.search(text)) is not None:
            self._ptrace_denied = denied.group(1).decode()
        ended = _ENDED.search(text)
        if ended:
            code = int(ended.group(3))
            self._statuses[int(ended.group(1))] = (
                code if ended.group(2) == b"exited with status" else 128 + code
            )
            if self._main is None and not _children(self.pid):
                self._main_ended_unseen()
            self._check_ended()
        elif text.startswith(b"proot info: argv = "):
            self._continued = self._argv_newlines  # proot prints the argv as it is
        elif text.startswith(b"proot info: possible causes:"):
            self._causes = True  # "  * ..." lines follow, up to proot's "fatal error"
        elif text.startswith(b"proot info: It seems your kernel contains this bug"):
            self._continued = 1  # its hint follows (PROOT_NO_SECCOMP, wrong for no ptrace)
        elif text.startswith(b"fatal error: see `proot"):
            self._causes = False
        elif (missing := _NOT_FOUND.search(text)) is not None:
            self._refused = 127, f"{missing.group(1).decode(errors='replace')}: not found"
        elif (denied := _NOT_EXECUTABLE.search(text)) is not None:
            self._refused = 126, f"{denied.group(1).decode(errors='replace')}: Permission denied"
        elif text.startswith(b"proot error: "):
            error = text.decode(errors="replace").removeprefix("proot error: ")
            if "/proot-" in error:  # about proot's own temporary files, as it exits
                return
            self._errors.append(error)
            if self._on_output is not None:  # why the command could not start, in its stderr
                self._on_output("stderr", f"proot: {error}\n".encode())
        elif not text.startswith(b"proot info: "):
            log.debug("%s", text.decode(errors="replace"))

    def _main_ended_unseen(self) -> None:
        """The command ended before we saw it run (a busy machine), and its report may still
        be on its way behind those of its children: it is the first process proot forked,
        so decide once that one is sure (the PID right after proot's), else shortly."""
        first = self._first_forked()
        if (first - self.pid) % _PID_MAX == 1:
            self._main = first
        elif self._deciding is None:
            self._deciding = asyncio.get_running_loop().call_later(_REPORT_S, self._decide_main)

    def _first_forked(self) -> int:
        # PIDs grow from proot's, wrapping around at pid_max: the nearest after it came first.
        return min(self._statuses, key=lambda pid: (pid - self.pid) % _PID_MAX)

    def _decide_main(self) -> None:
        if self._main is None and self._statuses:
            self._main = self._first_forked()
            self._check_ended()

    def _check_ended(self) -> None:
        if self._main is not None and self._main in self._statuses and not self.exited.done():
            if self._ptrace_denied:  # the command never ran: its exit code would mislead
                self.exited.set_exception(PtraceDenied(self._ptrace_denied))
                return
            self.exited.set_result(self._statuses[self._main])
            if self._end_with_command:
                asyncio.get_running_loop().create_task(self._end_leftovers())

    async def _end_leftovers(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ended), _LINGER_S)
        if self._process.returncode is None:
            self.kill_now()

    async def _finish(self) -> None:
        await self._ended
        code = self._proot_code()
        assert code is not None
        # Normally a no-op (proot ends after its last tracee); after a SIGKILL from outside,
        # its guests would run on untraced, holding our pipes open.
        kill_processes(_left_by(self.pid))
        remove_temporary_files(self.pid)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks[1:]), _DRAIN_S)
        self._tasks[0].cancel()
        if self._process.returncode >= 0:  # proot ended by itself: every report is in
            self._decide_main()
        if self.exited.done():
            return
        if self._ptrace_denied:
            self.exited.set_exception(PtraceDenied(self._ptrace_denied))
        elif self._refused is not None:
            refused_code, text = self._refused
            if self._on_output is not None:
                self._on_output("stderr", f"{text}\n".encode())
            self.exited.set_result(refused_code)
        elif self._errors and code != 0 and self._main is None:
            self.exited.set_exception(EngineError(f"proot failed: {'; '.join(self._errors)}"))
        else:
            self.exited.set_result(self._statuses.get(self._main or -1, code))

    def _proot_code(self) -> int | None:
        code = self._process.returncode
        if code is not None and code < 0:  # proot was killed by a signal: as `docker kill`
            code = 128 - code
        return code

    @property
    def status(self) -> int | None:
        """The command's exit code; proot's own once proot is gone (killed from outside,
        say) and the command's is not known yet; None while it runs."""
        if self.exited.done() and not self.exited.exception():
            return self.exited.result()
        return self._proot_code()

    @property
    def command_running(self) -> bool:
        """The command has not ended, and proot, which keeps it inside the rootfs, lives.
        (``exited`` resolves only once proot's output is read: a moment later.)"""
        return self.running and not self.exited.done()

    def when_ended(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, as soon as ``command_running`` becomes false."""
        futures = (self.exited, self._ended)

        def first(_: asyncio.Future[Any]) -> None:
            for future in futures:
                future.remove_done_callback(first)
            callback()

        for future in futures:
            future.add_done_callback(first)

    async def wait(self) -> int:
        """The command's exit code, once all of its output has been passed on."""
        code = await self.exited
        await asyncio.shield(self._finished)
        return code

    # -- stopping ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    def signal_guests(self, signum: int) -> None:
        """Send ``signum`` to the command's processes, not to proot (it must keep tracing)."""
        for pid in _group_members(self.pid):
            if pid != self.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def kill_now(self) -> None:
        """SIGKILL everything: proot, what it traces (also outside its group, after a
        ``setsid``), and what is left of its session if proot itself is already gone."""
        if self._finished.done():
            return  # proot is gone, and what it left was killed then (its PID may be reused)
        kill_processes(
            [*_left_by(self.pid), *([self.pid] if self._process.returncode is None else [])]
        )
        remove_temporary_files(self.pid)  # also at interpreter exit, when _finish never runs

    async def kill(self) -> None:
        """Kill everything and wait until proot is gone and its output read."""
        self.kill_now()
        await asyncio.shield(self._finished)

    async def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the command's processes; then SIGTERM, then SIGKILL to the rest."""
        self.signal_guests(signal.SIGINT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 2)
        if self.running:
            self.signal_guests(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended), 1)
        await self.kill()

    async def write(self, data: bytes) -> None:
        stdin = self._process.stdin
        if stdin is None:
            raise EngineError("this process was started without stdin")
        try:
            stdin.write(data)
            await stdin.drain()
        except (ConnectionError, OSError) as exc:
            raise EngineError(f"lost the stdin of a process in the container: {exc}") from None


class _EndProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The protocol of ``asyncio.create_subprocess_exec``, and a future resolved as soon as
    the process exits: ``Process.wait()`` also waits for its pipes to close (Python 3.11.7),
    which never happens while a process proot leaves behind holds them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=1 << 16, loop=loop)
        self.ended: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.ended.done():
            self.ended.set_result(None)


# Syscalls newer than Debian's proot 5.1, which passes them on untranslated: a path given
# to them would be looked up on the host, not in the rootfs. glibc uses statx for stat() on
# 32-bit platforms (time64), so under qemu-arm `mkdir -p /tmp/x` looked at the host's /tmp.
# Refused with ENOSYS, as an older kernel would, they make libc fall back to the old calls,
# which proot translates. Numbers per host architecture: statx, openat2, faccessat2.
_UNTRANSLATED = {
    "x86_64": (0xC000003E, (332, 437, 439)),
    "aarch64": (0xC00000B7, (291, 437, 439)),
}


def deny_unknown_syscalls() -> None:
    """In the child, before proot starts: a seccomp filter failing ``_UNTRANSLATED`` calls.

    Filters stack with proot's own (ERRNO outranks TRACE), and are inherited by everything
    it runs. Where seccomp is unavailable the child starts without it.
    """
    import ctypes
    import platform

    arch = _UNTRANSLATED.get(platform.machine())
    if arch is None:
        return
    audit_arch, numbers = arch
    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    allow, enosys = 0x7FFF0000, 0x00050000 | 38
    program = [(ld_abs, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, allow), (ld_abs, 0, 0, 0)]
    for index, number in enumerate(numbers):
        remaining = len(numbers) - index - 1
        program.append((jeq, remaining + 1, 0, number))  # to the ENOSYS return
    program += [(ret, 0, 0, allow), (ret, 0, 0, enosys)]

    class Filter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_ushort),
            ("jt", ctypes.c_ubyte),
            ("jf", ctypes.c_ubyte),
            ("k", ctypes.c_uint),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*program)
    fprog = Program(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0:
        libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0)


def _partial_marker(line: bytes) -> int:
    """Where a suffix of ``line`` that could start one of proot's messages begins."""
    for start in range(max(0, len(line) - max(map(len, _MARKERS))), len(line)):
        tail = line[start:]
        if any(marker.startswith(tail) for marker in _MARKERS):
            return start
    return len(line)


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return []
    except (OSError, ValueError):
        return []
    # A kernel without /proc/PID/task/PID/children: read every process's parent.
    return [child for child in _pids() if _stat_field(child, 1) == pid]


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat_field(pid: int, index: int) -> int | None:
    """Field ``index`` after the command name in /proc/PID/stat (1: parent, 2: group)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[index])
    except (OSError, IndexError, ValueError):
        return None


def _parentage(pid: int) -> tuple[int, int, int] | None:
    """(parent, process group, session) of ``pid``, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[2]), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    return [pid for pid in _pids() if _stat_field(pid, 2) == pgid]


def _tracees(tracer: int) -> list[int]:
    """Processes ptrace-attached to ``tracer``."""
    wanted = f"TracerPid:\t{tracer}\n"
    found = []
    for pid in _pids():
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f,
        ):
            if wanted in f.read():
                found.append(pid)
    return found


def _left_by(proot: int) -> list[int]:
    """What ``proot`` runs, or ran until it died: what it traces, the members of its session
    and group (it leads both), and every descendant of those (e.g. after a ``setsid``)."""
    table = {pid: found for pid in _pids() if (found := _parentage(pid)) is not None}
    found = {pid for pid, (_, group, sid) in table.items() if proot in (group, sid)}
    if proot in table:
        found.update(_tracees(proot))
    found.discard(proot)
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child != proot:
                found.add(child)
                stack.append(child)
    return sorted(found)


def kill_processes(pids: Sequence[int]) -> None:
    """SIGKILL each of ``pids`` that still exists; it also ends a tracee in tracing stop."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_proot(proot: int) -> None:
    """Kill a proot that is not ours to wait for (a dead kernel's) and everything it runs."""
    kill_processes([*_left_by(proot), proot])
    remove_temporary_files(proot)


def remove_temporary_files(proot: int) -> None:
    """Remove the directories proot ``proot`` made under /tmp (5.1 always uses /tmp and
    reads no variable for it), which it removes itself only when it is not killed."""
    for path in Path("/tmp").glob(f"proot-{proot}-*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid():
                shutil.rmtree(path)


def processes_using(path: Path) -> list[int]:
    """proot processes whose command line names ``path`` (for reaping a dead kernel's)."""
    return processes_naming(os.fsencode(path) + b"\0")
