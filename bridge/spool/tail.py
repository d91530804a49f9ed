"""The reading end of a disk spool that another process writes: the shipper's side.

The writer (:class:`~bridge.spool.disk.DiskSpool` in the main process) appends entries and,
each time it hands them to the kernel, tells where its last flushed entry ends (a *mark*:
segment, offset). The tail reads entries in order from the acknowledged position and never
past the mark, so it never meets an entry that is still half in the writer's buffer; a
segment older than the mark's is complete and read to its end. Each read goes on after the
entries already handed out (the worker's window); ``rewind`` starts again from the
acknowledged position. ``ack`` reports each
acknowledged stretch, per segment, to the writer, which moves its own acknowledged position,
deletes wholly acknowledged segments and persists the position. A segment the writer
deleted meanwhile (``drop_oldest`` while full) is skipped. It offers the reading half of the
:class:`~bridge.spool.Spool` protocol, which is all the sink worker uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO

from bridge.errors import SpoolError
from bridge.pipeline import Record
from bridge.spool import READ_MAX_BYTES, bounded
from bridge.spool.codec import read_entry
from bridge.spool.disk import InFlight, segment_first_seq, segment_name
from bridge.spool.recovery import iter_segment_paths

READ_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class Position:
    """Where an entry starts (or the last one read ends): segment (its first seq), offset."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Acked:
    """An acknowledged stretch within one segment: up to ``last_seq`` ending at ``end``;
    ``events`` entries of ``size`` bytes on disk."""

    segment: int
    last_seq: int
    end: int
    events: int
    size: int


def acked_stretches(items: list[InFlight]) -> list[Acked]:
    """The acknowledged entries, oldest first, summed per segment (pure)."""
    stretches: list[Acked] = []
    first = 0
    for index in range(1, len(items) + 1):
        if index == len(items) or items[index].segment != items[first].segment:
            last = items[index - 1]
            size = sum(item.size for item in items[first:index])
            stretches.append(Acked(last.segment, last.seq, last.end, index - first, size))
            first = index
    return stretches


class SpoolTail:
    def __init__(
        self,
        directory: Path,
        start: Position,
        *,
        on_ack: Callable[[list[Acked]], None],
        on_segment: Callable[[int], None] = lambda segment: None,
    ) -> None:
        self.directory = directory
        self._acked = start
        self._mark = start
        self._on_ack = on_ack
        self._on_segment = on_segment
        self._reading = start.segment
        self._in_flight: deque[InFlight] = deque()  # handed out, oldest first
        self._handle: IO[bytes] | None = None
        self._handle_segment = -1
        self._readable = asyncio.Event()

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
        while True:
            batch = bounded(islice(self._unread(), max_records), max_bytes)
            if batch:
                self._in_flight.extend(batch)
                return [item.record for item in batch]
            self._readable.clear()
            await self._readable.wait()

    def ack(self, count: int) -> None:
        """The oldest ``count`` records in flight are delivered: report them to the writer."""
        done = [self._in_flight.popleft() for _ in range(min(count, len(self._in_flight)))]
        if done:
            last = done[-1]
            self._acked = Position(last.segment, last.end)
        self._on_ack(acked_stretches(done))

    def rewind(self) -> None:
        """Records in flight go back: the next read starts at the acknowledged position."""
        self._in_flight.clear()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # ---- reading the segments ---------------------------------------------------------
    def _unread(self) -> Iterator[InFlight]:
        """Marked entries after the last one handed out (from the acknowledged position when
        none is), read as they are taken."""
        last = self._in_flight[-1] if self._in_flight else None
        position: Position | None = (
            self._acked if last is None else Position(last.segment, last.end)
        )
        while position is not None and position.segment <= self._mark.segment:
            handle = self._open(position.segment)
            if handle is None:  # deleted by the writer (dropped while full): the next one
                position = self._next_segment(position.segment)
                continue
            sealed = position.segment < self._mark.segment
            limit = None if sealed else self._mark.offset
            offset = position.offset
            handle.seek(offset)
            while limit is None or offset < limit:
                entry = read_entry(handle)
                if entry is None:
                    if not sealed:
                        raise SpoolError(
                            f"spool: {segment_name(position.segment)} ends before the writer's "
                            f"mark at {limit}"
                        )
                    break
                seq, record, size = entry
                offset += size
                yield InFlight(seq, record, size, position.segment, offset)
            if not sealed:
                return
            position = self._next_segment(position.segment)

    def _open(self, segment: int) -> IO[bytes] | None:
        if self._handle_segment == segment and self._handle is not None:
            return self._handle
        self.close()
        try:
            self._handle = (self.directory / segment_name(segment)).open(
                "rb", buffering=READ_BUFFER
            )
        except FileNotFoundError:
            return None
        self._handle_segment = segment
        if segment > self._reading:
            self._reading = segment
            self._on_segment(segment)
        return self._handle

    def _next_segment(self, after: int) -> Position | None:
        """The start of the first segment after ``after`` (None: none exists yet)."""
        for path in iter_segment_paths(self.directory):
            with contextlib.suppress(ValueError):
                first = segment_first_seq(path)
                if first > after:
                    return Position(first, 0)
        return None
