"""The spool's one reader: the tail, wherever it runs.

The writer (:class:`~bridge.spool.disk.DiskSpool`) appends entries and, after each append,
tells where its last written entry ends (a *mark*: segment, offset). The tail reads entries
in order from the acknowledged position and never past the mark, so it never meets an entry
that is still half written; a segment older than the mark's is complete and read to its end
— but never past an entry whose seq is that of the next segment's first (what a failed write
left when the writer could not cut it back). Bytes are read with ``os.pread`` in chunks, into
the tail's own buffer, and never past the mark of the active segment: nothing the writer has
not announced is ever held, so bytes a failed write left and the writer cut back are never
handed out (and the writer never writes at an offset it announced once a write failed: it
starts a new segment). Before each read the tail checks that its segment file is still
linked: one the writer deleted (``drop_oldest``) is skipped even while the tail holds it
open, and the tail tells the writer each segment it starts reading (``reading``), which
``drop_oldest`` then keeps. Each read goes on after the entries already handed out (the
worker's window); ``rewind`` starts again from the acknowledged position, and tells the
writer so (``rewound``: only that segment stays kept). Entries of a segment the writer has
left that are damaged past reading are skipped (logged); the writer takes them off its books
when the segment goes (:meth:`~bridge.spool.disk.DiskSpool.acked`). ``ack`` reports
each acknowledged stretch, per segment, to the writer (and once everything it was told of is
acknowledged the tail holds no file open, so a drained segment the writer deletes, when a full
disk makes it start a new one, frees its space at once), which moves its own acknowledged
position, deletes wholly acknowledged segments and persists the position. It offers the
:class:`~bridge.spool.SpoolReader` protocol, which is all the sink worker uses.

Marks reach the tail and acknowledgements the writer through the channel of
:mod:`bridge.spool` (:class:`~bridge.spool.Marks`, :class:`~bridge.spool.Acks`): by direct
calls when the tail runs in the writer's process (:func:`follow`), as typed messages over the
link when it runs in the shipper (:mod:`bridge.shipper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.errors import SpoolError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.spool import READ_MAX_BYTES, Acked, Acks, Position
from bridge.spool.codec import (
    FORMAT,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    checksum,
    decode_payload,
)
from bridge.spool.disk import DiskSpool
from bridge.spool.recovery import iter_segment_paths, next_entry
from bridge.spool.segments import segment_first_seq, segment_name

READ_CHUNK = 1 << 20
log = get_logger(__name__)


@dataclass(slots=True)
class Span:
    """Entries handed out that lie one after the other in one segment, oldest first: the
    first starts at ``start``, entry ``i`` has seq ``seqs[i]`` and ends at ``ends[i]``; the
    leading ``acked`` of them are acknowledged. The tail's books cost two list appends per
    entry (no object per entry); a span is never empty once handed out."""

    segment: int
    start: int
    seqs: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    acked: int = 0

    @property
    def end(self) -> int:
        """Where its last entry ends (its start while it is empty)."""
        return self.ends[-1] if self.ends else self.start


def settle(spans: deque[Span], count: int) -> list[Acked]:
    """The oldest ``count`` entries of ``spans`` acknowledged: taken off them (a span wholly
    acknowledged leaves), and returned as stretches, oldest first, summed per segment (a
    stretch's bytes are its spans' lengths on disk: entries skipped between spans are not in
    it). Its work is per span, not per entry."""
    stretches: list[Acked] = []
    while count > 0 and spans:
        span = spans[0]
        first = span.acked
        taken = min(count, len(span.ends) - first)
        last = first + taken - 1
        size = span.ends[last] - (span.ends[first - 1] if first else span.start)
        if stretches and stretches[-1].segment == span.segment:
            before = stretches.pop()
            taken_in, size = before.events + taken, before.size + size
        else:
            taken_in = taken
        stretches.append(Acked(span.segment, span.seqs[last], span.ends[last], taken_in, size))
        count -= taken
        span.acked += taken
        if span.acked == len(span.ends):
            spans.popleft()
    return stretches


class SegmentReader:
    """One segment file read with ``os.pread`` into a buffer of its own: bytes are only ever
    read below the ``limit`` the caller gives (the writer's mark, or the file's end for a
    sealed segment), in chunks of ``READ_CHUNK``, so entries cost no system call each."""

    def __init__(self, fd: int, segment: int) -> None:
        self.fd = fd
        self.segment = segment
        self._buf = b""
        self._at = 0  # the file offset of _buf[0]
        self.end = 0

    def linked(self) -> bool:
        """Whether the file is still in the directory (not deleted by the writer)."""
        return os.fstat(self.fd).st_nlink > 0

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def _fill(self, offset: int, count: int, limit: int) -> bytes:
        """Read a chunk at ``offset`` (``count`` bytes at least where ``limit`` allows)."""
        want = min(max(count, READ_CHUNK), limit - offset)
        self._buf = os.pread(self.fd, want, offset) if want > 0 else b""
        self._at = offset
        return self._buf

    def entries(
        self, offset: int, limit: int, *, verify: bool = False
    ) -> Iterator[tuple[int, Record, int]]:
        """The whole entries from ``offset`` on, below ``limit``: (seq, record, size); once
        it ends, :attr:`end` is where it stopped (below ``limit``: not a whole entry there,
        or with ``verify`` one whose CRC fails). ValueError when a payload does not decode."""
        unpack, buf, at = HEADER.unpack_from, self._buf, self._at
        while offset < limit:
            pos = offset - at
            if pos < 0 or pos + HEADER_SIZE > len(buf):
                buf, at, pos = self._fill(offset, HEADER_SIZE, limit), offset, 0
                if len(buf) < HEADER_SIZE:
                    break
            magic, form, length, crc, seq = unpack(buf, pos)
            if magic != MAGIC or form != FORMAT or length > MAX_PAYLOAD:
                break
            size = HEADER_SIZE + length
            if pos + size > len(buf):
                buf, at, pos = self._fill(offset, size, limit), offset, 0
                if len(buf) < size:
                    break
            payload = buf[pos + HEADER_SIZE : pos + size]
            if verify and checksum(seq, payload) != crc:
                break
            record = decode_payload(payload)
            offset += size
            yield seq, record, size
        self.end = offset

    def take(  # noqa: PLR0917 - the hot path's one call per read
        self, offset: int, limit: int, span: Span, records: list[Record], max_records: int,
        max_bytes: int, weight: int,
    ) -> tuple[int, int, bool]:  # fmt: skip
        """Append to ``records`` (and to ``span``, which starts at ``offset``) the whole
        entries from ``offset`` on, below ``limit``, until it holds ``max_records`` or its
        records weigh ``max_bytes`` (one at least): the hot path of a tail that keeps up (one
        loop, one pread up to ``limit`` for all it takes, payloads decoded from the buffer).
        Returns the offset after the last one taken, the records' weight, and whether it
        stopped on whole entries (False: something that is not one lies below ``limit``)."""
        unpack, decode, buf, at = HEADER.unpack_from, decode_payload, self._buf, self._at
        add_record, add_seq, add_end = records.append, span.seqs.append, span.ends.append
        have, count = len(buf), len(records)
        while offset < limit and count < max_records:
            pos = offset - at
            if pos < 0 or pos + HEADER_SIZE > have:
                buf, at, pos = self._fill(offset, HEADER_SIZE, limit), offset, 0
                have = len(buf)
                if have < HEADER_SIZE:
                    return offset, weight, False
            magic, form, length, _, seq = unpack(buf, pos)
            if magic != MAGIC or form != FORMAT or length > MAX_PAYLOAD:
                return offset, weight, False
            end = pos + HEADER_SIZE + length
            if end > have:
                buf, at, pos = self._fill(offset, HEADER_SIZE + length, limit), offset, 0
                have, end = len(buf), HEADER_SIZE + length
                if end > have:
                    return offset, weight, False
            record = decode(buf[pos + HEADER_SIZE : end])
            weight += record.size
            if count and weight > max_bytes:
                return offset, weight, True
            offset = at + end
            add_record(record)
            add_seq(seq)
            add_end(offset)
            count += 1
        return offset, weight, True

    def resync(self, offset: int, limit: int) -> int | None:
        """The offset of the next intact entry after damage at ``offset`` (None: none)."""
        rest = os.pread(self.fd, max(0, limit - offset), offset)
        found = next_entry(rest, 1)
        return None if found is None else offset + found.start

    def close(self) -> None:
        os.close(self.fd)


class SpoolTail:
    """The reader: reads up to the writer's marks, reports acknowledgements to ``acks``."""

    def __init__(self, directory: Path, start: Position, acks: Acks) -> None:
        self.directory = directory
        self._prefix = f"{os.fspath(directory)}{os.sep}"  # a segment's path, without pathlib
        self._acked = start
        self._mark = start
        self._acks = acks
        self._reading = 0  # the furthest segment opened (each new one is told the writer)
        self._in_flight: deque[Span] = deque()  # handed out, oldest first
        self._count = 0  # entries handed out and not acknowledged
        self._reader: SegmentReader | None = None
        self._readable = asyncio.Event()
        self.skipped_damaged = 0  # entries of a sealed segment that could not be read

    @property
    def in_flight(self) -> int:
        """Records handed out and not acknowledged yet (the worker's window)."""
        return self._count

    # ---- what the writer says --------------------------------------------------------
    def mark(self, segment: int, offset: int) -> None:
        """The writer flushed everything up to ``offset`` of ``segment`` (marks only grow)."""
        mark = Position(segment, offset)
        if (mark.segment, mark.offset) > (self._mark.segment, self._mark.offset):
            self._mark = mark
            self._readable.set()

    # ---- the Spool protocol's reading half --------------------------------------------
    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        """Wait for marked entries after those already handed out; hand out up to
        ``max_records`` of them (``max_bytes``, one at least), oldest first."""
        while not (records := self._read_now(max_records, max_bytes)):
            self._readable.clear()
            await self._readable.wait()
        return records

    def _read_now(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        """What :meth:`read` hands out now, without waiting (nothing: nothing marked): the
        marked entries after the last one handed out (from the acknowledged position when
        none is), from the segments the writer left, then from its active one."""
        last = self._in_flight[-1] if self._in_flight else None
        position: Position | None = (
            self._acked if last is None else Position(last.segment, last.end)
        )
        records: list[Record] = []
        spans: list[Span] = []
        weight = 0
        mark = self._mark
        while position is not None and position.segment <= mark.segment:
            reader = self._open(position.segment)
            if reader is None:  # deleted by the writer (dropped while full): the next one
                position = self._gone(position, mark)
                continue
            span = Span(reader.segment, position.offset)
            spans.append(span)
            if position.segment == mark.segment:
                offset, weight, whole = reader.take(
                    position.offset, mark.offset, span, records, max_records, max_bytes, weight
                )
                if not whole:
                    raise SpoolError(
                        f"spool: {segment_name(reader.segment)} ends at {offset}, before "
                        f"the writer's mark at {mark.offset}"
                    )
                break
            for seq, record, start, end in self._sealed(reader, position.offset):
                weight += record.size
                if records and weight > max_bytes:
                    break
                if start != span.end:  # past damage: a new span (the gap is in no stretch)
                    span = Span(reader.segment, start)
                    spans.append(span)
                span.seqs.append(seq)
                span.ends.append(end)
                records.append(record)
                if len(records) >= max_records:
                    break
            else:
                position = self._next_segment(position.segment)
                continue
            break
        self._in_flight.extend(span for span in spans if span.ends)
        self._count += len(records)
        return records

    def ack(self, count: int) -> None:
        """The oldest ``count`` records in flight are delivered: report them to the writer."""
        count = min(count, self._count)
        stretches = settle(self._in_flight, count)
        if stretches:
            last = stretches[-1]
            self._acked = Position(last.segment, last.end)
            self._count -= count
        if not self._in_flight and self._acked >= self._mark:
            self.close()  # all told is settled: no file held open (a drained one frees at once)
        self._acks.acked(stretches)

    def rewind(self) -> None:
        """Records in flight go back: the next read starts at the acknowledged position; the
        writer hears it (its full-spool policy protects only that segment again, and each
        segment the tail opens from there on is told again)."""
        self._in_flight.clear()
        self._count = 0
        self._reading = self._acked.segment
        self._acks.rewound(self._acked.segment)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # ---- reading the segments ---------------------------------------------------------
    def _sealed(self, reader: SegmentReader, offset: int) -> Iterator[tuple[int, Record, int, int]]:
        """The entries of a segment the writer has left, from ``offset`` to its end — that is,
        before the next segment's first seq (bytes beyond are what a failed write left) —
        past damage the writer could not repair (CRC checked here: counted, logged): (seq,
        record, where it starts, where it ends)."""
        following = self._next_segment(reader.segment)
        stop_seq = following.segment if following is not None else None
        limit = reader.size()
        while offset < limit:
            with contextlib.suppress(ValueError):  # a payload that does not decode: damage
                for seq, record, size in reader.entries(offset, limit, verify=True):
                    if stop_seq is not None and seq >= stop_seq:
                        return  # a failed write's leftovers: the writer went on elsewhere
                    offset += size
                    yield seq, record, offset - size, offset
            if offset >= limit:
                return
            found = reader.resync(offset, limit)
            self.skipped_damaged += 1
            log.error(
                "spool.tail_damage_skipped",
                segment=segment_name(reader.segment),
                offset=offset,
                resumed_at=found,
            )
            if found is None:
                return
            offset = found

    def _gone(self, position: Position, mark: Position) -> Position | None:
        """Where to go on from a segment whose file is gone: the next segment, when the
        writer went on to one (it dropped or drained this one); FileNotFoundError when the
        file holding entries the writer marked is gone and nothing follows (taken away
        behind the spool's back: the worker's supervisor counts it and starts again)."""
        following = self._next_segment(position.segment)
        if following is None and position.segment == mark.segment and position < mark:
            name = segment_name(position.segment)
            raise FileNotFoundError(errno.ENOENT, "spool segment gone before it was read", name)
        return following

    def _open(self, segment: int) -> SegmentReader | None:
        """The segment's reader; None when its file is gone (deleted by the writer, though
        this process may still hold it open: a file no longer linked is never read)."""
        reader = self._reader
        if reader is not None and reader.segment == segment and reader.linked():
            return reader
        self.close()
        try:
            fd = os.open(self._prefix + segment_name(segment), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        self._reader = reader = SegmentReader(fd, segment)
        if segment > self._reading:
            self._reading = segment
            self._acks.reading(segment)
        return reader

    def _next_segment(self, after: int) -> Position | None:
        """The start of the first segment after ``after`` (None: none exists yet)."""
        for path in iter_segment_paths(self.directory):
            with contextlib.suppress(ValueError):
                first = segment_first_seq(path)
                if first > after:
                    return Position(first, 0)
        return None


def follow(spool: DiskSpool) -> SpoolTail:
    """A tail in the writer's process, from the acknowledged position: the writer's marks
    reach it and its acknowledgements reach the writer by direct calls (the in-process
    transport of the channel). :meth:`DiskSpool.detach` ends it."""
    tail = SpoolTail(spool.directory, spool.acked_position(), spool)
    spool.attach(tail)
    return tail
