"""The spool read from another process: the tail reads only what the writer flushed, in
order across segments, and its acknowledgements (typed messages over the link) move the
writer's books exactly as direct calls do; an entry in another format than the one written
is not read."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import pytest

from bridge.pipeline import Record
from bridge.spool import Acked
from bridge.spool.codec import HEADER, MAGIC, checksum, decode_payload, encode_payload
from bridge.spool.disk import DiskSpool
from bridge.spool.tail import Span, SpoolTail, settle
from tests.unit.spools import OverTheLink, local_spool


def record(n: int, size: int = 100) -> Record:
    value = (b'{"n":%d,"pad":"' % n) + b"x" * size + b'"}'
    return Record("ryze.shop.message.exchange", b"shop", value, "message.exchange", "shop",
                  1_700_000_000_000_000_000 + n, f"id{n}", None, None)  # fmt: skip


class Pair:
    """A writer and a tail on one directory, wired as the main process and the shipper are
    (the typed messages between them framed, decoded and delivered at once)."""

    def __init__(self, directory: Path, **options: object) -> None:
        settings: dict[str, object] = {"max_bytes": 10_000_000, "fsync": "never"}
        settings.update(options)
        self.writer = DiskSpool(directory, **settings)  # type: ignore[arg-type]
        self.writer.open()
        self.link = OverTheLink(self.writer)
        self.marks = self.link.marks
        self.tail = SpoolTail(directory, self.writer.acked_position(), self.link.to_writer)
        self.link.tail = self.tail
        self.writer.attach(self.link.to_tail)

    async def drain(self, batch: int = 7) -> list[str]:
        ids: list[str] = []
        while self.writer.stats().events:
            records = await asyncio.wait_for(self.tail.read(batch), 2)
            ids.extend(r.id for r in records)
            self.tail.ack(len(records))
        return ids

    def close(self) -> None:
        self.tail.close()
        self.writer.close()


async def test_the_tail_reads_only_what_the_writer_flushed(tmp_path: Path) -> None:
    """An entry still in the writer's buffer is not read; once flushed (end of the loop
    turn) it is, with every field as appended."""
    pair = Pair(tmp_path)
    pair.writer.append(record(1))  # flushed at the end of this loop turn, not yet
    reading = asyncio.create_task(pair.tail.read(10))
    await asyncio.sleep(0)
    assert not reading.done() or reading.result() == [record(1)]
    assert await asyncio.wait_for(reading, 2) == [record(1)]
    assert pair.marks, "the flush was announced"
    pair.close()


async def test_acknowledgements_move_the_writers_books(tmp_path: Path) -> None:
    """Acknowledged stretches leave the writer's events and bytes, delete wholly acknowledged
    segments, persist the position (a restart replays only the rest) and empty the spool."""
    pair = Pair(tmp_path, segment_bytes=600)
    for n in range(30):
        pair.writer.append(record(n))
    pair.writer.flush()
    assert len(list(tmp_path.glob("seg-*.log"))) > 3
    first = await pair.tail.read(10)
    pair.tail.ack(len(first))
    assert pair.writer.stats().events == 20
    pair.tail.close()
    pair.writer.close()  # persists the acknowledged position
    again = Pair(tmp_path, segment_bytes=600)
    assert again.writer.report.replay == 20
    assert await again.drain() == [f"id{n}" for n in range(10, 30)]
    assert again.writer.stats().bytes == 0
    await asyncio.wait_for(again.writer.wait_empty(), 1)
    assert len(list(tmp_path.glob("seg-*.log"))) == 1
    again.close()


async def test_a_failed_batch_is_read_again_in_order(tmp_path: Path) -> None:
    """A partly acknowledged batch is rewound: the next read starts after the last
    acknowledged entry, across segment boundaries."""
    pair = Pair(tmp_path, segment_bytes=500)
    for n in range(12):
        pair.writer.append(record(n))
    pair.writer.flush()
    batch = await pair.tail.read(8)
    pair.tail.ack(3)
    pair.tail.rewind()
    again = await pair.tail.read(8)
    assert [r.id for r in batch[3:]] == [r.id for r in again[:5]]
    assert [r.id for r in again] == [f"id{n}" for n in range(3, 11)]
    pair.close()


async def test_a_segment_dropped_while_full_is_skipped(tmp_path: Path) -> None:
    """drop_oldest never deletes the segment the tail reads; a later one it deletes is
    skipped by the tail, and what it held is reported dropped, not delivered."""
    pair = Pair(tmp_path, segment_bytes=700, max_bytes=2500, when_full="drop_oldest")
    dropped: list[str] = []
    for n in range(4):
        dropped += [r.id for r in pair.writer.append(record(n)).dropped]
    pair.writer.flush()
    reading = await pair.tail.read(1)  # the tail is in the first segment now
    for n in range(4, 12):
        dropped += [r.id for r in pair.writer.append(record(n)).dropped]
    pair.writer.flush()
    assert dropped, "the spool was full"
    assert reading[0].id not in dropped
    pair.tail.ack(1)
    delivered = [reading[0].id, *await pair.drain()]
    assert sorted(delivered + dropped, key=lambda i: int(i[2:])) == [f"id{n}" for n in range(12)]
    assert pair.writer.stats().events == 0
    pair.close()


def test_acknowledged_entries_are_summed_per_segment() -> None:
    """One stretch per segment, with its last entry's seq and end, count and bytes; the
    acknowledged entries leave the books, and nothing acknowledged is no stretch."""
    spans = deque([Span(1, 0, [1, 2], [10, 30]), Span(3, 0, [3], [5])])
    assert settle(spans, 3) == [Acked(1, 2, 30, 2, 30), Acked(3, 3, 5, 1, 5)]
    assert not spans
    assert settle(deque(), 0) == []


def test_a_partial_acknowledgement_counts_only_its_entries() -> None:
    """Acknowledging part of a span reports its entries alone (bytes from where the first
    starts), and the rest are reported by the next acknowledgement; entries skipped between
    two spans of one segment (damage) are in neither stretch's bytes."""
    spans = deque([Span(1, 0, [1, 2, 3], [10, 30, 35]), Span(1, 50, [5, 6], [60, 75])])
    assert settle(spans, 2) == [Acked(1, 2, 30, 2, 30)]
    assert settle(spans, 2) == [Acked(1, 5, 60, 2, 15)]
    assert settle(spans, 5) == [Acked(1, 6, 75, 1, 15)]
    assert not spans


async def test_an_entry_in_another_format_is_not_replayed(tmp_path: Path) -> None:
    """The spool reads one payload format: an entry whose header names another (a spool
    left by a bridge before format 3) is not a record; start-up does not fail over it, it
    is counted as damage and nothing of it is handed out; new entries are read."""
    old = record(1)
    payload = encode_payload(old)
    entry = HEADER.pack(MAGIC, 2, len(payload), checksum(1, payload), 1) + payload
    (tmp_path / "seg-00000000000000000001.log").write_bytes(entry)
    spool = local_spool(tmp_path)
    report = spool.report
    assert report.replay == 0
    assert report.torn + report.damaged >= 1
    spool.append(record(2, size=10))
    assert [r.ident for r in await spool.read(10)] == ["id2"]
    spool.close()


def test_the_current_payload_roundtrips_every_field() -> None:
    """Payloads decode to the record encoded, None fields included."""
    rec = Record("d", None, b"v", "e", "i", 7, "id", "too_large", "big")
    assert decode_payload(encode_payload(rec)) == rec


async def test_the_tail_in_this_process_follows_the_writer_by_direct_calls(
    tmp_path: Path,
) -> None:
    """The in-process transport: the writer's mark reaches the tail within the append (no
    loop turn, no message), so a read right after an append hands the record out; the
    tail's acknowledgements reach the writer's books at once (events, bytes, the ack file);
    once detached, the tail hears of no further append."""
    spool = local_spool(tmp_path, segment_bytes=600)
    tail = spool.tail
    for n in range(5):
        spool.append(record(n))
        assert tail._mark == spool.writer.flushed_to()  # told within the append
    assert [r.id for r in tail._read_now(100)] == [f"id{n}" for n in range(5)]
    tail.ack(3)
    assert spool.stats().events == 2
    assert (tmp_path / "ack").read_text() == "3"
    tail.ack(2)
    assert spool.stats().events == spool.stats().bytes == 0
    spool.writer.detach()
    spool.append(record(5))
    assert tail._read_now(100) == []
    assert spool.stats().events == 1
    spool.close()


def test_a_segment_taken_away_is_an_error_and_its_return_is_read(tmp_path: Path) -> None:
    """The active segment's file renamed away behind the spool's back (really: the writer
    still holds it open) is a FileNotFoundError for the reader, not a silent skip of what
    it holds; once it is back every record is read, none lost."""
    spool = local_spool(tmp_path)
    spool.append(record(0))
    segment = next(tmp_path.glob("seg-*.log"))
    away = segment.with_name(segment.name + ".away")
    segment.rename(away)
    with pytest.raises(FileNotFoundError):
        spool.tail._read_now(10)
    spool.append(record(1))  # the writer goes on writing to its open file
    away.rename(segment)
    assert [r.id for r in spool.tail._read_now(10)] == ["id0", "id1"]
    spool.close()
