"""Keeping the socket readers from starving the sink worker (they share one event loop).

A flooding socket can be read faster than the sink takes records. The spool takes the
difference, which is what it is for while the sink is down; but while the sink is delivering,
every moment a reader spends reading further ahead is taken from the worker, and the backlog
only grows (the worker then reads it back from disk, slower still).

So readers take turns: every few dozen frames (or a megabyte) a reader yields, and while the
worker is delivering yet behind by more than ``high_records`` or ``high_bytes`` the pacer
closes a gate that every reader checks at each frame. It opens when the backlog is back under
a quarter of the mark, or after ``max_pause``; opened that way (the worker did not catch up),
it stays open for ``max_pause`` before it may close again, so under a load the sink cannot
carry readers still get half the time: sockets are read (and pings answered) many times a
second, and what the sink cannot take goes to the spool. While the sink is down nobody waits.
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
        self._open_until = 0.0

    def behind(self, fraction: float = 1.0) -> bool:
        """The worker is delivering, and the backlog is above ``fraction`` of the mark."""
        stats = self.stats()
        over = (
            stats.events > self.high_records * fraction or stats.bytes > self.high_bytes * fraction
        )
        return over and self.delivering()

    def held(self) -> bool:
        """The gate is closed: a reader should wait (:meth:`__call__`) before its next frame."""
        return not self._open.is_set()

    async def __call__(self) -> None:
        """A reader's turn: yield; wait a little while the worker catches up."""
        await asyncio.sleep(0)
        if self._open.is_set():
            if time.monotonic() < self._open_until or not self.behind():
                return
            self._open.clear()
            self._watcher = asyncio.create_task(self._until_caught_up())
        with contextlib.suppress(TimeoutError):  # the watcher opens it; this is a safety net
            await asyncio.wait_for(self._open.wait(), 2 * self.max_pause)

    async def _until_caught_up(self) -> None:
        started = time.monotonic()
        try:
            while self.behind(0.25) and time.monotonic() - started < self.max_pause:  # noqa: ASYNC110
                await asyncio.sleep(POLL)
            if self.behind(0.25):  # not caught up: readers get their share before the next wait
                self._open_until = time.monotonic() + self.max_pause
        finally:
            self.on_pause(time.monotonic() - started)
            self._open.set()
