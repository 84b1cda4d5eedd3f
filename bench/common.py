"""What the bench scripts share: timing, the table they print, options, the magic's shell.

Run the scripts from the repository root (``.venv/bin/python bench/bench_X.py``); Python
then finds this module next to them. Everything here uses the package's public API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Row = tuple[str, ...]
MB = 1e6


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    """What every target prints; a MISS is a measurement, not a failure (exit status 0)."""
    return "PASS" if ok else "MISS"


def print_table(rows: Sequence[Row], header: Row = ("row", "ours", "peer/target", "ratio")) -> None:
    """A Markdown table, as bench/README.md shows them."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if row is header:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def machine() -> str:
    """CPUs and load: the numbers are only comparable between runs on a quiet machine."""
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"


def parser(doc: str) -> argparse.ArgumentParser:
    """The script's argument parser, with ``--quick`` (see :func:`parse`)."""
    made = argparse.ArgumentParser(description=doc.splitlines()[0])
    made.add_argument(
        "--quick",
        action="store_true",
        help="one repetition of small sizes, every row and verdict still printed (what CI runs)",
    )
    return made


def parse(
    made: argparse.ArgumentParser, argv: Sequence[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick`` the options in ``quick`` take those values."""
    args = made.parse_args(argv)
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    for name in ("repeat", "rounds", "big_repeat", "megabytes"):
        if getattr(args, name, 1) < 1:
            made.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run_quiet(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a host command (an argv list, never a shell string), its output captured."""
    return subprocess.run(list(argv), capture_output=True, check=True, timeout=600, **kwargs)


def repository_of(image: str) -> str:
    """``image`` without its tag or digest (a registry's ``:port`` stays)."""
    repo = image.split("@", 1)[0]
    if repo.rfind(":") > repo.rfind("/"):
        repo = repo[: repo.rfind(":")]
    return repo


def docker_pull_pinned(image: str, digest: str) -> tuple[str, bool]:
    """``REPO@DIGEST`` of one platform of ``image``, pulled into Docker; whether we pulled it.

    The CLI peers run by this pinned name: with a plain tag, Docker's classic image store
    holds one platform per tag, so ``docker run --platform P IMG:tag`` would pull again
    whenever the tag last pointed at another platform, and the peer would not be warm.
    """
    pinned = f"{repository_of(image)}@{digest}"
    if subprocess.run(["docker", "image", "inspect", pinned], capture_output=True).returncode:
        run_quiet(["docker", "pull", "-q", pinned])
        return pinned, True
    return pinned, False


class LoopThread:
    """A private event loop on a daemon thread, as the magics use: coroutines from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class MagicShell:
    """A real IPython shell with the extension loaded: cells as a user runs them."""

    def __init__(self, image: str) -> None:
        from IPython.testing.globalipapp import start_ipython

        self.image = image
        self.ip = start_ipython()
        self.ip.run_line_magic("load_ext", "mpcontainer_magics")
        # Untimed: the first magic waits for the extension's start-up (reaping what dead
        # kernels left, then connecting).
        self.line("platforms")

    def line(self, line: str) -> Any:
        """``%container LINE``, output captured; its value. An error ends the bench."""
        from IPython.utils.capture import capture_output

        with capture_output() as captured:
            value = self.ip.run_line_magic("container", line)
        if "Error" in captured.stderr:
            raise SystemExit(f"%container {line} failed: {captured.stderr.strip()}")
        return value

    def cell(self, line: str, body: str) -> tuple[float, Any]:
        """Wall seconds of ``%%container LINE --image IMG`` running ``body``; its RunResult."""
        from IPython.utils.capture import capture_output

        full = f"{line} --image {self.image} --out _bench_result"
        with capture_output() as captured:
            started = time.perf_counter()
            self.ip.run_cell_magic("container", full, body)
            wall = time.perf_counter() - started
        result = self.ip.user_ns.pop("_bench_result", None)
        if result is None or not result.ok:
            raise SystemExit(f"%%container {full} failed: {captured.stderr.strip() or result}")
        return wall, result

    def close(self) -> None:
        self.ip.run_line_magic("unload_ext", "mpcontainer_magics")


def skopeo_copy_argv(image: str, platform: Any, dest: Any) -> list[str]:
    """``skopeo copy`` of one platform of ``image`` (plain HTTP) into a new OCI layout."""
    variant = ["--override-variant", platform.variant] if platform.variant else []
    return ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--override-os", platform.os,
            "--override-arch", platform.architecture, *variant, f"docker://{image}",
            f"oci:{dest}:bench"]  # fmt: skip
