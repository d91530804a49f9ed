"""The reading contract the spool's tail keeps, whichever transport feeds it (direct calls in
the main process, typed messages over the shipper's link): a read hands out the records
after those already handed out, an ack settles the oldest handed out, and only an explicit
rewind hands the unacknowledged ones out again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bridge.pipeline import Record
from bridge.spool import SpoolReader
from bridge.spool.disk import DiskSpool
from bridge.spool.tail import SpoolTail, follow
from tests.unit.spools import OverTheLink


def record(n: int) -> Record:
    value = b'{"n":%d,"pad":"%s"}' % (n, b"x" * 200)
    return Record("t", b"shop", value, "message.exchange", "shop", 1, f"id{n}")


Append = Callable[[Record], object]


@asynccontextmanager
async def in_process(
    directory: Path,
) -> AsyncIterator[tuple[SpoolReader, Append, Callable[[], int]]]:
    spool = DiskSpool(directory, max_bytes=10_000_000, fsync="never", segment_bytes=1000)
    spool.open()
    tail = follow(spool)
    try:
        yield tail, spool.append, lambda: spool.stats().events
    finally:
        tail.close()
        spool.close()


@asynccontextmanager
async def over_the_link(
    directory: Path,
) -> AsyncIterator[tuple[SpoolReader, Append, Callable[[], int]]]:
    writer = DiskSpool(directory, max_bytes=10_000_000, fsync="never", segment_bytes=1000)
    writer.open()
    link = OverTheLink(writer)
    reader = link.tail = SpoolTail(directory, writer.acked_position(), link.to_writer)
    writer.attach(link.to_tail)
    try:
        yield reader, writer.append, lambda: writer.stats().events
    finally:
        reader.close()
        writer.close()


VARIANTS = pytest.mark.parametrize("opened", [in_process, over_the_link], ids=["direct", "link"])


@VARIANTS
async def test_read_goes_on_after_what_is_handed_out(tmp_path: Path, opened: object) -> None:
    """Reads hand out 0-2, then 3-11 (never 0-2 again) across segments; an ack of 2 settles
    the two oldest; a rewind hands out 2-11 again, in order; acks empty the spool."""
    async with opened(tmp_path) as (reader, append, events):  # type: ignore[operator]
        for n in range(12):
            append(record(n))
        first = await asyncio.wait_for(reader.read(3), 2)
        second = await asyncio.wait_for(reader.read(100), 2)
        assert [r.id for r in first] == ["id0", "id1", "id2"]
        assert [r.id for r in second] == [f"id{n}" for n in range(3, 12)]
        reader.ack(2)
        assert events() == 10
        reader.rewind()
        again = await asyncio.wait_for(reader.read(100), 2)
        assert [r.id for r in again] == [f"id{n}" for n in range(2, 12)]
        reader.ack(10)
        assert events() == 0


@VARIANTS
async def test_a_read_waits_for_records_not_yet_handed_out(tmp_path: Path, opened: object) -> None:
    """With everything handed out and nothing acknowledged, a read waits; a new record wakes
    it with that record only."""
    async with opened(tmp_path) as (reader, append, _):  # type: ignore[operator]
        append(record(0))
        assert [r.id for r in await asyncio.wait_for(reader.read(10), 2)] == ["id0"]
        waiting = asyncio.create_task(reader.read(10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        append(record(1))
        assert [r.id for r in await asyncio.wait_for(waiting, 2)] == ["id1"]
