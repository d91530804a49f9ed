"""The spool: the buffer between the socket readers and the sink worker.

Readers ``append`` (or ``append_all`` what one read brought) without ever waiting (the
upstream drops a socket that misses a pong for 60 s); one worker ``read``s the records after
those it already holds (its in-flight window), in order, and ``ack``s the oldest it holds as
they settle: a record leaves the buffer only when it is acknowledged. Only ``rewind`` (a new
worker) hands the unacknowledged records out again. The buffer is bounded in bytes; when
full, ``when_full`` decides which record is dropped, and every drop is reported to the
caller, with its reason, who counts it. ``problem`` says what is wrong with the spool's
storage while it lasts (readiness shows it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Literal, Protocol, TypeVar

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


def appended(dropped: list[Record], readable: asyncio.Event, empty: asyncio.Event) -> AppendResult:
    """After an append: a waiting reader woken, the spool no longer empty, and the answer.
    The events are touched only when they change (set() and clear() cost more than the check)."""
    if not readable.is_set():
        readable.set()
    if empty.is_set():
        empty.clear()
    return AppendResult(accepted=True, dropped=tuple(dropped)) if dropped else ACCEPTED


class Sized(Protocol):
    @property
    def size(self) -> int: ...


S = TypeVar("S", bound=Sized)


def bounded(items: Iterable[S], max_bytes: int) -> list[S]:
    """The leading ``items`` that fit in ``max_bytes`` (the first one in any case); an
    iterator is not read further than one item past the bound."""
    batch: list[S] = []
    size = 0
    for item in items:
        size += item.size
        if batch and size > max_bytes:
            break
        batch.append(item)
    return batch


def merged(results: Sequence[AppendResult]) -> AppendResult:
    """One answer for several appends: accepted when all were, every drop listed."""
    if all(r is ACCEPTED for r in results):
        return ACCEPTED
    dropped = tuple(d for r in results for d in r.dropped)
    return AppendResult(accepted=all(r.accepted for r in results), dropped=dropped)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    events: int
    bytes: int
    in_flight: int


class SpoolReader(Protocol):
    """The reading half, all the sink worker needs (in another process: a spool's tail).

    - ``read``: the next records after those already handed out (never an implicit rewind),
      oldest first; waits until there is one at least.
    - ``ack(count)``: the oldest ``count`` records handed out are settled and leave the spool.
    - ``rewind``: every record handed out and not acknowledged is handed out again by the
      next reads (a new worker starts from the acknowledged position).
    """

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]: ...

    def ack(self, count: int) -> None: ...

    def rewind(self) -> None: ...


class Spool(Protocol):
    """What the supervisor, runners and the sink worker need from a spool."""

    def append(self, record: Record) -> AppendResult: ...

    def append_all(self, records: Sequence[Record]) -> AppendResult: ...

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]: ...

    def ack(self, count: int) -> None: ...

    def rewind(self) -> None: ...

    def stats(self) -> SpoolStats: ...

    def appended_total(self) -> int: ...

    @property
    def problem(self) -> str | None: ...

    async def wait_empty(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class MemorySpool:
    """A bounded in-memory spool (no durability across restarts)."""

    max_bytes: int
    when_full: WhenFull = "drop_newest"
    _pending: deque[Record] = field(default_factory=deque)
    _in_flight: deque[Record] = field(default_factory=deque)
    _bytes: int = 0
    _readable: asyncio.Event = field(default_factory=asyncio.Event)
    _empty: asyncio.Event = field(default_factory=asyncio.Event)
    _appended: int = 0

    def __post_init__(self) -> None:
        self._empty.set()

    def append(self, record: Record) -> AppendResult:
        dropped: list[Record] = []
        while self._bytes + record.size > self.max_bytes:
            if self.when_full == "drop_newest" or not self._pending:
                return AppendResult(accepted=False, dropped=(record, *dropped))
            oldest = self._pending.popleft()
            self._bytes -= oldest.size
            dropped.append(oldest)
        self._pending.append(record)
        self._bytes += record.size
        self._appended += 1
        return appended(dropped, self._readable, self._empty)

    def append_all(self, records: Sequence[Record]) -> AppendResult:
        return merged([self.append(record) for record in records])

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        """Wait for records not handed out yet and hand out up to ``max_records`` of them
        (``max_bytes``, one at least): they join those in flight."""
        while not self._pending:
            self._readable.clear()
            await self._readable.wait()
        batch = bounded(islice(self._pending, max_records), max_bytes)
        for _ in batch:
            self._in_flight.append(self._pending.popleft())
        return batch

    def ack(self, count: int) -> None:
        """The oldest ``count`` records in flight are acknowledged and leave the spool."""
        for _ in range(min(count, len(self._in_flight))):
            self._bytes -= self._in_flight.popleft().size
        if not self._pending and not self._in_flight:
            self._empty.set()

    def rewind(self) -> None:
        """Records still in flight go back to the front, in order, to be read again."""
        while self._in_flight:
            self._pending.appendleft(self._in_flight.pop())
        if self._pending:
            self._readable.set()

    def stats(self) -> SpoolStats:
        events = len(self._pending) + len(self._in_flight)
        return SpoolStats(events=events, bytes=self._bytes, in_flight=len(self._in_flight))

    def appended_total(self) -> int:
        return self._appended

    @property
    def problem(self) -> str | None:
        """Memory has no disk to fail: never a problem to report."""
        return None

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def close(self) -> None:
        """Nothing to release for memory; the disk spool closes its files and lock here."""


async def wait_settled(spool: Spool, mark: int, poll: float = 0.02) -> None:
    """Wait until every record appended up to ``mark`` (an earlier :meth:`appended_total`)
    has left the spool, delivered or dropped; records appended since may still be there."""
    while spool.appended_total() - spool.stats().events < mark:  # noqa: ASYNC110 - both spools
        await asyncio.sleep(poll)
