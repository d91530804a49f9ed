"""Small file operations the spool needs to survive a full or failing disk.

Each raises the ``OSError`` it met and leaves no half-written result behind where it can
help it: callers decide whether that is counted, logged or fatal.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
Buffer = bytes | memoryview
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def drop_reason(error: OSError) -> str:
    """The drop reason a failed spool write is counted under: ``disk_full`` (no space, over
    quota) or ``disk_error`` (any other failure: EIO, EROFS, too many open files…)."""
    return "disk_full" if error.errno in DISK_FULL_ERRNOS else "disk_error"


def describe(error: OSError) -> str:
    """``disk full (No space left on device)``: what the operator reads in readiness."""
    what = "disk full" if error.errno in DISK_FULL_ERRNOS else "disk error"
    return f"{what} ({error.strerror or error})"


def unwritten(parts: Sequence[Buffer], done: int) -> list[Buffer]:
    """What remains of ``parts`` once their first ``done`` bytes are written (pure)."""
    for index, part in enumerate(parts):
        if done < len(part):
            return [memoryview(part)[done:], *parts[index + 1 :]]
        done -= len(part)
    return []


def pwrite_all(descriptor: int, parts: Sequence[Buffer], offset: int, total: int) -> None:
    """Write ``parts`` (``total`` bytes together) at ``offset``, in as few ``pwritev`` calls
    as the kernel allows (one, unless over IOV_MAX parts or a short write). A write that
    makes no progress raises ENOSPC, like the kernel does on the call after a short one."""
    pending: Sequence[Buffer] = parts
    while pending:
        chunk = pending[:IOV_MAX]
        done = os.pwritev(descriptor, chunk, offset)
        if done == total:
            return
        if done <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += done
        total -= done
        pending = unwritten(pending, done)


def fsync_directory(directory: Path) -> None:
    """fsync a directory, so the entries created or renamed in it survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_file(path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace ``path``'s content by ``data`` atomically (write a temporary beside it, fsync it
    when asked, rename it over ``path``). The directory itself is not fsynced here."""
    tmp = path.with_name(f"{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        pwrite_all(descriptor, [data], 0, len(data))
        if fsync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(tmp, path)
