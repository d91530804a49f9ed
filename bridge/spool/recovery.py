"""Start-up recovery of spool segments: keep every intact entry, drop the damaged ones.

A crash mid-write leaves a torn tail; a bad disk can flip a byte anywhere. Each segment is
scanned entry by entry (magic, length, CRC); on damage the scanner looks for the next valid
entry. A damaged segment is rewritten with only its intact entries (write, fsync, rename),
so the reader never meets damage it has not been told about. Nothing here ever blocks: the
worst case is counted, logged, and the spool goes on.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.spool.codec import HEADER_SIZE, MAGIC, checksum, decode_header
from bridge.spool.files import open_private_file


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    start: int
    end: int


@dataclass
class SegmentScan:
    entries: list[Entry]
    damaged: int = 0
    torn_bytes: int = 0
    size: int = 0

    @property
    def clean(self) -> bool:
        return self.damaged == 0 and self.torn_bytes == 0


def entry_at(buf: bytes | mmap.mmap, offset: int) -> Entry | None:
    """The intact entry starting at ``offset``, or None when there is none there."""
    header = decode_header(bytes(buf[offset : offset + HEADER_SIZE]))
    if header is None:
        return None
    end = offset + HEADER_SIZE + header.length
    if end > len(buf):
        return None
    if checksum(header.seq, bytes(buf[offset + HEADER_SIZE : end])) != header.crc:
        return None
    return Entry(header.seq, offset, end)


def next_entry(buf: bytes | mmap.mmap, offset: int) -> Entry | None:
    """The first intact entry at or after ``offset`` (resynchronising on the magic)."""
    position = offset
    while position < len(buf):
        found = buf.find(MAGIC, position)
        if found < 0:
            return None
        entry = entry_at(buf, found)
        if entry is not None:
            return entry
        position = found + 1
    return None


def scan(buf: bytes | mmap.mmap) -> SegmentScan:
    """Every intact entry of a segment's bytes, with what was damaged between them (pure)."""
    result = SegmentScan(entries=[], size=len(buf))
    offset = 0
    while offset < len(buf):
        entry = entry_at(buf, offset)
        if entry is None:
            entry = next_entry(buf, offset + 1)
            if entry is None:
                result.torn_bytes = len(buf) - offset
                if offset + HEADER_SIZE <= len(buf) and _complete_but_bad(buf, offset):
                    result.damaged += 1
                break
            result.damaged += 1
        result.entries.append(entry)
        offset = entry.end
    return result


def _complete_but_bad(buf: bytes | mmap.mmap, offset: int) -> bool:
    """A whole entry whose CRC fails (a flipped byte), as opposed to a torn tail."""
    header = decode_header(bytes(buf[offset : offset + HEADER_SIZE]))
    return header is not None and offset + HEADER_SIZE + header.length <= len(buf)


def scan_file(path: Path) -> SegmentScan:
    size = path.stat().st_size
    if size == 0:
        return SegmentScan(entries=[], size=0)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return scan(mm)


def compacted(entries: list[Entry]) -> list[Entry]:
    """The same entries, where they are once written one after the other from offset 0
    (pure): the positions in a rewritten segment."""
    moved: list[Entry] = []
    offset = 0
    for entry in entries:
        end = offset + entry.end - entry.start
        moved.append(Entry(entry.seq, offset, end))
        offset = end
    return moved


def rewrite(path: Path, scan_result: SegmentScan) -> SegmentScan:
    """Keep only ``path``'s intact entries; returns the scan of the file as it is now, with
    the entries' positions in it. A torn tail alone is cut in place (no space needed, on a
    full disk too); damage inside is rewritten atomically (write, fsync, rename)."""
    entries = scan_result.entries
    intact = sum(entry.end - entry.start for entry in entries)
    if scan_result.damaged == 0 and (not entries or entries[-1].end == intact):
        with path.open("r+b") as handle:
            handle.truncate(intact)
            os.fsync(handle.fileno())
        return SegmentScan(entries=list(entries), size=intact)
    tmp = path.with_suffix(".rewrite")
    try:
        with path.open("rb") as source, open_private_file(tmp, "wb") as target:
            for entry in entries:
                source.seek(entry.start)
                target.write(source.read(entry.end - entry.start))
            target.flush()
            os.fsync(target.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return SegmentScan(entries=compacted(entries), size=intact)


def iter_segment_paths(directory: Path) -> Iterator[Path]:
    yield from sorted(directory.glob("seg-*.log"))
