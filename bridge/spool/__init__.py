"""The spool: an append-only log on disk between the socket readers and the sink worker.

Two halves, one on each side of an acknowledgement channel:

- the **writer** (:class:`~bridge.spool.disk.DiskSpool`, the :class:`Spool` protocol): the
  readers ``append`` (or ``append_all`` what one read brought) without ever waiting (the
  upstream drops a socket that misses a pong for 60 s); it announces how far its files go
  (a *flush mark*), takes acknowledgements, deletes what is acknowledged, and keeps the
  accounting. Bounded in bytes: when full, ``when_full`` decides which record is dropped,
  and every drop is reported to the caller, with its reason, who counts it. ``problem``
  says what is wrong with the spool's storage while it lasts (readiness shows it).
- the **tail** (:class:`~bridge.spool.tail.SpoolTail`, the :class:`SpoolReader` protocol),
  its one reader: the sink worker ``read``s the records after those it already holds (its
  in-flight window), in order, never past the writer's mark, and ``ack``s the oldest it
  holds as they settle; only ``rewind`` (a new worker) hands the unacknowledged out again.

The channel between them is two small protocols: :class:`Marks` (writer → tail:
``mark(segment, offset)``) and :class:`Acks` (tail → writer: ``acked(stretches)``,
``reading(segment)``, ``rewound(segment)``). Two transports: direct calls when the tail runs
in this process (:func:`bridge.spool.tail.follow`), typed messages over the shipper's link
when it runs in the shipper (:mod:`bridge.shipper.link`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from bridge.pipeline import Record

WhenFull = Literal["drop_newest", "drop_oldest"]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: whether the new records were all kept, which records were dropped
    and why: ``reason`` is the drop reason of ``dropped`` (``spool_full``: the full-spool
    policy; ``disk_full`` / ``disk_error``: the disk refused the write); ``full`` lists what
    the full-spool policy dropped on the way when ``reason`` is another."""

    accepted: bool
    dropped: tuple[Record, ...] = ()
    reason: str = "spool_full"
    full: tuple[Record, ...] = ()

    def drops(self) -> Iterator[tuple[Record, str]]:
        """Every dropped record with its reason."""
        for record in self.full:
            yield record, "spool_full"
        for record in self.dropped:
            yield record, self.reason


READ_MAX_BYTES = 16 * 1024 * 1024  # what one read puts in flight at most (one record at least)
ACCEPTED = AppendResult(accepted=True)  # the usual answer, shared: no object per record


def appended(dropped: list[Record], empty: asyncio.Event) -> AppendResult:
    """After an append: the spool no longer empty, and the answer. The event is touched only
    when it changes (clear() costs more than the check)."""
    if empty.is_set():
        empty.clear()
    return AppendResult(accepted=True, dropped=tuple(dropped)) if dropped else ACCEPTED


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the spool holds: records not acknowledged yet, and their bytes on disk."""

    events: int
    bytes: int


class Position(NamedTuple):
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


class Marks(Protocol):
    """Writer → tail: the files are flushed up to ``offset`` of ``segment`` (marks only grow)."""

    def mark(self, segment: int, offset: int) -> None: ...


class Acks(Protocol):
    """Tail → writer: acknowledged stretches, oldest first; the segment the tail started
    reading (the full-spool policy no longer drops it); the segment of the acknowledged
    position the tail went back to (``rewind``: the full-spool policy keeps only that one
    until the tail reads further again)."""

    def acked(self, stretches: Sequence[Acked]) -> None: ...

    def reading(self, segment: int) -> None: ...

    def rewound(self, segment: int) -> None: ...


class SpoolReader(Protocol):
    """The reading half, all the sink worker needs (the spool's tail, wherever it runs).

    - ``read``: the next records after those already handed out (never an implicit rewind),
      oldest first, up to ``max_records`` weighing ``max_bytes`` (:attr:`Record.size`) at
      most but one at least; waits until there is one.
    - ``ack(count)``: the oldest ``count`` records handed out are settled and leave the spool.
    - ``rewind``: every record handed out and not acknowledged is handed out again by the
      next reads (a new worker starts from the acknowledged position).
    """

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]: ...

    def ack(self, count: int) -> None: ...

    def rewind(self) -> None: ...


class Spool(Protocol):
    """The writer: what the process's parts (compose, spoolkeeper, shards) and the runners
    need from a spool."""

    def append(self, record: Record) -> AppendResult: ...

    def append_all(self, records: Sequence[Record]) -> AppendResult: ...

    def stats(self) -> SpoolStats: ...

    def appended_total(self) -> int: ...

    @property
    def problem(self) -> str | None: ...

    async def wait_empty(self) -> None: ...

    def close(self) -> None: ...


async def wait_settled(spool: Spool, mark: int, poll: float = 0.02) -> None:
    """Wait until every record appended up to ``mark`` (an earlier :meth:`appended_total`)
    has left the spool, delivered or dropped; records appended since may still be there."""
    while spool.appended_total() - spool.stats().events < mark:  # noqa: ASYNC110 - a poll
        await asyncio.sleep(poll)
