"""Small file operations the spool needs to survive a full or failing disk.

Every file the bridge creates (spool segments, ``ack``, ``lock``, ``last-seen.json``, the file
sink's output) is ``0600`` (set again when reopened) and every directory it creates ``0700``,
whatever the umask: they hold what the upstream sent, which is not everyone's to read.

Each raises the ``OSError`` it met and leaves no half-written result behind where it can
help it: callers decide whether that is counted, logged or fatal.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
Buffer = bytes | memoryview
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """``path`` and any missing parent created ``0700`` (an existing one is left as it is)."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):
            missing.mkdir(mode=PRIVATE_DIR)


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags)``, the file ``0600`` (also one an older version or a crash left
    with wider permissions: a temporary renamed over a file carries its mode with it)."""
    descriptor = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def open_private_file(path: Path, mode: str) -> IO[bytes]:
    """A binary file object on ``path`` (``ab``, ``a+b`` or ``wb``, unbuffered for ``ab``);
    a file it creates is ``0600``."""
    flags = {"ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "a+b": os.O_RDWR | os.O_CREAT | os.O_APPEND,
             "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}[mode]  # fmt: skip
    descriptor = open_private(path, flags)
    try:
        return os.fdopen(descriptor, mode, buffering=0 if mode == "ab" else -1)
    except BaseException:
        os.close(descriptor)
        raise


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
    descriptor = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        pwrite_all(descriptor, [data], 0, len(data))
        if fsync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(tmp, path)
