"""The disk spool: an append-only, segmented, checksummed log in ``spool.dir``.

- ``append`` writes the entry to the active segment and hands it to the OS (a ``write``)
  before returning, so a killed process loses nothing it appended; ``fsync`` decides when
  the OS must put it on disk (``always``: every append; ``interval``: at most every
  ``fsync_interval_ms``; ``never``: when the OS likes — a power cut can lose that window).
- One reader reads entries in order, each read after the entries already handed out;
  ``ack`` acknowledges the oldest handed out, moves the acknowledged position (persisted in
  ``ack`` by write + rename) and deletes segments that are wholly acknowledged; ``rewind``
  hands out again from the acknowledged position.
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
from bridge.spool.recovery import iter_segment_paths, rewrite, scan_file

if TYPE_CHECKING:
    from bridge.spool.tail import Acked

FsyncPolicy = Literal["always", "interval", "never"]
ACK_FILE = "ack"
LOCK_FILE = "lock"
ACK_WRITE_SECONDS = 0.1
WRITE_BUFFER = 1 << 20  # appends reach the kernel once per loop turn (flush), not every 8 KiB


@dataclass
class Segment:
    path: Path
    first_seq: int
    count: int = 0
    size: int = 0


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
    _segments: deque[Segment] = field(default_factory=deque)
    _writer: IO[bytes] | None = None
    _lock: IO[bytes] | None = None
    _next_seq: int = 1
    _acked_seq: int = 0
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
    _write_error: str | None = None
    _readable: asyncio.Event = field(default_factory=asyncio.Event)
    _empty: asyncio.Event = field(default_factory=asyncio.Event)
    # Read by another process: told of every flush (segment, offset), the furthest segment
    # it has started reading (drop_oldest keeps it and everything before it).
    _on_flush: Callable[[int, int], None] | None = None
    _remote_reading: int = 0

    def __post_init__(self) -> None:
        if self.segment_bytes <= 0:
            self.segment_bytes = max(4096, min(64 << 20, self.max_bytes // 8))

    # ---- life cycle -------------------------------------------------------------------
    def open(self) -> RecoveryReport:
        """Lock the directory, recover the segments, position the reader; returns the report."""
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
        self._acked_seq = self._read_ack()
        self._recover()
        self._open_writer()
        if self._events:
            self._readable.set()
        else:
            self._empty.set()
        return self.report

    def close(self) -> None:
        """Flush, fsync, persist the acknowledged position, release the lock (if held)."""
        if self._lock is None:
            return
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None
        self._write_ack()
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _read_ack(self) -> int:
        try:
            return int((self.directory / ACK_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_ack(self) -> None:
        tmp = self.directory / f"{ACK_FILE}.tmp"
        tmp.write_text(str(self._acked_seq))
        if self.fsync == "always":
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        tmp.replace(self.directory / ACK_FILE)

    def _recover(self) -> None:
        for path in iter_segment_paths(self.directory):
            result = scan_file(path)
            self.report.damaged += result.damaged
            if result.torn_bytes:
                self.report.torn += 1
                self.report.torn_bytes += result.torn_bytes
            if not result.clean:
                rewrite(path, result)
            live = [e for e in result.entries if e.seq > self._acked_seq]
            if not live:
                path.unlink()
                continue
            first_seq = segment_first_seq(path)
            segment = Segment(path, first_seq, count=len(result.entries))
            segment.size = sum(e.end - e.start for e in result.entries)
            self._segments.append(segment)
            self._bytes += sum(e.end - e.start for e in live)
            self.report.replay += len(live)
            self._next_seq = max(self._next_seq, result.entries[-1].seq + 1)
            if len(self._segments) == 1:
                self._ack_pos = (first_seq, live[0].start)
        self._next_seq = max(self._next_seq, self._acked_seq + 1)
        self._events = self.report.replay

    def _open_writer(self) -> None:
        if not self._segments or self._segments[-1].size >= self.segment_bytes:
            self._new_segment()
        else:
            self._writer = self._segments[-1].path.open("ab", buffering=WRITE_BUFFER)

    def _new_segment(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            if self.fsync == "always":
                os.fsync(self._writer.fileno())
            elif self.fsync == "interval":
                self._fsync_beside(self._writer.fileno())
            self._writer.close()
        segment = Segment(self.directory / segment_name(self._next_seq), self._next_seq)
        self._writer = segment.path.open("ab", buffering=WRITE_BUFFER)
        if not self._segments:
            self._ack_pos = (segment.first_seq, 0)
        self._segments.append(segment)

    # ---- writing ------------------------------------------------------------------------
    def append(self, record: Record) -> AppendResult:
        return self.append_all((record,))

    def append_all(self, records: Sequence[Record]) -> AppendResult:
        """Append in order, then one flush request and one fsync decision for the lot (with
        fsync ``always``: one fsync per read off a socket, before the next read)."""
        dropped: list[Record] = []
        written = 0
        for record in records:
            written += self._write(record, dropped)
        refused = written < len(records)
        if not written:
            return AppendResult(accepted=not refused, dropped=tuple(dropped))
        self._flush_soon()
        self._sync_if_due()
        result = appended(dropped, self._readable, self._empty)
        return AppendResult(accepted=False, dropped=result.dropped) if refused else result

    def _write(self, record: Record, dropped: list[Record]) -> bool:
        """Buffer one entry; False when the full spool refuses it (then it is in ``dropped``
        with whatever the policy dropped to make room)."""
        writer = self._writer
        if writer is None:
            raise SpoolError("spool: not open")
        header, payload = encode_entry_parts(self._next_seq, record)
        size = len(header) + len(payload)
        while self._bytes + size > self.max_bytes:
            if self.when_full == "drop_newest" or not self._drop_oldest_segment(dropped):
                dropped.append(record)
                return False
        if self._segments[-1].size >= self.segment_bytes:
            self._new_segment()
            writer = self._writer
        if self._write_error is not None:
            raise SpoolError(f"spool: write failed: {self._write_error}")
        try:
            writer.write(header)  # type: ignore[union-attr]  # _new_segment opened it
            writer.write(payload)  # type: ignore[union-attr]
        except OSError as exc:
            raise SpoolError(f"spool: write failed: {exc.strerror}") from None
        segment = self._segments[-1]
        if self._on_flush is None:  # a reader here takes the newest entries from memory
            self._remember(InFlight(self._next_seq, record, size, segment.first_seq,
                                    segment.size + size))  # fmt: skip
        segment.size += size
        segment.count += 1
        self._next_seq += 1
        self._bytes += size
        self._events += 1
        return True

    def _flush_soon(self) -> None:
        """Hand what was appended to the kernel at the end of this event-loop turn: one write
        for all the records of the turn instead of one per record. A crash of the process
        loses nothing handed over; ``fsync`` decides about the machine crashing."""
        if self._flush_pending:
            return
        self._flush_pending = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop (tools, tests): at once
            self.flush()

    def flush(self) -> None:
        """Write the buffered entries to the segment file (not fsync); a reader in another
        process is told how far the file now goes."""
        self._flush_pending = False
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except OSError as exc:
            self._write_error = exc.strerror or str(exc)
            return
        if self._on_flush is not None:
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
        if self._writer is not None and self._dirty:
            self.flush()
            os.fsync(self._writer.fileno())
            self._dirty = False
            self._last_sync = time.monotonic()

    def sync_soon(self) -> None:
        """The interval policy's fsync: what is appended so far is handed to the kernel now
        and made durable by a worker thread, while the loop goes on reading and delivering
        (one such fsync at a time; without a running loop, at once)."""
        if self._writer is None or not self._dirty or self._syncing:
            return
        self.flush()
        self._dirty = False
        self._last_sync = time.monotonic()
        future = self._fsync_beside(self._writer.fileno())
        if future is not None:
            self._syncing = True
            future.add_done_callback(self._synced)

    def _fsync_beside(self, descriptor: int) -> asyncio.Future[None] | None:
        """fsync ``descriptor``'s file in a worker thread, on a duplicate that stays valid when
        the segment is closed meanwhile; a failure is kept like a failed write. Without a
        running loop (tools, tests) at once, and None."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            os.fsync(descriptor)
            return None
        future = loop.run_in_executor(None, _fsync_and_close, os.dup(descriptor))
        future.add_done_callback(self._fsync_failed)
        return future

    def _fsync_failed(self, done: asyncio.Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if isinstance(error, OSError):
            self._write_error = error.strerror or str(error)

    def _synced(self, _: asyncio.Future[None]) -> None:
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
        self._recent.clear()
        self._recent_bytes = 0
        start = self._ack_pos[1] if segment is self._segments[0] else 0
        for _, record, size in self._entries(segment, start):
            self._bytes -= size
            self._events -= 1
            dropped.append(record)
        self._segments.remove(segment)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        if self._ack_pos[0] == segment.first_seq:
            self._ack_pos = (self._segments[0].first_seq, 0)
        return True

    # ---- reading ------------------------------------------------------------------------
    def _entries(self, segment: Segment, start: int) -> Iterator[tuple[int, Record, int]]:
        """Entries of ``segment`` from offset ``start``, read as they are taken: (seq, record,
        size on disk)."""
        if self._writer is not None and segment is self._segments[-1]:
            self._writer.flush()
        with segment.path.open("rb") as handle:
            handle.seek(start)
            while (entry := read_entry(handle)) is not None:
                yield entry

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
            for seq, record, size in self._entries(segment, offset):
                offset += size
                yield InFlight(seq, record, size, segment.first_seq, offset)

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
            self._forget_acked_segments()
            now = time.monotonic()
            if now - self._ack_written_at >= ACK_WRITE_SECONDS or self.fsync == "always":
                self._write_ack()  # at most every 100 ms: a crash replays at most that much
                self._ack_written_at = now
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
        """How far the files go once what is buffered is flushed (segment, offset)."""
        self.flush()
        active = self._segments[-1]
        return active.first_seq, active.size

    def reading(self, segment: int) -> None:
        """The other process started reading ``segment``: drop_oldest keeps it from now on."""
        self._remote_reading = max(self._remote_reading, segment)

    def acked_elsewhere(self, stretches: Sequence[Acked]) -> None:
        """The other process's acknowledgements, oldest first. A stretch in a segment
        dropped meanwhile (full, drop_oldest) was already taken off the books: skipped."""
        live = {segment.first_seq for segment in self._segments}
        moved = False
        for stretch in stretches:
            if stretch.segment not in live or stretch.last_seq <= self._acked_seq:
                continue
            self._ack_pos = (stretch.segment, stretch.end)
            self._acked_seq = stretch.last_seq
            self._bytes -= stretch.size
            self._events -= stretch.events
            moved = True
        self._after_ack(moved)

    def _forget_acked_segments(self) -> None:
        while len(self._segments) > 1:
            first = self._segments[0]
            wholly_acked = first.first_seq < self._ack_pos[0] or (
                first.first_seq == self._ack_pos[0] and self._ack_pos[1] >= first.size
            )
            if not wholly_acked:
                return
            self._segments.popleft()
            with contextlib.suppress(FileNotFoundError):
                first.path.unlink()
            if self._ack_pos[0] == first.first_seq:
                self._ack_pos = (self._segments[0].first_seq, 0)

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


def _fsync_and_close(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
