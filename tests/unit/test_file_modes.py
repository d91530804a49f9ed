"""Files the bridge creates are its own: the spool's segments, ``ack``, ``lock`` and a
rewritten segment, ``last-seen.json`` and the file sink's outputs are ``0600`` and the
directories it creates ``0700``, whatever the process umask (what the upstream sent is not
everyone's to read)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.lastseen import LastSeen
from bridge.sinks.file import FileSink
from tests.unit.spools import local_spool
from tests.unit.test_spool_worker import record


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive usual umask (022): files would be 0644 and directories 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything below it, by relative path."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


async def test_the_spool_s_files_and_directories_are_private(
    tmp_path: Path, open_umask: None
) -> None:
    """A spool made in a missing directory, written, read, acknowledged and closed, with the
    last-seen map saved beside it: every file 0600, every directory it made 0700."""
    root = tmp_path / "state"
    spool = local_spool(root / "spool", segment_bytes=4096)
    for n in range(200):
        spool.append(record(n))
    batch = await spool.read(1000)
    spool.ack(len(batch) // 2)
    last_seen = LastSeen(root / "spool" / "last-seen.json")
    last_seen.set("shop", 1)
    last_seen.save()
    spool.close()
    found = modes(root)
    assert found["."] == 0o700
    assert found["spool"] == 0o700
    files = {name: mode for name, mode in found.items() if name not in {".", "spool"}}
    assert {"spool/ack", "spool/lock", "spool/last-seen.json"} <= set(files)
    assert any(name.startswith("spool/seg-") for name in files)
    assert set(files.values()) == {0o600}, files


async def test_the_file_sink_s_outputs_are_private(tmp_path: Path, open_umask: None) -> None:
    """The file sink's events and DLQ files, and the directory it creates for them, are
    0600 / 0700."""
    sink = FileSink(tmp_path / "out" / "events.jsonl", "dead.jsonl")
    await sink.start()
    await sink.close()
    assert modes(tmp_path / "out") == {
        ".": 0o700,
        "events.jsonl": 0o600,
        "dead.jsonl": 0o600,
    }
