"""The process-wide budget of bytes read off the sockets and not yet in the spool.

Every socket's reader counts a message into the budget as the message completes, and the bytes
leave the budget once the runner has put the message's batch in the spool. When a message does
not fit (the total would pass ``limit``), its reader holds it outside the budget, stops reading
the socket (the transport pauses: TCP pushes back on the upstream instead of the bridge's
memory growing) and the runner waits for room before it takes the message.
Nothing is dropped: every frame is read once there is room again. A message always fits an
empty budget (the settings keep ``limit`` at least the largest message a socket reads), so
``used`` never passes ``limit``.

What it costs is counted: how many times a reader waited, and the seconds during which at
least one reader waited (:class:`BudgetState`, exported as metrics by ``bridge.metrics``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.logs import get_logger

log = get_logger(__name__)
LOG_EVERY = 10.0  # seconds: one warning per episode, at most this often
Clock = Callable[[], float]


@dataclass
class BudgetState:
    """What the budget holds and what waiting for it has cost so far."""

    limit: int
    used: int = 0
    peak: int = 0
    waits: int = 0
    waiting: int = 0  # readers waiting now
    waited_seconds: float = 0.0  # while at least one reader waited (closed episodes)
    episode_started: float | None = None

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be held now (pure): always into an empty budget."""
        return self.used == 0 or self.used + size <= self.limit

    def seconds_waited(self, now: float) -> float:
        """Seconds with a reader waiting, the episode under way included (pure)."""
        running = 0.0 if self.episode_started is None else now - self.episode_started
        return self.waited_seconds + running


class BufferBudget:
    """One per process, shared by every socket reader (see the module's docstring)."""

    def __init__(self, limit: int, clock: Clock = time.monotonic) -> None:
        self.state = BudgetState(limit)
        self.clock = clock
        self._freed = asyncio.Event()
        self._logged_at: float | None = None

    def take_now(self, size: int) -> bool:
        """Count ``size`` bytes in if they fit now; False (nothing counted) if not."""
        state = self.state
        if not state.fits(size):
            return False
        state.used += size
        state.peak = max(state.peak, state.used)
        return True

    async def take(self, size: int) -> None:
        """Count ``size`` bytes in, once they fit (the wait is counted)."""
        if self.take_now(size):
            return
        self.hold()
        try:
            await self.room_for(size)
        finally:
            self.unhold()
        self.take_now(size)  # (no await since: it fits)

    async def room_for(self, size: int) -> None:
        """Until ``size`` more bytes fit (the wait is the caller's to count: :meth:`hold`)."""
        while not self.state.fits(size):
            self._freed.clear()
            await self._freed.wait()

    def release(self, size: int) -> None:
        """``size`` bytes are in the spool (or were thrown away with their socket)."""
        if size:
            self.state.used -= size
            self._freed.set()

    def hold(self) -> None:
        """A reader holds a message that did not fit and reads nothing more: a wait begins
        (counted; the first of an episode starts its clock and logs, at most every 10 s)."""
        state = self.state
        state.waits += 1
        state.waiting += 1
        if state.waiting == 1:
            state.episode_started = now = self.clock()
            if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                log.warning(
                    "ws.buffer_budget_reached",
                    limit=state.limit,
                    used=state.used,
                    action="readers wait (TCP back-pressure on the upstream), nothing dropped",
                )

    def unhold(self) -> None:
        """The reader's held messages fit now (or were let go with its socket)."""
        state = self.state
        state.waiting -= 1
        if state.waiting == 0 and state.episode_started is not None:
            state.waited_seconds += self.clock() - state.episode_started
            state.episode_started = None
