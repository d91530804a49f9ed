"""The sink worker's parts on their own: the window acknowledges only its leading settled
records, the lanes gather calls within their bounds (a solo lane alone), the stall watch
reports a stall once and only while records wait, and the log limit allows one line per
period."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from bridge.metrics import create_metrics
from bridge.pipeline import Record
from bridge.sinks.base import DELIVERED
from bridge.sinks.settle import Settlement
from bridge.sinks.watch import LogLimit, StallWatch
from bridge.sinks.window import ONE_LANE, Lanes, Window

RECEIVED = 1_796_000_000_000_000_000  # ns: when the test's records were received


def record(n: int, dest: str, size: int = 10, received_ns: int = RECEIVED) -> Record:
    return Record(dest, None, b"x" * size, "message.exchange", "shop", received_ns, f"{dest}-{n}")


def test_the_window_acknowledges_only_its_leading_settled_records() -> None:
    """A settled record behind an unsettled one waits; once the head settles both leave the
    window, and its bytes go down by their sizes."""
    window = Window()
    records = [record(n, "a") for n in range(3)]
    sizes = window.take(records)
    assert sizes == [r.size for r in records]
    assert window.bytes == sum(sizes)
    window.settled.add(id(records[1]))
    assert window.acknowledgeable() == 0
    window.settled.add(id(records[0]))
    assert window.acknowledgeable() == 2
    assert len(window) == 1
    assert window.bytes == sizes[2]
    window.settled.add(id(records[2]))
    assert window.acknowledgeable() == 1
    assert (len(window), window.bytes) == (0, 0)


def test_lanes_gather_calls_within_their_bounds() -> None:
    """A call takes at most ``per_call`` ready lanes and ``max_records`` records; a lane
    that failed lately (solo) goes in a call of its own; lanes taken are busy."""
    lanes = Lanes("dlq", one_lane=False)
    taken = [record(n, dest) for dest in ("a", "b", "c") for n in range(3)]
    window = Window()
    lanes.take(taken, window.take(taken), 0.0, RECEIVED)
    by_name = lanes.by_name
    by_name["b"].solo = True
    first, records = lanes.gather(per_call=3, max_records=100, max_bytes=1 << 20)
    assert [lane.name for lane in first] == ["a"]  # "b" is solo: it waits for its own call
    assert [r.destination for r in records] == ["a"] * 3
    solo, records = lanes.gather(per_call=3, max_records=100, max_bytes=1 << 20)
    assert [lane.name for lane in solo] == ["b"]
    assert all(lane.busy for lane in (*first, *solo))
    last, records = lanes.gather(per_call=3, max_records=2, max_bytes=1 << 20)
    assert [lane.name for lane in last] == ["c"]
    assert len(records) == 2
    assert len(by_name["c"].queue) == 1


def test_a_call_takes_one_record_at_least_whatever_its_size() -> None:
    """A record bigger than ``max_bytes`` still goes out, alone."""
    lanes = Lanes("dlq", one_lane=False)
    big = [record(0, "a", size=1000), record(1, "a")]
    lanes.take(big, Window().take(big), 0.0, RECEIVED)
    _, records = lanes.gather(per_call=1, max_records=100, max_bytes=100)
    assert records == big[:1]


def test_a_lane_of_records_received_as_they_join_lingers_from_its_first() -> None:
    """With a linger, a lane that was idle is ready only once its oldest record (received as
    it joins) has waited that long (and says when); records joining meanwhile go in the same
    call. Records that queued while the lane's call was in flight have been waiting since
    they joined: the lane is ready once their linger is over, at once if it already is."""
    lanes = Lanes("dlq", one_lane=False, linger=0.005)
    first = [record(0, "a")]
    lanes.take(first, Window().take(first), 10.0, RECEIVED)
    assert not lanes.ready
    assert lanes.next_wakeup() == pytest.approx(10.005)
    later = [record(1, "a")]
    lanes.take(later, Window().take(later), 10.003, RECEIVED)
    lanes.wake(10.004)
    assert not lanes.ready
    lanes.wake(10.005)
    call, records = lanes.gather(per_call=1, max_records=100, max_bytes=1 << 20)
    assert records == first + later
    assert lanes.next_wakeup() is None
    during = [record(2, "a")]
    lanes.take(during, Window().take(during), 10.006, RECEIVED)  # the lane's call is in flight
    assert not lanes.ready
    call[0].busy = False
    lanes.requeue(call[0], 10.008)  # the call returned: 2 ms of its 5 waited
    assert not lanes.ready
    assert lanes.next_wakeup() == pytest.approx(10.011)
    lanes.wake(10.0111)
    assert [lane.name for lane in lanes.ready] == ["a"]


def test_a_lane_lingers_from_when_its_oldest_record_was_received() -> None:
    """The linger counts from the record's receipt, not from when it reached the lane: a
    record received 3 ms before it joins waits the 2 ms left of 5; one received longer ago
    than the linger (read back from the spool after an outage) is ready at once; a receipt
    stamped ahead of the wall clock (a clock stepped back since) lingers the whole 5 ms from
    joining, never longer."""
    ms = 1_000_000
    lanes = Lanes("dlq", one_lane=False, linger=0.005)
    late = [record(0, "a", received_ns=RECEIVED - 3 * ms)]
    lanes.take(late, Window().take(late), 10.0, RECEIVED)
    assert not lanes.ready
    assert lanes.next_wakeup() == pytest.approx(10.002)
    old = [record(0, "b", received_ns=RECEIVED - 60_000 * ms)]
    lanes.take(old, Window().take(old), 10.0, RECEIVED)
    assert [lane.name for lane in lanes.ready] == ["b"]
    ahead = [record(0, "c", received_ns=RECEIVED + 50 * ms)]
    lanes.take(ahead, Window().take(ahead), 10.0, RECEIVED)
    lanes.wake(10.002)
    assert [lane.name for lane in lanes.ready] == ["b", "a"]
    assert lanes.next_wakeup() == pytest.approx(10.005)


def test_a_lingering_lane_holding_a_full_call_is_ready_at_once() -> None:
    """A lane whose queued records make a full call (by count or by bytes) does not wait out
    its linger; the stale linger entry it leaves releases nothing later."""
    lanes = Lanes("dlq", one_lane=False, linger=0.005, full_records=3, full_bytes=1000)
    some = [record(n, "a") for n in range(2)]
    lanes.take(some, Window().take(some), 10.0, RECEIVED)
    assert not lanes.ready
    more = [record(2, "a")]
    lanes.take(more, Window().take(more), 10.001, RECEIVED)
    assert [lane.name for lane in lanes.ready] == ["a"]
    lanes.gather(per_call=1, max_records=3, max_bytes=1 << 20)
    assert lanes.next_wakeup() is None  # the stale entry is dropped
    big = [record(0, "b", size=2000)]
    lanes.take(big, Window().take(big), 10.002, RECEIVED)
    assert [lane.name for lane in lanes.ready] == ["b"]


def test_a_lane_released_when_full_is_not_released_again_by_its_old_linger() -> None:
    """A lane released early (full) leaves its linger entry behind; when that entry comes due
    the lane, busy with its call by then, is not made ready a second time (two calls on one
    destination would break its order)."""
    lanes = Lanes("dlq", one_lane=False, linger=0.005, full_records=2)
    first = [record(0, "a")]
    lanes.take(first, Window().take(first), 10.0, RECEIVED)
    second = [record(1, "a")]
    lanes.take(second, Window().take(second), 10.001, RECEIVED)
    call, _ = lanes.gather(per_call=1, max_records=100, max_bytes=1 << 20)
    assert call[0].busy
    lanes.wake(10.01)
    assert not lanes.ready
    assert lanes.next_wakeup() is None


def test_a_dead_letter_lingers_on_the_dlq_lane_until_due_or_full() -> None:
    """A DLQ copy queued by the settlement joins the DLQ's lane and lingers like any record
    from its record's receipt (here: received as it joins; a real copy's record has usually
    waited out its linger already); the copy that makes the lane a full call releases it at
    once."""
    lanes = Lanes("dlq", one_lane=False, linger=0.005, full_records=2)
    lanes.queue(record(0, "dlq"), "dlq", 100, 10.0, RECEIVED)
    assert not lanes.ready
    assert lanes.next_wakeup() == pytest.approx(10.005)
    lanes.queue(record(1, "dlq"), "dlq", 100, 10.001, RECEIVED)
    assert [lane.name for lane in lanes.ready] == ["dlq"]
    call, records = lanes.gather(per_call=1, max_records=100, max_bytes=1 << 20)
    assert [r.id for r in records] == ["dlq-0", "dlq-1"]
    assert call[0].bytes == 0
    lanes.wake(10.01)  # the entry the release left behind frees nothing
    assert not lanes.ready


def test_records_put_back_after_a_failure_do_not_linger_again() -> None:
    """Records that failed return to their lane's head having waited already: once the lane's
    backoff is over it is ready at once, and the lane's queued bytes count them again."""
    lanes = Lanes("dlq", one_lane=False, linger=0.005)
    batch = [record(n, "a") for n in range(2)]
    lanes.take(batch, Window().take(batch), 10.0, RECEIVED)
    lanes.wake(10.005)
    call, records = lanes.gather(per_call=1, max_records=100, max_bytes=1 << 20)
    lane = call[0]
    assert lane.bytes == 0
    lane.busy = False
    lanes.put_back(lane, records, [r.size for r in records])
    assert lane.bytes == sum(r.size for r in records)
    lane.ready_at = 11.0
    lanes.back_off(lane)
    lanes.wake(11.0)
    assert [ready.name for ready in lanes.ready] == ["a"]


def test_one_lane_shares_a_lane_except_for_the_dlq() -> None:
    """With ``one_lane`` every destination but the DLQ is one lane."""
    lanes = Lanes("dlq", one_lane=True)
    assert lanes.lane_of(record(0, "a")) == lanes.lane_of(record(0, "b")) == ONE_LANE
    assert lanes.lane_of(record(0, "dlq")) == "dlq"


def test_the_stall_watch_reports_a_stall_once_and_only_while_records_wait() -> None:
    """Idle time is no stall; waiting past the bound begins one stall (reported once), and a
    record settling ends it."""
    watch = StallWatch(seconds=30)
    watch.waiting_from(100.0)
    assert not watch.begins(200.0, waiting=False)
    assert watch.stalled_for(200.0, waiting=False) == 0.0
    assert not watch.begins(129.0, waiting=True)
    assert watch.deadline(waiting=True) == 130.0
    assert watch.begins(131.0, waiting=True)
    assert not watch.begins(140.0, waiting=True)
    assert watch.deadline(waiting=True) is None
    assert watch.progress(141.0)
    assert not watch.stalled
    assert not watch.progress(142.0)


def test_the_log_limit_allows_one_line_per_period() -> None:
    """The first line is allowed, the next only a period later."""
    limit = LogLimit(every=1.0)
    assert limit.allows(10.0)
    assert not limit.allows(10.5)
    assert not limit.due(10.9)
    assert limit.next_at() == 11.0
    assert limit.allows(11.0)


def test_a_pipeline_dlq_record_counts_as_a_dead_letter_not_as_published() -> None:
    """A delivered record the pipeline dead-lettered (``dlq_reason`` set) is counted once, in
    ``dlq_records_total{reason}``, and not in ``events_published_total`` (each frame is one
    of published, dead-lettered or dropped); an ordinary record is counted as published."""
    registry = CollectorRegistry()
    settlement = Settlement(Window(), Lanes("dlq", one_lane=False), create_metrics(registry), "k")
    letter = replace(record(1, "dlq"), event="garbage", dlq_reason="malformed_json")
    batch = [letter, record(2, "a")]
    Window().take(batch)
    settlement.apply(batch, [DELIVERED, DELIVERED])
    published = "ryze_bridge_events_published_total"
    assert registry.get_sample_value(published, {"sink": "k", "event": "other"}) in (None, 0.0)
    assert registry.get_sample_value(published, {"sink": "k", "event": "message.exchange"}) == 1
    dlq = registry.get_sample_value("ryze_bridge_dlq_records_total", {"reason": "malformed_json"})
    assert dlq == 1
