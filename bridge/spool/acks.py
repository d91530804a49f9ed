"""The spool's acknowledged position and its ``ack`` file.

The position is where the first unacknowledged entry starts (segment, offset) and the seq of
the last acknowledged one. It is persisted in ``ack`` by write + rename (then an fsync of the
directory), at most every 100 ms and at the latest 100 ms after the last acknowledgement, so a
crash replays at most ~100 ms of acknowledged records. A save the disk refuses (full) is
counted and logged and retried a second later or at the next acknowledgement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.logs import get_logger
from bridge.spool import Acked
from bridge.spool.files import replace_file
from bridge.spool.segments import segment_name
from bridge.spool.trouble import Troubles

ACK_FILE = "ack"
ACK_WRITE_SECONDS = 0.1
ACK_RETRY_SECONDS = 1.1  # after a failed save of the ack position (disk full)
log = get_logger(__name__)


def _nothing() -> None:
    return None


@dataclass
class AckBook:
    """The acknowledged position, in memory and in the ``ack`` file of ``directory``.
    ``before_save`` runs before each save (the writer's disk chores); ``saved_file`` after a
    file was written (the directory's fsync)."""

    directory: Path
    troubles: Troubles
    fsync_always: bool = False
    before_save: Callable[[], None] = _nothing
    saved_file: Callable[[], None] = _nothing
    seq: int = 0  # the last acknowledged entry's seq
    position: tuple[int, int] = (0, 0)  # (segment first seq, offset) of the first unacked
    saved: int = 0  # the seq the ack file holds
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _written_at: float = 0.0

    def load(self) -> int:
        """The seq the ack file holds (0: none, or unreadable), taken as acknowledged."""
        try:
            seq = int((self.directory / ACK_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            seq = 0
        self.seq = self.saved = seq
        return seq

    @property
    def retrying(self) -> bool:
        """A save failed and waits for its retry."""
        return self._timer is not None

    def persist(self) -> None:
        """Save the acknowledged position now if the last save is 100 ms old (or fsync is
        ``always``), else once that is so: a crash replays at most ~100 ms of acks."""
        wait = self._written_at + ACK_WRITE_SECONDS - time.monotonic()
        if wait <= 0 or self.fsync_always:
            self.save()
        else:
            self._save_in(wait)

    def _save_in(self, delay: float) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): the next ack or close saves it
            return
        self._timer = loop.call_later(delay, self._deferred)

    def _deferred(self) -> None:
        self._timer = None
        self.save()

    def save(self) -> None:
        """Write the acknowledged position (write, rename, fsync the directory); a failure
        (disk full) is counted and logged, and retried a second later or at the next ack."""
        self._written_at = time.monotonic()
        self.before_save()
        if self.saved == self.seq:
            return
        try:
            replace_file(self.directory / ACK_FILE, b"%d" % self.seq, fsync=self.fsync_always)
        except OSError as exc:
            self.troubles.failed("ack", exc)
            self._save_in(ACK_RETRY_SECONDS)
            return
        self.saved = self.seq
        self.troubles.succeeded("ack")
        self.saved_file()

    def take(self, stretches: Sequence[Acked], sizes: dict[int, int], next_seq: int) -> list[Acked]:
        """The tail's acknowledgements, oldest first, taken on the books: those taken. A
        stretch in a segment no longer on the books (``sizes``: segment first seq → size;
        dropped meanwhile, full, drop_oldest) or already acknowledged is skipped; one past
        what was written (past the segment's size, or a seq never given out) is refused,
        counted and logged."""
        taken: list[Acked] = []
        for stretch in stretches:
            size = sizes.get(stretch.segment)
            if size is None or stretch.last_seq <= self.seq:
                continue
            if stretch.end > size or stretch.last_seq >= next_seq:
                self._refuse(stretch, size, next_seq)
                continue
            self.position = (stretch.segment, stretch.end)
            self.seq = stretch.last_seq
            taken.append(stretch)
        return taken

    def _refuse(self, stretch: Acked, size: int, next_seq: int) -> None:
        log.error(
            "spool.ack_refused",
            segment=segment_name(stretch.segment),
            end=stretch.end,
            size=size,
            last_seq=stretch.last_seq,
            next_seq=next_seq,
        )
        self.troubles.count("ack_refused")

    def close(self) -> None:
        """Save what is not saved yet; a retry left pending is cancelled (nobody is left)."""
        try:
            self.save()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
