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
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import SinkError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.pipeline import Record
from bridge.retry import RetryPolicy
from bridge.sinks.base import Failed, Outcome, Sink
from bridge.sinks.calls import Call, Calls
from bridge.sinks.settle import Errors, Failures, Settlement
from bridge.sinks.watch import STALL_SECONDS, LogLimit, StallWatch, stall_message
from bridge.sinks.window import Lane, Lanes, Window
from bridge.spool import READ_MAX_BYTES, SpoolReader

log = get_logger(__name__)
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024
MAX_CALLS = 16  # publish calls in flight at once (not counting slow ones), disjoint lanes
SLOW_CALL_SECONDS = 2.0  # a call this old is slow: it no longer holds a place
# A call holding several lanes this old is cancelled (bridge/sinks/calls.py says why).
GROUP_CALL_SECONDS = 2.0
PRUNE_SECONDS = 10.0  # idle, empty lanes are forgotten this often (destinations are upstream data)


class SinkWorker:
    """Drains ``spool`` into ``sink``; one per process (one reader of the spool). The loop is
    here; the window and lanes (``window.py``), the calls in flight (``calls.py``), the
    outcomes (``settle.py``) and the stall watch (``watch.py``) are kept by their own parts."""

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
        linger: float = 0.0,
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
        # ``one_lane``: the sink writes every destination into one place, whose order readers
        # rely on (the file): one lane for all records, one for the DLQ.
        self._window = Window()
        # ``linger``: seconds a lane's oldest record may wait for company (window.py).
        self._lanes = Lanes(
            dlq,
            one_lane=one_lane,
            linger=linger,
            full_records=batch_max_records,
            full_bytes=batch_max_bytes,
        )
        self._calls = Calls(slow_seconds=slow_call_seconds, group_seconds=group_call_seconds)
        self._settlement = Settlement(self._window, self._lanes, metrics, sink.kind)
        self._stall = StallWatch(stall_seconds)
        self.progressed = False  # a record settled since this worker started
        self.on_progress: Callable[[], None] | None = None  # called at the first settle
        self._log_limit = LogLimit()  # publish failures and recoveries
        self._pruned_at = time.monotonic()
        self._reading: asyncio.Task[list[Record]] | None = None
        self._finished: deque[asyncio.Task[Any]] = deque()
        self._wake = asyncio.Event()

    # ---- what others see ----------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """No destination is failing (backing off, or retrying what failed) and delivery has
        not stalled."""
        return not self._lanes.failing and not self._stall.stalled

    @property
    def problem(self) -> str | None:
        """Why the worker cannot settle records for now (the DLQ cannot be written, or nothing
        settled for ``stall_seconds`` while records wait), or None."""
        lane = self._lanes.get(self.dlq)
        if lane is not None and lane.attempt:
            return f"the DLQ {self.dlq!r} cannot be written: {lane.error}"
        if not self._stall.stalled:  # set by the loop, with the metric and the log line
            return None
        now = time.monotonic()
        stalled = self.stalled_for(now)
        return stall_message(stalled, len(self._window), len(self._calls), self._calls.oldest(now))

    def stalled_for(self, now: float) -> float:
        """Seconds without a record settled while records wait in the window (0: none wait)."""
        return self._stall.stalled_for(now, waiting=bool(self._window))

    @property
    def window(self) -> tuple[int, int]:
        """Records and bytes handed out by the spool and not acknowledged yet."""
        return len(self._window), self._window.bytes

    # ---- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Publish forever; cancel to stop (what is unacknowledged stays in the spool, to be
        rewound by whoever starts the next worker)."""
        try:
            while True:
                self._start_reading()
                now = time.monotonic()
                self._lanes.wake(now)
                self._watch_stall(now)
                self._calls.cancel_groups(now)
                self._dispatch()
                if not self._finished:
                    await self._sleep(self._next_wake())
                while self._finished:
                    self._take_finished(self._finished.popleft())
                self._ack()
                self._housekeeping(time.monotonic())
        finally:
            reading, self._reading = self._reading, None
            self._finished.clear()
            await self._calls.stop(reading)

    async def _sleep(self, seconds: float | None) -> None:
        """Until a read or a call finishes, or ``seconds`` (a backoff's or a linger's end) pass."""
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

    def _take_finished(self, task: asyncio.Task[Any]) -> None:
        """A finished read's records join the window; a finished call's outcomes apply."""
        if task is self._reading:
            self._reading = None
            self._take(task.result())
            return
        call = self._calls.pop(task)
        if call is not None:
            self._settle(call, self._calls.outcomes(task, call, self.sink.kind))

    def _housekeeping(self, now: float) -> None:
        """Pending rejection counts logged (one line a second at most); idle lanes pruned."""
        self._settlement.rejections.flush(now)
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            self._lanes.prune()

    def _start_reading(self) -> None:
        window_bytes = self._window.bytes
        if self._reading is None and window_bytes < self.max_in_flight_bytes:
            room = self.max_in_flight_bytes - window_bytes
            self._reading = asyncio.create_task(
                self.spool.read(self.batch_max_records, min(room, self.batch_max_bytes))
            )
            self._reading.add_done_callback(self._finish)

    def _take(self, records: list[Record]) -> None:
        """New records join the window and the lanes of their destinations."""
        now, wall_ns = time.monotonic(), time.time_ns()  # one moment on both clocks
        if not self._window:  # waiting starts now (idle time is no stall)
            self._stall.waiting_from(now)
        self._lanes.take(records, self._window.take(records), now, wall_ns)

    def _ack(self) -> None:
        """The window's leading settled records are acknowledged to the spool."""
        count = self._window.acknowledgeable()
        if count:
            self.spool.ack(count)

    def _watch_stall(self, now: float) -> None:
        """A stall begins: logged once, counted as a publish error, the sink shown down."""
        if not self._stall.begins(now, waiting=bool(self._window)):
            return
        self.metrics.publish_errors.labels(self.sink.kind, "Stalled").inc()
        self.metrics.sink_up.labels(self.sink.kind).set(0)
        log.error("sink.stalled", sink=self.sink.kind, problem=self.problem)

    def _next_wake(self) -> float | None:
        """Seconds until a backoff or a lane's linger ends, until delivery counts as stalled,
        until pending rejections may be logged, until a call of several lanes is to be
        cancelled, or, with lanes waiting for a place, until a call in flight turns slow. None:
        nothing to wait for but events."""
        now = time.monotonic()
        waiting = bool(self._window)
        moments = [
            moment
            for moment in (
                self._lanes.next_wakeup(),
                self._stall.deadline(waiting=waiting),
                self._settlement.rejections.next_at(),
            )
            if moment is not None
        ]
        moments.extend(self._calls.moments(now, lanes_waiting=bool(self._lanes.ready)))
        if not moments:
            return None
        return max(0.0, min(moments) - now)

    # ---- publishing ---------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start publish calls for the ready lanes while there is a free place: the ready
        lanes share the free places evenly (one lane per call while there are fewer lanes
        than places); a lane that failed or was slow lately goes in a call of its own, so a
        slow destination holds up no other. A call that turns slow gives its place up (its
        lanes stay busy until it returns)."""
        ready = self._lanes.ready
        if not ready:
            return
        now = time.monotonic()
        free = self._calls.free(now, self.max_calls)
        while ready and free > 0:
            per_call = -(-len(ready) // free)  # lanes per call, rounded up
            lanes, records = self._lanes.gather(
                per_call, self.batch_max_records, self.batch_max_bytes
            )
            if lanes:
                free -= 1
                publish = self._publish(self._window.outgoing(records))
                self._calls.start(publish, Call(records, lanes, now), self._finish)

    async def _publish(self, records: Sequence[Record]) -> list[Outcome]:
        try:
            return await self.sink.publish(records)
        except SinkError as exc:
            return [Failed(exc)] * len(records)

    # ---- outcomes -----------------------------------------------------------------------
    def _settle(self, call: Call, outcomes: list[Outcome]) -> None:
        """Apply one call's outcomes: delivered records settle, refused ones get their DLQ
        copy queued, failed ones go back to the head of their lane, which backs off."""
        if any(not isinstance(outcome, Failed) for outcome in outcomes):
            self._progress()
        failed, errors = self._settlement.apply(call.records, outcomes)
        self._lanes_done(call, failed, errors)

    def _progress(self) -> None:
        """A record settled: delivery moves (a stall, if any, is over)."""
        if not self.progressed:
            self.progressed = True
            if self.on_progress is not None:
                self.on_progress()
        if self._stall.progress(time.monotonic()):
            log.info("sink.unstalled", sink=self.sink.kind)

    def _lanes_done(self, call: Call, failed: Failures, errors: Errors) -> None:
        """The lanes of a call that returned: free again; those with failed records take
        them back at their head and back off; a slow call's lanes go alone next."""
        now = time.monotonic()
        slow = self._calls.is_slow(call, now)
        for lane in call.lanes:
            lane.busy = False
            retry = failed.get(lane.name)
            lane.solo = slow or retry is not None
            if retry is not None:
                sizes = [self._window.outgoing_size(r) for r in retry]
                self._lanes.put_back(lane, retry, sizes)
                self._back_off(lane, errors.get(lane.name, ("SinkError", "")), now)
            else:
                if lane.attempt:
                    self._recovered(lane, now)
                self._lanes.requeue(lane, now)
        self.metrics.sink_up.labels(self.sink.kind).set(0 if self._lanes.failing else 1)

    def _recovered(self, lane: Lane, now: float) -> None:
        attempts = self._lanes.recovered(lane)
        failing = self._lanes.failing
        if not failing:
            log.info("sink.publish_recovered", sink=self.sink.kind, destination=lane.name)
        elif self._log_limit.allows(now):
            log.info("sink.destination_recovered", sink=self.sink.kind, destination=lane.name,
                     attempts=attempts, failing=len(failing))  # fmt: skip

    def _back_off(self, lane: Lane, error: tuple[str, str], now: float) -> None:
        """``lane`` failed (``error``: its class and text): it waits, alone, for its retry."""
        self.metrics.publish_errors.labels(self.sink.kind, error[0]).inc()
        lane.attempt += 1
        lane.error = error[1][:300]
        delay = self.retry.delay(lane.attempt)
        lane.ready_at = now + delay
        self._lanes.back_off(lane)
        if not self._log_limit.allows(now):
            return
        log.warning(
            "sink.publish_failed",
            sink=self.sink.kind,
            destination=lane.name,
            error=lane.error,
            pending=len(lane.queue),
            attempt=lane.attempt,
            retry_in=round(delay, 3),
            failing=len(self._lanes.failing),
        )
