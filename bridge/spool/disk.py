"""The disk spool: an append-only, segmented, checksummed log in ``spool.dir``.

- ``append_all`` writes what one read off a socket brought to the active segment in one
  ``pwritev`` (unbuffered: a killed process loses nothing it appended); ``fsync`` decides
  when the OS must put it on disk (``always``: every append; ``interval``: at most every
  ``fsync_interval_ms``; ``never``: when the OS likes — a power cut can lose that window).
  A new segment and the ack file's rename are followed by an fsync of the directory
  (``always`` and ``interval``), so a power cut loses neither.
- A full or failing disk is a full spool (design §2): a write that fails (ENOSPC, EDQUOT,
  EIO…) is cut back off the file (no torn entry), and every record of that append is
  refused and reported with the reason ``disk_full`` or ``disk_error``; nothing raises, the
  next append tries again, and the spool recovers by itself when space frees. fsync and ack
  file failures are counted and logged the same way (:mod:`bridge.spool.trouble`);
  :attr:`DiskSpool.problem` says what is wrong while it lasts.
- One reader reads entries in order, each read after the entries already handed out;
  ``ack`` acknowledges the oldest handed out, moves the acknowledged position (persisted in
  ``ack`` by write + rename, at most every 100 ms and at the latest 100 ms after the last
  acknowledgement) and deletes segments that are wholly acknowledged; ``rewind`` hands out
  again from the acknowledged position.
- When full, ``drop_newest`` refuses the new entry; ``drop_oldest`` deletes the oldest
  segment (entries in flight there are kept in memory and still delivered). Every dropped
  entry is reported to the caller, with its instance, to be counted.
- A lock file refuses a second process on the same directory.
- The reader may be another process (the shipper, :mod:`bridge.shipper`): then
  :meth:`DiskSpool.read_elsewhere` is called once, every flush is announced to it, and its
  acknowledgements arrive through :meth:`DiskSpool.acked_elsewhere`; this process still owns
  the files (segments, ack position) and the accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from bridge.errors import SpoolError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.spool import (
    READ_MAX_BYTES,
    AppendResult,
    SpoolStats,
    WhenFull,
    appended,
    bounded,
)
from bridge.spool.codec import encode_entry_parts, read_entry
from bridge.spool.files import (
    DISK_FULL_ERRNOS,
    drop_reason,
    fsync_directory,
    pwrite_all,
    replace_file,
)
from bridge.spool.fsyncs import FsyncQueue
from bridge.spool.recovery import Entry, SegmentScan, iter_segment_paths, rewrite, scan_file
from bridge.spool.trouble import Troubles

if TYPE_CHECKING:
    from bridge.spool.tail import Acked

FsyncPolicy = Literal["always", "interval", "never"]
ACK_FILE = "ack"
LOCK_FILE = "lock"
ACK_WRITE_SECONDS = 0.1
ACK_RETRY_SECONDS = 1.1  # after a failed save of the ack position (disk full)
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
FSYNC_STUCK_SECONDS = 5.0  # an fsync outstanding this long is a problem readiness shows
ASIDE = ".dropped"  # suffix of a dropped segment that could not be deleted
log = get_logger(__name__)


@dataclass
class Segment:
    """A segment file: entries from ``first_seq`` on, ``size`` bytes of them (what a failed
    write left beyond, if it could not be cut back, is never read). ``entries``: the
    positions of its intact entries when start-up could not repair it (read through them)."""

    path: Path
    first_seq: int
    count: int = 0
    size: int = 0
    entries: list[Entry] | None = None


@dataclass(slots=True)  # one per record: a plain __init__ is 3x cheaper than frozen
class InFlight:
    seq: int
    record: Record
    size: int
    segment: int
    end: int


@dataclass
class RecoveryReport:
    """What start-up found: entries to replay, damaged entries skipped, torn tails cut."""

    replay: int = 0
    damaged: int = 0
    torn: int = 0
    torn_bytes: int = 0


@dataclass(slots=True)
class Run:
    """Entries of one append headed for the active segment, encoded, not yet written."""

    parts: list[bytes] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    size: int = 0

    def clear(self) -> None:
        """Written: empty again (the same lists, which the appender holds)."""
        self.parts.clear()
        self.records.clear()
        self.sizes.clear()
        self.size = 0


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:020d}.log"


def segment_first_seq(path: Path) -> int:
    """The first sequence number a segment file's name carries (ValueError if none)."""
    return int(path.stem.removeprefix("seg-"))


@dataclass
class DiskSpool:
    directory: Path
    max_bytes: int
    when_full: WhenFull = "drop_newest"
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 50
    segment_bytes: int = 0
    report: RecoveryReport = field(default_factory=RecoveryReport)
    troubles: Troubles = field(default_factory=Troubles)
    _segments: deque[Segment] = field(default_factory=deque)
    _fd: int | None = None  # the active segment, written at its size (pwritev)
    _roll_next: bool = False  # the active segment could not be cut back: start a new one
    _lock: IO[bytes] | None = None
    _next_seq: int = 1
    _acked_seq: int = 0
    _ack_saved: int = 0  # the acknowledged position the ack file holds
    _ack_timer: asyncio.TimerHandle | None = None
    _bytes: int = 0
    _events: int = 0
    _ack_pos: tuple[int, int] = (0, 0)  # (segment first_seq, offset) of the first unacked
    _in_flight: deque[InFlight] = field(default_factory=deque)  # handed out, oldest first
    # The newest entries, also kept in memory (bounded): in steady state the reader takes
    # them from here instead of reading back what was just written. Contiguous by seq.
    _recent: deque[InFlight] = field(default_factory=deque)
    _recent_bytes: int = 0
    recent_max_bytes: int = 64 * 1024 * 1024
    _last_sync: float = 0.0
    _dirty: bool = False
    _flush_pending: bool = False
    _syncing: bool = False
    _ack_written_at: float = 0.0
    _readable: asyncio.Event = field(default_factory=asyncio.Event)
    _empty: asyncio.Event = field(default_factory=asyncio.Event)
    # Read by another process: told of every flush (segment, offset), the furthest segment
    # it has started reading (drop_oldest keeps it and everything before it).
    _on_flush: Callable[[int, int], None] | None = None
    _remote_reading: int = 0
    _fsyncs: FsyncQueue = field(init=False)
    # Disk chores retried at each save of the ack position: segments to delete (taken off
    # the books, the disk refused), files to cut back to a size (a failed write's leftovers).
    _undeleted: list[Path] = field(default_factory=list)
    _uncut: dict[Path, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.segment_bytes <= 0:
            self.segment_bytes = max(4096, min(64 << 20, self.max_bytes // 8))
        self._fsyncs = FsyncQueue(self._fsynced)

    @property
    def problem(self) -> str | None:
        """What is wrong with the spool's disk now, for readiness (None: nothing), e.g.
        ``spool: disk full (No space left on device)``; an fsync outstanding for more than
        ``FSYNC_STUCK_SECONDS`` (a hung disk) too."""
        problems = [self.troubles.problem]
        stuck = self._fsyncs.stuck_for
        if stuck > FSYNC_STUCK_SECONDS:
            problems.append(f"spool: fsync not done after {stuck:.0f} s (disk hung?)")
        return "; ".join(p for p in problems if p) or None

    # ---- life cycle -------------------------------------------------------------------
    def open(self) -> RecoveryReport:
        """Lock the directory, recover the segments, position the reader; returns the report.
        A segment that cannot be created now (disk full) is created by a later append."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = (self.directory / LOCK_FILE).open("a+b")
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
        self._fsyncs = FsyncQueue(self._fsynced)
        self._acked_seq = self._ack_saved = self._read_ack()
        self._recover()
        self._open_writer()
        if self._events:
            self._readable.set()
        else:
            self._empty.set()
        return self.report

    def close(self) -> None:
        """fsync, persist the acknowledged position, release the lock (if held); a failing
        disk is counted and logged, never raised."""
        if self._lock is None:
            return
        try:
            if self._fd is not None:
                self._fsync_now(self._fd)
                self._close_fd(self._fd)
                self._fd = None
            self._save_ack()
        finally:
            if self._ack_timer is not None:  # set by a failed save: nobody is left to retry
                self._ack_timer.cancel()
                self._ack_timer = None
            self._fsyncs.close()
            if self._lock is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
                self._lock.close()
                self._lock = None

    def _close_fd(self, descriptor: int) -> None:
        """Close a segment's descriptor; an error (EIO reported at close) is counted."""
        try:
            os.close(descriptor)
        except OSError as exc:
            self.troubles.failed("write", exc)

    def _read_ack(self) -> int:
        try:
            return int((self.directory / ACK_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _recover(self) -> None:
        """Take every segment found on the books, each read through the positions of its
        intact entries; never fails the start over a disk that cannot hold a repair."""
        for path in self.directory.glob(f"seg-*.log{ASIDE}"):  # dropped, undeletable then
            self._delete(path)
        paths = list(iter_segment_paths(self.directory))
        for index, path in enumerate(paths):
            result = self._scan(path, _first_seq_of(paths[index + 1 : index + 2]))
            if result is None:
                continue
            live = [e for e in result.entries if e.seq > self._acked_seq]
            if not live:
                self._delete(path)
                continue
            first_seq = segment_first_seq(path)
            segment = Segment(path, first_seq, count=len(result.entries), size=result.size)
            if not result.clean:  # not repaired: read through the scan's positions
                segment.entries = result.entries
                segment.size = result.entries[-1].end
            self._segments.append(segment)
            self._bytes += sum(e.end - e.start for e in live)
            self.report.replay += len(live)
            self._next_seq = max(self._next_seq, result.entries[-1].seq + 1)
            if len(self._segments) == 1:
                self._ack_pos = (first_seq, live[0].start)
        self._next_seq = max(self._next_seq, self._acked_seq + 1)
        self._events = self.report.replay

    def _scan(self, path: Path, next_first: int | None) -> SegmentScan | None:
        """``path``'s intact entries, repaired on disk where it can be (the positions are
        then those of the file as it is now); entries from ``next_first`` on (the next
        segment's first seq) are what a failed write left: cut like a torn tail. A file that
        cannot be read at all is counted, logged and left out (None)."""
        try:
            result = scan_file(path)
        except (OSError, ValueError) as exc:
            self._failed_op("read", exc, path)
            return None
        result = without_leftovers(result, next_first)
        self.report.damaged += result.damaged
        if result.torn_bytes:
            self.report.torn += 1
            self.report.torn_bytes += result.torn_bytes
        if result.clean:
            return result
        try:
            return rewrite(path, result)
        except OSError as exc:
            self._failed_op("recover", exc, path)
            return result

    def _failed_op(self, op: str, error: BaseException, path: Path) -> None:
        if not isinstance(error, OSError):
            error = OSError(0, str(error))
        log.error(f"spool.{op}_failed", segment=path.name, error=error.strerror or str(error))
        self.troubles.failed(op, error)

    def _open_writer(self) -> None:
        last = self._segments[-1] if self._segments else None
        if last is None or last.size >= self.segment_bytes or last.entries is not None:
            error = self._new_segment()
            if error is not None:
                self.troubles.failed("write", error)
            return
        try:
            self._fd = os.open(self._segments[-1].path, OPEN_FLAGS)
        except OSError as exc:
            self.troubles.failed("write", exc)

    def _new_segment(self) -> OSError | None:
        """Start the next segment (the previous one is fsynced as the policy says); the
        error when it cannot be created, and then the active segment stays as it was."""
        segment = Segment(self.directory / segment_name(self._next_seq), self._next_seq)
        replaced = self._segments[-1] if self._segments else None
        if replaced is not None and replaced.first_seq != segment.first_seq:
            replaced = None
        if replaced is not None:  # an empty segment a failed write touched: a new file
            with contextlib.suppress(OSError):
                segment.path.unlink()
        try:
            fd = os.open(segment.path, OPEN_FLAGS | os.O_TRUNC, 0o644)
        except OSError as exc:
            return exc
        if self._fd is not None:
            if self.fsync == "always":
                self._fsync_now(self._fd)
            elif self.fsync == "interval":
                self._fsync_beside(self._fd)
            self._close_fd(self._fd)
        self._fd = fd
        self._roll_next = False
        self._sync_directory()
        if replaced is not None:
            self._uncut.pop(replaced.path, None)
            self._segments.pop()
        if not self._segments:
            self._ack_pos = (segment.first_seq, 0)
        self._segments.append(segment)
        return None

    # ---- writing ------------------------------------------------------------------------
    def append(self, record: Record) -> AppendResult:
        return self.append_all((record,))

    def append_all(self, records: Sequence[Record]) -> AppendResult:
        """Append in order with one write (two when a segment ends on the way), then one
        flush request and one fsync decision for the lot (with fsync ``always``: one fsync
        per read off a socket, before the next read). What the disk refuses is cut back off
        the file and reported with its reason; nothing raises but a spool not open."""
        if self._lock is None:
            raise SpoolError("spool: not open")
        full: list[Record] = []
        run = Run()
        add_part, add_record, add_size = run.parts.append, run.records.append, run.sizes.append
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
                error = self._commit(run) or self._new_segment()
                if error is not None:
                    lost = [*run.records, *records[index:]]
                    break
                room, left = self.max_bytes - self._bytes, self._segment_left()
            add_part(header)
            add_part(payload)
            add_record(record)
            add_size(size)
            run.size += size
        else:
            error = self._commit(run)
            lost = run.records
        if self._next_seq == start:  # nothing written
            if error is not None:
                return self._failed(error, lost, full)
            return AppendResult(accepted=not refused, dropped=tuple(full))
        self._flush_soon()
        self._sync_if_due()
        result = appended(full, self._readable, self._empty)
        if error is not None:  # a part was written before the disk failed
            return self._failed(error, lost, full)
        self.troubles.succeeded("write")
        return AppendResult(accepted=False, dropped=result.dropped) if refused else result

    def _reclaim(self) -> bool:
        """The disk is full: when all the active segment holds is acknowledged, start a new
        one and delete it, so its space is free again (a spool that filled its own disk
        recovers once the sink has drained it). Whether it did."""
        active = self._segments[-1] if self._segments else None
        if active is None or not active.size or self._ack_pos != (active.first_seq, active.size):
            return False
        if self._new_segment() is not None:
            return False
        self._forget_acked_segments()
        self._save_ack()  # the space freed takes what a full disk refused it
        return True

    def _make_room(self, size: int, dropped: list[Record]) -> bool:
        """Whether ``size`` more bytes fit, after the policy dropped what it drops for them
        (listed in ``dropped``)."""
        while self._bytes + size > self.max_bytes:
            if self.when_full == "drop_newest" or not self._drop_oldest_segment(dropped):
                return False
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
        """Bytes the active segment takes before it is due to end (0: at once)."""
        if self._fd is None or self._roll_next:
            return 0
        return self.segment_bytes - self._segments[-1].size

    def _roll_due(self, run: Run) -> bool:
        """Whether the next entry goes to a new segment: the active one is full (never to
        replace an empty one), or a write failed on it (an empty one too: nothing is ever
        written again at an offset a reader may have seen)."""
        if self._fd is None or self._roll_next:
            return True
        active = self._segments[-1]
        ends = active.size + run.size >= self.segment_bytes
        return ends and active.count + len(run.records) > 0

    def _commit(self, run: Run) -> OSError | None:
        """Write ``run`` at the end of the active segment and take it on the books (then the
        run is emptied); on failure the file is cut back to where it ended."""
        if not run.records:
            return None
        segment, fd = self._segments[-1], self._fd
        if fd is None:
            return OSError(0, "no segment open")
        try:
            pwrite_all(fd, run.parts, segment.size, run.size)
        except OSError as exc:
            self._cut_back(fd, segment)
            self._roll_next = True  # the next append starts a new segment
            if exc.errno in DISK_FULL_ERRNOS and self._reclaim():
                log.warning("spool.disk_full_reclaimed", error=exc.strerror, freed_segment=True)
                return self._commit(run)  # once: the new segment is empty, not reclaimed
            return exc
        end = segment.size
        remember = self._on_flush is None  # a reader here takes the newest from memory
        for record, size in zip(run.records, run.sizes, strict=True):
            end += size
            if remember:
                self._remember(InFlight(self._next_seq, record, size, segment.first_seq, end))
            self._next_seq += 1
        segment.size = end
        segment.count += len(run.records)
        self._bytes += run.size
        self._events += len(run.records)
        run.clear()
        return None

    def _cut_back(self, fd: int, segment: Segment) -> None:
        """Remove what a failed write left past the segment's size; when even that fails it
        is counted, logged and retried later (readers never read past the size here, nor
        past the next segment's first seq elsewhere or at start-up)."""
        try:
            os.ftruncate(fd, segment.size)
        except OSError as exc:
            self._uncut[segment.path] = segment.size
            self._failed_op("truncate", exc, segment.path)

    def _failed(self, error: OSError, lost: Sequence[Record], full: list[Record]) -> AppendResult:
        """The answer when the disk refused ``lost`` (what the full-spool policy dropped on
        the way, ``full``, is reported beside them)."""
        self.troubles.failed("write", error, dropped=len(lost))
        return AppendResult(
            accepted=False, dropped=tuple(lost), reason=drop_reason(error), full=tuple(full)
        )

    def _flush_soon(self) -> None:
        """Announce how far the files go at the end of this event-loop turn: one mark for
        all the appends of the turn instead of one per append."""
        if self._flush_pending:
            return
        self._flush_pending = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop (tools, tests): at once
            self.flush()

    def flush(self) -> None:
        """Tell a reader in another process how far the files go (entries are in the file
        from their append on; only what was really written is ever announced)."""
        self._flush_pending = False
        if self._on_flush is not None and self._segments:
            active = self._segments[-1]
            self._on_flush(active.first_seq, active.size)

    def _sync_if_due(self) -> None:
        if self.fsync == "never":
            return
        self._dirty = True
        if self.fsync == "always":
            self.sync()
        elif time.monotonic() - self._last_sync >= self.fsync_interval_ms / 1000:
            self.sync_soon()

    def sync(self) -> None:
        """fsync the active segment now, in this thread."""
        if self._fd is not None and self._dirty:
            self._fsync_now(self._fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def sync_soon(self) -> None:
        """The interval policy's fsync: what is appended so far is made durable by the
        spool's fsync thread, while the loop goes on reading and delivering (one such fsync
        at a time; without a running loop, at once)."""
        if self._fd is None or not self._dirty or self._syncing:
            return
        self._dirty = False
        self._last_sync = time.monotonic()
        if self._fsync_beside(self._fd, self._synced):
            self._syncing = True

    def _fsync_now(self, descriptor: int) -> None:
        try:
            os.fsync(descriptor)
        except OSError as exc:
            self.troubles.failed("fsync", exc)
        else:
            self.troubles.succeeded("fsync")

    def _fsync_beside(self, descriptor: int, done: Callable[[], None] | None = None) -> bool:
        """fsync ``descriptor``'s file on the spool's fsync thread (a duplicate that stays
        valid when the segment is closed meanwhile; coalesced with what is queued); a failure
        is counted and logged. Without a running loop (tools, tests) at once. Whether it
        was queued (then ``done`` is called when it is over)."""
        if not _loop_running():
            self._fsync_now(descriptor)
            return False
        try:
            self._fsyncs.file(descriptor, done)
        except OSError as exc:  # out of descriptors
            self.troubles.failed("fsync", exc)
            return False
        return True

    def _sync_directory(self) -> None:
        """fsync the spool's directory (a segment created, the ack file renamed), so a power
        cut keeps the name: inline with fsync ``always``, on the fsync thread with
        ``interval`` (one pending request at most), never with ``never``."""
        if self.fsync == "never":
            return
        if self.fsync == "interval" and _loop_running():
            self._fsyncs.directory(self.directory)
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

    def _drop_oldest_segment(self, dropped: list[Record]) -> bool:
        """Delete the oldest segment that holds nothing in flight (never the active one)."""
        busy = {f.segment for f in self._in_flight}
        candidates = [
            s
            for s in list(self._segments)[:-1]
            if s.first_seq not in busy and s.first_seq > self._remote_reading
        ]
        if not candidates:
            return False
        segment = candidates[0]
        start = self._ack_pos[1] if segment is self._segments[0] else 0
        entries = list(self._entries(segment, start))  # OSError, ValueError: the caller's
        self._recent.clear()
        self._recent_bytes = 0
        for _, record, size, _ in entries:
            self._bytes -= size
            self._events -= 1
            dropped.append(record)
        self._segments.remove(segment)
        self._delete(segment.path, aside=True)
        if self._ack_pos[0] == segment.first_seq:
            self._ack_pos = (self._segments[0].first_seq, 0)
        return True

    def _delete(self, path: Path, *, aside: bool = False) -> None:
        """Delete a segment taken off the books; a disk that refuses (read-only, I/O error)
        is counted and logged, never raised (an acknowledgement must not fail over it), and
        the deletion retried at the next saves of the ack position. A dropped segment
        (``aside``) that cannot be deleted is emptied and renamed out of the readers' sight
        where the disk lets it (neither needs space)."""
        try:
            path.unlink()
        except FileNotFoundError:
            self._forget_undeleted(path)
        except OSError as exc:
            self.troubles.failed("delete", exc)
            log.error("spool.delete_failed", segment=path.name, error=exc.strerror)
            if aside:
                path = _put_aside(path)
            if path not in self._undeleted:
                self._undeleted.append(path)
        else:
            self._forget_undeleted(path)
            self.troubles.succeeded("delete")

    def _forget_undeleted(self, path: Path) -> None:
        if path in self._undeleted:
            self._undeleted.remove(path)

    def _retry_chores(self) -> None:
        """Retry what the disk refused before: deleting segments, cutting leftovers back."""
        for path in list(self._undeleted):
            self._delete(path)
        for path, size in list(self._uncut.items()):
            try:
                os.truncate(path, size)
            except FileNotFoundError:
                del self._uncut[path]
            except OSError as exc:
                self.troubles.failed("truncate", exc)
            else:
                del self._uncut[path]

    # ---- the acknowledged position on disk ----------------------------------------------
    def _persist_ack(self) -> None:
        """Save the acknowledged position now if the last save is 100 ms old (or fsync is
        ``always``), else once that is so: a crash replays at most ~100 ms of acks."""
        wait = self._ack_written_at + ACK_WRITE_SECONDS - time.monotonic()
        if wait <= 0 or self.fsync == "always":
            self._save_ack()
        else:
            self._save_ack_in(wait)

    def _save_ack_in(self, delay: float) -> None:
        if self._ack_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): the next ack or close saves it
            return
        self._ack_timer = loop.call_later(delay, self._deferred_ack)

    def _deferred_ack(self) -> None:
        self._ack_timer = None
        self._save_ack()

    def _save_ack(self) -> None:
        """Write the acknowledged position (write, rename, fsync the directory); a failure
        (disk full) is counted and logged, and retried a second later or at the next ack."""
        self._ack_written_at = time.monotonic()
        if self._undeleted or self._uncut:
            self._retry_chores()
        if self._ack_saved == self._acked_seq:
            return
        try:
            replace_file(
                self.directory / ACK_FILE, b"%d" % self._acked_seq, fsync=self.fsync == "always"
            )
        except OSError as exc:
            self.troubles.failed("ack", exc)
            self._save_ack_in(ACK_RETRY_SECONDS)
            return
        self._ack_saved = self._acked_seq
        self.troubles.succeeded("ack")
        self._sync_directory()

    # ---- reading ------------------------------------------------------------------------
    def _entries(self, segment: Segment, start: int) -> Iterator[tuple[int, Record, int, int]]:
        """Entries of ``segment`` from offset ``start`` up to its size (never what a failed
        write left beyond), read as they are taken: (seq, record, size on disk, end); through
        the positions start-up found when the file could not be repaired."""
        with segment.path.open("rb") as handle:
            if segment.entries is not None:
                for entry in segment.entries:
                    if entry.start >= start:
                        handle.seek(entry.start)
                        if (found := read_entry(handle)) is not None:
                            yield (*found, entry.end)
                return
            handle.seek(start)
            offset = start
            while offset < segment.size and (read := read_entry(handle)) is not None:
                offset += read[2]
                yield (*read, offset)

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        """Wait for entries after those already handed out; hand out up to ``max_records``
        of them (``max_bytes``, one at least), oldest first. They stay in flight until
        acknowledged; only :meth:`rewind` hands them out again."""
        while not (batch := self._read_next(max_records, max_bytes)):
            self._readable.clear()
            await self._readable.wait()
        self._in_flight.extend(batch)
        return [f.record for f in batch]

    def _remember(self, item: InFlight) -> None:
        self._recent.append(item)
        self._recent_bytes += item.size
        while self._recent_bytes > self.recent_max_bytes and self._recent:
            self._recent_bytes -= self._recent.popleft().size

    def _forget_recent(self, up_to_seq: int) -> None:
        while self._recent and self._recent[0].seq <= up_to_seq:
            self._recent_bytes -= self._recent.popleft().size

    def _read_next(self, max_records: int, max_bytes: int) -> list[InFlight]:
        """The entries after the last one handed out (after the acknowledged position when
        none is): from memory when the newest entries follow it, else from the files."""
        if self._in_flight:
            last = self._in_flight[-1]
            after_seq, position = last.seq, (last.segment, last.end)
        else:
            after_seq, position = self._acked_seq, self._ack_pos
        self._forget_recent(after_seq)
        if self._recent and self._recent[0].seq == after_seq + 1:
            unread: Iterator[InFlight] = iter(self._recent)
        else:
            unread = self._unread_on_disk(position)
        return bounded(islice(unread, max_records), max_bytes)

    def _unread_on_disk(self, position: tuple[int, int]) -> Iterator[InFlight]:
        """The entries from ``position`` (segment, offset) on, oldest first, read back from
        the segments lazily."""
        self.flush()  # what is still buffered must be in the file to be read back
        start_segment, start_offset = position
        for segment in list(self._segments):
            if segment.first_seq < start_segment:
                continue
            offset = start_offset if segment.first_seq == start_segment else 0
            for seq, record, size, end in self._entries(segment, offset):
                yield InFlight(seq, record, size, segment.first_seq, end)

    def ack(self, count: int) -> None:
        """The oldest ``count`` records in flight are delivered: move the acked position."""
        in_flight = self._in_flight
        done = min(count, len(in_flight))
        for _ in range(done):
            item = in_flight.popleft()
            self._ack_pos = (item.segment, item.end)
            self._acked_seq = item.seq
            self._bytes -= item.size
            self._events -= 1
        self._after_ack(done > 0)

    def _after_ack(self, moved: bool) -> None:
        if moved:
            freed = self._forget_acked_segments()
            if freed and self._ack_timer is not None:  # a save failed: try in the space freed
                self._save_ack()
            self._persist_ack()
        if self._events == 0:
            self._empty.set()

    # ---- a reader in another process --------------------------------------------------
    def read_elsewhere(self, on_flush: Callable[[int, int], None]) -> tuple[int, int]:
        """From now on another process reads (see :mod:`bridge.spool.tail`): every flush is
        announced to ``on_flush`` (segment, offset), entries are no longer kept in memory
        for a reader here. Returns where that reader starts: the acknowledged position."""
        self._on_flush = on_flush
        self._recent.clear()
        self._recent_bytes = 0
        self._in_flight.clear()
        self._remote_reading = self._ack_pos[0]
        return self._ack_pos

    def read_here(self) -> None:
        """The reader is in this process again (after :meth:`read_elsewhere`)."""
        self._on_flush = None
        self._remote_reading = 0
        self.rewind()

    def flushed_to(self) -> tuple[int, int]:
        """How far the files go (segment, offset); the acknowledged position while no
        segment could be created yet (disk full at start)."""
        self.flush()
        if not self._segments:
            return self._ack_pos
        active = self._segments[-1]
        return active.first_seq, active.size

    def reading(self, segment: int) -> None:
        """The other process started reading ``segment``: drop_oldest keeps it from now on."""
        self._remote_reading = max(self._remote_reading, segment)

    def acked_elsewhere(self, stretches: Sequence[Acked]) -> None:
        """The other process's acknowledgements, oldest first. A stretch in a segment
        dropped meanwhile (full, drop_oldest) was already taken off the books: skipped."""
        live = {segment.first_seq: segment for segment in self._segments}
        moved = False
        for stretch in stretches:
            segment = live.get(stretch.segment)
            if segment is None or stretch.last_seq <= self._acked_seq:
                continue
            if stretch.end > segment.size or stretch.last_seq >= self._next_seq:
                self._refuse_ack(stretch, segment)
                continue
            self._ack_pos = (stretch.segment, stretch.end)
            self._acked_seq = stretch.last_seq
            self._bytes -= stretch.size
            self._events -= stretch.events
            moved = True
        self._after_ack(moved)

    def _refuse_ack(self, stretch: Acked, segment: Segment) -> None:
        """An acknowledgement of what was never written (past the segment's size, or a seq
        never given out): ignored, counted and logged, never taken on the books."""
        log.error(
            "spool.ack_refused",
            segment=segment.path.name,
            end=stretch.end,
            size=segment.size,
            last_seq=stretch.last_seq,
            next_seq=self._next_seq,
        )
        self.troubles.count("ack_refused")

    def _forget_acked_segments(self) -> bool:
        """Delete the segments wholly acknowledged (never the active one); whether any."""
        freed = False
        while len(self._segments) > 1:
            first = self._segments[0]
            wholly_acked = first.first_seq < self._ack_pos[0] or (
                first.first_seq == self._ack_pos[0] and self._ack_pos[1] >= first.size
            )
            if not wholly_acked:
                return freed
            freed = True
            self._segments.popleft()
            self._delete(first.path)
            if self._ack_pos[0] == first.first_seq:
                self._ack_pos = (self._segments[0].first_seq, 0)
        return freed

    def rewind(self) -> None:
        """Records in flight go back: the next read starts at the acknowledged position."""
        self._in_flight.clear()
        if self._events:
            self._readable.set()

    def stats(self) -> SpoolStats:
        return SpoolStats(events=self._events, bytes=self._bytes, in_flight=len(self._in_flight))

    def appended_total(self) -> int:
        """Sequence number of the last record appended (counts on across restarts)."""
        return self._next_seq - 1

    async def wait_empty(self) -> None:
        await self._empty.wait()


def without_leftovers(result: SegmentScan, next_first: int | None) -> SegmentScan:
    """The scan without entries from ``next_first`` on (a failed write's leftovers, which the
    next segment took the seqs of): those bytes count as a torn tail (pure)."""
    if next_first is None or not result.entries or result.entries[-1].seq < next_first:
        return result
    kept = [entry for entry in result.entries if entry.seq < next_first]
    end = kept[-1].end if kept else 0
    return SegmentScan(kept, result.damaged, result.size - end, result.size)


def _first_seq_of(paths: list[Path]) -> int | None:
    """The first seq the first of ``paths`` names (None: no path, or not a segment name)."""
    try:
        return segment_first_seq(paths[0]) if paths else None
    except ValueError:
        return None


def _put_aside(path: Path) -> Path:
    """Empty a segment file and rename it so no reader finds it (each as far as the disk
    lets it); the path it has now."""
    with contextlib.suppress(OSError):
        os.truncate(path, 0)
    aside = path.with_name(path.name + ASIDE)
    try:
        path.rename(aside)
    except OSError:
        return path
    return aside


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
