"""The spool's writer: an append-only, segmented, checksummed log in ``spool.dir``.

- ``append_all`` writes what one read off a socket brought to the active segment in one
  ``pwritev`` (unbuffered: a killed process loses nothing it appended); ``fsync`` decides
  when the OS must put it on disk (:mod:`bridge.spool.durability`).
- After each append the writer announces how far its files go (a *flush mark*: segment,
  offset) to its one reader, the tail (:mod:`bridge.spool.tail`), through the
  :class:`~bridge.spool.Marks` it was :meth:`~DiskSpool.attach`\\ ed to: the tail itself when
  it runs in this process (direct calls), the shipper's link when it runs there. Only what
  was really written is ever announced.
- The tail's acknowledgements (:meth:`DiskSpool.acked`, per segment stretch) move the
  acknowledged position (:mod:`bridge.spool.acks`, persisted within ~100 ms) and delete the
  segments wholly acknowledged; acknowledgements past what was written are refused.
- A full or failing disk is a full spool (design §2): a write that fails (ENOSPC, EDQUOT,
  EIO…) is cut back off the file (no torn entry), every record of that append is refused and
  reported with the reason ``disk_full`` or ``disk_error``, and the next append goes to a new
  segment (nothing is ever written again at an offset the tail may have seen); nothing
  raises, and the spool recovers by itself when space frees (a spool that filled its own disk
  frees its drained segment). fsync and ack file failures are counted and logged the same way
  (:mod:`bridge.spool.trouble`); :attr:`DiskSpool.problem` says what is wrong while it lasts.
- When full, ``drop_newest`` refuses the new entry; ``drop_oldest`` deletes the oldest
  segment the tail has not started reading. Every dropped entry is reported to the caller,
  with its instance, to be counted.
- Start-up recovers the segments (:mod:`bridge.spool.segments`) and never fails over a disk
  that cannot hold a repair. A lock file refuses a second process on the same directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.errors import SpoolError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.spool import (
    Acked,
    AppendResult,
    Marks,
    Position,
    SpoolStats,
    WhenFull,
    appended,
)
from bridge.spool.acks import AckBook
from bridge.spool.active import SegmentFiles
from bridge.spool.codec import encode_entry_parts
from bridge.spool.durability import Durability, FsyncPolicy
from bridge.spool.files import DISK_FULL_ERRNOS, drop_reason, pwrite_all
from bridge.spool.segments import RecoveryReport, Segment, Segments, off_the_books
from bridge.spool.trouble import Troubles

log = get_logger(__name__)


class NoReader:
    """The marks of a spool nobody reads yet: forgotten (a tail starts from the files)."""

    def mark(self, segment: int, offset: int) -> None:
        return None


NO_READER = NoReader()


@dataclass(slots=True)
class Run:
    """Entries of one append headed for the active segment, encoded, not yet written."""

    parts: list[bytes] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    size: int = 0

    def clear(self) -> None:
        """Written: empty again (the same lists, which the appender holds)."""
        self.parts.clear()
        self.records.clear()
        self.size = 0


class DiskSpool:
    """The writer (the :class:`~bridge.spool.Spool` protocol and the writer's end of the
    acknowledgement channel, :class:`~bridge.spool.Acks`)."""

    def __init__(  # noqa: PLR0917 - the order its callers give them in
        self,
        directory: Path,
        max_bytes: int,
        when_full: WhenFull = "drop_newest",
        fsync: FsyncPolicy = "interval",
        fsync_interval_ms: int = 50,
        segment_bytes: int = 0,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(4096, min(64 << 20, max_bytes // 8))
        self.troubles = Troubles()
        self.segments = Segments(directory, self.troubles)
        self.durability = Durability(directory, self.troubles, fsync, fsync_interval_ms)
        self.acks = AckBook(
            directory,
            self.troubles,
            fsync_always=fsync == "always",
            before_save=self._retry_chores,
            saved_file=self.durability.directory_changed,
        )
        self.files = SegmentFiles(directory, self.segments, self.durability, self.acks)
        self._next_seq = 1
        self._bytes = 0
        self._events = 0
        self._empty = asyncio.Event()
        self._marks: Marks = NO_READER
        self._reading = 0  # the furthest segment the tail started reading (never dropped)

    @property
    def report(self) -> RecoveryReport:
        """What start-up found."""
        return self.segments.report

    @property
    def problem(self) -> str | None:
        """What is wrong with the spool's disk now, for readiness (None: nothing), e.g.
        ``spool: disk full (No space left on device)``; a hung fsync too."""
        problems = (self.troubles.problem, self.durability.stuck)
        return "; ".join(p for p in problems if p) or None

    # ---- life cycle -------------------------------------------------------------------
    def open(self) -> RecoveryReport:
        """Lock the directory, recover the segments, open the active one; the report. A
        segment that cannot be created now (disk full) is created by a later append."""
        self.files.lock()
        self.durability.open()
        books = self.segments.recover(self.acks.load())
        self.acks.position = books.ack_pos
        self._next_seq, self._bytes = books.next_seq, books.bytes
        self._events = self.report.replay
        self.files.open(self.segment_bytes, self._next_seq)
        if not self._events:
            self._empty.set()
        return self.report

    def close(self) -> None:
        """fsync, persist the acknowledged position, release the lock (if held); a failing
        disk is counted and logged, never raised."""
        if not self.files.locked:
            return
        try:
            self.files.close()
            self.acks.close()
        finally:
            self.durability.close()
            self.files.unlock()

    # ---- the reader's end: marks out, acknowledgements in -----------------------------
    def attach(self, marks: Marks, *, elsewhere: bool = False) -> None:
        """From now on ``marks`` (the tail, or the link to it) hears of every flush, and at once
        how far the files go; the tail starts at :meth:`acked_position`. drop_oldest keeps that
        segment for a tail ``elsewhere`` (its :meth:`reading` is still on the way)."""
        self._marks = marks
        self._reading = self.acked_position().segment if elsewhere else 0
        self.flush()

    def detach(self) -> None:
        """Nobody reads until the next :meth:`attach` (the tail is gone)."""
        self._marks = NO_READER
        self._reading = 0

    def acked_position(self) -> Position:
        """Where a new tail starts: the first unacknowledged entry."""
        return Position(*self.acks.position)

    def flushed_to(self) -> Position:
        """How far the files go (the acknowledged position before any segment exists)."""
        active = self.segments.active
        if active is None:
            return self.acked_position()
        return Position(active.first_seq, active.size)

    def flush(self) -> None:
        """Tell the reader how far the files go (only what was really written)."""
        active = self.segments.active
        if active is not None:
            self._marks.mark(active.first_seq, active.size)

    def reading(self, segment: int) -> None:
        """The tail started reading ``segment``: drop_oldest keeps it from now on."""
        self._reading = max(self._reading, segment)

    def rewound(self, segment: int) -> None:
        """The tail went back to the acknowledged position, in ``segment`` (a new worker)."""
        self._reading = segment

    def acked(self, stretches: Sequence[Acked]) -> None:
        """The tail's acknowledgements, oldest first (:meth:`AckBook.take`): what they cover
        leaves the books, wholly acknowledged segments are deleted, the position persisted."""
        live = self.segments.by_first_seq()
        sizes = {first_seq: segment.size for first_seq, segment in live.items()}
        taken = self.acks.take(stretches, sizes, self._next_seq)
        for stretch in taken:
            segment = live[stretch.segment]
            segment.held -= stretch.events
            segment.held_bytes -= stretch.size
            self._bytes -= stretch.size
            self._events -= stretch.events
        if taken:
            freed, self.acks.position = self.segments.forget_acked(self.acks.position)
            for gone in freed:  # what is still held of them, no reader could read
                self._taken_off(gone, read_back=0)
            if freed and self.acks.retrying:  # a save failed: try in the space freed
                self.acks.save()
            self.acks.persist()
        if self._events == 0:
            self._empty.set()

    def _taken_off(self, segment: Segment, read_back: int) -> None:
        """``segment`` left the books (see :func:`off_the_books`)."""
        events, size = off_the_books(segment, read_back, self.troubles)
        self._events -= events
        self._bytes -= size

    def _retry_chores(self) -> None:
        if self.segments.chores:
            self.segments.retry_chores()

    # ---- what others see --------------------------------------------------------------
    def stats(self) -> SpoolStats:
        return SpoolStats(events=self._events, bytes=self._bytes)

    def appended_total(self) -> int:
        """Sequence number of the last record appended (counts on across restarts)."""
        return self._next_seq - 1

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def sync(self) -> None:
        """fsync the active segment now, in this thread."""
        self.durability.sync(self.files.fd)

    def sync_soon(self) -> None:
        """The interval policy's fsync of what is appended so far, on the fsync thread."""
        self.durability.sync_soon(self.files.fd)

    # ---- writing ------------------------------------------------------------------------
    def append(self, record: Record) -> AppendResult:
        return self.append_all((record,))

    def append_all(self, records: Sequence[Record]) -> AppendResult:
        """Append in order with one write (two when a segment ends on the way), then one
        flush mark and one fsync decision for the lot (with fsync ``always``: one fsync
        per read off a socket, before the next read). What the disk refuses is cut back off
        the file and reported with its reason; nothing raises but a spool not open."""
        if not self.files.locked:
            raise SpoolError("spool: not open")
        full: list[Record] = []
        run = Run()
        add_part, add_record = run.parts.append, run.records.append
        start = self._next_seq
        room, left = self.max_bytes - self._bytes, self._segment_left()
        refused = False
        error: OSError | None = None
        lost: Sequence[Record] = ()
        for index, record in enumerate(records):
            header, payload = encode_entry_parts(self._next_seq + len(run.records), record)
            size = len(header) + len(payload)
            if run.size + size > room:  # the checks inline, their work only when due
                made = self._room_or_error(run.size + size, full)
                if isinstance(made, OSError):
                    error, lost = made, [*run.records, *records[index:]]
                    break
                if not made:
                    full.append(record)
                    refused = True
                    continue
                room = self.max_bytes - self._bytes
            if run.size >= left and self._roll_due(run):
                error = self._commit(run) or self.files.new(self._next_seq)
                if error is not None:
                    lost = [*run.records, *records[index:]]
                    break
                room, left = self.max_bytes - self._bytes, self._segment_left()
            add_part(header)
            add_part(payload)
            add_record(record)
            run.size += size
        else:
            error = self._commit(run)
            lost = run.records
        if self._next_seq == start:  # nothing written
            if error is not None:
                return self._failed(error, lost, full)
            return AppendResult(accepted=not refused, dropped=tuple(full))
        self.flush()
        self.durability.written(self.files.fd)
        result = appended(full, self._empty)
        if error is not None:  # a part was written before the disk failed
            return self._failed(error, lost, full)
        self.troubles.succeeded("write")
        return AppendResult(accepted=False, dropped=result.dropped) if refused else result

    def _reclaim(self) -> bool:
        """The disk is full: when all the active segment holds is acknowledged, start a new one
        and delete it (a spool that filled its own disk recovers once drained). Whether it did."""
        active = self.segments.active
        acked = self.acks.position
        if active is None or not active.size or acked != (active.first_seq, active.size):
            return False
        if self.files.new(self._next_seq) is not None:
            return False
        freed, self.acks.position = self.segments.forget_acked(acked)
        for gone in freed:
            self._taken_off(gone, read_back=0)
        self.acks.save()  # the space freed takes what a full disk refused it
        return True

    def _make_room(self, size: int, dropped: list[Record]) -> bool:
        """Whether ``size`` more bytes fit, after the policy dropped what it drops for them
        (listed in ``dropped``)."""
        while self._bytes + size > self.max_bytes:
            if self.when_full == "drop_newest":
                return False
            gone = self.segments.drop_oldest(self.acks.position, self._reading)
            if gone is None:
                return False
            segment, records, self.acks.position = gone
            self._taken_off(segment, read_back=len(records))
            dropped.extend(records)
        return True

    def _room_or_error(self, size: int, dropped: list[Record]) -> bool | OSError:
        """:meth:`_make_room`, with a segment that cannot be read back to be dropped (disk
        error, damage) as the error that refuses the append (counted, never raised)."""
        try:
            return self._make_room(size, dropped)
        except (OSError, ValueError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(0, f"damaged segment: {exc}")
            log.error("spool.drop_oldest_failed", error=error.strerror or str(error))
            return error

    def _segment_left(self) -> int:
        return segment_left(self.files, self.segments.active, self.segment_bytes)

    def _roll_due(self, run: Run) -> bool:
        return roll_due(self.files, self.segments.active, self.segment_bytes, run)

    def _commit(self, run: Run) -> OSError | None:
        """Write ``run`` at the end of the active segment and take it on the books (then the
        run is emptied); on failure the file is cut back to where it ended."""
        if not run.records:
            return None
        segment, fd = self.segments.active, self.files.fd
        if fd is None or segment is None:
            return OSError(0, "no segment open")
        try:
            pwrite_all(fd, run.parts, segment.size, run.size)
        except OSError as exc:
            self.segments.cut_back(fd, segment)
            self.files.roll_next = True  # the next append starts a new segment
            if exc.errno in DISK_FULL_ERRNOS and self._reclaim():
                log.warning("spool.disk_full_reclaimed", error=exc.strerror, freed_segment=True)
                return self._commit(run)  # once: the new segment is empty, not reclaimed
            return exc
        count = len(run.records)
        self._next_seq += count
        segment.size += run.size
        segment.count += count
        segment.held += count
        segment.held_bytes += run.size
        self._bytes += run.size
        self._events += count
        run.clear()
        return None

    def _failed(self, error: OSError, lost: Sequence[Record], full: list[Record]) -> AppendResult:
        """The answer when the disk refused ``lost`` (``full``: what the policy dropped)."""
        self.troubles.failed("write", error, dropped=len(lost))
        return refused_by_disk(error, lost, full)


def segment_left(files: SegmentFiles, active: Segment | None, segment_bytes: int) -> int:
    """Bytes the active segment takes before it is due to end (0: at once)."""
    if files.fd is None or files.roll_next or active is None:
        return 0
    return segment_bytes - active.size


def roll_due(files: SegmentFiles, active: Segment | None, segment_bytes: int, run: Run) -> bool:
    """Whether the next entry goes to a new segment: the active one is full (never to
    replace an empty one), or a write failed on it (an empty one too: nothing is ever
    written again at an offset a reader may have seen)."""
    if files.fd is None or files.roll_next or active is None:
        return True
    ends = active.size + run.size >= segment_bytes
    return ends and active.count + len(run.records) > 0


def refused_by_disk(error: OSError, lost: Sequence[Record], full: list[Record]) -> AppendResult:
    """The answer when the disk refused ``lost``; what the full-spool policy dropped on the
    way, ``full``, is reported beside them (pure)."""
    return AppendResult(
        accepted=False, dropped=tuple(lost), reason=drop_reason(error), full=tuple(full)
    )
