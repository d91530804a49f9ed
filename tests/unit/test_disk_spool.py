"""The disk spool: survives restarts, recovers from torn and corrupted segments, refuses a
second process, and drops exactly what its policy says when full."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from bridge.errors import SpoolError
from bridge.pipeline import Record
from bridge.shipper.link import MARK_LINGER_SECONDS
from bridge.spool.files import IOV_MAX
from bridge.spool.recovery import scan_file
from tests.unit.spools import Local, OverTheLink, local_spool


def record(n: int, size: int = 100) -> Record:
    value = (b'{"n":%d,"pad":"' % n) + b"x" * size + b'"}'
    return Record("ryze.shop.message.exchange", b"shop", value, "message.exchange", "shop",
                  1_700_000_000_000_000_000 + n, f"id{n}", None, None)  # fmt: skip


def opened(directory: Path, **kwargs: object) -> Local:
    """The disk spool, opened, read by its tail in this process."""
    return local_spool(directory, **kwargs)


async def drain(spool: Local, batch: int = 7) -> list[str]:
    ids: list[str] = []
    while spool.stats().events:
        records = await asyncio.wait_for(spool.read(batch), 2)
        ids.extend(r.id for r in records)
        spool.ack(len(records))
    return ids


async def test_unacked_records_are_replayed_after_restart(tmp_path: Path) -> None:
    """What was appended and not acknowledged is read again, in order, by the next process."""
    spool = opened(tmp_path, segment_bytes=1000)
    for n in range(20):
        assert spool.append(record(n)).accepted
    first = await spool.read(5)
    spool.ack(5)
    assert [r.id for r in first] == [f"id{n}" for n in range(5)]
    await spool.read(3)  # in flight, never acknowledged
    spool.close()
    again = opened(tmp_path, segment_bytes=1000)
    assert again.report.replay == 15
    assert await drain(again) == [f"id{n}" for n in range(5, 20)]
    again.close()


async def test_records_roundtrip_every_field(tmp_path: Path) -> None:
    """A record read back from disk equals the one appended, DLQ fields and null key included."""
    spool = opened(tmp_path)
    original = Record("ryze.dlq", None, b"\x00\xffraw", "unknown", "shop", 42, "abc",
                      "malformed_json", "not JSON")  # fmt: skip
    spool.append(original)
    assert await spool.read(10) == [original]
    spool.close()


async def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    """Segments whose every entry is acknowledged are removed from the directory."""
    spool = opened(tmp_path, segment_bytes=500)
    for n in range(30):
        spool.append(record(n))
    assert len(list(tmp_path.glob("seg-*.log"))) > 3
    await drain(spool, batch=30)
    assert len(list(tmp_path.glob("seg-*.log"))) == 1
    assert spool.stats().bytes == 0
    spool.close()


async def test_torn_tail_is_truncated_and_counted(tmp_path: Path) -> None:
    """A segment cut mid-entry (a crash mid-write) loses only that entry; the rest replays."""
    spool = opened(tmp_path)
    for n in range(10):
        spool.append(record(n))
    spool.close()
    segment = next(tmp_path.glob("seg-*.log"))
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 40])
    again = opened(tmp_path)
    assert again.report.torn == 1
    assert again.report.replay == 9
    assert await drain(again) == [f"id{n}" for n in range(9)]
    again.append(record(99))
    assert await drain(again) == ["id99"]
    again.close()


async def test_flipped_byte_skips_only_that_entry(tmp_path: Path) -> None:
    """A flipped byte inside one entry drops that entry (counted); every other is delivered."""
    spool = opened(tmp_path)
    for n in range(10):
        spool.append(record(n))
    spool.close()
    segment = next(tmp_path.glob("seg-*.log"))
    data = bytearray(segment.read_bytes())
    entry = len(data) // 10
    data[entry * 4 + entry // 2] ^= 0x40
    segment.write_bytes(bytes(data))
    again = opened(tmp_path)
    assert again.report.damaged == 1
    assert await drain(again) == [f"id{n}" for n in range(10) if n != 4]
    again.close()


def test_second_process_is_refused(tmp_path: Path) -> None:
    """A second spool on the same directory is refused with a clear error."""
    spool = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use by another ryze-bridge process"):
        opened(tmp_path)
    spool.close()
    opened(tmp_path).close()


def test_drop_newest_counts_exactly(tmp_path: Path) -> None:
    """drop_newest refuses new entries once full; held + dropped = appended."""
    spool = opened(tmp_path, max_bytes=5_000, when_full="drop_newest")
    results = [spool.append(record(n)) for n in range(100)]
    dropped = [d.id for r in results for d in r.dropped]
    assert len(dropped) + spool.stats().events == 100
    assert dropped == [f"id{n}" for n in range(100 - len(dropped), 100)]
    spool.close()


async def test_drop_oldest_counts_exactly_and_keeps_newest(tmp_path: Path) -> None:
    """drop_oldest deletes the oldest segments; held + dropped = appended, newest kept."""
    spool = opened(tmp_path, max_bytes=5_000, when_full="drop_oldest")
    dropped: list[str] = []
    for n in range(100):
        dropped.extend(d.id for d in spool.append(record(n)).dropped)
    held = await drain(spool, batch=100)
    assert sorted(dropped + held, key=lambda i: int(i[2:])) == [f"id{n}" for n in range(100)]
    assert held[-1] == "id99"
    assert dropped[0] == "id0"
    spool.close()


async def test_an_append_is_in_the_file_when_it_returns(tmp_path: Path) -> None:
    """An append is handed to the kernel before it returns (one write per append_all, no
    buffer in the process): a crash of the process right after loses none of it; a read-back
    from disk sees it; a reader in another process is told of it once per mark linger (2 ms),
    in one mark for every append in that time."""
    spool = opened(tmp_path)  # the tail reads every record back from the file
    segment = next(tmp_path.glob("seg-*.log"))
    for n in range(50):
        spool.append(record(n))
        assert segment.stat().st_size == spool.stats().bytes
    assert await drain(spool) == [f"id{n}" for n in range(50)]
    link = OverTheLink(spool.writer)  # the tail in another process from now on
    marks = link.marks
    spool.writer.attach(link.to_tail)
    spool.append_all([record(n) for n in range(50, 60)])
    spool.append(record(60))
    assert marks == []
    await asyncio.sleep(0)
    assert marks == []  # the mark lingers for the appends behind it
    await asyncio.sleep(MARK_LINGER_SECONDS * 10)
    assert marks == [(1, segment.stat().st_size)]  # one mark for all of them
    spool.close()


async def test_interval_fsync_runs_beside_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fsync=interval a blocked fsync does not hold the appends: it runs in a worker
    thread on its own descriptor (segments rotated meanwhile do not disturb it), one interval
    sync at a time, and once it returns the next one covers what came after."""
    release = threading.Event()
    synced: list[int] = []

    def blocked_fsync(descriptor: int) -> None:
        release.wait(5)
        synced.append(os.fstat(descriptor).st_size)

    monkeypatch.setattr("bridge.spool.durability.os.fsync", blocked_fsync)
    spool = opened(tmp_path, fsync="interval", fsync_interval_ms=1, segment_bytes=2000)
    for n in range(40):  # every append is past the interval; segments rotate
        spool.append(record(n))
        await asyncio.sleep(0.002)
    assert synced == []  # every fsync is still blocked, the appends went on
    assert spool.stats().events == 40
    release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if synced:
            break
    assert synced
    spool.append(record(40))
    await asyncio.sleep(0.05)
    spool.close()
    assert list(range(41)) == [int(r.id[2:]) for r in await reopened_records(tmp_path)]


async def reopened_records(directory: Path) -> list[Record]:
    spool = opened(directory)
    records = await asyncio.wait_for(spool.read(100), 2)
    spool.close()
    return records


@pytest.mark.parametrize("when_full", ["drop_newest", "drop_oldest"])
async def test_append_all_keeps_order_and_counts_like_single_appends(
    tmp_path: Path, when_full: str
) -> None:
    """Appending in batches keeps the order and drops exactly what single appends would:
    held + dropped = appended, a batch with a refused record is not accepted."""
    batched = opened(tmp_path / "batched", max_bytes=5_000, when_full=when_full)
    single = opened(tmp_path / "single", max_bytes=5_000, when_full=when_full)
    answers = [batched.append_all([record(n) for n in range(i, i + 10)]) for i in range(0, 100, 10)]
    dropped = [d.id for answer in answers for d in answer.dropped]
    one_by_one = [d.id for n in range(100) for d in single.append(record(n)).dropped]
    assert sorted(dropped) == sorted(one_by_one)
    held = await drain(batched, batch=100)
    assert held == await drain(single, batch=100)
    assert sorted(held + dropped, key=lambda i: int(i[2:])) == [f"id{n}" for n in range(100)]
    if when_full == "drop_newest":
        assert not answers[-1].accepted
    assert answers[0].accepted
    assert batched.append_all([]).accepted
    batched.close()
    single.close()


def test_append_all_with_fsync_always_syncs_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync=always makes a whole batch durable before append_all returns, with one fsync."""
    spool = opened(tmp_path, fsync="always")
    synced: list[int] = []
    real = os.fsync

    def counted(descriptor: int) -> None:
        synced.append(descriptor)
        real(descriptor)

    monkeypatch.setattr(os, "fsync", counted)
    spool.append_all([record(n) for n in range(50)])
    assert len(synced) == 1
    size = sum(p.stat().st_size for p in tmp_path.glob("seg-*"))
    assert size >= 50 * 100
    spool.close()


async def test_a_read_is_bounded_in_bytes_and_takes_one_record_at_least(tmp_path: Path) -> None:
    """A read puts no more than max_bytes in flight, yet always one record, however large;
    the rest follows in order."""
    spool = opened(tmp_path)
    for n in range(40):
        spool.append(record(n, size=200 if n != 5 else 5_000))
    ids: list[str] = []
    sizes: list[int] = []
    while spool.stats().events:
        batch = await asyncio.wait_for(spool.read(100, max_bytes=1_000), 2)
        sizes.append(len(batch))
        ids.extend(r.id for r in batch)
        spool.ack(len(batch))
    assert ids == [f"id{n}" for n in range(40)]
    assert max(sizes) <= 1_000 // 200
    assert 1 in sizes  # the 5,000-byte record, alone
    spool.close()


async def test_a_read_of_fewer_bytes_than_a_record_takes_that_record(tmp_path: Path) -> None:
    """The same bound on a few records: max_bytes per read, one record at least."""
    spool = opened(tmp_path)
    for n in range(10):
        spool.append(record(n, size=300))
    first = await spool.read(100, max_bytes=1_000)
    assert 1 <= len(first) < 10
    spool.ack(len(first))
    rest = await spool.read(100, max_bytes=1)
    assert len(rest) == 1
    spool.close()


async def test_the_ack_file_is_current_soon_after_the_last_ack_of_a_burst(tmp_path: Path) -> None:
    """A burst of acknowledgements writes the ack file at most every 100 ms; when no further
    ack follows, the last position is still written ~100 ms later (a crash then replays at
    most ~100 ms of acknowledged records, not everything since the last written one)."""
    spool = opened(tmp_path, fsync="interval")
    for n in range(100):
        spool.append(record(n))
    for _ in range(10):
        spool.ack(len(await spool.read(10)))
    ack_file = tmp_path / "ack"
    assert ack_file.read_text() == "10"  # the first ack of the burst, written at once
    started = time.monotonic()
    for _ in range(150):  # bounded: ~1.5 s
        if ack_file.read_text() == "100":
            break
        await asyncio.sleep(0.01)
    assert ack_file.read_text() == "100"
    assert time.monotonic() - started < 1.5  # before the fix: never (no ack follows)
    spool.close()


def damage(path: Path, index: int) -> None:
    """Flip a byte in the payload of the ``index``-th entry of a segment file."""
    entry = scan_file(path).entries[index]
    data = bytearray(path.read_bytes())
    data[entry.end - 3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("segment_bytes", [100_000, 2500])
async def test_recovery_reads_from_the_rewritten_segment(
    tmp_path: Path, segment_bytes: int
) -> None:
    """A damaged entry before the acknowledged position and one after it, in the segment
    that holds the position (the only one, or the first of two): after a restart every live
    entry is read exactly once, in order (positions come from the rewritten file, not the
    damaged one), and an append after it follows them."""
    spool = opened(tmp_path, segment_bytes=segment_bytes)
    for n in range(20):
        spool.append(record(n))
    spool.ack(len(await spool.read(8)))  # seq 1-8
    spool.close()
    segments = sorted(tmp_path.glob("seg-*.log"))
    assert len(segments) == (1 if segment_bytes > 10_000 else 2)
    seqs = [e.seq for e in scan_file(segments[0]).entries]
    assert seqs[0] == 1
    assert seqs[-1] > 10
    damage(segments[0], seqs.index(10))  # the later first: the scan skips a damaged entry
    damage(segments[0], seqs.index(7))
    again = opened(tmp_path, segment_bytes=segment_bytes)
    assert again.report.damaged == 2
    live = [f"id{seq - 1}" for seq in range(9, 21) if seq != 10]
    assert again.report.replay == len(live)
    again.append(record(20))
    assert await drain(again) == [*live, "id20"]
    again.close()


async def test_one_append_of_more_entries_than_one_write_takes(tmp_path: Path) -> None:
    """An append_all of 1,500 records (3,000 header and payload parts, over the kernel's 1,024
    per write) is written whole and in order, across a segment change on the way."""
    spool = opened(tmp_path, segment_bytes=200_000)
    assert IOV_MAX <= 1024
    assert spool.append_all([record(n) for n in range(1500)]).accepted
    assert len(list(tmp_path.glob("seg-*.log"))) == 2
    assert sum(p.stat().st_size for p in tmp_path.glob("seg-*.log")) == spool.stats().bytes
    assert await drain(spool, batch=500) == [f"id{n}" for n in range(1500)]
    spool.close()
