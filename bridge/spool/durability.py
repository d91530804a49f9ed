"""When the spool's writes reach the disk: the ``spool.fsync`` policy.

``always``: every append is fsynced before it returns (one fsync per read off a socket), a
new segment and the ack file's rename are followed by an fsync of the directory, inline.
``interval``: at most every ``fsync_interval_ms``, on the spool's fsync thread
(:class:`~bridge.spool.fsyncs.FsyncQueue`) while the loop goes on; the directory too.
``never``: when the OS likes (a power cut can lose that window). Failures are counted and
logged (:mod:`bridge.spool.trouble`), never raised; without a running loop (tools, tests)
what would go to the thread is done at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.spool.files import fsync_directory
from bridge.spool.fsyncs import FsyncQueue
from bridge.spool.trouble import Troubles

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_STUCK_SECONDS = 5.0  # an fsync outstanding this long is a problem readiness shows


@dataclass
class Durability:
    directory: Path
    troubles: Troubles
    policy: FsyncPolicy = "interval"
    interval_ms: int = 50
    _last_sync: float = 0.0
    _dirty: bool = False
    _syncing: bool = False
    _queue: FsyncQueue = field(init=False)

    def __post_init__(self) -> None:
        self._queue = FsyncQueue(self._fsynced)

    def open(self) -> None:
        """A fresh fsync thread (after a close)."""
        self._queue = FsyncQueue(self._fsynced)

    def close(self) -> None:
        self._queue.close()

    @property
    def stuck(self) -> str | None:
        """An fsync outstanding for more than ``FSYNC_STUCK_SECONDS`` (a hung disk), said."""
        stuck = self._queue.stuck_for
        if stuck > FSYNC_STUCK_SECONDS:
            return f"spool: fsync not done after {stuck:.0f} s (disk hung?)"
        return None

    def written(self, fd: int | None) -> None:
        """An append reached ``fd``'s file: fsync it as the policy says."""
        if self.policy == "never":
            return
        self._dirty = True
        if self.policy == "always":
            self.sync(fd)
        elif time.monotonic() - self._last_sync >= self.interval_ms / 1000:
            self.sync_soon(fd)

    def sync(self, fd: int | None) -> None:
        """fsync the active segment now, in this thread."""
        if fd is not None and self._dirty:
            self.now(fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def sync_soon(self, fd: int | None) -> None:
        """The interval policy's fsync: what is appended so far is made durable on the fsync
        thread, while the loop goes on reading and delivering (one such fsync at a time)."""
        if fd is None or not self._dirty or self._syncing:
            return
        self._dirty = False
        self._last_sync = time.monotonic()
        if self.beside(fd, self._synced):
            self._syncing = True

    def sealed(self, fd: int) -> None:
        """A segment is left for a new one: its file fsynced as the policy says."""
        if self.policy == "always":
            self.now(fd)
        elif self.policy == "interval":
            self.beside(fd)

    def now(self, descriptor: int) -> None:
        try:
            os.fsync(descriptor)
        except OSError as exc:
            self.troubles.failed("fsync", exc)
        else:
            self.troubles.succeeded("fsync")

    def beside(self, descriptor: int, done: Callable[[], None] | None = None) -> bool:
        """fsync ``descriptor``'s file on the fsync thread (a duplicate that stays valid when
        the segment is closed meanwhile; coalesced with what is queued); a failure is counted
        and logged. Without a running loop at once. Whether it was queued (then ``done`` is
        called when it is over)."""
        if not _loop_running():
            self.now(descriptor)
            return False
        try:
            self._queue.file(descriptor, done)
        except OSError as exc:  # out of descriptors
            self.troubles.failed("fsync", exc)
            return False
        return True

    def directory_changed(self) -> None:
        """fsync the spool's directory (a segment created, the ack file renamed), so a power
        cut keeps the name: inline with ``always``, on the fsync thread with ``interval``
        (one pending request at most), never with ``never``."""
        if self.policy == "never":
            return
        if self.policy == "interval" and _loop_running():
            self._queue.directory(self.directory)
            return
        try:
            fsync_directory(self.directory)
        except OSError as exc:
            self.troubles.failed("fsync", exc)

    def _fsynced(self, error: OSError | None) -> None:
        if error is not None:
            self.troubles.failed("fsync", error)
        else:
            self.troubles.succeeded("fsync")

    def _synced(self) -> None:
        self._syncing = False


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
