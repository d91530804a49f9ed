"""The sink worker's publish calls in flight: their places, the slow ones, and the group call
cancelled when it holds several lanes too long.

At most ``max_calls`` calls run at once on disjoint sets of lanes; a call older than
``slow_seconds`` is slow and gives its place up (its lanes stay busy until it returns), with
never more than ``MAX_CALLS_WITH_SLOW`` calls in all. A call holding several lanes for
``group_seconds`` is cancelled and all its records count as failed (their lanes back off and
go alone next): a destination whose produce never returns must not hold the lanes grouped
with it. A call of one lane is never cancelled (the stall watch reports it). At most that
call's records may have reached the broker before the cancellation: published twice, and no
more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from bridge.errors import SinkError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.sinks.base import Failed, Outcome
from bridge.sinks.window import Lane

log = get_logger(__name__)
MAX_CALLS_WITH_SLOW = 64  # calls in flight at once, the slow ones included
STOP_CALLS_SECONDS = 5.0

Task = asyncio.Task[list[Outcome]]


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


class Calls:
    """The calls in flight, by task (iterating gives the tasks)."""

    def __init__(self, *, slow_seconds: float, group_seconds: float) -> None:
        self.slow_seconds = slow_seconds
        self.group_seconds = group_seconds
        self.tasks: dict[Task, Call] = {}

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def start(
        self,
        publish: Coroutine[Any, Any, list[Outcome]],
        call: Call,
        done: Callable[[Task], object],
    ) -> None:
        """Run ``publish`` for ``call``; ``done`` is called when it ends."""
        task = asyncio.create_task(publish)
        task.add_done_callback(done)
        self.tasks[task] = call

    def pop(self, task: asyncio.Task[Any]) -> Call | None:
        """The call of a task that ended (None: not a call of ours)."""
        return self.tasks.pop(task, None)

    def free(self, now: float, max_calls: int) -> int:
        """How many more calls may start: ``max_calls`` minus those in flight that are not
        slow yet, and never more than ``MAX_CALLS_WITH_SLOW`` in all."""
        slow_since = now - self.slow_seconds
        active = sum(1 for call in self.tasks.values() if call.started > slow_since)
        return min(max_calls - active, MAX_CALLS_WITH_SLOW - len(self.tasks))

    def is_slow(self, call: Call, now: float) -> bool:
        return now - call.started > self.slow_seconds

    def oldest(self, now: float) -> float:
        """Seconds the oldest call has been in flight (0: none)."""
        return max((now - call.started for call in self.tasks.values()), default=0.0)

    def cancel_groups(self, now: float) -> None:
        """Calls holding several lanes for over ``group_seconds`` are cancelled."""
        oldest = now - self.group_seconds
        for task, call in self.tasks.items():
            if call.started <= oldest and len(call.lanes) > 1 and not call.cancelled:
                call.cancelled = True
                task.cancel()

    def moments(self, now: float, *, lanes_waiting: bool) -> Iterator[float]:
        """When a call of several lanes is to be cancelled and, with lanes waiting for a
        place, when a call turns slow (and gives its place up): only those still to come,
        since a call that is slow already frees no place but by ending."""
        for call in self.tasks.values():
            if len(call.lanes) > 1 and not call.cancelled:
                yield call.started + self.group_seconds
            if lanes_waiting and call.started + self.slow_seconds > now:
                yield call.started + self.slow_seconds

    def outcomes(self, task: Task, call: Call, kind: str) -> list[Outcome]:
        """A call's outcomes, one per record (all failed if it was cancelled here; a record
        the sink gave none for failed, logged). A cancellation not asked for here is an error
        (the worker's supervisor restarts the worker), never an end."""
        if task.cancelled():
            if not call.cancelled:
                raise SinkError("a publish call was cancelled by something other than the worker")
            error = SinkUnavailableError(
                f"a publish call for {len(call.lanes)} destinations took over "
                f"{self.group_seconds:g} s; cancelled, its destinations go alone next"
            )
            return [Failed(error)] * len(call.records)
        outcomes = task.result()
        if len(outcomes) != len(call.records):
            log.error("sink.outcomes_mismatch", sink=kind, records=len(call.records),
                      outcomes=len(outcomes))  # fmt: skip
        return padded_outcomes(outcomes, len(call.records))

    async def stop(self, reading: asyncio.Task[Any] | None) -> None:
        """Cancel every call (and ``reading``), waiting a bounded time for them to end."""
        tasks: list[asyncio.Task[Any]] = [*self.tasks]
        if reading is not None:
            tasks.append(reading)
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            done, _ = await asyncio.wait(tasks, timeout=STOP_CALLS_SECONDS)
            for task in done:  # retrieved, so that none is reported as never retrieved
                with contextlib.suppress(BaseException):
                    task.result()
