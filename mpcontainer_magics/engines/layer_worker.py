"""Applying a layer in a process of its own, for pulls that unpack several at once.

Unpacking is CPU work in Python (tar parsing) and many short system calls, each of which
gives up the GIL: unpacks on threads of one process convoy on it, and a 3-platform pull of
golang took 1.4-1.9x as long as in three separate processes (measured here, 2 CPUs). So while one
layer unpacks on a thread of the kernel, the others go to a worker each:
``python -m mpcontainer_magics.engines.layer_worker JOB`` reads the layer's bytes on stdin,
applies them with ``layers.apply_layer`` (the same safe unpacker, the same limit) and prints
one JSON line: its counters, or the error to raise in the kernel, which is re-raised as the
same class with the same message.

The kernel streams the bytes from the blob's tap as they arrive (so the digest is still
checked by the reader, and nothing is read twice). The worker ignores SIGINT (the kernel
decides what a Ctrl-C stops) and stops at the end of its stdin: if the kernel dies, it does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .. import errors
from ..errors import ImageError, MPCError
from .layers import LayerStats, UnpackLimit, apply_layer

__all__ = ["LayerWorker"]

log = logging.getLogger(__name__)

#: What gives a worker its layer: opened only once the worker runs.
SourceOpener = Callable[[], contextlib.AbstractContextManager[BinaryIO]]

_CHUNK = 1 << 20
# The package's parent directory: the worker imports the same copy of the package.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class LayerWorker:
    """One layer applied by a worker process; ``kill()`` stops it from any thread."""

    def __init__(self, root: Path, *, windows: bool, limit: UnpackLimit) -> None:
        self._job = {
            "root": str(root),
            "windows": windows,
            "max_size": limit.max_size,
            "disk": None if limit.disk is None else str(limit.disk),
            "image": limit.image,
            "how": limit.how,
            "layer": limit.layer,
            "written": limit.written,
        }
        self._limit = limit
        self._process: subprocess.Popen[bytes] | None = None
        self._killed = threading.Event()

    def run(self, open_source: SourceOpener, stats: LayerStats) -> bool:
        """Feed the layer ``open_source()`` gives (read to its end unless the worker stops
        early) to a worker process; raise what it raised, else add its counters to ``stats``
        and its bytes to the limit. False, with nothing read, when no process could be
        started (the caller then unpacks the layer itself)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p
        )}  # fmt: skip
        argv = [sys.executable, "-m", __name__, json.dumps(self._job)]
        # Its stderr (a crash's last words) goes to a file: a full pipe nobody reads while
        # we feed its stdin would stop both of us.
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
                )
            except OSError as exc:
                log.warning("cannot start a process to unpack a layer (%s): unpacking here", exc)
                return False
            with process:
                self._process = process
                if self._killed.is_set():
                    process.kill()
                try:
                    with open_source() as source:
                        self._feed(source, process)
                    out, _ = process.communicate()
                except BaseException:
                    process.kill()
                    raise
            stderr.seek(0)
            self._take(out, stderr.read(), process.returncode, stats)
        return True

    def kill(self) -> None:
        self._killed.set()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    @staticmethod
    def _feed(source: BinaryIO, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it stopped reading: its answer says why
            while chunk := source.read(_CHUNK):
                process.stdin.write(chunk)
                process.stdin.flush()  # else a failed read leaves bytes to fail the close
        # communicate() then closes stdin: the end of the layer

    def _take(self, out: bytes, err: bytes, code: int, stats: LayerStats) -> None:
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            if self._killed.is_set():
                raise ImageError("the layer's unpacking was stopped") from None
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {code}"]
            raise ImageError(f"the process unpacking a layer failed: {last[0][:300]}") from None
        if "error" in answer:
            raise _rebuilt(answer)
        for name, value in answer["stats"].items():
            setattr(stats, name, getattr(stats, name) + value)
        self._limit.written = answer["written"]


def _rebuilt(answer: dict[str, Any]) -> Exception:
    """The worker's exception, as the kernel would have raised it on a thread."""
    name, message = answer["error"], answer["message"]
    if answer.get("errno") is not None:
        return OSError(answer["errno"], message, answer.get("filename"))
    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, MPCError):
        with contextlib.suppress(TypeError):  # all that apply_layer raises take a message
            return found(message)
    return ImageError(f"unpacking a layer failed: {name}: {message}")


class _TimedStdin(io.RawIOBase):
    """stdin, counting the time spent waiting for the kernel's bytes as ``wait_s``."""

    def __init__(self, stats: LayerStats) -> None:
        super().__init__()
        self._fd = sys.stdin.fileno()
        self._stats = stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        started = time.perf_counter()
        got = os.readv(self._fd, [buffer])
        self._stats.wait_s += time.perf_counter() - started
        return got


def _main(job: dict[str, Any]) -> dict[str, Any]:
    limit = UnpackLimit(
        job["max_size"],
        None if job["disk"] is None else Path(job["disk"]),
        image=job["image"],
        how=job["how"],
    )
    limit.layer, limit.written = job["layer"], job["written"]
    stats = LayerStats()
    try:
        apply_layer(_TimedStdin(stats), Path(job["root"]), windows=job["windows"], limit=limit,
                    stats=stats)  # fmt: skip
    except OSError as exc:
        return {"error": type(exc).__name__, "message": exc.strerror or str(exc),
                "errno": exc.errno, "filename": exc.filename}  # fmt: skip
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"stats": dataclasses.asdict(stats), "written": limit.written}


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(json.dumps(_main(json.loads(sys.argv[1]))), flush=True)
