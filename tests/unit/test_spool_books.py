"""The writer's books against the review of the one delivery path, on the real filesystem:
an entry damaged past reading leaves the books (counted) when its segment goes, so the spool
empties and a drain ends; drop_oldest keeps the segment a new tail starts in before the tail
says so, and after a rewind keeps only the acknowledged segment again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.pipeline import Record
from bridge.spool import SpoolStats
from bridge.spool.disk import DiskSpool
from bridge.spool.recovery import iter_segment_paths, scan_file
from bridge.spool.segments import segment_first_seq
from bridge.spool.tail import SpoolTail
from tests.unit.spools import Local, OverTheLink, disk_spool, local_spool
from tests.unit.test_disk_spool import damage, record


def counted(spool: DiskSpool) -> list[str]:
    """The spool's counted troubles, as the metrics hook hears them (spool_errors{op})."""
    ops: list[str] = []
    spool.troubles.on_error = ops.append
    return ops


async def read_ids(spool: Local, count: int, batch: int = 7) -> list[str]:
    """Read and acknowledge until ``count`` records came (each read bounded: 2 s)."""
    ids: list[str] = []
    while len(ids) < count:
        records = await asyncio.wait_for(spool.read(batch), 2)
        ids.extend(r.id for r in records)
        spool.ack(len(records))
    return ids


def segments_of(directory: Path) -> list[int]:
    return [segment_first_seq(path) for path in iter_segment_paths(directory)]


class Marks:
    """A reader's end that only hears the marks (a shipper's tail whose first Reading is
    still on its way)."""

    def mark(self, segment: int, offset: int) -> None:
        return None


async def test_a_damaged_entry_the_tail_skips_leaves_the_books_counted(tmp_path: Path) -> None:
    """100 records in 4+ segments, one byte really flipped in the second segment (written in
    this life, so start-up never repaired it): the tail hands out the 99 others; once the
    acknowledgements pass that segment and it is deleted, the damaged entry leaves the books
    too (events 0, bytes 0, wait_empty returns) and is counted once as damaged. Before the
    fix the books kept events=1 forever and wait_empty never returned."""
    spool = local_spool(tmp_path, segment_bytes=6000)
    ops = counted(spool.writer)
    assert spool.append_all([record(n) for n in range(100)]).accepted
    paths = list(iter_segment_paths(tmp_path))
    assert len(paths) >= 4
    damage(paths[1], 3)
    ids = await read_ids(spool, 99)
    assert len(ids) == 99
    assert len(set(ids)) == 99
    assert spool.tail.skipped_damaged == 1
    assert spool.stats() == SpoolStats(events=0, bytes=0)
    await asyncio.wait_for(spool.wait_empty(), 1)
    assert ops.count("damaged") == 1
    spool.close()


async def test_a_segment_drop_oldest_cannot_read_through_leaves_no_records_behind(
    tmp_path: Path,
) -> None:
    """drop_oldest reads a dropped segment back to report its records; where a real flipped
    header byte stops that reading, what it could not read leaves the books as damaged
    (counted), never held forever: the books match the files left."""
    spool = disk_spool(tmp_path, segment_bytes=2000, max_bytes=6000, when_full="drop_oldest")
    ops = counted(spool)
    spool.attach(Marks())
    assert spool.append_all([record(n) for n in range(20)]).accepted
    first = next(iter(iter_segment_paths(tmp_path)))
    second_entry = scan_file(first).entries[1]
    data = bytearray(first.read_bytes())
    data[second_entry.start] ^= 0xFF  # its magic: reading back stops there
    first.write_bytes(bytes(data))
    spool.detach()  # nobody reads: the oldest segment is the one to drop
    result = spool.append_all([record(n) for n in range(20, 30)])
    assert result.accepted
    assert ids_of(result.dropped)[:1] == ["id0"]
    assert ops.count("damaged") >= 1
    held = spool.stats()
    spool.close()
    again = disk_spool(tmp_path, max_bytes=6000)
    assert again.report.replay == held.events
    again.close()


def test_a_shipper_tail_s_starting_segment_is_kept_before_it_says_it_reads_it(
    tmp_path: Path,
) -> None:
    """A tail attached in another process from the acknowledged position (a new shipper,
    its Reading still on the way) has its starting segment kept by drop_oldest: a full
    spool drops the segment after it, whose records the tail has not opened. Before the fix
    attach forgot every segment and drop_oldest dropped the one the tail already held open
    (counted dropped and published both)."""
    spool = disk_spool(tmp_path, segment_bytes=2000, max_bytes=6000, when_full="drop_oldest")
    assert spool.append_all([record(n) for n in range(25)]).accepted
    start = spool.acked_position().segment
    second = segments_of(tmp_path)[1]
    spool.attach(Marks(), elsewhere=True)
    result = spool.append_all([record(n) for n in range(25, 35)])
    assert result.accepted
    dropped = [r.id for r in result.dropped]
    assert dropped
    assert "id0" not in dropped
    assert start in segments_of(tmp_path)
    assert second not in segments_of(tmp_path)
    spool.close()


async def test_after_a_rewind_drop_oldest_keeps_only_the_acknowledged_segment(
    tmp_path: Path,
) -> None:
    """A worker read far ahead (every segment opened), then crashed: the new worker's rewind
    goes back to the acknowledged position and tells the writer, so a full spool under
    drop_oldest drops the oldest segment after the acknowledged one and takes the new
    records. Before the fix every segment ever opened stayed kept: the new records were
    refused (drop_oldest turned drop_newest)."""
    spool = local_spool(tmp_path, segment_bytes=2000, max_bytes=6000, when_full="drop_oldest")
    assert spool.append_all([record(n) for n in range(25)]).accepted
    await asyncio.wait_for(spool.read(25), 2)  # all in flight: every segment opened
    spool.rewind()
    result = spool.append_all([record(n) for n in range(25, 35)])
    assert result.accepted
    assert result.dropped
    assert "id0" not in [r.id for r in result.dropped]
    again = await asyncio.wait_for(spool.read(1), 2)
    assert [r.id for r in again] == ["id0"]
    spool.close()


def ids_of(records: tuple[Record, ...]) -> list[str]:
    return [r.id for r in records]


async def test_a_rewind_reaches_the_writer_over_the_link(tmp_path: Path) -> None:
    """The link transport carries the rewind as a validated Rewound message: a tail in the
    shipper that read every segment and rewound leaves drop_oldest free to drop the segments
    after the acknowledged one (the new records are taken, not refused)."""
    writer = disk_spool(tmp_path, segment_bytes=2000, max_bytes=6000, when_full="drop_oldest")
    link = OverTheLink(writer)
    tail = link.tail = SpoolTail(tmp_path, writer.acked_position(), link.to_writer)
    writer.attach(link.to_tail, elsewhere=True)
    assert writer.append_all([record(n) for n in range(25)]).accepted
    await asyncio.sleep(0)  # the mark goes at the end of the turn
    assert len(await asyncio.wait_for(tail.read(25), 2)) == 25
    assert len(link.readings) >= 2
    tail.rewind()
    assert link.rewinds == [writer.acked_position().segment]
    result = writer.append_all([record(n) for n in range(25, 35)])
    assert result.accepted
    assert result.dropped
    tail.close()
    writer.close()
