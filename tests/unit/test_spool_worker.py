"""The bounded spool and the sink worker: order kept, drops counted, DLQ for refused records."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.errors import SinkUnavailableError
from bridge.metrics import create_metrics
from bridge.pipeline import Record
from bridge.pipeline.records import record_id
from bridge.retry import RetryPolicy
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected
from bridge.sinks.settle import as_dead_letter
from bridge.sinks.worker import SinkWorker
from bridge.spool.codec import encode_entry_parts
from tests.unit.spools import disk_spool, local_spool


def record(n: int, *, size: int = 10, key: bytes = b"k", dest: str = "t") -> Record:
    return Record(dest, key, b"x" * size, "message.exchange", "shop", 1, f"id{n}")


class ScriptedSink:
    """A sink whose answers a test scripts: fails the first ``fail_batches`` publishes,
    refuses records whose value starts with ``poison``."""

    kind = "scripted"

    def __init__(self, fail_batches: int = 0) -> None:
        self.fail_batches = fail_batches
        self.published: list[str] = []
        self.dead: list[Record] = []

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        if self.fail_batches:
            self.fail_batches -= 1
            return [Failed(SinkUnavailableError("down"))] * len(records)
        outcomes: list[Outcome] = []
        for r in records:
            if r.value.startswith(b"poison") and r.dlq_reason is None:
                outcomes.append(Rejected("too_large", "refused"))
            elif r.dlq_reason is not None:
                self.dead.append(r)
                outcomes.append(DELIVERED)
            else:
                self.published.append(r.id)
                outcomes.append(DELIVERED)
        return outcomes

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def entry_size(r: Record) -> int:
    """Bytes ``r`` takes in a spool segment."""
    return len(b"".join(encode_entry_parts(1, r)))


def test_drop_newest_refuses_the_new_record(tmp_path: Path) -> None:
    """With drop_newest a full spool keeps what it has and reports the new record dropped."""
    spool = disk_spool(tmp_path, max_bytes=3 * entry_size(record(0)), when_full="drop_newest")
    results = [spool.append(record(i)) for i in range(5)]
    assert [r.accepted for r in results] == [True, True, True, False, False]
    assert [d.id for r in results for d in r.dropped] == ["id3", "id4"]
    assert spool.stats().events == 3
    spool.close()


def test_drop_oldest_evicts_the_oldest(tmp_path: Path) -> None:
    """With drop_oldest a full spool evicts its oldest pending record for the new one (one
    record per segment here: the policy drops a segment at a time)."""
    size = entry_size(record(0))
    spool = disk_spool(tmp_path, max_bytes=3 * size, when_full="drop_oldest", segment_bytes=size)
    dropped = [d.id for i in range(5) for d in spool.append(record(i)).dropped]
    assert dropped == ["id0", "id1"]
    assert spool.stats().events == 3
    spool.close()


async def test_worker_retries_until_sink_is_back_in_order(tmp_path: Path) -> None:
    """While the sink fails, nothing is lost; when it is back, everything arrives in order."""
    metrics = create_metrics()
    spool = local_spool(tmp_path, max_bytes=1_000_000)
    sink = ScriptedSink(fail_batches=3)
    worker = SinkWorker(sink, spool, metrics, dlq="dlq", retry=RetryPolicy(0.001, 0.01))
    for i in range(50):
        spool.append(record(i))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(spool.wait_empty(), 5)
    task.cancel()
    spool.close()
    assert sink.published == [f"id{i}" for i in range(50)]
    errors = metrics.registry.get_sample_value(
        "ryze_bridge_publish_errors_total", {"sink": "scripted", "error": "SinkUnavailableError"}
    )
    assert errors == 3


async def test_refused_record_goes_to_dlq_and_the_rest_flows(tmp_path: Path) -> None:
    """A record the broker refuses for good lands in the DLQ; records behind it are delivered."""
    metrics = create_metrics()
    spool = local_spool(tmp_path, max_bytes=1_000_000)
    sink = ScriptedSink()
    worker = SinkWorker(sink, spool, metrics, dlq="ryze.dlq")
    spool.append(record(0))
    spool.append(Record("t", b"k", b"poison!", "message.exchange", "shop", 1, "bad"))
    spool.append(record(2))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(spool.wait_empty(), 5)
    task.cancel()
    spool.close()
    assert sink.published == ["id0", "id2"]
    assert [(d.destination, d.dlq_reason) for d in sink.dead] == [("ryze.dlq", "too_large")]
    assert "destination t" in (sink.dead[0].dlq_error or "")
    assert (
        metrics.registry.get_sample_value("ryze_bridge_dlq_records_total", {"reason": "too_large"})
        == 1
    )


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_retry_delay_is_bounded(attempt: int) -> None:
    """Worker backoff grows exponentially but never past its maximum."""
    policy = RetryPolicy(0.2, 10.0)
    assert 0 < policy.delay(attempt) <= 10.0


def test_a_dead_letter_copy_keeps_the_original_id() -> None:
    """A record refused as too large goes to the DLQ cut to 64 KiB, under the ``ryze-id`` of
    the whole record (worked out from the full value), not one of the cut value."""
    original = Record("t", b"k", b"x" * 100_000, "message.exchange", "shop", 1)
    letter = as_dead_letter(original, "too_large", "too big", "ryze.dlq")
    assert len(letter.value) == 64 * 1024
    assert letter.id == record_id("shop", b"x" * 100_000)
    assert Record("t", b"k", letter.value, "message.exchange", "shop", 1).id != letter.id


def test_the_id_is_worked_out_once_and_kept() -> None:
    """A record without an id gets the stable one on first read; one given stays as given."""
    record = Record("t", None, b"{}", "e", "shop", 1)
    assert record.ident == ""
    assert record.id == record_id("shop", b"{}") == record.ident
    assert Record("t", None, b"{}", "e", "shop", 1, "given").id == "given"
