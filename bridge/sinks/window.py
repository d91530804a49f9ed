"""The sink worker's book-keeping of the records in flight: the window and the lanes.

The *window* holds the records the spool handed out and has not had acknowledged, oldest
first, with their sizes; those settled (by identity: a record object is in the window once);
and the DLQ copies that go out instead of records refused for good. Its leading settled
records are what the worker acknowledges.

A *lane* holds the records of one destination (a Kafka topic, a Redis stream, the file, the
DLQ) waiting to go out, in order, with at most one publish call in flight. ``Lanes`` keeps
them by name with the ones ready for a call, the ones backing off (a heap of their ends),
and the names of those whose last call failed; it gathers the ready lanes into calls.
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
    queued: bool = False  # in the ready list
    attempt: int = 0
    solo: bool = False  # failed or slow lately: goes in a call of its own
    ready_at: float = 0.0
    error: str = ""


class Lanes:
    """The lanes by name. With ``one_lane`` (a sink that writes every destination into one
    place whose order readers rely on: the file) every record but the DLQ's shares one lane."""

    def __init__(self, dlq: str, *, one_lane: bool) -> None:
        self.dlq = dlq
        self.one_lane = one_lane
        self.by_name: dict[str, Lane] = {}
        self.ready: deque[Lane] = deque()
        self.backing_off: dict[str, Lane] = {}
        self.failing: set[str] = set()  # lanes whose last call failed
        self._wakeups: list[tuple[float, int, Lane]] = []  # heap: (backoff end, tie, lane)
        self._wakeup_tie = 0

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

    def take(self, records: Sequence[Record], sizes: Sequence[int]) -> None:
        """New records (of ``sizes``) join the tails of their lanes; a lane neither busy,
        ready nor backing off becomes ready."""
        lanes = self.by_name
        backing_off = self.backing_off
        ready = self.ready.append
        one_lane = self.one_lane
        for record, size in zip(records, sizes, strict=True):
            name = self.lane_of(record) if one_lane else record.destination
            lane = lanes.get(name)
            if lane is None:
                lane = lanes[name] = Lane(name)
            lane.queue.append(record)
            lane.sizes.append(size)
            if not (lane.queued or lane.busy) and name not in backing_off:
                lane.queued = True
                ready(lane)

    def queue(self, record: Record, name: str, size: int) -> None:
        """``record`` (``size`` bytes going out) joins the tail of lane ``name``."""
        lane = self.by_name.get(name)
        if lane is None:
            lane = self.by_name[name] = Lane(name)
        lane.queue.append(record)
        lane.sizes.append(size)
        self.requeue(lane)

    def requeue(self, lane: Lane) -> None:
        """``lane`` is ready if it has records and is neither ready, busy nor backing off."""
        if lane.queue and not (lane.queued or lane.busy or lane.name in self.backing_off):
            lane.queued = True
            self.ready.append(lane)

    @staticmethod
    def put_back(lane: Lane, records: list[Record], sizes: list[int]) -> None:
        """``records`` that failed go back to the head of ``lane``, in their order."""
        lane.queue.extendleft(reversed(records))
        lane.sizes.extendleft(reversed(sizes))

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
        """Lanes whose backoff is over are ready again."""
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            lane = heapq.heappop(wakeups)[2]
            del self.backing_off[lane.name]
            if lane.queue and not lane.busy and not lane.queued:
                lane.queued = True
                self.ready.append(lane)

    def next_wakeup(self) -> float | None:
        """When the first backoff ends (None: no lane backs off)."""
        return self._wakeups[0][0] if self._wakeups else None

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


def fill(lane: Lane, records: list[Record], size: int, max_records: int, max_bytes: int) -> int:
    """Move ``lane``'s queued records into ``records`` while the call has room (one at least);
    the new size of the call."""
    queue = lane.queue
    sizes = lane.sizes
    take = queue.popleft
    take_size = sizes.popleft
    add = records.append
    room = max_records - len(records)
    while queue and room:
        record_size = sizes[0]
        if size + record_size > max_bytes and records:
            break
        add(take())
        take_size()
        size += record_size
        room -= 1
    return size
