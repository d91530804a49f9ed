"""The disk spool on a real, really full filesystem (a 1 MiB tmpfs) and out of file
descriptors: appends are refused and reported with their reason, never raised; the files
hold no torn entry; the same object takes appends again once the disk has room."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.pipeline import Record
from bridge.spool.disk import DiskSpool
from bridge.spool.recovery import iter_segment_paths, scan_file
from bridge.spool.trouble import QUIET_SECONDS
from tests.diskfull import fill, small_tmpfs
from tests.unit.spools import local_spool
from tests.unit.test_disk_spool import drain, record

DISK_FULL = "spool: disk full (No space left on device)"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "1m") as path:
        yield path


def ids(records: tuple[Record, ...] | list[Record]) -> list[str]:
    return [r.id for r in records]


def assert_no_torn_entry(spool: DiskSpool) -> None:
    """Every segment file is whole entries only, and together they are what the spool counts
    (nothing acknowledged yet)."""
    files = list(iter_segment_paths(spool.directory))
    for path in files:
        assert scan_file(path).clean, path.name
    assert sum(p.stat().st_size for p in files) == spool.stats().bytes


async def test_a_full_disk_refuses_appends_and_recovers_by_itself(small_fs: Path) -> None:
    """Once the filesystem is full, appends are refused with reason disk_full (no exception),
    whatever a short write left is cut back off the file, and ``problem`` says so; acking
    (the ack file cannot be written either) raises nothing. With the filler deleted, the same
    spool takes appends again, ``problem`` is cleared, and every accepted record is read
    back once, in order."""
    spool = local_spool(
        small_fs / "spool", max_bytes=64 << 20, fsync="always", segment_bytes=1 << 20
    )
    errors: list[str] = []
    spool.troubles.on_error = errors.append
    assert spool.append_all([record(n) for n in range(10)]).accepted
    filler = fill(small_fs / "filler")
    accepted = [f"id{n}" for n in range(10)]
    refused: list[str] = []
    for n in range(10, 400, 4):  # the segment's last page may still take a few
        batch = [record(m, size=300) for m in range(n, n + 4)]
        result = spool.append_all(batch)
        if result.accepted:
            assert not refused, "accepted after a refusal while the disk is still full"
            accepted += ids(batch)
            continue
        assert result.reason == "disk_full"
        assert ids(result.dropped) == ids(batch)
        assert list(result.drops()) == [(r, "disk_full") for r in result.dropped]
        refused += ids(batch)
    assert len(refused) >= 300
    assert spool.problem == DISK_FULL
    assert_no_torn_entry(spool.writer)
    got = await asyncio.wait_for(spool.read(5), 2)
    spool.ack(len(got))  # the ack file cannot be written: counted, not raised
    await asyncio.sleep(0.15)
    assert "acknowledged position not saved" in (spool.problem or "")
    assert set(errors) == {"write", "ack"}
    filler.unlink()
    assert spool.append_all([record(n) for n in range(1000, 1005)]).accepted
    await asyncio.sleep(QUIET_SECONDS + 0.2)  # the ack file's retry; the episode's end
    assert spool.append_all([record(n) for n in range(1005, 1010)]).accepted
    assert spool.problem is None
    assert (spool.directory / "ack").read_text() == "5"
    rest = await drain(spool)
    assert ids(got) + rest == accepted + [f"id{n}" for n in range(1000, 1010)]
    spool.close()


async def test_a_new_segment_that_cannot_be_created_is_a_refusal(tmp_path: Path) -> None:
    """Out of file descriptors (EMFILE, a real limit), the segment a full one hands over to
    cannot be opened: the append is refused with reason disk_error and the active segment
    is untouched; with descriptors back, the next append starts the segment, and the
    episode is over once appends succeed a second after the last failure."""
    spool = local_spool(tmp_path, max_bytes=1 << 20, fsync="never", segment_bytes=4096)
    for n in range(30):
        assert spool.append(record(n)).accepted
    before = len(list(iter_segment_paths(tmp_path)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no open() succeeds
    try:
        results = [spool.append(record(n)) for n in range(30, 60)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    refused = [r for r in results if not r.accepted]
    assert refused
    assert {r.reason for r in refused} == {"disk_error"}
    assert spool.problem == "spool: disk error (Too many open files)"
    assert len(list(iter_segment_paths(tmp_path))) == before
    kept = [f"id{n}" for n in range(30)]
    kept += [f"id{n}" for n, res in zip(range(30, 60), results, strict=True) if res.accepted]
    assert spool.append(record(98)).accepted
    assert spool.problem is not None  # one success is not yet the end of an episode
    await asyncio.sleep(QUIET_SECONDS)
    assert spool.append(record(99)).accepted
    assert spool.problem is None
    assert len(list(iter_segment_paths(tmp_path))) == before + 1
    assert await drain(spool) == [*kept, "id98", "id99"]
    spool.close()


async def test_a_spool_that_filled_its_disk_frees_it_once_drained(small_fs: Path) -> None:
    """The spool fills its 1 MiB filesystem by itself (one big segment, disk_full refusals);
    once the reader has acknowledged everything, the next append starts a new segment and
    deletes the drained one, so it is accepted at once (no refusal first), and the ack file,
    which could not be written either, is saved."""
    spool = local_spool(small_fs / "spool", max_bytes=64 << 20, segment_bytes=8 << 20)
    accepted: list[str] = []
    refusals = 0
    for n in range(0, 2000, 10):
        batch = [record(m, size=500) for m in range(n, n + 10)]
        result = spool.append_all(batch)
        if result.accepted:
            accepted += ids(batch)
        else:
            refusals += 1
            assert result.reason == "disk_full"
    assert refusals > 0
    assert await drain(spool, batch=100) == accepted
    assert spool.append_all([record(n, size=500) for n in range(5000, 5010)]).accepted  # > a page
    assert (spool.directory / "ack").read_text() == str(len(accepted))
    assert [p.name for p in iter_segment_paths(spool.directory)] == [
        f"seg-{spool.appended_total() - 9:020d}.log"
    ]
    assert await drain(spool) == [f"id{n}" for n in range(5000, 5010)]
    spool.close()
