"""The spool's segment files, as the writer keeps them on its books.

A segment is a file ``seg-<first seq>.log`` of entries (:mod:`bridge.spool.codec`). At start
:meth:`Segments.recover` takes every segment found back on the books, each repaired where the
disk lets it (a torn tail cut, damaged entries skipped) or else read through the positions of
its intact entries; it never fails the start. Deleting a segment the disk refuses (read-only,
I/O error) is counted, logged and retried later (:meth:`Segments.retry_chores`), like cutting
back what a failed write left.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.spool.codec import read_entry
from bridge.spool.recovery import Entry, SegmentScan, iter_segment_paths, rewrite, scan_file
from bridge.spool.trouble import Troubles

ASIDE = ".dropped"  # suffix of a dropped segment that could not be deleted
log = get_logger(__name__)


@dataclass
class Segment:
    """A segment file: entries from ``first_seq`` on, ``size`` bytes of them (what a failed
    write left beyond, if it could not be cut back, is never read). ``entries``: the
    positions of its intact entries when start-up could not repair it (read through them).
    ``held`` / ``held_bytes``: what of it the writer's books hold (not acknowledged yet);
    what is still held when the segment goes is what no reader could read (damage)."""

    path: Path
    first_seq: int
    count: int = 0
    size: int = 0
    entries: list[Entry] | None = None
    held: int = 0
    held_bytes: int = 0


@dataclass
class RecoveryReport:
    """What start-up found: entries to replay, damaged entries skipped, torn tails cut."""

    replay: int = 0
    damaged: int = 0
    torn: int = 0
    torn_bytes: int = 0


@dataclass
class Recovered:
    """The books after start-up: the first unacknowledged entry's position, the next seq to
    give out, and what is held (bytes on disk)."""

    ack_pos: tuple[int, int] = (0, 0)
    next_seq: int = 1
    bytes: int = 0


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:020d}.log"


def segment_first_seq(path: Path) -> int:
    """The first sequence number a segment file's name carries (ValueError if none)."""
    return int(path.stem.removeprefix("seg-"))


def without_leftovers(result: SegmentScan, next_first: int | None) -> SegmentScan:
    """The scan without entries from ``next_first`` on (a failed write's leftovers, which the
    next segment took the seqs of): those bytes count as a torn tail (pure)."""
    if next_first is None or not result.entries or result.entries[-1].seq < next_first:
        return result
    kept = [entry for entry in result.entries if entry.seq < next_first]
    end = kept[-1].end if kept else 0
    return SegmentScan(kept, result.damaged, result.size - end, result.size)


@dataclass
class Segments:
    """The writer's segments, oldest first (the last is the active one), and the disk chores
    left over: segments to delete, files to cut back to a size."""

    directory: Path
    troubles: Troubles
    report: RecoveryReport = field(default_factory=RecoveryReport)
    live: deque[Segment] = field(default_factory=deque)
    undeleted: list[Path] = field(default_factory=list)
    uncut: dict[Path, int] = field(default_factory=dict)

    @property
    def active(self) -> Segment | None:
        return self.live[-1] if self.live else None

    def by_first_seq(self) -> dict[int, Segment]:
        return {segment.first_seq: segment for segment in self.live}

    # ---- start-up ---------------------------------------------------------------------
    def recover(self, acked_seq: int) -> Recovered:
        """Take every segment found on the books, each read through the positions of its
        intact entries; never fails the start over a disk that cannot hold a repair."""
        books = Recovered()
        for path in self.directory.glob(f"seg-*.log{ASIDE}"):  # dropped, undeletable then
            self.delete(path)
        paths = list(iter_segment_paths(self.directory))
        for index, path in enumerate(paths):
            result = self._scan(path, _first_seq_of(paths[index + 1 : index + 2]))
            if result is None:
                continue
            live = [e for e in result.entries if e.seq > acked_seq]
            if not live:
                self.delete(path)
                continue
            first_seq = segment_first_seq(path)
            segment = Segment(path, first_seq, count=len(result.entries), size=result.size)
            if not result.clean:  # not repaired: read through the scan's positions
                segment.entries = result.entries
                segment.size = result.entries[-1].end
            segment.held, segment.held_bytes = len(live), sum(e.end - e.start for e in live)
            self.live.append(segment)
            books.bytes += segment.held_bytes
            self.report.replay += len(live)
            books.next_seq = max(books.next_seq, result.entries[-1].seq + 1)
            if len(self.live) == 1:
                books.ack_pos = (first_seq, live[0].start)
        books.next_seq = max(books.next_seq, acked_seq + 1)
        return books

    def _scan(self, path: Path, next_first: int | None) -> SegmentScan | None:
        """``path``'s intact entries, repaired on disk where it can be (the positions are
        then those of the file as it is now); entries from ``next_first`` on (the next
        segment's first seq) are what a failed write left: cut like a torn tail. A file that
        cannot be read at all is counted, logged and left out (None)."""
        try:
            result = scan_file(path)
        except (OSError, ValueError) as exc:
            self.failed_op("read", exc, path)
            return None
        result = without_leftovers(result, next_first)
        self.report.damaged += result.damaged
        if result.torn_bytes:
            self.report.torn += 1
            self.report.torn_bytes += result.torn_bytes
        if result.clean:
            return result
        try:
            return rewrite(path, result)
        except OSError as exc:
            self.failed_op("recover", exc, path)
            return result

    def failed_op(self, op: str, error: BaseException, path: Path) -> None:
        if not isinstance(error, OSError):
            error = OSError(0, str(error))
        log.error(f"spool.{op}_failed", segment=path.name, error=error.strerror or str(error))
        self.troubles.failed(op, error)

    # ---- reading back (what drop_oldest drops) ------------------------------------------
    def entries(self, segment: Segment, start: int) -> Iterator[tuple[int, Record, int, int]]:
        """Entries of ``segment`` from offset ``start`` up to its size (never what a failed
        write left beyond), read as they are taken: (seq, record, size on disk, end); through
        the positions start-up found when the file could not be repaired."""
        with segment.path.open("rb") as handle:
            if segment.entries is not None:
                for entry in segment.entries:
                    if entry.start >= start:
                        handle.seek(entry.start)
                        if (found := read_entry(handle)) is not None:
                            yield (*found, entry.end)
                return
            handle.seek(start)
            offset = start
            while offset < segment.size and (read := read_entry(handle)) is not None:
                offset += read[2]
                yield (*read, offset)

    # ---- deleting -----------------------------------------------------------------------
    def drop_oldest(
        self, ack_pos: tuple[int, int], reading: int
    ) -> tuple[Segment, list[Record], tuple[int, int]] | None:
        """Delete the oldest segment the tail has not started reading (never the active
        one): the segment, its unacknowledged records that could be read back, and the
        acknowledged position after it; None when there is none to drop. OSError,
        ValueError: it cannot be read back (the caller's)."""
        candidates = [s for s in list(self.live)[:-1] if s.first_seq > reading]
        if not candidates:
            return None
        segment = candidates[0]
        start = ack_pos[1] if segment is self.live[0] else 0
        dropped = [record for _, record, _, _ in self.entries(segment, start)]
        self.live.remove(segment)
        self.delete(segment.path, aside=True)
        if ack_pos[0] == segment.first_seq:
            ack_pos = (self.live[0].first_seq, 0)
        return segment, dropped, ack_pos

    def forget_acked(self, ack_pos: tuple[int, int]) -> tuple[list[Segment], tuple[int, int]]:
        """Delete the segments wholly acknowledged (never the active one); those deleted,
        and the acknowledged position (at the start of the next segment when its own went)."""
        freed: list[Segment] = []
        while len(self.live) > 1:
            first = self.live[0]
            wholly_acked = first.first_seq < ack_pos[0] or (
                first.first_seq == ack_pos[0] and ack_pos[1] >= first.size
            )
            if not wholly_acked:
                return freed, ack_pos
            freed.append(self.live.popleft())
            self.delete(first.path)
            if ack_pos[0] == first.first_seq:
                ack_pos = (self.live[0].first_seq, 0)
        return freed, ack_pos

    def delete(self, path: Path, *, aside: bool = False) -> None:
        """Delete a segment taken off the books; a disk that refuses (read-only, I/O error)
        is counted and logged, never raised (an acknowledgement must not fail over it), and
        the deletion retried at the next saves of the ack position. A dropped segment
        (``aside``) that cannot be deleted is emptied and renamed out of the readers' sight
        where the disk lets it (neither needs space)."""
        try:
            path.unlink()
        except FileNotFoundError:
            self._forget_undeleted(path)
        except OSError as exc:
            self.troubles.failed("delete", exc)
            log.error("spool.delete_failed", segment=path.name, error=exc.strerror)
            if aside:
                path = _put_aside(path)
            if path not in self.undeleted:
                self.undeleted.append(path)
        else:
            self._forget_undeleted(path)
            self.troubles.succeeded("delete")

    def _forget_undeleted(self, path: Path) -> None:
        if path in self.undeleted:
            self.undeleted.remove(path)

    def cut_back(self, fd: int, segment: Segment) -> None:
        """Remove what a failed write left past the segment's size; when even that fails it
        is counted, logged and retried later (readers never read past the size here, nor
        past the next segment's first seq elsewhere or at start-up)."""
        try:
            os.ftruncate(fd, segment.size)
        except OSError as exc:
            self.uncut[segment.path] = segment.size
            self.failed_op("truncate", exc, segment.path)

    @property
    def chores(self) -> bool:
        return bool(self.undeleted or self.uncut)

    def retry_chores(self) -> None:
        """Retry what the disk refused before: deleting segments, cutting leftovers back."""
        for path in list(self.undeleted):
            self.delete(path)
        for path, size in list(self.uncut.items()):
            try:
                os.truncate(path, size)
            except FileNotFoundError:
                del self.uncut[path]
            except OSError as exc:
                self.troubles.failed("truncate", exc)
            else:
                del self.uncut[path]


def _first_seq_of(paths: list[Path]) -> int | None:
    """The first seq the first of ``paths`` names (None: no path, or not a segment name)."""
    try:
        return segment_first_seq(paths[0]) if paths else None
    except ValueError:
        return None


def _put_aside(path: Path) -> Path:
    """Empty a segment file and rename it so no reader finds it (each as far as the disk
    lets it); the path it has now."""
    with contextlib.suppress(OSError):
        os.truncate(path, 0)
    aside = path.with_name(path.name + ASIDE)
    try:
        path.rename(aside)
    except OSError:
        return path
    return aside


def off_the_books(segment: Segment, read_back: int, troubles: Troubles) -> tuple[int, int]:
    """``segment`` leaves the books: the records and bytes it still held, to take off the
    spool's totals. Of those, what was not read back (``read_back`` records: reported
    dropped) was damaged past reading (the tail skipped it, or drop_oldest could not read
    it): counted (``spool_errors_total{op="damaged"}``, one per entry) and logged, never left
    on the books (a spool that never empties holds every drain to its deadline)."""
    held, held_bytes = segment.held, segment.held_bytes
    lost = held - read_back
    if lost > 0:
        log.error(
            "spool.damaged_entries_dropped",
            segment=segment.path.name,
            entries=lost,
            bytes=held_bytes,
        )
        for _ in range(lost):
            troubles.count("damaged")
    segment.held = segment.held_bytes = 0
    return held, held_bytes
