"""The runners' appends to the spool, gathered across sockets: one append per loop turn.

At fleet scale a read brings one frame (thousands of sockets at one event a second each), and
one spool append per frame costs a write, the books and a mark to the shipper each time. The
runners hand their records here instead; the first record of an event-loop turn queues a
flush (``call_soon``), which appends everything the turn gathered at once, in the order it
came (so a runner's records, gap markers included, keep their order). A record waits in
memory at most until the loop's next turn: before any I/O the loop does next, as before.
What the spool drops (full, or its disk failing) is counted per record with its reason (an
append that raises, the spool not open, costs every record of the turn: ``internal_error``),
before what the runners asked to be done once their records are appended (they count them
received then: whoever sees a frame counted received sees its drop counted too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.pipeline import Record
from bridge.spool import AppendResult

CountDrop = Callable[[Record, str], None]
FAILED_APPEND = "internal_error"  # the append raised (the spool not open): counted, then raised


class Appender(Protocol):
    """What the intake needs of the spool."""

    def append_all(self, records: Sequence[Record]) -> AppendResult: ...


class SpoolIntake:
    def __init__(self, spool: Appender, count_drop: CountDrop) -> None:
        self.spool = spool
        self.count_drop = count_drop
        self._pending: list[Record] = []
        self._then: list[Callable[[], None]] = []
        self._failed: Exception | None = None  # an append that raised (spool not open)

    def add(self, records: Sequence[Record], then: Callable[[], None] | None = None) -> None:
        """Take ``records`` for this turn's append (at once when no loop runs); ``then`` runs
        once they are appended. An append of this turn's records that raised (the spool not
        open) is raised here, to the next runner that adds, before its records are taken (so
        it counts them itself): it crashes as it would have appending itself, and the fleet
        restarts it."""
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed
        first = not self._pending
        self._pending.extend(records)
        if then is not None:
            self._then.append(then)
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tools): appended now; a failure, counted by
                self.flush()  # the flush, is raised to the next add as with a loop

    def flush(self) -> None:
        """Append what was gathered; count what the spool dropped; then the callers' own."""
        records, self._pending = self._pending, []
        then, self._then = self._then, []
        if records:
            try:
                result = self.spool.append_all(records)
            except Exception as exc:  # noqa: BLE001 - raised to the next runner that adds
                self._failed = exc  # and the records it cost are counted, not lost silently
                for record in records:
                    self.count_drop(record, FAILED_APPEND)
            else:
                if not result.accepted or result.dropped:
                    for record, reason in result.drops():
                        self.count_drop(record, reason)
        for done in then:
            done()
