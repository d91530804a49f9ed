"""The sockets a process may hold open at once: its open-files limit less what the rest of the
process needs (``bridge.fdlimit.HEADROOM``: spool segments, the sink's connections, admin).

Every instance's source takes a slot just before its upgrade (its config check and its token's
pace come first) and gives it back when the upgrade fails or the session ends. A replica handed
more instances than its limit holds (a cold start where one replica joins alone, or most of a
cluster gone) connects as many as fit; the others wait for a slot, counted and said once per
episode, instead of every socket, spool segment and acknowledgement write past the limit
failing with ``EMFILE`` (seen in the 20,000-instance cluster run: the spool's acknowledged
position could not be saved). When shards move away and sockets close, the waiting instances
connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import deque
from dataclasses import dataclass

from bridge.fdlimit import HEADROOM
from bridge.logs import get_logger

log = get_logger(__name__)
LOG_EVERY = 60.0  # seconds: one warning per episode, at most this often


def slots_for(open_files: int) -> int:
    """Sockets a process allowed ``open_files`` descriptors may hold (pure): all but the
    reserve, and at least half of a small limit."""
    return max(open_files // 2, open_files - HEADROOM)


def process_slots() -> int:
    """Sockets this process may hold, from its soft open-files limit now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return slots_for(soft if soft != resource.RLIM_INFINITY else 1 << 20)


@dataclass
class SlotState:
    limit: int
    used: int = 0
    waiting: int = 0  # sources waiting for a slot now
    waits: int = 0  # times a source waited


class SocketSlots:
    """One per process, shared by every instance's source (see the module's docstring).
    Waiting sources are served first come, first served; a freed slot is handed to the
    oldest waiter."""

    def __init__(self, limit: int) -> None:
        self.state = SlotState(limit)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._logged_at: float | None = None

    async def take(self, stopping: asyncio.Event) -> bool:
        """A slot, once one is free; False (no slot taken) if ``stopping`` is set first."""
        state = self.state
        if stopping.is_set():
            return False
        if not self._waiters and state.used < state.limit:
            state.used += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        state.waits += 1
        state.waiting += 1
        self._say_full()
        stop = asyncio.ensure_future(stopping.wait())
        got = False
        try:
            await asyncio.wait((waiter, stop), return_when=asyncio.FIRST_COMPLETED)
            got = waiter.done() and not waiter.cancelled()
        finally:
            state.waiting -= 1
            stop.cancel()
            if waiter.done() and not waiter.cancelled():
                if not got:  # handed a slot as this wait was cancelled: pass it on
                    self.give()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return got

    def give(self) -> None:
        """A socket's session ended (or its opening failed): its slot goes to the oldest
        waiter, or is free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: ``used`` stays
                return
        self.state.used -= 1

    def _say_full(self) -> None:
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "ws.socket_slots_full",
                limit=self.state.limit,
                action="instances past the open-files limit wait for a socket to close",
            )
