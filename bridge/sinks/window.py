"""The sink worker's book-keeping of the records in flight: the window and the lanes.

The *window* holds the records the spool handed out and has not had acknowledged, oldest
first, with their sizes; those settled (by identity: a record object is in the window once);
and the DLQ copies that go out instead of records refused for good. Its leading settled
records are what the worker acknowledges.

A *lane* holds the records of one destination (a Kafka topic, a Redis stream, the file, the
DLQ) waiting to go out, in order, with at most one publish call in flight. ``Lanes`` keeps
them by name with the ones ready for a call, the ones lingering (a heap of when each is due),
the ones backing off (a heap of their ends), and the names of those whose last call failed;
it gathers the ready lanes into calls.

*Linger* (``sink.kafka.linger_ms``) is how long the first record queued in a lane (the
oldest but for records of other instances received a moment apart) may wait for company
before the lane is ready: counted from when the bridge received that record (its
``received_ns``, the ``ryze-received-at`` header), not from when it reached the lane. The way
there (the spool, the marks' own linger, the shipper's read) is part of the wait, so a record
is not held for company twice, and records that queued while the lane's previous call was in
flight, or that were read back from the spool after an outage or a restart, go as soon as
their linger is over (the producer itself lingers no more: a batch handed to it goes at once).
A DLQ copy keeps its record's receipt: it has waited out its linger already, and goes with the
next call of the DLQ's lane.
A lane holding a full call's worth (``full_records`` or ``full_bytes``) is ready at once; a
lane retried after a backoff is too.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.pipeline import Record

ONE_LANE = ""  # the lane of every record but the DLQ's, with ``one_lane``


class Window:
    """The records handed out by the spool and not acknowledged yet (no object per record)."""

    __slots__ = ("bytes", "letters", "records", "settled", "sizes")

    def __init__(self) -> None:
        self.records: deque[Record] = deque()
        self.sizes: deque[int] = deque()
        self.bytes = 0
        self.settled: set[int] = set()
        self.letters: dict[int, Record] = {}  # id(record): the DLQ copy that goes out instead

    def __len__(self) -> int:
        return len(self.records)

    def take(self, records: Sequence[Record]) -> list[int]:
        """New records join the window, after those already in it; their sizes."""
        sizes = [record.size for record in records]
        self.records.extend(records)
        self.sizes.extend(sizes)
        self.bytes += sum(sizes)
        return sizes

    def outgoing(self, records: list[Record]) -> list[Record]:
        """What goes out for ``records``: each, or its DLQ copy once it was refused."""
        letters = self.letters
        if not letters:
            return records
        return [letters.get(id(record), record) for record in records]

    def outgoing_size(self, record: Record) -> int:
        return self.letters.get(id(record), record).size

    def acknowledgeable(self) -> int:
        """How many records lead the window settled; they leave it (the caller acks them)."""
        window = self.records
        settled = self.settled
        if window and len(settled) == len(window):  # all settled: usual between bursts
            count = len(window)
            window.clear()
            settled.clear()
            self.sizes.clear()
            self.bytes = 0
            return count
        count = 0
        size = 0
        while window and id(window[0]) in settled:
            settled.discard(id(window.popleft()))
            size += self.sizes.popleft()
            count += 1
        self.bytes -= size
        return count


@dataclass(slots=True)
class Lane:
    """The records of one destination waiting to go out, in order; at most one call."""

    name: str
    queue: deque[Record] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)  # of the queued records, beside them
    busy: bool = False
    queued: bool = False  # in the ready list, or lingering
    attempt: int = 0
    solo: bool = False  # failed or slow lately: goes in a call of its own
    ready_at: float = 0.0
    error: str = ""
    bytes: int = 0  # of the queued records
    since: float = 0.0  # monotonic: when the first record queued was received
    lingers: int = 0  # the ticket of its entry in the lingering heap (0: not lingering)


class Lanes:
    """The lanes by name. With ``one_lane`` (a sink that writes every destination into one
    place whose order readers rely on: the file) every record but the DLQ's shares one lane."""

    def __init__(
        self,
        dlq: str,
        *,
        one_lane: bool,
        linger: float = 0.0,
        full_records: int = 1000,
        full_bytes: int = 1 << 20,
    ) -> None:
        self.dlq = dlq
        self.one_lane = one_lane
        self.linger = linger  # seconds (see the module's docstring)
        self.full_records = full_records
        self.full_bytes = full_bytes
        self.by_name: dict[str, Lane] = {}
        self.ready: deque[Lane] = deque()
        self.backing_off: dict[str, Lane] = {}
        self.failing: set[str] = set()  # lanes whose last call failed
        self._wakeups: list[tuple[float, int, Lane]] = []  # heap: (backoff end, tie, lane)
        self._wakeup_tie = 0
        self._lingering: list[tuple[float, int, Lane]] = []  # heap: (due, ticket, lane)
        self._ticket = 0

    def __len__(self) -> int:
        return len(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def get(self, name: str) -> Lane | None:
        return self.by_name.get(name)

    def lane_of(self, record: Record) -> str:
        """The lane of ``record`` (see ``one_lane``)."""
        if not self.one_lane or record.destination == self.dlq:
            return record.destination
        return ONE_LANE

    def take(
        self, records: Sequence[Record], sizes: Sequence[int], now: float, wall_ns: int
    ) -> None:
        """New records (of ``sizes``, joining at ``now``, monotonic, which is ``wall_ns`` by
        the wall clock) join the tails of their lanes; a lane neither busy, queued (ready or
        lingering) nor backing off is queued; a lingering lane that now holds a full call is
        ready."""
        lanes = self.by_name
        one_lane = self.one_lane
        for record, size in zip(records, sizes, strict=True):
            name = self.lane_of(record) if one_lane else record.destination
            lane = lanes.get(name)
            if lane is None:
                lane = lanes[name] = Lane(name)
            self._join(lane, record, size, now, wall_ns)

    def queue(self, record: Record, name: str, size: int, now: float, wall_ns: int) -> None:
        """``record`` (``size`` bytes going out, joining at ``now``, ``wall_ns`` by the wall
        clock) joins the tail of lane ``name``."""
        lane = self.by_name.get(name)
        if lane is None:
            lane = self.by_name[name] = Lane(name)
        self._join(lane, record, size, now, wall_ns)

    def _join(self, lane: Lane, record: Record, size: int, now: float, wall_ns: int) -> None:
        """``record`` joins the tail of ``lane``; the lane is queued if it was neither queued,
        busy nor backing off; a lingering lane that now holds a full call is ready."""
        if not lane.queue:
            lane.since = received_at(now, wall_ns, record.received_ns)
        lane.queue.append(record)
        lane.sizes.append(size)
        lane.bytes += size
        if lane.lingers:
            if self._full(lane):
                self._release(lane)
        elif not (lane.queued or lane.busy) and lane.name not in self.backing_off:
            self._enqueue(lane, now)

    def requeue(self, lane: Lane, now: float) -> None:
        """``lane`` is queued if it has records and is neither queued, busy nor backing off."""
        if lane.queue and not (lane.queued or lane.busy or lane.name in self.backing_off):
            self._enqueue(lane, now)

    def _enqueue(self, lane: Lane, now: float) -> None:
        """``lane`` waits out its linger (from when its first queued record was received),
        or is ready."""
        lane.queued = True
        due = lane.since + self.linger
        if due > now and not self._full(lane):
            self._ticket += 1
            lane.lingers = self._ticket
            heapq.heappush(self._lingering, (due, self._ticket, lane))
        else:
            self.ready.append(lane)

    def _full(self, lane: Lane) -> bool:
        return len(lane.queue) >= self.full_records or lane.bytes >= self.full_bytes

    def _release(self, lane: Lane) -> None:
        """A lingering lane is ready (its heap entry is left behind, stale)."""
        lane.lingers = 0
        self.ready.append(lane)

    @staticmethod
    def put_back(lane: Lane, records: list[Record], sizes: list[int]) -> None:
        """``records`` that failed go back to the head of ``lane``, in their order (the lane
        backs off, and is ready once that is over: they have waited already)."""
        lane.queue.extendleft(reversed(records))
        lane.sizes.extendleft(reversed(sizes))
        lane.bytes += sum(sizes)

    def back_off(self, lane: Lane) -> None:
        """``lane`` failed: it waits until its ``ready_at``."""
        self.backing_off[lane.name] = lane
        self._wakeup_tie += 1
        heapq.heappush(self._wakeups, (lane.ready_at, self._wakeup_tie, lane))
        self.failing.add(lane.name)

    def recovered(self, lane: Lane) -> int:
        """``lane`` delivered after failing: the attempts it took."""
        attempts, lane.attempt, lane.error = lane.attempt, 0, ""
        self.failing.discard(lane.name)
        return attempts

    def wake(self, now: float) -> None:
        """Lanes whose backoff is over are ready again; lanes whose linger is over are ready."""
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            lane = heapq.heappop(wakeups)[2]
            del self.backing_off[lane.name]
            if lane.queue and not lane.busy and not lane.queued:
                lane.queued = True
                self.ready.append(lane)
        lingering = self._lingering
        while lingering and lingering[0][0] <= now:
            _, ticket, lane = heapq.heappop(lingering)
            if lane.lingers == ticket:
                self._release(lane)

    def next_wakeup(self) -> float | None:
        """When the first backoff or linger ends (None: no lane backs off or lingers)."""
        lingering = self._lingering
        while lingering and lingering[0][2].lingers != lingering[0][1]:
            heapq.heappop(lingering)  # stale: that lane was released when it filled up
        moments = [heap[0][0] for heap in (self._wakeups, lingering) if heap]
        return min(moments) if moments else None

    def prune(self) -> None:
        """Forget the lanes with nothing queued, in flight, or to retry."""
        lanes = self.by_name
        idle = [
            name
            for name, lane in lanes.items()
            if not (lane.queue or lane.busy or lane.queued or lane.attempt)
            and name not in self.backing_off
        ]
        for name in idle:
            del lanes[name]

    def gather(
        self, per_call: int, max_records: int, max_bytes: int
    ) -> tuple[list[Lane], list[Record]]:
        """The next call: up to ``per_call`` ready lanes (marked busy) and their records, at
        most ``max_records`` and ``max_bytes`` (one record at least); a solo lane goes alone."""
        lanes: list[Lane] = []
        records: list[Record] = []
        size = 0
        ready = self.ready
        while ready and len(lanes) < per_call and len(records) < max_records:
            lane = ready[0]
            if lane.solo and lanes:
                break
            ready.popleft()
            lane.queued = False
            if not lane.queue:
                continue
            lane.busy = True
            lanes.append(lane)
            size = fill(lane, records, size, max_records, max_bytes)
            if lane.solo:
                break
        return lanes, records


def received_at(now: float, wall_ns: int, received_ns: int) -> float:
    """When a record was received, on the monotonic clock that reads ``now`` while the wall
    clock reads ``wall_ns``: ``now`` less the record's age (pure). A receipt stamped ahead of
    the wall clock (a clock stepped back since) makes it no younger than ``now``."""
    return now - max(0, wall_ns - received_ns) / 1e9


def fill(lane: Lane, records: list[Record], size: int, max_records: int, max_bytes: int) -> int:
    """Move ``lane``'s queued records into ``records`` while the call has room (one at least);
    the new size of the call."""
    queue = lane.queue
    sizes = lane.sizes
    take = queue.popleft
    take_size = sizes.popleft
    add = records.append
    room = max_records - len(records)
    taken = size
    while queue and room:
        record_size = sizes[0]
        if size + record_size > max_bytes and records:
            break
        add(take())
        take_size()
        size += record_size
        room -= 1
    lane.bytes -= size - taken
    return size
