"""Unit tests of the N-platform runner, its result object and the sync bridge (fake engine)."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import pytest

import mpcontainer_magics as mpc
from mpcontainer_magics._loop import LoopThread
from mpcontainer_magics.engines.base import ContainerSpec, ExecOutcome, PulledImage, Runner
from mpcontainer_magics.engines.cpu_models import CpuModels
from mpcontainer_magics.errors import EmulationUnavailable, ImageNotFound, NonZeroExit, RunTimeout
from mpcontainer_magics.platforms import Platform, parse_platforms
from mpcontainer_magics.runs import run_on_platforms

AMD64, ARM64, S390X = parse_platforms("linux/amd64,linux/arm64,linux/s390x")


class FakeEngine(Runner):
    """Plays back scripted output per platform: (chunks, exit code, seconds to take).

    A ``Runner`` is all that runs need; sessions, files and snapshots are tested against
    the real engines only.
    """

    name = "fake"

    def __init__(self, script: Mapping[Platform, tuple[list[tuple[str, bytes]], int, float]]):
        self.cpu_models = CpuModels()  # what a client chooses for its engine
        self.resolve_from = "registry"
        self.script = script
        self.cancelled: list[Platform] = []
        self.missing: set[Platform] = set()
        self.no_emulation: set[Platform] = set()

    async def native_platform(self) -> Platform:
        return AMD64

    async def image_platforms(self, reference: str) -> list[Platform]:
        return list(self.script)

    async def pull(
        self, reference: str, platform: Platform, *, refresh: bool = False, on_progress=None
    ):
        try:
            await asyncio.sleep(0.05 if platform in self.missing else 1)
        except asyncio.CancelledError:
            self.cancelled.append(platform)
            raise
        if platform in self.missing:
            raise ImageNotFound(f"{reference} not found")
        return PulledImage(reference, platform, f"id-{platform.architecture}", f"sha256:{platform}")

    async def create(self, spec: ContainerSpec) -> str:
        return spec.image.platform.architecture  # one container per platform at a time

    async def start_and_wait(self, container_id: str, on_output=None) -> ExecOutcome:
        (platform,) = [p for p in self.script if p.architecture == container_id]
        if platform in self.no_emulation:
            raise EmulationUnavailable(platform)
        chunks, code, seconds = self.script[platform]
        for stream, chunk in chunks:
            assert on_output is not None
            on_output(stream, chunk)
            await asyncio.sleep(seconds / max(len(chunks), 1))
        return ExecOutcome(code, seconds)

    async def remove(self, container_id: str) -> None:
        pass


def uname_and_byte_order(machine: str, order: str) -> list[tuple[str, bytes]]:
    return [("stdout", f"{machine}\n".encode()), ("stdout", f" {order}\n".encode())]


ENDIAN = FakeEngine(
    {
        AMD64: (uname_and_byte_order("x86_64", "04030201"), 0, 0.1),
        ARM64: (uname_and_byte_order("aarch64", "04030201"), 0, 0.1),
        S390X: (uname_and_byte_order("s390x", "01020304"), 0, 0.1),
    }
)


def test_result_rows_and_summary():
    res = asyncio.run(run_on_platforms(ENDIAN, "img", ["sh"], [AMD64, ARM64, S390X]))
    assert res.stdout == {
        "linux/amd64": "x86_64\n 04030201\n",
        "linux/arm64": "aarch64\n 04030201\n",
        "linux/s390x": "s390x\n 01020304\n",
    }
    assert [r.emulated for r in res] == [False, True, True]
    assert res["aarch64"] is res[1] is res[ARM64]
    with pytest.raises(KeyError, match="linux/ppc64le is not in this result"):
        res["linux/ppc64le"]
    assert res.summary().splitlines() == [
        "exit code: same on all 3 platforms ('0')",
        "stdout line 1 differs: 'x86_64' on linux/amd64; 'aarch64' on linux/arm64; "
        "'s390x' on linux/s390x",
        "stdout line 2 differs: '04030201' on linux/amd64, linux/arm64; '01020304' on linux/s390x",
        "stderr: empty everywhere",
    ]
    frame = res.to_frame()
    assert list(frame.columns) == [
        "platform",
        "exit_code",
        "stdout",
        "stderr",
        "duration_s",
        "emulated",
        "image_digest",
        "engine",
        "node",
        "error",
    ]
    assert frame["node"].tolist() == ["local"] * 3
    assert frame["image_digest"].tolist() == [
        "sha256:linux/amd64",
        "sha256:linux/arm64",
        "sha256:linux/s390x",
    ]


def test_lines_stream_in_order_and_split_characters_survive():
    engine = FakeEngine(
        {AMD64: ([("stdout", b"gr\xc3"), ("stdout", b"\xbcn\npart"), ("stderr", b"warn\n")], 0, 0)}
    )
    seen: list[tuple[str, str, str]] = []
    res = asyncio.run(
        run_on_platforms(
            engine, "img", ["sh"], None, on_line=lambda p, s, line: seen.append((str(p), s, line))
        )
    )
    assert seen == [
        ("linux/amd64", "stdout", "grün"),
        ("linux/amd64", "stderr", "warn"),
        ("linux/amd64", "stdout", "part"),  # the unterminated last line is flushed at the end
    ]
    assert res[0].stdout == "grün\npart" and res[0].stderr == "warn\n"


def test_platforms_run_concurrently():
    slow = FakeEngine({p: ([("stdout", b"x\n")], 0, 1.0) for p in (AMD64, ARM64, S390X)})
    started = time.perf_counter()
    res = asyncio.run(run_on_platforms(slow, "img", ["sh"], "all"))
    # Pulls (1 s each) and runs (1 s each) overlap: about 2 s, not 6.
    assert time.perf_counter() - started < 3.5
    assert len(res) == 3


def test_a_failed_pull_cancels_the_others():
    engine = FakeEngine({p: ([], 0, 0) for p in (AMD64, ARM64, S390X)})
    engine.missing = {S390X}
    with pytest.raises(ImageNotFound):
        asyncio.run(run_on_platforms(engine, "img", ["sh"], "all"))
    assert sorted(engine.cancelled) == [AMD64, ARM64]


def test_timeouts_and_failures_are_rows_until_checked():
    engine = FakeEngine(
        {
            AMD64: ([("stdout", b"fast\n")], 0, 0.1),
            ARM64: ([("stdout", b"partial\n"), ("stdout", b"never\n")], 0, 10),
            S390X: ([], 0, 0),
        }
    )
    engine.no_emulation = {S390X}
    res = asyncio.run(run_on_platforms(engine, "img", ["sh"], "all", timeout=1))
    assert res[AMD64].ok and res[AMD64].stdout == "fast\n"
    assert res[ARM64].timed_out and res[ARM64].stdout == "partial\n"  # output so far is kept
    assert res[S390X].exit_code is None and "no QEMU emulation" in res[S390X].error
    assert res.summary().splitlines()[0] == (
        "exit code differs: '0' on linux/amd64; 'timed out' on linux/arm64; "
        "'did not run' on linux/s390x"
    )
    with pytest.raises(RunTimeout) as exc:
        res.check()
    assert exc.value.result is res
    assert "results of linux/amd64 are kept" in str(exc.value)

    # Every platform timed out: what they printed is still kept, and the message says so.
    slow = FakeEngine({ARM64: ([("stdout", b"partial\n"), ("stdout", b"never\n")], 0, 10)})
    with pytest.raises(RunTimeout) as everything:
        asyncio.run(run_on_platforms(slow, "img", ["sh"], "all", timeout=0.5)).check()
    assert everything.value.result[ARM64].stdout == "partial\n"
    assert "no platform" not in str(everything.value)
    assert "what it printed until then is in the result" in str(everything.value)

    styles = res._repr_html_().split("</style>")[0]  # failed rows are highlighted
    assert "background-color: #fdd" in styles
    assert "_row1_col0" in styles and "_row2_col0" in styles and "_row0_col0" not in styles


def test_check_raises_emulation_then_nonzero_only_when_asked():
    engine = FakeEngine({AMD64: ([], 2, 0), S390X: ([], 0, 0)})
    res = asyncio.run(run_on_platforms(engine, "img", ["sh"], "all"))
    assert res.check() is res
    with pytest.raises(NonZeroExit, match="exited non-zero: 2 on linux/amd64"):
        res.check(nonzero=True)
    engine.no_emulation = {S390X}
    res = asyncio.run(run_on_platforms(engine, "img", ["sh"], "all"))
    with pytest.raises(EmulationUnavailable):
        res.check()


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_client_rejects_nonsense_timeouts(timeout):
    with pytest.raises(
        mpc.InvalidArgument, match=r"timeout must be a positive number.*give e\.g\. 60"
    ):
        asyncio.run(mpc.Client(ENDIAN).run("true", timeout=timeout))


def test_client_runs_a_string_as_a_sh_script_and_a_list_as_argv():
    seen: list[Sequence[str]] = []

    class Recording(FakeEngine):
        async def run(self, image, argv, **kwargs):
            seen.append(argv)
            return await super().run(image, argv, **kwargs)

    client = mpc.Client(Recording({AMD64: ([], 0, 0)}))
    asyncio.run(client.run("echo a; echo b"))
    asyncio.run(client.run(["uname", "-m"]))
    assert seen == [["sh", "-c", "echo a; echo b"], ["uname", "-m"]]


# -- the sync bridge ------------------------------------------------------------------------


def test_loop_thread_runs_coroutines_and_polls_while_waiting():
    bridge = LoopThread()
    polls = []

    async def work() -> str:
        await asyncio.sleep(0.2)
        return "done"

    try:
        assert bridge.run(work(), poll=lambda: polls.append(1)) == "done"
        assert len(polls) >= 3
        with pytest.raises(ZeroDivisionError):
            bridge.run(_divide())
        # Something awaitable that is not a coroutine fails at once instead of hanging.
        with pytest.raises(TypeError):
            bridge.run(mpc.connect())  # type: ignore[arg-type]
    finally:
        bridge.close()


async def _divide() -> float:
    return 1 / 0


def test_ctrl_c_cancels_the_task_and_waits_for_its_cleanup():
    bridge = LoopThread()
    cleaned = threading.Event()

    async def long_job() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.3)  # cleanup that itself awaits (like removing containers)
            cleaned.set()

    timer = threading.Timer(0.3, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bridge.run(long_job())
        assert cleaned.is_set(), "the interrupt returned before the cleanup finished"
    finally:
        timer.cancel()
        bridge.close()


# -- the package surface ----------------------------------------------------------------------


def test_all_is_complete():  # (ruff's RUF022 keeps it sorted)
    public = {
        name
        for name, value in vars(mpc).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    } | set(mpc._LAZY)  # loaded on first use
    assert public - {"annotations", "TYPE_CHECKING", "Any"} == set(mpc.__all__)
    assert all(getattr(mpc, name) is not None for name in mpc.__all__)


def test_loading_the_magics_imports_nothing_heavy():
    code = (
        "import sys, mpcontainer_magics, mpcontainer_magics.magics;"
        "print(sorted(m for m in ('pandas', 'docker', 'httpx', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_the_extension_imports_only_the_magics():
    # %load_ext returns at once: the client and all it needs (engines, builders, publish,
    # the registry) load on the background start-up's thread, not in the user's cell.
    code = (
        "import sys, mpcontainer_magics.magics;"
        "print(sorted(m for m in sys.modules if m.startswith('mpcontainer_magics.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    assert loaded <= {
        "mpcontainer_magics._loop",
        "mpcontainer_magics.defaults",
        "mpcontainer_magics.errors",
        "mpcontainer_magics.magics",
        "mpcontainer_magics.platforms",
    }


def test_cleanup_finishes_even_when_cancelled_twice():
    from mpcontainer_magics._aio import finish_despite_cancel

    removed = []

    async def remove() -> None:
        await asyncio.sleep(0.2)
        removed.append(True)

    async def job() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await finish_despite_cancel(remove())

    async def main() -> None:
        task = asyncio.create_task(job())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()  # a second cancellation arrives during the cleanup
        with pytest.raises(asyncio.CancelledError):
            await task
        assert removed == [True], "the task ended before its cleanup did"

    asyncio.run(main())
