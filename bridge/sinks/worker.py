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
import heapq
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.errors import SinkError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.metrics import Children, Metrics, observe_all
from bridge.pipeline import Record
from bridge.retry import RetryPolicy
from bridge.sinks.base import DELIVERED, Delivered, Failed, Outcome, Rejected, Sink
from bridge.spool import READ_MAX_BYTES, SpoolReader

log = get_logger(__name__)
TOO_LARGE_KEEP = 64 * 1024
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024
MAX_CALLS = 16  # publish calls in flight at once (not counting slow ones), disjoint lanes
MAX_CALLS_WITH_SLOW = 64  # ... and with the slow ones
SLOW_CALL_SECONDS = 2.0  # a call this old is slow: it no longer holds a place
LOG_EVERY_SECONDS = 1.0  # publish failures and recoveries: one log line a second at most
ONE_LANE = ""  # the lane of every record but the DLQ's, with ``one_lane``
STOP_CALLS_SECONDS = 5.0
# Nothing settled for this long while records wait: delivery has stopped (a client that
# retries on its own, e.g. an idempotent Kafka producer while partitions lack replicas, may
# hold a call for ever without a failure to report), readiness says so.
STALL_SECONDS = 30.0
# A call holding several lanes this old is cancelled, its records counted as failed (their
# lanes back off and go alone next): a destination whose produce never returns (an idempotent
# Kafka producer retries for the whole outage) must not hold the lanes grouped with it. A call
# of one lane is never cancelled (a stall reports it). At most that call's records may have
# reached the broker before the cancellation: published twice, and no more.
GROUP_CALL_SECONDS = 2.0
PRUNE_SECONDS = 10.0  # idle, empty lanes are forgotten this often (destinations are upstream data)


def stall_message(stalled: float, waiting: int, calls: int, oldest: float) -> str:
    """What readiness says of a stalled delivery (pure)."""
    return (
        f"nothing delivered for {stalled:.0f} s with {waiting} records waiting "
        f"({calls} publish calls pending, the oldest for {oldest:.0f} s)"
    )


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
class Lane:
    """The records of one destination waiting to go out, in order; at most one call."""

    name: str
    queue: deque[Record] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)  # of the queued records, beside them
    busy: bool = False
    queued: bool = False  # in the worker's ready list
    attempt: int = 0
    solo: bool = False  # failed or slow lately: goes in a call of its own
    ready_at: float = 0.0
    error: str = ""


@dataclass(slots=True)
class Call:
    """One publish call in flight: the window's records it is for (what goes out is their DLQ
    copy for those refused), in the order given to the sink, and its lanes."""

    records: list[Record]
    lanes: list[Lane]
    started: float
    cancelled: bool = False  # by the worker: it held several lanes for too long


def padded_outcomes(outcomes: list[Outcome], count: int) -> list[Outcome]:
    """``outcomes`` cut or padded to ``count`` (pure): a record the sink gave no outcome for
    failed, so it is retried, never acknowledged unseen."""
    if len(outcomes) >= count:
        return outcomes[:count]
    text = f"the sink returned {len(outcomes)} outcomes for {count} records"
    missing = SinkUnavailableError(text)
    return [*outcomes, *[Failed(missing)] * (count - len(outcomes))]


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
        one_lane: bool = False,
        stall_seconds: float = STALL_SECONDS,
        group_call_seconds: float = GROUP_CALL_SECONDS,
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
        self.stall_seconds = stall_seconds
        self.group_call_seconds = group_call_seconds
        self._progress_at = time.monotonic()  # the last settle, or when waiting records began
        self._stalled = False
        # The sink writes every destination into one place, whose order readers rely on (the
        # file): one lane for all records, one for the DLQ.
        self.one_lane = one_lane
        # The window: records handed out by the spool, oldest first, with their sizes; those
        # settled (by identity: a record object is in the window once), and the DLQ copies
        # that go out instead of refused records. No object per record.
        self._window: deque[Record] = deque()
        self._sizes: deque[int] = deque()
        self._window_bytes = 0
        self._settled: set[int] = set()
        self._letters: dict[int, Record] = {}
        self._lanes: dict[str, Lane] = {}
        self._ready: deque[Lane] = deque()
        self._backing_off: dict[str, Lane] = {}
        self._wakeups: list[tuple[float, int, Lane]] = []  # heap: (backoff end, tie, lane)
        self._wakeup_tie = 0
        self._logged_at = -LOG_EVERY_SECONDS
        self._rejected_logged_at = -LOG_EVERY_SECONDS
        self._rejections: Counter[tuple[str, str]] = Counter()  # not logged yet
        self._pruned_at = time.monotonic()
        self._failing: set[str] = set()  # lanes whose last call failed
        self._calls: dict[asyncio.Task[list[Outcome]], Call] = {}
        self._reading: asyncio.Task[list[Record]] | None = None
        self._finished: deque[asyncio.Task[Any]] = deque()
        self._wake = asyncio.Event()
        self._published = Children(metrics.events_published)
        self._latency = metrics.publish_latency.labels(sink.kind)

    # ---- what others see ----------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """No destination is failing (backing off, or retrying what failed) and delivery has
        not stalled."""
        return not self._failing and not self._stalled

    @property
    def problem(self) -> str | None:
        """Why the worker cannot settle records for now (the DLQ cannot be written, or nothing
        settled for ``stall_seconds`` while records wait), or None."""
        lane = self._lanes.get(self.dlq)
        if lane is not None and lane.attempt:
            return f"the DLQ {self.dlq!r} cannot be written: {lane.error}"
        if not self._stalled:  # set by the loop, with the metric and the log line
            return None
        now = time.monotonic()
        stalled = self.stalled_for(now)
        oldest = max((now - call.started for call in self._calls.values()), default=0.0)
        return stall_message(stalled, len(self._window), len(self._calls), oldest)

    def stalled_for(self, now: float) -> float:
        """Seconds without a record settled while records wait in the window (0: none wait)."""
        return now - self._progress_at if self._window else 0.0

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
                now = time.monotonic()
                self._wake_lanes(now)
                self._watch_stall(now)
                self._cancel_groups(now)
                self._dispatch()
                if not self._finished:
                    await self._sleep(self._next_wake())
                while self._finished:
                    task = self._finished.popleft()
                    if task is self._reading:
                        self._reading = None
                        self._take(task.result())
                    else:
                        call = self._calls.pop(task, None)
                        if call is not None:
                            self._settle(call, self._outcomes_of(task, call))
                self._ack()
                self._housekeeping(time.monotonic())
        finally:
            await self._stop_tasks()

    async def _sleep(self, seconds: float | None) -> None:
        """Until a read or a call finishes, or ``seconds`` (a backoff's end) pass."""
        self._wake.clear()
        if seconds is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _finish(self, task: asyncio.Task[Any]) -> None:
        """A read or a call is over (done callback): the loop takes it in order."""
        self._finished.append(task)
        self._wake.set()

    def _outcomes_of(self, task: asyncio.Task[list[Outcome]], call: Call) -> list[Outcome]:
        """A call's outcomes; all failed if the worker cancelled it. A cancellation the worker
        did not ask for is an error (the worker's supervisor restarts it), never an end."""
        if task.cancelled():
            if not call.cancelled:
                raise SinkError("a publish call was cancelled by something other than the worker")
            error = SinkUnavailableError(
                f"a publish call for {len(call.lanes)} destinations took over "
                f"{self.group_call_seconds:g} s; cancelled, its destinations go alone next"
            )
            return [Failed(error)] * len(call.records)
        outcomes = task.result()
        if len(outcomes) != len(call.records):
            log.error("sink.outcomes_mismatch", sink=self.sink.kind, records=len(call.records),
                      outcomes=len(outcomes))  # fmt: skip
        return padded_outcomes(outcomes, len(call.records))

    def _cancel_groups(self, now: float) -> None:
        """Calls holding several lanes for over ``group_call_seconds`` are cancelled."""
        if not self._calls:
            return
        oldest = now - self.group_call_seconds
        for task, call in self._calls.items():
            if call.started <= oldest and len(call.lanes) > 1 and not call.cancelled:
                call.cancelled = True
                task.cancel()

    def _housekeeping(self, now: float) -> None:
        """Pending rejection counts logged (one line a second at most); idle lanes pruned."""
        if self._rejections and now - self._rejected_logged_at >= LOG_EVERY_SECONDS:
            self._log_rejections(now, None)
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            self._prune()

    def _prune(self) -> None:
        """Forget the lanes with nothing queued, in flight, or to retry."""
        lanes = self._lanes
        idle = [
            name
            for name, lane in lanes.items()
            if not (lane.queue or lane.busy or lane.queued or lane.attempt)
            and name not in self._backing_off
        ]
        for name in idle:
            del lanes[name]

    def _start_reading(self) -> None:
        if self._reading is None and self._window_bytes < self.max_in_flight_bytes:
            room = self.max_in_flight_bytes - self._window_bytes
            self._reading = asyncio.create_task(
                self.spool.read(self.batch_max_records, min(room, self.batch_max_bytes))
            )
            self._reading.add_done_callback(self._finish)

    async def _stop_tasks(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._calls]
        if self._reading is not None:
            tasks.append(self._reading)
        self._calls.clear()
        self._reading = None
        self._finished.clear()
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
        if not self._window:  # waiting starts now (idle time is no stall)
            self._progress_at = time.monotonic()
        lanes = self._lanes
        backing_off = self._backing_off
        window = self._window.append
        sizes = self._sizes.append
        total = 0
        for record in records:
            window(record)
            size = record.size
            sizes(size)
            total += size
            name = self._lane_of(record) if self.one_lane else record.destination
            lane = lanes.get(name)
            if lane is None:
                lane = lanes[name] = Lane(name)
            lane.queue.append(record)
            lane.sizes.append(size)
            if not (lane.queued or lane.busy) and lane.name not in backing_off:
                lane.queued = True
                self._ready.append(lane)
        self._window_bytes += total

    def _lane_of(self, record: Record) -> str:
        """The lane of ``record`` (see ``one_lane``)."""
        if not self.one_lane or record.destination == self.dlq:
            return record.destination
        return ONE_LANE

    def _ack(self) -> None:
        """The window's leading settled records are acknowledged to the spool."""
        window = self._window
        settled = self._settled
        if window and len(settled) == len(window):  # all settled: usual between bursts
            self.spool.ack(len(window))
            window.clear()
            settled.clear()
            self._sizes.clear()
            self._window_bytes = 0
            return
        count = 0
        size = 0
        while window and id(window[0]) in settled:
            settled.discard(id(window.popleft()))
            size += self._sizes.popleft()
            count += 1
        if count:
            self._window_bytes -= size
            self.spool.ack(count)

    # ---- publishing ---------------------------------------------------------------------
    def _watch_stall(self, now: float) -> None:
        """A stall begins: logged once, counted as a publish error, the sink shown down."""
        if self._stalled or self.stalled_for(now) < self.stall_seconds:
            return
        self._stalled = True
        self.metrics.publish_errors.labels(self.sink.kind, "Stalled").inc()
        self.metrics.sink_up.labels(self.sink.kind).set(0)
        log.error("sink.stalled", sink=self.sink.kind, problem=self.problem)

    def _progress(self) -> None:
        """A record settled: delivery moves (a stall, if any, is over)."""
        self._progress_at = time.monotonic()
        if self._stalled:
            self._stalled = False
            log.info("sink.unstalled", sink=self.sink.kind)

    def _wake_lanes(self, now: float) -> None:
        """Lanes whose backoff is over are ready again."""
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            lane = heapq.heappop(wakeups)[2]
            del self._backing_off[lane.name]
            if lane.queue and not lane.busy and not lane.queued:
                lane.queued = True
                self._ready.append(lane)

    def _next_wake(self) -> float | None:
        """Seconds until a backoff ends, until delivery counts as stalled, until a call of
        several lanes is to be cancelled, or, with lanes waiting for a place, until a call in
        flight turns slow (and gives its place up): only those still to come, since a call
        that is slow already frees no place but by ending (an event). None: nothing to wait
        for but events."""
        now = time.monotonic()
        moments = [self._wakeups[0][0]] if self._wakeups else []
        if self._window and not self._stalled:
            moments.append(self._progress_at + self.stall_seconds)
        if self._rejections:
            moments.append(self._rejected_logged_at + LOG_EVERY_SECONDS)
        ready = bool(self._ready)
        for call in self._calls.values():
            if len(call.lanes) > 1 and not call.cancelled:
                moments.append(call.started + self.group_call_seconds)
            if ready and call.started + self.slow_call_seconds > now:
                moments.append(call.started + self.slow_call_seconds)
        if not moments:
            return None
        return max(0.0, min(moments) - now)

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
            records: list[Record] = []
            size = 0
            while self._ready and len(lanes) < per_call and len(records) < self.batch_max_records:
                lane = self._ready[0]
                if lane.solo and lanes:
                    break
                self._ready.popleft()
                lane.queued = False
                if not lane.queue:
                    continue
                lane.busy = True
                lanes.append(lane)
                size = self._fill(lane, records, size)
                if lane.solo:
                    break
            if lanes:
                free -= 1
                task = asyncio.create_task(self._publish(self._outgoing(records)))
                task.add_done_callback(self._finish)
                self._calls[task] = Call(records, lanes, now)

    def _outgoing_size(self, record: Record) -> int:
        return self._letters.get(id(record), record).size

    def _outgoing(self, records: list[Record]) -> list[Record]:
        """What goes out for ``records``: each, or its DLQ copy once it was refused."""
        letters = self._letters
        if not letters:
            return records
        return [letters.get(id(record), record) for record in records]

    def _fill(self, lane: Lane, records: list[Record], size: int) -> int:
        """Move ``lane``'s queued records into ``records`` while the call has room (one at
        least); the new size of the call."""
        queue = lane.queue
        sizes = lane.sizes
        take = queue.popleft
        take_size = sizes.popleft
        add = records.append
        room = self.batch_max_records - len(records)
        limit = self.batch_max_bytes
        while queue and room:
            record_size = sizes[0]
            if size + record_size > limit and records:
                break
            add(take())
            take_size()
            size += record_size
            room -= 1
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
        records = call.records
        if any(not isinstance(outcome, Failed) for outcome in outcomes):
            self._progress()
        if (
            not self._letters
            and len(outcomes) == len(records)
            and outcomes.count(DELIVERED) == len(outcomes)
        ):  # the usual
            self._settled.update(map(id, records))
            self._count(records)
            self._lanes_done(call, {}, {})
            return
        failed: dict[str, list[Record]] = {}
        errors: dict[str, tuple[str, str]] = {}  # destination: (error class, text)
        delivered: list[Record] = []
        for record, outcome in zip(records, outcomes, strict=True):
            out = self._letters.get(id(record), record)
            if isinstance(outcome, Delivered):
                self._settled.add(id(record))
                if out is record:
                    delivered.append(record)
                else:
                    del self._letters[id(record)]
                    self.metrics.dlq_records.labels(out.dlq_reason or "unknown").inc()
            elif isinstance(outcome, Failed):
                lane = self._lane_of(out)
                failed.setdefault(lane, []).append(record)
                errors[lane] = (type(outcome.error).__name__, str(outcome.error))
            elif self._rejected(record, out, outcome, failed):
                errors[self._lane_of(out)] = (
                    "DeadLetterRefused",
                    f"{outcome.reason}: {outcome.error}",
                )
        self._count(delivered)
        self._lanes_done(call, failed, errors)

    def _lanes_done(
        self, call: Call, failed: dict[str, list[Record]], errors: dict[str, tuple[str, str]]
    ) -> None:
        """The lanes of a call that returned: free again; those with failed records take
        them back at their head and back off; a slow call's lanes go alone next."""
        now = time.monotonic()
        slow = now - call.started > self.slow_call_seconds
        for lane in call.lanes:
            lane.busy = False
            retry = failed.get(lane.name)
            lane.solo = slow or retry is not None
            if retry is not None:
                lane.queue.extendleft(reversed(retry))
                lane.sizes.extendleft(reversed([self._outgoing_size(r) for r in retry]))
                self._back_off(lane, errors.get(lane.name, ("SinkError", "")), now)
            else:
                if lane.attempt:
                    self._recovered(lane, now)
                self._requeue(lane)
        self.metrics.sink_up.labels(self.sink.kind).set(0 if self._failing else 1)

    def _rejected(
        self, record: Record, out: Record, outcome: Rejected, failed: dict[str, list[Record]]
    ) -> bool:
        """``out`` (``record`` or its DLQ copy) was refused for good: a DLQ copy of it joins
        the DLQ's lane. A DLQ copy refused itself stays unsettled (retried, in ``failed``;
        True) unless it can be cut shorter."""
        self._rejections[(out.destination, outcome.reason)] += 1
        now = time.monotonic()
        if now - self._rejected_logged_at >= LOG_EVERY_SECONDS:
            self._log_rejections(now, (out, outcome))
        letter = None
        if out.dlq_reason is None:
            letter = as_dead_letter(out, outcome.reason, outcome.error, self.dlq)
        elif outcome.reason == "too_large":
            letter = truncated_letter(out)
        if letter is None:
            failed.setdefault(self._lane_of(out), []).append(record)
            return True
        self._letters[id(record)] = letter
        self._queue(record, self._lane_of(letter))
        return False

    def _log_rejections(self, now: float, example: tuple[Record, Rejected] | None) -> None:
        """One line for the records refused since the last one (one a second at most, however
        often a refused DLQ copy is retried): counts per destination and reason, and the
        details of the latest."""
        counts = {f"{d} {reason}": n for (d, reason), n in self._rejections.most_common(20)}
        fields: dict[str, object] = {"rejected": counts, "destinations": len(self._rejections)}
        if example is not None:
            out, outcome = example
            fields.update(instance=out.instance, destination=out.destination,
                          reason=outcome.reason, error=outcome.error, ryze_id=out.id)  # fmt: skip
        log.error("sink.record_rejected", **fields)
        self._rejections.clear()
        self._rejected_logged_at = now

    def _queue(self, record: Record, name: str) -> None:
        """``record`` joins the tail of lane ``name``."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = Lane(name)
        lane.queue.append(record)
        lane.sizes.append(self._outgoing_size(record))
        self._requeue(lane)

    def _requeue(self, lane: Lane) -> None:
        if lane.queue and not (lane.queued or lane.busy or lane.name in self._backing_off):
            lane.queued = True
            self._ready.append(lane)

    def _may_log(self, now: float) -> bool:
        """One publish failure or recovery line a second at most (thousands of destinations
        may fail together); every failure is counted in the metrics all the same."""
        if now - self._logged_at < LOG_EVERY_SECONDS:
            return False
        self._logged_at = now
        return True

    def _recovered(self, lane: Lane, now: float) -> None:
        attempts, lane.attempt, lane.error = lane.attempt, 0, ""
        self._failing.discard(lane.name)
        if not self._failing:
            log.info("sink.publish_recovered", sink=self.sink.kind, destination=lane.name)
        elif self._may_log(now):
            log.info("sink.destination_recovered", sink=self.sink.kind, destination=lane.name,
                     attempts=attempts, failing=len(self._failing))  # fmt: skip

    def _back_off(self, lane: Lane, error: tuple[str, str], now: float) -> None:
        """``lane`` failed (``error``: its class and text): it waits, alone, for its retry."""
        self.metrics.publish_errors.labels(self.sink.kind, error[0]).inc()
        lane.attempt += 1
        lane.error = error[1][:300]
        delay = self.retry.delay(lane.attempt)
        lane.ready_at = now + delay
        self._backing_off[lane.name] = lane
        self._wakeup_tie += 1
        heapq.heappush(self._wakeups, (lane.ready_at, self._wakeup_tie, lane))
        self._failing.add(lane.name)
        if not self._may_log(now):
            return
        log.warning(
            "sink.publish_failed",
            sink=self.sink.kind,
            destination=lane.name,
            error=lane.error,
            pending=len(lane.queue),
            attempt=lane.attempt,
            retry_in=round(delay, 3),
            failing=len(self._failing),
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
