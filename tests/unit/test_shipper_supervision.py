"""The main process's supervision of the shipper against the review of the one delivery
path: every metric the shipper moves is taken in the main process (sink_worker_restarts
killed the supervision), a metric change its metric cannot take is refused as the link is
read (LinkError), the supervision outlives whatever ends it unasked (a real shipper process
whose worker really crashes, a supervising task really cancelled), and marks to a shipper
that stopped reading keep the link's buffer bounded."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from bridge.errors import LinkError
from bridge.metrics import BatchHistogram, Metrics, create_metrics, observe_all
from bridge.metrics_sink import (
    SINK_SIDE_LABELS,
    Change,
    apply_sink_side,
    sink_side_changes,
    sink_side_values,
)
from bridge.settings import Settings
from bridge.shipper.link import (
    FROM_SHIPPER,
    MARK_BACKLOG_BYTES,
    TO_SHIPPER,
    Ack,
    Mark,
    MarksOverLink,
    Moved,
    Problem,
    ToShipper,
    decode,
    frame,
    receive,
    send,
)
from bridge.shipper.parent import ShipperDelivery
from bridge.spool import Acked
from bridge.spool.disk import DiskSpool
from bridge.spool.recovery import iter_segment_paths
from tests.unit.spools import disk_spool
from tests.unit.test_disk_spool import record


def test_every_sink_side_metric_reaches_the_main_process() -> None:
    """Each metric the shipper moves, the unlabelled sink_worker_restarts included, is taken
    in the main process and reads the same there. Before the fix sink_worker_restarts raised
    ValueError in apply_sink_side (no label names), which killed the shipper's supervision."""
    shipper, main = create_metrics(), create_metrics()
    before = sink_side_values(shipper)
    shipper.events_published.labels("file", "other").inc(3)
    observe_all(shipper.publish_latency.labels("file"), [0.01, 2.0])
    shipper.publish_errors.labels("file", "OSError").inc()
    shipper.sink_up.labels("file").set(1)
    shipper.dlq_records.labels("too_large").inc()
    shipper.events_dropped.labels("shop", "dlq_rejected").inc()
    shipper.sink_worker_restarts.inc(2)
    changes = sink_side_changes(before, sink_side_values(shipper))
    assert {change[0] for change in changes} == set(SINK_SIDE_LABELS)
    apply_sink_side(main, changes)
    assert sink_side_values(main) == sink_side_values(shipper)


def test_the_label_names_checked_are_the_metrics_own() -> None:
    """The label names the link checks changes against are those the metrics were made
    with: every sink-side metric takes exactly them."""
    metrics = create_metrics()
    for attr, names in SINK_SIDE_LABELS.items():
        metric = getattr(metrics, attr)
        if isinstance(metric, BatchHistogram):
            assert metric.labelnames == names
        elif names:
            metric.labels(**dict.fromkeys(names, "x"))
            with pytest.raises(ValueError, match="label"):
                metric.labels(**dict.fromkeys((*names, "extra"), "x"))
        else:
            with pytest.raises(ValueError, match="label"):
                metric.labels("x")


BAD_CHANGES: dict[str, Change] = {
    "another metric's label names": ("events_published", "x_total", [("reason", "a")], 1.0),
    "a label missing": ("events_dropped", "x_total", [("reason", "spool_full")], 1.0),
    "a metric not of the sink side": ("build_info", "x", [], 1.0),
    "no metric at all": ("registry", "x", [], 1.0),
    "labels on an unlabelled one": ("sink_worker_restarts", "x_total", [("sink", "f")], 1.0),
    "a counter going down": ("dlq_records", "x_total", [("reason", "too_large")], -1.0),
    "an amount not finite": ("sink_up", "x", [("sink", "file")], math.nan),
}


@pytest.mark.parametrize("change", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
@pytest.mark.parametrize("kind", ["ack", "moved"])
def test_a_metric_change_its_metric_cannot_take_is_a_link_error(change: Change, kind: str) -> None:
    """An Ack or a Moved whose metric change names another metric's labels, no sink-side
    metric, or an impossible amount is refused as it is decoded (LinkError: the link ends,
    logged, the shipper is started again) instead of raising ValueError or AttributeError
    in the main process's supervision later. Before the fix it decoded fine."""
    message = Ack([Acked(1, 1, 10, 1, 10)], [change]) if kind == "ack" else Moved([change])
    with pytest.raises(LinkError, match="metric change"):
        decode(FROM_SHIPPER, frame(message)[4:])


def file_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "sink": {
                "kind": "file",
                "file": {"path": str(tmp_path / "events.jsonl")},
                "retry_initial": 0.1,
                "retry_max": 1.0,
            },
            "spool": {"dir": str(tmp_path / "spool")},
        }
    )


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` every 20 ms; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@contextlib.asynccontextmanager
async def started(tmp_path: Path) -> AsyncIterator[tuple[ShipperDelivery, DiskSpool, Metrics]]:
    spool = disk_spool(tmp_path / "spool")
    metrics = create_metrics()
    delivery = ShipperDelivery(file_settings(tmp_path), spool, metrics, environ=dict(os.environ))
    delivery.start()
    try:
        await until(lambda: delivery.delivering, 30, "a shipper delivering")
        spool.append_all([record(n) for n in range(5)])
        await until(lambda: lines(tmp_path / "events.jsonl") == 5, 10, "5 records delivered")
        yield delivery, spool, metrics
    finally:
        await delivery.stop_worker(5)
        spool.close()


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_a_worker_crash_in_a_real_shipper_leaves_the_supervision_running(
    tmp_path: Path,
) -> None:
    """A real shipper whose worker really crashes (its spool segment really taken away behind
    the spool's back): its sink_worker_restarts count reaches the main process and the main
    process's supervision keeps running the same shipper (no shipper restart needed). Before
    the fix the count raised ValueError there: the supervision died unlogged, uncounted,
    with the shipper killed and never started again."""
    async with started(tmp_path) as (delivery, spool, metrics):
        pid, task = delivery.pid, delivery._task
        assert task is not None
        segment = next(iter_segment_paths(tmp_path / "spool"))
        segment.unlink()
        spool.append(record(5))  # marked in a file that is gone: the shipper's worker crashes
        await until(
            lambda: sample(metrics, "ryze_bridge_sink_worker_restarts_total") >= 1,
            15,
            "the shipper's worker restart counted in the main process",
        )
        await asyncio.sleep(1.5)  # the shipper's next reports are taken too
        assert not task.done()
        assert delivery._task is task
        assert delivery.pid == pid
        assert sample(metrics, "ryze_bridge_shipper_restarts_total") == 0


async def test_a_supervision_ended_unasked_is_counted_and_started_again(
    tmp_path: Path,
) -> None:
    """The main process's supervising task really cancelled by something other than
    stop_worker: the end is counted as a shipper restart and the supervision starts again,
    with a new shipper that delivers what is appended afterwards. Before the fix nothing
    noticed: running stayed True while no shipper ran."""
    async with started(tmp_path) as (delivery, spool, metrics):
        task = delivery._task
        assert task is not None
        task.cancel()
        await until(lambda: delivery._task is not task, 5, "a new supervising task")
        assert sample(metrics, "ryze_bridge_shipper_restarts_total") == 1
        spool.append_all([record(n) for n in range(5, 8)])
        await until(lambda: lines(tmp_path / "events.jsonl") >= 8, 30, "delivered again")
        assert delivery.running


def test_a_change_as_the_link_carries_it_is_taken() -> None:
    """The changes a shipper really sends decode unchanged (the check refuses nothing
    valid), a histogram bucket's ``le`` label included."""
    shipper = create_metrics()
    before = sink_side_values(shipper)
    observe_all(shipper.publish_latency.labels("kafka"), [0.5])
    shipper.sink_worker_restarts.inc()
    changes = sink_side_changes(before, sink_side_values(shipper))
    message = decode(FROM_SHIPPER, frame(Moved(changes))[4:])
    assert isinstance(message, Moved)
    assert msgspec.to_builtins(message.metrics) == msgspec.to_builtins(changes)


async def next_message(reader: asyncio.StreamReader) -> ToShipper | None:
    return await receive(reader, TO_SHIPPER)


async def settled(size: Callable[[], int]) -> int:
    """``size`` once it stopped changing (the kernel took what it takes), within 2 s."""
    deadline = time.monotonic() + 2
    last = -1
    while (now := size()) != last:
        assert time.monotonic() < deadline, "the socket's buffer never settled"
        last = now
        await asyncio.sleep(0.05)
    return now


async def test_marks_to_a_shipper_that_does_not_read_keep_the_link_buffer_bounded() -> None:
    """A real socket whose other end stops reading (a SIGSTOPped shipper) and is already
    backed up past the bound: a thousand loop turns with a new mark each queue nothing
    more (the link's buffer stays as it was); once the other end reads again, the one
    latest mark arrives. Before the fix each turn queued one more Mark, without limit."""
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    peer, peer_writer = await asyncio.open_connection(sock=theirs)
    try:
        marks = MarksOverLink(lambda m: send(writer, m), writer.transport.get_write_buffer_size)
        writer.write(frame(Problem("x" * (4 << 20))))  # past the kernel's buffer and the bound
        backlog = await settled(writer.transport.get_write_buffer_size)
        assert backlog > MARK_BACKLOG_BYTES
        for offset in range(1, 1001):
            marks.mark(1, offset)
            await asyncio.sleep(0)
        assert writer.transport.get_write_buffer_size() == backlog
        (length,) = struct.unpack("<I", await asyncio.wait_for(peer.readexactly(4), 5))
        await asyncio.wait_for(peer.readexactly(length), 5)  # the backlog, read at last
        first = await asyncio.wait_for(next_message(peer), 5)
        assert first == Mark(1, 1000)
        writer.close()
        assert await asyncio.wait_for(next_message(peer), 5) is None
    finally:
        writer.close()
        peer_writer.close()
