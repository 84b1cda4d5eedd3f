"""An image's users and groups, read from its own /etc/passwd and /etc/group.

The embedded engine runs commands as the image's ``User`` through proot's ``-i uid:gid``
(Docker's runtime does the same lookups inside the container).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import EngineError
from .tree import resolve_in_root


def _passwd_entry(rootfs: Path, user: str) -> list[str] | None:
    with contextlib.suppress(OSError):
        for line in resolve_in_root(rootfs, "/etc/passwd").read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and user in (fields[0], fields[2]):
                return fields
    return None


def home_of(rootfs: Path, user: str) -> str:
    """The home directory of the image's ``user`` (HOME when the image does not set it)."""
    entry = _passwd_entry(rootfs, user.partition(":")[0] or "root")
    return entry[5] if entry and entry[5] else "/root" if not user else "/"


def proot_user(rootfs: Path, user: str) -> str | None:
    """proot's ``-i uid:gid`` for an image's User ("name", "uid", "uid:gid"); None for root."""
    name, _, group = user.partition(":")
    if name in ("", "root", "0") and group in ("", "root", "0"):
        return None
    entry = _passwd_entry(rootfs, name)
    if name.isdigit():
        uid = name
    elif entry is not None:
        uid = entry[2]
    else:
        raise EngineError(
            f"unable to find user {name}: no matching entries in the image's /etc/passwd"
        )
    if group.isdigit():
        gid = group
    elif group:
        gid = _group_id(rootfs, group)
    else:
        gid = entry[3] if entry is not None else "0"
    return f"{uid}:{gid}"


def _group_id(rootfs: Path, group: str) -> str:
    with contextlib.suppress(OSError):
        for line in resolve_in_root(rootfs, "/etc/group").read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == group:
                return fields[2]
    raise EngineError(
        f"unable to find group {group}: no matching entries in the image's /etc/group"
    )
