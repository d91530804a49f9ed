"""The spool directory's files as the writer holds them: the lock that refuses a second
process, and the active segment's descriptor (written at its size with ``pwritev``).

A new segment starts when the active one is full, or after a write failed on it (even an
empty one: nothing is ever written again at an offset the tail may have seen); the segment
it leaves is fsynced as the policy says, and the directory after the new name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from bridge.errors import SpoolError
from bridge.spool.acks import AckBook
from bridge.spool.durability import Durability
from bridge.spool.files import PRIVATE_FILE, open_private_file, private_dir
from bridge.spool.segments import Segment, Segments, segment_name

LOCK_FILE = "lock"
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC


class SegmentFiles:
    def __init__(
        self, directory: Path, segments: Segments, durability: Durability, acks: AckBook
    ) -> None:
        self.directory = directory
        self.segments = segments
        self.durability = durability
        self.acks = acks
        self.fd: int | None = None  # the active segment, written at its size (pwritev)
        self.roll_next = False  # a write failed on the active segment: start a new one
        self._lock: IO[bytes] | None = None

    @property
    def locked(self) -> bool:
        return self._lock is not None

    def lock(self) -> None:
        """Take the directory (created if need be) for this process, or raise SpoolError."""
        try:
            private_dir(self.directory)
            self._lock = open_private_file(self.directory / LOCK_FILE, "a+b")
        except OSError as exc:
            raise SpoolError(f"spool: cannot use {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise SpoolError(
                f"spool: {self.directory} is in use by another ryze-bridge process "
                "(one spool directory per process)"
            ) from None

    def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def open(self, segment_bytes: int, next_seq: int) -> None:
        """Open the last segment for appends, or a new one when it is full or was not
        repaired (a failure is counted: a later append creates it)."""
        last = self.segments.active
        if last is None or last.size >= segment_bytes or last.entries is not None:
            error = self.new(next_seq)
            if error is not None:
                self.segments.troubles.failed("write", error)
            return
        try:
            self.fd = os.open(last.path, OPEN_FLAGS, PRIVATE_FILE)
        except OSError as exc:
            self.segments.troubles.failed("write", exc)

    def close(self) -> None:
        """fsync and close the active segment."""
        if self.fd is not None:
            self.durability.now(self.fd)
            self._close_fd(self.fd)
            self.fd = None

    def _close_fd(self, descriptor: int) -> None:
        """Close a segment's descriptor; an error (EIO reported at close) is counted."""
        try:
            os.close(descriptor)
        except OSError as exc:
            self.segments.troubles.failed("write", exc)

    def new(self, next_seq: int) -> OSError | None:
        """Start the next segment at ``next_seq`` (the previous one is fsynced as the policy
        says); the error when it cannot be created, and then the active one stays."""
        live = self.segments.live
        segment = Segment(self.directory / segment_name(next_seq), next_seq)
        replaced = live[-1] if live and live[-1].first_seq == segment.first_seq else None
        if replaced is not None:  # an empty segment a failed write touched: a new file
            with contextlib.suppress(OSError):
                segment.path.unlink()
        try:
            fd = os.open(segment.path, OPEN_FLAGS | os.O_TRUNC, PRIVATE_FILE)
        except OSError as exc:
            return exc
        if self.fd is not None:
            self.durability.sealed(self.fd)
            self._close_fd(self.fd)
        self.fd = fd
        self.roll_next = False
        self.durability.directory_changed()
        if replaced is not None:
            self.segments.uncut.pop(replaced.path, None)
            live.pop()
        if not live:
            self.acks.position = (segment.first_seq, 0)
        live.append(segment)
        return None
