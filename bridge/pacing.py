"""Keeping the socket readers from starving the sink worker (they share one event loop).

A flooding socket can be read faster than the sink takes records. The spool takes the
difference, which is what it is for while the sink is down; but while the sink is delivering,
every moment a reader spends reading further ahead is taken from the worker, and the backlog
only grows (the worker then reads it back from disk, slower still). So every few dozen frames
a reader yields, and while the worker is delivering yet behind by more than ``high_records``
or ``high_bytes``, readers wait until it is back under a quarter of that, at most
``max_pause`` at a time. The waits are short and bounded, so every socket is still read (and
its pings answered) many times a second; while the sink is down nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from bridge.spool import SpoolStats

HIGH_RECORDS = 20_000
HIGH_BYTES = 48 * 1024 * 1024
MAX_PAUSE = 0.05
POLL = 0.002


class Pacer:
    def __init__(
        self,
        stats: Callable[[], SpoolStats],
        delivering: Callable[[], bool],
        *,
        high_records: int = HIGH_RECORDS,
        high_bytes: int = HIGH_BYTES,
        max_pause: float = MAX_PAUSE,
        on_pause: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.stats = stats
        self.delivering = delivering
        self.high_records = high_records
        self.high_bytes = high_bytes
        self.max_pause = max_pause
        self.on_pause = on_pause
        self._open = asyncio.Event()
        self._open.set()
        self._watcher: asyncio.Task[None] | None = None

    def behind(self, fraction: float = 1.0) -> bool:
        """The worker is delivering, and the backlog is above ``fraction`` of the mark."""
        stats = self.stats()
        over = (
            stats.events > self.high_records * fraction or stats.bytes > self.high_bytes * fraction
        )
        return over and self.delivering()

    async def __call__(self) -> None:
        """A reader's turn: yield; wait a little while the worker catches up."""
        await asyncio.sleep(0)
        if self._open.is_set():
            if not self.behind():
                return
            self._open.clear()
            self._watcher = asyncio.create_task(self._until_caught_up())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), self.max_pause)

    async def _until_caught_up(self) -> None:
        started = time.monotonic()
        try:
            while self.behind(0.25) and time.monotonic() - started < self.max_pause:  # noqa: ASYNC110
                await asyncio.sleep(POLL)
        finally:
            self.on_pause(time.monotonic() - started)
            self._open.set()
