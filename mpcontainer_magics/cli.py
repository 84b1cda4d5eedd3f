"""``mpcontainer-magics`` (also ``python -m mpcontainer_magics``): what a teacher or a hub's
admin does outside a notebook.

    mpcontainer-magics pull alpine:3.23 --platform all --engine embedded   # prefetch
    mpcontainer-magics doctor                                              # what runs here
    mpcontainer-magics cache                                               # per image, platform
    mpcontainer-magics cache prune --older-than 30d                        # or --unused, --max-size

Prefetching into the image a Binder or a JupyterHub builds (``binder/postBuild``, a
Dockerfile's ``RUN``) makes a class start with the images already unpacked; with
``MPC_RESOLVE=cache`` in the kernels' environment it then asks no registry at all. Errors
are one line on stderr, exit status 2; the doctor exits 1 when it found problems.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .defaults import DEFAULT_IMAGE, ENGINES
from .errors import MPCError
from .platforms import Platform

PROG = "mpcontainer-magics"
#: Progress lines per platform at most this often (build logs, not a terminal's redraw).
PROGRESS_EVERY_S = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    top.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache to use (default: $MPC_CACHE_DIR, else ~/.cache/mpcontainer_magics)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pull = commands.add_parser("pull", help="fetch (and unpack) an image for platforms")
    pull.add_argument("image", nargs="?", default=DEFAULT_IMAGE)
    pull.add_argument("-p", "--platform", metavar="P1,P2|all", help="default: this machine's")
    pull.add_argument("--engine", choices=ENGINES, default="auto")
    doctor = commands.add_parser("doctor", help="what runs here, and how to fix what does not")
    doctor.add_argument("--engine", choices=ENGINES, default="auto")
    cache = commands.add_parser("cache", help="what the cache holds, per image and platform")
    actions = cache.add_subparsers(dest="action", metavar="ACTION")
    prune = actions.add_parser("prune", help="remove images no running kernel uses")
    how = prune.add_mutually_exclusive_group(required=True)
    how.add_argument("--older-than", metavar="AGE", help="last used before, e.g. 30d, 12h")
    how.add_argument("--unused", action="store_true", help="every image no kernel uses now")
    how.add_argument("--max-size", metavar="SIZE", help="least recently used first, e.g. 5G")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cache_dir:
        os.environ["MPC_CACHE_DIR"] = str(Path(args.cache_dir).expanduser().absolute())
    try:
        if args.command == "pull":
            return asyncio.run(_pull(args.image, args.platform, args.engine))
        if args.command == "doctor":
            return asyncio.run(_doctor(args.engine))
        if args.action == "prune":
            return _prune(args)
        return _cache()
    except MPCError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _pull(image: str, platforms: str | None, engine: str) -> int:
    from .client import connect

    meter = _Meter()
    async with connect(engine) as client:
        pulled = await client.pull(image, platforms=platforms, on_progress=meter)
    for found in pulled:
        pin = found.digest or f"local image {found.image_id[:19]}"
        print(f"{found.reference} for {found.platform}: {pin}")
    for note in pulled.notes:
        print(note, file=sys.stderr)
    return 0


class _Meter:
    """Each platform's bytes, a line at most every PROGRESS_EVERY_S (called from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: dict[Platform, float] = {}

    def __call__(self, platform: Platform, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        with self._lock:
            now = time.monotonic()
            if not finished and now - self._said.get(platform, 0.0) < PROGRESS_EVERY_S:
                return
            self._said[platform] = now
        of = f"/{total / 1e6:.1f}" if total is not None else ""
        print(f"{platform}: {done / 1e6:.1f}{of} MB", file=sys.stderr, flush=True)


async def _doctor(engine: str) -> int:
    from .client import connect

    async with connect(engine) as client:
        report = await client.doctor()
    print(repr(report))
    return 0 if report.ok else 1


def _cache() -> int:
    from .engines.cache_use import cached_images
    from .engines.store import default_cache_dir
    from .engines.tree import directory_size

    root = default_cache_dir()
    images = cached_images(root)
    print(f"cache: {root}, {_mb(directory_size(root) or 0)} in all")
    if not images:
        print("no images")
        return 0
    rows = [("image", "platform", "unpacked", "last used", "in use")]
    for image in reversed(images):  # the most recently used first
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.last_used))
        rows.append((image.reference, image.platform, _mb(image.unpacked_bytes), used,
                     "yes" if image.in_use else ""))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from .engines.cache_use import prune
    from .engines.layers import parse_size
    from .engines.store import default_cache_dir

    try:
        older = _duration(args.older_than) if args.older_than else None
        max_bytes = parse_size(args.max_size) if args.max_size else None
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    reaped = asyncio.run(_reap_dead_kernels())
    if reaped:
        print(f"{reaped} container(s), tree(s) and snapshot(s) left by dead kernels removed")
    removed = prune(default_cache_dir(), older_than_s=older, unused=args.unused,
                    max_bytes=max_bytes)  # fmt: skip
    for image in removed:
        print(f"removed {image.reference} for {image.platform} ({_mb(image.unpacked_bytes)})")
    print(f"{len(removed)} image(s) removed; images a running kernel uses are kept")
    return 0


async def _reap_dead_kernels() -> int:
    """Remove what killed kernels left in the cache (and their processes), as a kernel
    does when the extension loads: nothing of theirs counts as in use any more."""
    from .engines.embedded import EmbeddedEngine

    engine = await EmbeddedEngine.connect()
    try:
        return await engine.reap_orphans()
    finally:
        await engine.aclose()


def _duration(text: str) -> float:
    """ "30d", "12h", "90m", "45s", "2w" or plain seconds, in seconds."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not an age; write it as e.g. 30d, 12h or 90m")
    return float(found.group(1)) * _SECONDS[found.group(2)]


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
