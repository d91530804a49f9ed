"""The sink worker: moves records from the spool to the sink, at least once, one destination
never holding up another.

The worker reads ahead into a bounded *window* of records handed out by the spool (bounded
by ``max_in_flight_bytes``; when full it reads nothing more). Each record waits in the
*lane* of its destination (a Kafka topic, a Redis stream, the file, the DLQ): a lane has at
most one publish in flight, so its records go out in order, and several publish calls run
at once on disjoint sets of lanes (``max_calls``; a call slow for 2 s gives its place up),
so a slow destination does not stall the others; a lane that failed or was slow lately goes
in a call of its own. A record settles when the broker accepted it, or when it was refused
for good and its DLQ copy was accepted; the window's leading settled records are
acknowledged to the spool. A transient failure puts back only the records that failed, at
the head of their lane, and backs that lane off (exponential, full jitter); a record the
broker accepted is never published again by this worker. A DLQ copy that is refused or
fails stays unsettled and is retried the same way: nothing is dropped here.

After a crash the spool hands out everything unacknowledged again, so at most one window is
published twice, whatever the length of an outage. Nothing here ever blocks a socket reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.errors import SinkError
from bridge.logs import get_logger
from bridge.metrics import Children, Metrics, observe_all
from bridge.pipeline import Record
from bridge.sinks.base import Delivered, Failed, Outcome, Rejected, Sink
from bridge.spool import READ_MAX_BYTES, SpoolReader

log = get_logger(__name__)
TOO_LARGE_KEEP = 64 * 1024
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024
MAX_CALLS = 16  # publish calls in flight at once (not counting slow ones), disjoint lanes
MAX_CALLS_WITH_SLOW = 64  # ... and with the slow ones
SLOW_CALL_SECONDS = 2.0  # a call this old is slow: it no longer holds a place
STOP_CALLS_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 0.2
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter for retry ``attempt`` (1-based): uniform
        between 0 and the ceiling, so many lanes failing together do not retry together."""
        return random.uniform(0.0, self.ceiling(attempt))  # noqa: S311 - jitter, not crypto

    def ceiling(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(0, min(attempt, 64) - 1)))


def as_dead_letter(record: Record, reason: str, error: str, dlq: str) -> Record:
    """The DLQ copy of a record the broker refused for good (pure).

    A record refused as too large keeps only its first 64 KiB, so its DLQ copy fits.
    """
    error = f"{error} (destination {record.destination})"
    value = record.value
    if reason == "too_large" and len(value) > TOO_LARGE_KEEP:
        value = value[:TOO_LARGE_KEEP]
        error += f"; value truncated from {len(record.value)} to {TOO_LARGE_KEEP} bytes"
    return replace(record, destination=dlq, value=value, ident=record.id,  # the original's id
                   dlq_reason=reason, dlq_error=error[:500])  # fmt: skip


def truncated_letter(letter: Record) -> Record | None:
    """A DLQ record the DLQ refused as too large, cut to 64 KiB (None: already that short)."""
    if len(letter.value) <= TOO_LARGE_KEEP:
        return None
    error = f"{letter.dlq_error or ''}; value truncated from {len(letter.value)} bytes"
    return replace(letter, value=letter.value[:TOO_LARGE_KEEP], ident=letter.id,
                   dlq_error=error[:500])  # fmt: skip


@dataclass(slots=True)
class Slot:
    """One record of the window: what goes out for it (its DLQ copy once refused), settled."""

    record: Record
    out: Record
    settled: bool = False


@dataclass(slots=True)
class Lane:
    """The records of one destination waiting to go out, in order; at most one call."""

    name: str
    queue: deque[Slot] = field(default_factory=deque)
    busy: bool = False
    queued: bool = False  # in the worker's ready list
    attempt: int = 0
    solo: bool = False  # failed or slow lately: goes in a call of its own
    ready_at: float = 0.0
    error: str = ""


@dataclass(slots=True)
class Call:
    """One publish call in flight: its slots, in the order given to the sink, and lanes."""

    slots: list[Slot]
    lanes: list[Lane]
    started: float


class SinkWorker:
    """Drains ``spool`` into ``sink``; one per process (one reader of the spool)."""

    def __init__(
        self,
        sink: Sink,
        spool: SpoolReader,
        metrics: Metrics,
        *,
        dlq: str,
        batch_max_records: int = 1000,
        batch_max_bytes: int = READ_MAX_BYTES,
        retry: RetryPolicy | None = None,
        max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
        max_calls: int = MAX_CALLS,
        slow_call_seconds: float = SLOW_CALL_SECONDS,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.metrics = metrics
        self.dlq = dlq
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.retry = retry or RetryPolicy()
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_calls = max_calls
        self.slow_call_seconds = slow_call_seconds
        self._window: deque[Slot] = deque()
        self._window_bytes = 0
        self._lanes: dict[str, Lane] = {}
        self._ready: deque[Lane] = deque()
        self._backing_off: dict[str, Lane] = {}
        self._failing: set[str] = set()  # lanes whose last call failed
        self._calls: dict[asyncio.Task[list[Outcome]], Call] = {}
        self._reading: asyncio.Task[list[Record]] | None = None
        self._published = Children(metrics.events_published)
        self._latency = metrics.publish_latency.labels(sink.kind)

    # ---- what others see ----------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """No destination is failing (backing off, or retrying what failed)."""
        return not self._failing

    @property
    def problem(self) -> str | None:
        """Why the worker cannot settle records for now (the DLQ cannot be written), or None."""
        lane = self._lanes.get(self.dlq)
        if lane is None or not lane.attempt:
            return None
        return f"the DLQ {self.dlq!r} cannot be written: {lane.error}"

    @property
    def window(self) -> tuple[int, int]:
        """Records and bytes handed out by the spool and not acknowledged yet."""
        return len(self._window), self._window_bytes

    # ---- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Publish forever; cancel to stop (what is unacknowledged stays in the spool, to be
        rewound by whoever starts the next worker)."""
        try:
            while True:
                self._start_reading()
                self._wake_lanes(time.monotonic())
                self._dispatch()
                waiting: set[asyncio.Task[Any]] = set(self._calls)
                if self._reading is not None:
                    waiting.add(self._reading)
                if not waiting:  # the window is full, every lane in it backing off
                    await asyncio.sleep(self._next_wake() or 0.0)
                    continue
                done, _ = await asyncio.wait(
                    waiting, timeout=self._next_wake(), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is self._reading:
                        self._reading = None
                        self._take(task.result())
                    else:
                        self._settle(self._calls.pop(task), task.result())
                self._ack()
        finally:
            await self._stop_tasks()

    def _start_reading(self) -> None:
        if self._reading is None and self._window_bytes < self.max_in_flight_bytes:
            room = self.max_in_flight_bytes - self._window_bytes
            self._reading = asyncio.create_task(
                self.spool.read(self.batch_max_records, min(room, self.batch_max_bytes))
            )

    async def _stop_tasks(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._calls]
        if self._reading is not None:
            tasks.append(self._reading)
        self._calls.clear()
        self._reading = None
        for task in tasks:
            task.cancel()
        if tasks:
            done, _ = await asyncio.wait(tasks, timeout=STOP_CALLS_SECONDS)
            for task in done:  # retrieved, so that none is reported as never retrieved
                with contextlib.suppress(BaseException):
                    task.result()

    # ---- reading into the window ----------------------------------------------------------
    def _take(self, records: list[Record]) -> None:
        """New records join the window and the lanes of their destinations."""
        window = self._window
        lanes = self._lanes
        size = 0
        for record in records:
            slot = Slot(record, record)
            window.append(slot)
            size += record.size
            lane = lanes.get(record.destination)
            if lane is None:
                lane = lanes[record.destination] = Lane(record.destination)
            lane.queue.append(slot)
            if not (lane.queued or lane.busy) and lane.name not in self._backing_off:
                lane.queued = True
                self._ready.append(lane)
        self._window_bytes += size

    def _ack(self) -> None:
        """The window's leading settled records are acknowledged to the spool."""
        window = self._window
        count = 0
        size = 0
        while window and window[0].settled:
            size += window.popleft().record.size
            count += 1
        if count:
            self._window_bytes -= size
            self.spool.ack(count)

    # ---- publishing ---------------------------------------------------------------------
    def _wake_lanes(self, now: float) -> None:
        """Lanes whose backoff is over are ready again."""
        for name, lane in list(self._backing_off.items()):
            if lane.ready_at <= now:
                del self._backing_off[name]
                if lane.queue and not lane.busy and not lane.queued:
                    lane.queued = True
                    self._ready.append(lane)

    def _next_wake(self) -> float | None:
        """Seconds until a backoff ends or, with lanes waiting for a place, until a call in
        flight turns slow (and gives its place up); None: nothing to wait for but events."""
        moments = [lane.ready_at for lane in self._backing_off.values()]
        if self._ready:
            moments.extend(call.started + self.slow_call_seconds for call in self._calls.values())
        if not moments:
            return None
        return max(0.0, min(moments) - time.monotonic())

    def _free_calls(self, now: float) -> int:
        """How many more calls may start: ``max_calls`` minus those in flight that are not
        slow yet, and never more than ``MAX_CALLS_WITH_SLOW`` in all."""
        slow_since = now - self.slow_call_seconds
        active = sum(1 for call in self._calls.values() if call.started > slow_since)
        return min(self.max_calls - active, MAX_CALLS_WITH_SLOW - len(self._calls))

    def _dispatch(self) -> None:
        """Start publish calls for the ready lanes while there is a free place: the ready
        lanes share the free places evenly (one lane per call while there are fewer lanes
        than places); a lane that failed or was slow lately goes in a call of its own, so a
        slow destination holds up no other. A call that turns slow gives its place up (its
        lanes stay busy until it returns)."""
        now = time.monotonic()
        free = self._free_calls(now) if self._ready else 0
        while self._ready and free > 0:
            per_call = -(-len(self._ready) // free)  # lanes per call, rounded up
            lanes: list[Lane] = []
            slots: list[Slot] = []
            size = 0
            while self._ready and len(lanes) < per_call and len(slots) < self.batch_max_records:
                lane = self._ready[0]
                if lane.solo and lanes:
                    break
                self._ready.popleft()
                lane.queued = False
                if not lane.queue:
                    continue
                lane.busy = True
                lanes.append(lane)
                size = self._fill(lane, slots, size)
                if lane.solo:
                    break
            if lanes:
                free -= 1
                task = asyncio.create_task(self._publish([slot.out for slot in slots]))
                self._calls[task] = Call(slots, lanes, now)

    def _fill(self, lane: Lane, slots: list[Slot], size: int) -> int:
        """Move ``lane``'s queued records into ``slots`` while the call has room (one at
        least); the new size of the call."""
        queue = lane.queue
        while queue and len(slots) < self.batch_max_records:
            out_size = queue[0].out.size
            if slots and size + out_size > self.batch_max_bytes:
                break
            slots.append(queue.popleft())
            size += out_size
        return size

    async def _publish(self, records: Sequence[Record]) -> list[Outcome]:
        try:
            return await self.sink.publish(records)
        except SinkError as exc:
            return [Failed(exc)] * len(records)

    # ---- outcomes -----------------------------------------------------------------------
    def _settle(self, call: Call, outcomes: list[Outcome]) -> None:
        """Apply one call's outcomes: delivered records settle, refused ones get their DLQ
        copy queued, failed ones go back to the head of their lane, which backs off."""
        failed: dict[str, list[Slot]] = {}
        errors: dict[str, tuple[str, str]] = {}  # destination: (error class, text)
        delivered: list[Record] = []
        letters: list[Record] = []
        for slot, outcome in zip(call.slots, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                slot.settled = True
                (delivered if slot.out is slot.record else letters).append(slot.out)
            elif isinstance(outcome, Failed):
                failed.setdefault(slot.out.destination, []).append(slot)
                errors[slot.out.destination] = (type(outcome.error).__name__, str(outcome.error))
            elif self._rejected(slot, outcome, failed):
                errors[slot.out.destination] = (
                    "DeadLetterRefused",
                    f"{outcome.reason}: {outcome.error}",
                )
        self._count(delivered)
        for letter in letters:
            self.metrics.dlq_records.labels(letter.dlq_reason or "unknown").inc()
        now = time.monotonic()
        slow = now - call.started > self.slow_call_seconds
        for lane in call.lanes:
            lane.busy = False
            retry = failed.get(lane.name)
            lane.solo = slow or retry is not None
            if retry is not None:
                lane.queue.extendleft(reversed(retry))
                self._back_off(lane, errors.get(lane.name, ("SinkError", "")), now)
            else:
                if lane.attempt:
                    log.info("sink.destination_recovered", sink=self.sink.kind,
                             destination=lane.name, attempts=lane.attempt)  # fmt: skip
                lane.attempt = 0
                lane.error = ""
                self._failing.discard(lane.name)
                self._requeue(lane)
        self.metrics.sink_up.labels(self.sink.kind).set(0 if self._failing else 1)

    def _rejected(self, slot: Slot, outcome: Rejected, failed: dict[str, list[Slot]]) -> bool:
        """A record refused for good: its DLQ copy joins the DLQ's lane. A DLQ copy refused
        itself stays unsettled (retried, in ``failed``; True) unless it can be cut shorter."""
        out = slot.out
        log.error(
            "sink.record_rejected",
            instance=out.instance,
            destination=out.destination,
            reason=outcome.reason,
            error=outcome.error,
            ryze_id=out.id,
        )
        if out.dlq_reason is None:
            slot.out = as_dead_letter(out, outcome.reason, outcome.error, self.dlq)
            self._queue(slot)
            return False
        shorter = truncated_letter(out) if outcome.reason == "too_large" else None
        if shorter is not None:
            slot.out = shorter
            self._queue(slot)
            return False
        failed.setdefault(out.destination, []).append(slot)
        return True

    def _queue(self, slot: Slot) -> None:
        """``slot`` joins the tail of its destination's lane."""
        name = slot.out.destination
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = Lane(name)
        lane.queue.append(slot)
        self._requeue(lane)

    def _requeue(self, lane: Lane) -> None:
        if lane.queue and not (lane.queued or lane.busy or lane.name in self._backing_off):
            lane.queued = True
            self._ready.append(lane)

    def _back_off(self, lane: Lane, error: tuple[str, str], now: float) -> None:
        """``lane`` failed (``error``: its class and text): it waits, alone, for its retry."""
        self.metrics.publish_errors.labels(self.sink.kind, error[0]).inc()
        lane.attempt += 1
        lane.error = error[1][:300]
        delay = self.retry.delay(lane.attempt)
        lane.ready_at = now + delay
        self._backing_off[lane.name] = lane
        self._failing.add(lane.name)
        if lane.attempt & (lane.attempt - 1):  # logged at attempts 1, 2, 4, 8…; all counted
            return
        log.warning(
            "sink.publish_failed",
            sink=self.sink.kind,
            destination=lane.name,
            error=lane.error,
            pending=len(lane.queue),
            attempt=lane.attempt,
            retry_in=round(delay, 3),
        )

    def _count(self, records: Sequence[Record]) -> None:
        now_ns = time.time_ns()
        kind = self.sink.kind
        per_destination: dict[str, int] = {}
        latencies: list[float] = []
        for record in records:
            if record.dlq_reason is not None:
                self.metrics.dlq_records.labels(record.dlq_reason).inc()
            destination = record.destination
            per_destination[destination] = per_destination.get(destination, 0) + 1
            latencies.append(max(0.0, (now_ns - record.received_ns) / 1e9))
        for destination, count in per_destination.items():  # one increment per destination
            self._published(kind, destination).inc(count)
        observe_all(self._latency, latencies)
