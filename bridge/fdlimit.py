"""The open-files limit. Every instance holds a socket, so a fleet of thousands needs thousands
of file descriptors, and the soft limit a process starts with is often 1,024 (systemd's and many
container runtimes' default) while the hard limit allows far more. Like Go's runtime, the
bridge raises its soft limit to the hard one at start (unprivileged: no capability needed) and
says so; when even the hard limit is short of what the configured instances need, it warns
with both numbers instead of failing later, socket by socket, with ``EMFILE``. The shipper is
started by the bridge and inherits the raised limit.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

HEADROOM = 512  # beside the sockets: spool segments, the sink's connections, admin, the link
UNLIMITED_CAP = 1 << 20  # the soft limit asked for when the hard one is unlimited (nr_open)


@dataclass(frozen=True)
class FileLimit:
    """The limit after start-up, and what it was raised from (None: left as it was)."""

    soft: int
    hard: int
    raised_from: int | None = None


def files_needed(instances: int) -> int:
    """Descriptors a process running ``instances`` sockets should be allowed (pure)."""
    return instances + HEADROOM


def target_soft(soft: int, hard: int, cap: int = UNLIMITED_CAP) -> int:
    """The soft limit to ask for (pure): the hard limit, or ``cap`` when that is unlimited
    (the kernel refuses more than ``fs.nr_open``)."""
    if hard == resource.RLIM_INFINITY:
        return max(soft, cap) if soft != resource.RLIM_INFINITY else soft
    return max(soft, hard)


def nr_open() -> int:
    """The kernel's ceiling on a process's open files (``fs.nr_open``), or the default cap."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return UNLIMITED_CAP


def raise_soft_limit() -> FileLimit:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (where the system lets
    it: a refusal leaves the limit as it was)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target_soft(soft, hard, min(UNLIMITED_CAP, nr_open()))
    if wanted == soft:
        return FileLimit(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return FileLimit(soft, hard)
    return FileLimit(wanted, hard, raised_from=soft)
