"""The spool's answers to a hostile review, each against the real filesystem where the fault
can be made: a tail that never serves bytes past the writer's mark, a failed write whose
cut-back also fails (an append-only file: ftruncate really refused), recovery on a full disk,
a segment dropped under the tail, an unreadable oldest segment under drop_oldest, a hung
fsync that keeps to its own thread."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.pipeline import Record
from bridge.spool import Acked, durability, fsyncs
from bridge.spool.codec import encode_entry_parts
from bridge.spool.disk import DiskSpool
from bridge.spool.recovery import iter_segment_paths, scan_file
from bridge.spool.tail import SpoolTail
from tests.diskfull import PAGE, fill, small_tmpfs
from tests.unit.spools import Local, Recorded, local_spool
from tests.unit.test_disk_spool import damage, drain, record
from tests.unit.test_spool_tail import Pair


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "1m") as path:
        yield path


def ids(records: list[Record] | tuple[Record, ...]) -> list[str]:
    return [r.id for r in records]


def numbered(first: int, count: int, size: int = 300) -> list[Record]:
    return [record(n, size) for n in range(first, first + count)]


@pytest.fixture
def append_only() -> Iterator[list[Path]]:
    """Files made append-only (chattr +a: ftruncate, unlink and rename really fail with
    EPERM) for the test, made ordinary again afterwards."""
    files: list[Path] = []
    yield files
    for path in files:
        subprocess.run(["chattr", "-a", str(path)], check=False, timeout=10)


def make_append_only(path: Path, files: list[Path]) -> None:
    done = subprocess.run(["chattr", "+a", str(path)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"chattr +a not possible here: {done.stderr.decode().strip()}")
    files.append(path)


def make_ordinary(path: Path) -> None:
    subprocess.run(["chattr", "-a", str(path)], check=True, timeout=10)


def fill_but_one_page(fs: Path) -> Path:
    """Fill ``fs`` leaving one page free: a write of several pages is then really short."""
    spare = fs / "spare"
    spare.write_bytes(b"\0" * PAGE)
    filler = fill(fs / "filler")
    spare.unlink()
    return filler


# ---- 1. the tail never serves bytes the writer did not announce ----------------------------
async def test_the_tail_never_serves_bytes_past_the_writers_mark(tmp_path: Path) -> None:
    """Bytes written past the mark (a write not yet announced) and then replaced at the same
    offset are never handed out: once the mark covers the new bytes, the tail hands out
    those (the 1 MiB buffered reader before this handed out the old ones from its buffer)."""
    writer = DiskSpool(tmp_path, max_bytes=10_000_000, fsync="never")
    writer.open()
    tail = SpoolTail(tmp_path, writer.acked_position(), Recorded())  # marks given by hand
    assert writer.append_all(numbered(0, 5)).accepted
    segment, mark = writer.flushed_to()
    assert writer.append_all(numbered(100, 5)).accepted  # on disk, not announced
    tail.mark(segment, mark)
    assert ids(await asyncio.wait_for(tail.read(100), 2)) == ids(numbered(0, 5))
    replacement = b"".join(
        b"".join(encode_entry_parts(6 + i, r)) for i, r in enumerate(numbered(200, 3, 50))
    )
    path = tmp_path / f"seg-{segment:020d}.log"
    with path.open("r+b") as handle:  # what a cut-back and the next write leave there
        handle.truncate(mark)
        handle.seek(mark)
        handle.write(replacement)
    tail.mark(segment, mark + len(replacement))
    assert ids(await asyncio.wait_for(tail.read(100), 2)) == ids(numbered(200, 3, 50))
    tail.close()
    writer.close()


async def test_after_a_short_write_the_next_append_goes_to_a_new_segment(small_fs: Path) -> None:
    """A write the full disk cuts short (a real short pwritev on a tmpfs) is refused and cut
    back; the next accepted append starts a new segment, so no offset the tail may have
    seen is written twice; the tail (the default delivery path) hands out the accepted
    records only, once each, and its acknowledgements empty the writer's books."""
    pair = Pair(small_fs / "spool", max_bytes=64 << 20, segment_bytes=8 << 20)
    assert pair.writer.append_all(numbered(0, 5)).accepted
    pair.writer.flush()
    first = await asyncio.wait_for(pair.tail.read(100), 2)
    old_size = pair.writer.flushed_to()[1]
    filler = fill_but_one_page(small_fs)
    refused = pair.writer.append_all(numbered(100, 30))
    assert not refused.accepted
    assert refused.reason == "disk_full"
    assert ids(refused.dropped) == ids(numbered(100, 30))
    filler.unlink()
    assert pair.writer.append_all(numbered(200, 4, 50)).accepted
    pair.writer.flush()
    segments = list(iter_segment_paths(pair.writer.directory))
    assert len(segments) == 2
    assert segments[0].stat().st_size == old_size
    pair.tail.ack(len(first))
    assert ids(first) + await pair.drain() == ids(numbered(0, 5)) + ids(numbered(200, 4, 50))
    assert pair.writer.stats().events == 0
    assert pair.writer.stats().bytes == 0
    pair.close()


def test_an_acknowledgement_past_what_was_written_is_ignored(tmp_path: Path) -> None:
    """An acknowledgement whose end lies past the segment's size, or whose seq was never
    given out, moves nothing on the books; it is counted (spool_errors_total{op="ack_refused"})
    and logged."""
    writer = DiskSpool(tmp_path, max_bytes=10_000_000, fsync="never")
    writer.open()
    errors: list[str] = []
    writer.troubles.on_error = errors.append
    assert writer.append_all(numbered(0, 5)).accepted
    segment, size = writer.flushed_to()
    writer.acked([Acked(segment, 5, size + 100, 5, size + 100)])
    writer.acked([Acked(segment, 9, size, 5, size)])
    assert writer.stats().events == 5
    assert errors == ["ack_refused", "ack_refused"]
    assert writer.problem is None  # not the disk's fault: nothing for readiness
    writer.acked([Acked(segment, 5, size, 5, size)])
    assert writer.stats().events == 0
    writer.close()


# ---- 2. a failed write whose cut-back fails too ----------------------------------------------
async def test_leftovers_of_a_write_that_could_not_be_cut_back_are_never_read(
    small_fs: Path, append_only: list[Path]
) -> None:
    """The active segment is append-only, so the cut-back after a short write really fails
    (EPERM): counted as op=truncate; the next append starts a new segment taking the refused
    seqs; the tail reads the old segment only up to the next segment's first seq, so the
    refused records are never delivered and the books end at zero. A restart (the repair
    still impossible) replays nothing twice and reuses no seq."""
    pair = Pair(small_fs / "spool", max_bytes=64 << 20, segment_bytes=8 << 20)
    errors: list[str] = []
    pair.writer.troubles.on_error = errors.append
    assert pair.writer.append_all(numbered(0, 5)).accepted
    pair.writer.flush()
    old = next(iter_segment_paths(pair.writer.directory))
    make_append_only(old, append_only)
    size = old.stat().st_size
    filler = fill_but_one_page(small_fs)
    assert pair.writer.append_all(numbered(100, 30)).reason == "disk_full"
    assert "truncate" in errors
    assert old.stat().st_size > size, "the short write left bytes behind"
    assert len(scan_file(old).entries) > 5, "whole refused entries are left in the file"
    filler.unlink()
    assert pair.writer.append_all(numbered(200, 4, 50)).accepted
    pair.writer.flush()
    expected = ids(numbered(0, 5)) + ids(numbered(200, 4, 50))
    pair.close()  # undelivered: replayed after the restart
    again = Pair(small_fs / "spool", max_bytes=64 << 20, segment_bytes=8 << 20)
    assert again.writer.report.replay == 9
    assert again.writer.appended_total() == 9
    assert await again.drain() == expected
    await asyncio.wait_for(again.writer.wait_empty(), 2)
    again.close()


async def test_a_local_reader_never_reads_a_failed_writes_leftovers(
    small_fs: Path, append_only: list[Path]
) -> None:
    """The tail in this process (direct calls): the old segment is read up to the next
    segment's first seq only, the events count ends at zero (wait_empty completes), never
    negative."""
    spool = local_spool(small_fs / "spool", max_bytes=64 << 20, segment_bytes=8 << 20)
    assert spool.append_all(numbered(0, 5)).accepted
    make_append_only(next(iter_segment_paths(spool.directory)), append_only)
    filler = fill_but_one_page(small_fs)
    assert not spool.append_all(numbered(100, 30)).accepted
    filler.unlink()
    assert spool.append_all(numbered(200, 4, 50)).accepted
    assert await drain(spool) == ids(numbered(0, 5)) + ids(numbered(200, 4, 50))
    await asyncio.wait_for(spool.wait_empty(), 2)
    assert spool.stats().events == 0
    spool.close()


# ---- 3. recovery on a full or failing disk ---------------------------------------------------
def test_a_damaged_segment_on_a_full_disk_is_read_through_its_scan(small_fs: Path) -> None:
    """A segment with a damaged entry cannot be rewritten on a full disk: the start does not
    fail; the entry is counted damaged, the others replay from the scan's positions, the
    problem is shown and counted (op=recover), and new appends go to a new segment."""
    spool = DiskSpool(small_fs / "spool", max_bytes=64 << 20, fsync="never")
    spool.open()
    assert spool.append_all(numbered(0, 200)).accepted
    spool.close()
    damage(next(iter_segment_paths(small_fs / "spool")), 100)
    filler = fill(small_fs / "filler")
    again = DiskSpool(small_fs / "spool", max_bytes=64 << 20, fsync="never")
    errors: list[str] = []
    again.troubles.on_error = errors.append
    report = again.open()
    assert report.damaged == 1
    assert report.replay == 199
    assert "recover" in errors
    assert "could not be repaired" in (again.problem or "")
    filler.unlink()
    assert again.append_all(numbered(500, 2)).accepted
    assert len(list(iter_segment_paths(again.directory))) == 2
    expected = [f"id{n}" for n in range(200) if n != 100] + ["id500", "id501"]
    local = Local(again)
    assert asyncio.run(drain(local, batch=50)) == expected
    local.close()


async def test_the_tail_reads_an_unrepaired_damaged_segment_past_its_damage(
    small_fs: Path,
) -> None:
    """The default delivery path over a damaged segment start-up could not repair (full
    disk): the tail skips the damaged entry (CRC checked on a segment the writer left) and
    hands out every other one, once, in order; its acknowledgements empty the books."""
    spool = DiskSpool(small_fs / "spool", max_bytes=64 << 20, fsync="never")
    spool.open()
    assert spool.append_all(numbered(0, 200)).accepted
    spool.close()
    damage(next(iter_segment_paths(small_fs / "spool")), 100)
    fill(small_fs / "filler")
    pair = Pair(small_fs / "spool", max_bytes=64 << 20)
    assert pair.writer.report.replay == 199
    assert await pair.drain(batch=50) == [f"id{n}" for n in range(200) if n != 100]
    assert pair.tail.skipped_damaged == 1
    assert pair.writer.stats().events == 0
    pair.close()


def test_a_segment_that_cannot_be_read_at_start_is_left_out(tmp_path: Path) -> None:
    """A segment name that cannot be read (here a directory: open fails with EISDIR) is
    counted (op=read) and left out; the start does not fail and the rest replays."""
    spool = DiskSpool(tmp_path, max_bytes=10_000_000, fsync="never")
    spool.open()
    assert spool.append_all(numbered(0, 3)).accepted
    spool.close()
    (tmp_path / "seg-00000000000000000099.log").mkdir()
    again = DiskSpool(tmp_path, max_bytes=10_000_000, fsync="never")
    errors: list[str] = []
    again.troubles.on_error = errors.append
    assert again.open().replay == 3
    assert errors == ["read"]
    local = Local(again)
    assert asyncio.run(drain(local)) == ids(numbered(0, 3))
    local.close()


# ---- 4. a segment dropped under the tail -----------------------------------------------------
async def test_the_tail_never_reads_a_segment_dropped_under_it(tmp_path: Path) -> None:
    """drop_oldest deletes a segment the tail has opened before the writer heard so (the
    'reading' notice still on its way): from its next read on, the tail reads nothing more
    from the deleted file it still holds open, so no record handed out after the drop is
    also counted dropped."""
    writer = DiskSpool(
        tmp_path, max_bytes=6000, when_full="drop_oldest", fsync="never", segment_bytes=1000
    )
    writer.open()
    # The 'reading' notices are never delivered to the writer: the race at its widest.
    notices = Recorded(writer)
    start = writer.acked_position()
    tail = SpoolTail(tmp_path, start, notices)
    writer.attach(tail)
    for n in range(20):
        writer.append(record(n))
        writer.flush()
    first = await tail.read(8)
    assert max(notices.readings) > start.segment, "the tail went on into a later segment"
    dropped: list[str] = []
    for n in range(20, 40):
        dropped += ids(writer.append(record(n)).dropped)
        writer.flush()
    assert dropped, "the spool was full"
    later = await asyncio.wait_for(tail.read(100), 2)
    assert not set(ids(later)) & set(dropped)
    assert ids(first) + ids(later) == sorted(set(ids(first) + ids(later)), key=lambda i: int(i[2:]))
    tail.close()
    writer.close()


# ---- 7. a segment the disk would not delete -------------------------------------------------
async def test_a_drained_segment_the_disk_refused_to_delete_is_deleted_later(
    small_fs: Path, append_only: list[Path]
) -> None:
    """A wholly acknowledged segment whose deletion really fails (append-only: EPERM) is
    counted (op=delete) and stays; once the disk lets it, the next save of the acknowledged
    position deletes it (it does not stay on disk uncounted for ever)."""
    spool = local_spool(small_fs / "spool", max_bytes=10_000_000, fsync="always", segment_bytes=600)
    errors: list[str] = []
    spool.troubles.on_error = errors.append
    assert spool.append_all(numbered(0, 10, 100)).accepted
    first = next(iter_segment_paths(spool.directory))
    make_append_only(first, append_only)
    assert await drain(spool) == ids(numbered(0, 10, 100))
    assert "delete" in errors
    assert first.exists()
    make_ordinary(first)
    assert spool.append_all(numbered(10, 1, 100)).accepted
    assert await drain(spool) == ["id10"]
    assert not first.exists()
    spool.close()


# ---- 6. nothing escapes append_all -----------------------------------------------------------
def test_an_oldest_segment_that_cannot_be_read_is_a_disk_error_refusal(tmp_path: Path) -> None:
    """drop_oldest must read the oldest segment to count what it drops; when that file is
    gone (removed behind the spool's back: open fails for real), the append is refused with
    reason disk_error instead of raising out of the runner."""
    spool = DiskSpool(
        tmp_path, max_bytes=6000, when_full="drop_oldest", fsync="never", segment_bytes=1000
    )
    spool.open()
    for n in range(30):
        result = spool.append(record(n))
        if result.dropped:
            break
    oldest = next(iter_segment_paths(tmp_path))
    oldest.unlink()
    results = [spool.append(record(n)) for n in range(100, 140)]
    refused = [r for r in results if not r.accepted]
    assert refused
    assert {r.reason for r in refused} <= {"disk_error", None}
    assert any(r.reason == "disk_error" for r in refused)
    spool.close()


# ---- 5. a hung fsync ---------------------------------------------------------------------------
async def test_a_hung_fsync_keeps_to_its_own_thread_and_shows_in_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the directory fsync hangs (a blocking stand-in: this machine has no device
    mapper to suspend a real disk), the spool queues no further job (requests are gathered
    into one), the loop's default thread pool stays free (asyncio.to_thread runs at once),
    and ``problem`` says an fsync is outstanding; once it returns, the problem is gone."""
    gate = threading.Event()
    calls: list[Path] = []

    def hung(directory: Path) -> None:
        calls.append(directory)
        gate.wait(10)

    monkeypatch.setattr(fsyncs, "fsync_directory", hung)
    monkeypatch.setattr(durability, "FSYNC_STUCK_SECONDS", 0.3)
    spool = local_spool(tmp_path, max_bytes=1 << 30, fsync="interval", segment_bytes=4096)
    try:
        deadline = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < deadline:
            spool.append_all(numbered(n, 5, 100))
            n += 5
            spool.ack(len(await spool.read(100)))
            await asyncio.sleep(0.02)
        assert len(calls) == 1, "one job at a time, the rest gathered"
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 3)  # the hang lasts 10 s
        assert "fsync not done" in (spool.problem or "")
    finally:
        gate.set()
    for _ in range(500):  # bounded: 5 s
        if len(calls) >= 2 and spool.problem is None:
            break
        await asyncio.sleep(0.01)
    assert len(calls) >= 2, "what was gathered ran once the hung job returned"
    assert spool.problem is None
    spool.close()


async def test_an_fsync_job_that_raises_is_reported_and_the_queue_goes_on() -> None:
    """A job whose thread raised something other than an fsync error (a bug, a failing
    close) is reported as an error and the queue keeps running the jobs after it: an fsync
    queue that stopped would stop fsyncs for good, unnoticed."""
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[OSError | None] = loop.create_future()
    ok.set_result(None)
    failed: asyncio.Future[OSError | None] = loop.create_future()
    failed.set_result(OSError(5, "Input/output error"))
    raised: asyncio.Future[OSError | None] = loop.create_future()
    raised.set_exception(ValueError("bad file descriptor handling"))
    assert fsyncs.job_error(ok) is None
    assert isinstance(fsyncs.job_error(failed), OSError)
    reported = fsyncs.job_error(raised)
    assert isinstance(reported, OSError)
    assert "ValueError" in str(reported)
