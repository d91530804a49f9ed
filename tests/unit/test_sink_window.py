"""The sink worker's window: one destination failing or slow never holds the others, only
what failed is retried (never what the broker accepted), a refused DLQ copy is retried and
never dropped, and the window is bounded. The sink is a scripted in-memory one given to the
worker's constructor; the real-broker versions are in tests/integration/test_worker_faults.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.errors import SinkError, SinkUnavailableError
from bridge.logs import configure_logging
from bridge.metrics import create_metrics
from bridge.pipeline import Record
from bridge.retry import RetryPolicy
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected
from bridge.sinks.worker import SinkWorker
from tests.unit.spools import Local, local_spool

FAST = RetryPolicy(0.005, 0.02)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Local]:
    """The disk spool in the test's directory, read by its tail in this process."""
    opened = local_spool(tmp_path)
    yield opened
    opened.close()


def record(n: int, dest: str, value: bytes = b"x" * 10) -> Record:
    """A record received now (a linger counts from its receipt)."""
    return Record(
        dest, dest.encode(), value, "message.exchange", dest, time.time_ns(), f"{dest}-{n}"
    )


class LaneSink:
    """A sink scripted per destination: ``down`` ones fail, ``refused`` ones are refused for
    good, ``held`` ones wait for their event; it records what it accepted and what calls
    were in flight together."""

    kind = "scripted"

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.refused: set[str] = set()
        self.held: dict[str, asyncio.Event] = {}
        self.fail_after: dict[str, int] = {}  # destination: accept this many, fail the rest, once
        self.fail_calls = 0  # calls that fail whole (as the file sink's do)
        self.accepted: list[Record] = []
        self.in_flight: Counter[str] = Counter()
        self.overlaps = 0  # calls that found their destination in flight already
        self.calls = 0

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        self.calls += 1
        destinations = {r.destination for r in records}
        self.overlaps += sum(1 for d in destinations if self.in_flight[d])
        self.in_flight.update(destinations)
        try:
            for destination in destinations:
                if destination in self.held:
                    await self.held[destination].wait()
            return self._outcomes(records)
        finally:
            self.in_flight.subtract(destinations)

    def _outcomes(self, records: Sequence[Record]) -> list[Outcome]:
        if self.fail_calls:
            self.fail_calls -= 1
            return [Failed(SinkUnavailableError("all down"))] * len(records)
        outcomes: list[Outcome] = []
        spent: set[str] = set()
        for r in records:
            budget = self.fail_after.get(r.destination)
            if r.destination in self.down or budget == 0:
                outcomes.append(Failed(SinkUnavailableError(f"{r.destination} down")))
                if budget == 0:
                    spent.add(r.destination)
            elif r.destination in self.refused:
                outcomes.append(Rejected("not_authorized", f"{r.destination} refused"))
            else:
                if budget is not None:
                    self.fail_after[r.destination] = budget - 1
                self.accepted.append(r)
                outcomes.append(DELIVERED)
        for destination in spent:
            del self.fail_after[destination]  # failed once: accepts from now on
        return outcomes

    def ids(self, destination: str) -> list[str]:
        return [r.id for r in self.accepted if r.destination == destination]

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def until(predicate: object, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.005)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task}, timeout=5)


async def test_a_failing_destination_does_not_hold_the_others(spool: Local) -> None:
    """While destination a fails, every record of b is delivered; a's records wait, then
    arrive in order once a is back; nothing is published twice."""
    sink = LaneSink()
    sink.down.add("a")
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    for n in range(200):
        spool.append(record(n, "a" if n % 2 else "b"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(sink.ids("b")) == 100 and not worker.healthy)
        await asyncio.sleep(0.05)  # several retries of a
        assert sink.ids("a") == []
        assert spool.stats().events == 199  # b-0 acknowledged; the other b behind a-1
        sink.down.clear()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("a") == [f"a-{n}" for n in range(1, 200, 2)]
    assert sink.ids("b") == [f"b-{n}" for n in range(0, 200, 2)]
    assert worker.healthy


async def test_what_the_broker_accepted_is_never_published_again(spool: Local) -> None:
    """A call whose first records were accepted and the rest failed retries only the rest:
    every record is accepted exactly once, in order."""
    sink = LaneSink()
    sink.fail_after["a"] = 30
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    for n in range(100):
        spool.append(record(n, "a"))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("a") == [f"a-{n}" for n in range(100)]


async def test_a_slow_destination_does_not_stall_the_others(spool: Local) -> None:
    """While a call to destination s hangs, the other destinations' calls keep going; no
    two calls are ever in flight for the same destination."""
    sink = LaneSink()
    sink.held["s"] = asyncio.Event()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST, batch_max_records=5)
    task = asyncio.create_task(worker.run())
    try:
        spool.append(record(0, "s"))
        await until(lambda: sink.in_flight["s"] == 1)
        for n in range(1, 300):
            spool.append(record(n, ("s", "b", "c", "d", "e")[n % 5]))
            if n % 20 == 0:
                await asyncio.sleep(0)
        await until(lambda: all(len(sink.ids(d)) == 60 for d in "bcde"))
        assert sink.ids("s") == []
        sink.held["s"].set()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("s") == [f"s-{n}" for n in range(0, 300, 5)]
    assert sink.overlaps == 0


async def test_a_slow_call_gives_its_place_up(spool: Local) -> None:
    """With one place for calls, a call hanging past ``slow_call_seconds`` stops holding it:
    the other destination is delivered meanwhile; the slow lane then goes alone."""
    sink = LaneSink()
    sink.held["s"] = asyncio.Event()
    worker = SinkWorker(
        sink, spool, create_metrics(), dlq="dlq", retry=FAST, max_calls=1, slow_call_seconds=0.1
    )
    task = asyncio.create_task(worker.run())
    try:
        spool.append(record(0, "s"))
        await until(lambda: sink.in_flight["s"] == 1)
        for n in range(1, 21):
            spool.append(record(n, "b"))
        await until(lambda: len(sink.ids("b")) == 20, within=2)
        assert sink.ids("s") == []
        sink.held["s"].set()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("s") == ["s-0"]
    assert sink.overlaps == 0


async def test_a_refused_dlq_copy_is_retried_never_dropped(spool: Local) -> None:
    """A record refused for good whose DLQ copy is refused too stays in the spool, retried
    with backoff, the problem shown; once the DLQ takes it, it lands there exactly once."""
    metrics = create_metrics()
    sink = LaneSink()
    sink.refused |= {"a", "dlq"}
    worker = SinkWorker(sink, spool, metrics, dlq="dlq", retry=FAST)
    spool.append(record(0, "a"))
    spool.append(record(1, "b"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: sink.ids("b") == ["b-1"])
        await asyncio.sleep(0.1)  # several retries of the DLQ copy
        assert spool.stats().events == 2
        assert worker.problem is not None
        assert "'dlq'" in worker.problem
        sink.refused.discard("dlq")
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    letters = [r for r in sink.accepted if r.destination == "dlq"]
    assert [(r.id, r.dlq_reason) for r in letters] == [("a-0", "not_authorized")]
    assert worker.problem is None
    drops = [
        sample
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "ryze_bridge_events_dropped_total" and sample.value
    ]
    assert drops == []  # nothing dropped, for any reason


async def test_a_failing_dlq_keeps_the_record_until_it_is_back(spool: Local) -> None:
    """A DLQ that fails for a while (transiently) keeps the refused record unsettled; it is
    written once the DLQ is back."""
    sink = LaneSink()
    sink.refused.add("a")
    sink.down.add("dlq")
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    spool.append(record(0, "a"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: worker.problem is not None)
        assert spool.stats().events == 1
        sink.down.clear()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert [r.id for r in sink.accepted] == ["a-0"]


async def test_the_window_is_bounded(spool: Local) -> None:
    """With a destination failing, the worker stops reading once its window holds
    ``max_in_flight_bytes`` (one record over at most): the rest waits in the spool."""
    sink = LaneSink()
    sink.down.add("a")
    size = record(0, "a").size
    worker = SinkWorker(
        sink, spool, create_metrics(), dlq="dlq", retry=FAST, max_in_flight_bytes=10 * size
    )
    for n in range(100):
        spool.append(record(n, "a" if n == 0 else "b"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(sink.ids("b")) >= 9)
        await asyncio.sleep(0.1)
        records, held = worker.window
        assert records <= 11
        assert held <= 11 * size
        assert spool.tail.in_flight == records
        assert len(sink.ids("b")) == records - 1
        sink.down.clear()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert len(sink.accepted) == 100


async def test_one_lane_keeps_the_spool_order_across_destinations(spool: Local) -> None:
    """With ``one_lane`` (the file sink: every destination in one file) records reach the
    sink in the spool's order whatever their destination, even across failed calls."""
    sink = LaneSink()
    sink.fail_calls = 3
    worker = SinkWorker(
        sink, spool, create_metrics(), dlq="dlq", retry=FAST, batch_max_records=4, one_lane=True
    )
    for n in range(40):
        spool.append(record(n, "abc"[n % 3]))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert [r.id for r in sink.accepted] == [f"{'abc'[n % 3]}-{n}" for n in range(40)]


def test_backoff_is_full_jitter() -> None:
    """A retry waits uniformly between 0 and the exponential ceiling (not half of it up)."""
    policy = RetryPolicy(1.0, 8.0)
    delays = [policy.delay(3) for _ in range(400)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert min(delays) < 1.0
    assert max(delays) > 3.0
    assert policy.ceiling(10) == 8.0


async def test_a_delivery_that_settles_nothing_is_a_stall_readiness_sees(spool: Local) -> None:
    """Calls that never return (a client retrying on its own) leave no failure to report:
    after ``stall_seconds`` without a record settled while records wait, the worker is not
    healthy, its problem says so, a publish error ``Stalled`` is counted once and the sink is
    shown down; the first settle ends the stall. Idle time (no record waiting) is no stall."""
    sink = LaneSink()
    metrics = create_metrics()
    worker = SinkWorker(sink, spool, metrics, dlq="dlq", retry=FAST, stall_seconds=0.3)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # idle, nothing waiting
        assert worker.healthy
        assert worker.problem is None
        sink.held["a"] = asyncio.Event()
        for n in range(5):
            spool.append(record(n, "a"))
        await until(lambda: worker.problem is not None, within=3)
        assert not worker.healthy
        assert "nothing delivered for" in (worker.problem or "")
        assert "5 records waiting" in (worker.problem or "")
        sample = metrics.registry.get_sample_value
        errors = sample(
            "ryze_bridge_publish_errors_total", {"sink": "scripted", "error": "Stalled"}
        )
        assert errors == 1
        assert sample("ryze_bridge_sink_up", {"sink": "scripted"}) == 0
        sink.held["a"].set()
        await asyncio.wait_for(spool.wait_empty(), 5)
        assert worker.healthy
        assert worker.problem is None
    finally:
        await stopped(task)
    assert sink.ids("a") == [f"a-{n}" for n in range(5)]


async def test_a_hung_lane_grouped_with_others_is_cut_loose(spool: Local) -> None:
    """With more ready lanes than places, lanes share calls; a call that holds several lanes
    and hangs (one destination never answers) is really cancelled after
    ``group_call_seconds``: every other destination is delivered, the hung one goes alone
    (its solo call is never cancelled) and arrives once it answers, nothing is lost, and the
    window drains (before the fix, the lanes grouped with it were never delivered)."""
    sink = LaneSink()
    sink.held["t0"] = asyncio.Event()
    metrics = create_metrics()
    worker = SinkWorker(sink, spool, metrics, dlq="dlq", retry=FAST, max_calls=4,
                        slow_call_seconds=0.05, group_call_seconds=0.3)  # fmt: skip
    for n in range(400):
        spool.append(record(n, f"t{n % 40}"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: all(len(sink.ids(f"t{d}")) == 10 for d in range(1, 40)), within=5)
        await asyncio.sleep(0.5)  # the hung lane's solo call is not cancelled
        assert sink.ids("t0") == []
        assert sink.in_flight["t0"] == 1
        sink.held["t0"].set()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("t0") == [f"t0-{n}" for n in range(0, 400, 40)]
    errors = metrics.registry.get_sample_value(
        "ryze_bridge_publish_errors_total", {"sink": "scripted", "error": "SinkUnavailableError"}
    )
    assert errors is not None
    assert errors >= 1
    assert sink.overlaps == 0


async def test_a_call_cancelled_by_someone_else_ends_the_worker_with_an_error(spool: Local) -> None:
    """A publish call cancelled from outside (not by the worker) is no silent end: the worker
    raises a SinkError its supervisor counts as a crash."""
    sink = LaneSink()
    sink.held["a"] = asyncio.Event()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    spool.append(record(0, "a"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(worker._calls) == 1)
        next(iter(worker._calls)).cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done
        assert isinstance(task.exception(), SinkError)
    finally:
        await stopped(task)


async def test_hung_calls_and_waiting_lanes_do_not_spin_the_loop(spool: Local) -> None:
    """With every place taken by calls that are slow already and lanes waiting, the loop
    waits for a call to end instead of turning (before the fix: thousands of turns a
    second)."""
    sink = LaneSink()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST,
                        slow_call_seconds=0.02)  # fmt: skip
    turns = 0
    dispatch = worker._dispatch

    def counted() -> None:
        nonlocal turns
        turns += 1
        dispatch()

    worker._dispatch = counted  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:
        for n in range(64):  # 64 hung calls of one lane each (the most with slow ones)
            sink.held[f"h{n}"] = asyncio.Event()
            spool.append(record(n, f"h{n}"))
            await until(lambda n=n: sink.in_flight[f"h{n}"] == 1)
        for n in range(5):  # lanes that wait for a place
            spool.append(record(n, f"o{n}"))
        await asyncio.sleep(0.1)
        assert len(worker._calls) == 64
        turns = 0
        await asyncio.sleep(1.0)
        assert turns < 20
        for event in sink.held.values():
            event.set()
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert len(sink.accepted) == 69


async def test_rejections_are_logged_once_a_second_with_counts(spool: Local) -> None:
    """While the DLQ refuses the copies of refused records, they are retried without a log
    line per record and retry: at most one sink.record_rejected line a second, carrying
    counts per destination and reason."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    sink = LaneSink()
    sink.refused.update({"a", "dlq"})
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=RetryPolicy(0.01, 0.02))
    for n in range(200):
        spool.append(record(n, "a"))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.5)
        assert sink.calls > 20  # retried many times meanwhile
    finally:
        await stopped(task)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line[:1] == "{"]
    rejected = [line for line in lines if line.get("event") == "sink.record_rejected"]
    assert 1 <= len(rejected) <= 3  # 1.5 s: the first at once, then one a second
    counted = Counter[str]()
    for line in rejected:
        counted.update(line["rejected"])
    assert counted["a not_authorized"] == 200  # each refused record counted once
    assert counted["dlq not_authorized"] > 1000  # its refused DLQ copies, retried


class ShortSink(LaneSink):
    """Returns one outcome fewer than it was given records (a sink bug)."""

    short = True

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        outcomes = await super().publish(records)
        if self.short and len(records) > 1:
            self.short = False
            for r in records[-1:]:
                self.accepted.remove(r)
            return outcomes[:-1]
        return outcomes


async def test_a_record_without_an_outcome_is_retried_not_acknowledged(spool: Local) -> None:
    """A sink returning fewer outcomes than records does not get its whole call
    acknowledged: the record without an outcome counts as failed and is published again."""
    sink = ShortSink()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    for n in range(10):
        spool.append(record(n, "a"))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stopped(task)
    assert sink.ids("a") == [f"a-{n}" for n in range(10)]


async def test_idle_empty_lanes_are_pruned(spool: Local) -> None:
    """A destination seen once does not keep a lane for ever: idle, empty lanes are pruned;
    a failing one (something to retry) is kept."""
    sink = LaneSink()
    sink.down.add("bad")
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST)
    for n in range(100):
        spool.append(record(n, f"once{n}"))
    spool.append(record(0, "bad"))
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(sink.accepted) == 100)
        assert len(worker._lanes) == 101
        worker._pruned_at -= 60  # the next turn prunes
        spool.append(record(1, "once1"))
        await until(lambda: len(sink.accepted) == 101)
        await until(lambda: len(worker._lanes) <= 2)
        assert "bad" in worker._lanes
    finally:
        await stopped(task)


async def test_a_lone_record_goes_once_its_linger_is_over_and_not_before(spool: Local) -> None:
    """With a linger, a record reaching an idle destination waits for company that long (the
    worker wakes for it: it does not oversleep), and records arriving meanwhile go in the
    same call."""
    sink = LaneSink()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST, linger=0.2)
    task = asyncio.create_task(worker.run())
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        spool.append(record(0, "a"))
        await asyncio.sleep(0.05)
        spool.append(record(1, "a"))
        await until(lambda: len(sink.accepted) == 2, within=2.0)
        waited = loop.time() - started
    finally:
        await stopped(task)
    assert 0.19 <= waited < 1.0
    assert sink.calls == 1
    assert sink.ids("a") == ["a-0", "a-1"]


async def test_a_record_received_longer_ago_than_the_linger_goes_at_once(spool: Local) -> None:
    """The linger counts from the record's receipt: a record that spent longer than the
    linger on its way (read back from the spool after an outage, a restart) does not wait
    again at the sink worker."""
    sink = LaneSink()
    worker = SinkWorker(sink, spool, create_metrics(), dlq="dlq", retry=FAST, linger=2.0)
    task = asyncio.create_task(worker.run())
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        spool.append(replace(record(0, "a"), received_ns=time.time_ns() - 3_000_000_000))
        await until(lambda: len(sink.accepted) == 1, within=1.5)
        waited = loop.time() - started
    finally:
        await stopped(task)
    assert waited < 1.0
