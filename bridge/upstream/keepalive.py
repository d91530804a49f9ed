"""One ticker for every open socket of the process: the watchdog and the keepalive pings.

A socket is *silent* since the last thing the server sent (a frame, a ping, a pong:
``WatchedConnection.last_activity``). Each tick looks at every socket once:

- silent for ``watchdog_seconds`` → the socket is closed (the source reconnects, reason
  ``watchdog``);
- silent for ``PING_AFTER`` → one ping (a live server's pong ends the silence); no pong within
  ``PONG_WAIT`` → closed the same way (what the library's own keepalive did, 20 s + 20 s);
- otherwise nothing: a server that pings (RyzeAPI does) or sends frames never gets a ping.

Per socket this costs a comparison per tick instead of a sleeping task and a timer per
socket for the watchdog and another for the library's keepalive (thousands of wake-ups a
minute at fleet scale). The tick is 5 s, or a quarter of the shortest watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from websockets.exceptions import ConnectionClosed

PING_AFTER = 25.0  # seconds of silence before a ping (a server pinging every 20 s gets none)
PONG_WAIT = 20.0
MAX_TICK = 5.0
SLICE = 500  # sockets looked at per loop turn (5,000 at once held the loop ~5 ms)
Action = Literal["close", "ping"] | None
Clock = Callable[[], float]


class Closable(Protocol):
    @property
    def transport(self) -> asyncio.Transport: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Watchable(Closable, Protocol):
    last_activity: float

    async def ping(self) -> object: ...


async def close_or_abort(connection: Closable, code: int, reason: str) -> None:
    """The closing handshake of a socket nobody watches any more; if this is cancelled (or
    fails) before it ends, the TCP connection is aborted. The library bounds a close by its
    ``close_timeout`` only inside the coroutine that awaits it: a close cancelled half-way
    would leave the socket waiting for the server to hang up, which a stuck server never does
    (a descriptor lost for the life of the process). A watched socket's close needs none of
    this: its next keepalive ping waits out the close's deadline and aborts it."""
    try:
        await connection.close(code, reason)
    except (Exception, asyncio.CancelledError):
        connection.transport.abort()
        raise


def due(
    silent: float,
    limit: float,
    pinged: bool,
    ping_after: float = PING_AFTER,
    pong_wait: float = PONG_WAIT,
) -> Action:
    """What a socket silent for ``silent`` seconds needs now (pure): ``pinged`` says whether
    it was pinged since it was last heard."""
    if silent >= limit or silent >= ping_after + pong_wait:
        return "close"
    if silent >= ping_after and not pinged:
        return "ping"
    return None


@dataclass(eq=False)
class Watched:
    connection: Watchable
    limit: float  # watchdog_seconds
    on_silent: Callable[[], None]  # told before the socket is closed for silence
    pinged_at: float | None = None


class Keepalive:
    def __init__(
        self,
        *,
        ping_after: float = PING_AFTER,
        pong_wait: float = PONG_WAIT,
        clock: Clock = time.monotonic,
    ) -> None:
        self.ping_after = ping_after
        self.pong_wait = pong_wait
        self.clock = clock
        self._watched: set[Watched] = set()
        self.watches = 0  # sockets watched so far: one per session opened (bridge.heap)
        self.unwatched = 0  # and no longer: closed, or ended (their garbage: bridge.heap)
        self._task: asyncio.Task[None] | None = None
        self._doing: set[asyncio.Task[None]] = set()  # pings and closes under way

    def watch(self, connection: Watchable, limit: float, on_silent: Callable[[], None]) -> Watched:
        """Watch an open socket until :meth:`forget`."""
        entry = Watched(connection, limit, on_silent)
        self._watched.add(entry)
        self.watches += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tick(), name="ws-keepalive")
        return entry

    def forget(self, entry: Watched) -> None:
        if entry in self._watched:
            self._watched.discard(entry)
            self.unwatched += 1

    @property
    def watching(self) -> int:
        """Sockets watched now (every open one)."""
        return len(self._watched)

    async def _tick(self) -> None:
        while self._watched:
            shortest = min(self.ping_after, self.pong_wait, *(e.limit for e in self._watched))
            await asyncio.sleep(min(MAX_TICK, shortest / 4))
            entries = list(self._watched)
            for start in range(0, len(entries), SLICE):  # the loop's other work between slices
                if start:
                    await asyncio.sleep(0)
                self.check_some(entries[start : start + SLICE], self.clock())

    def check(self, now: float) -> None:
        """One look at every watched socket."""
        self.check_some(list(self._watched), now)

    def check_some(self, entries: list[Watched], now: float) -> None:
        """One look at each of ``entries`` still watched."""
        for entry in entries:
            if entry not in self._watched:
                continue  # forgotten since the tick began
            heard = entry.connection.last_activity
            pinged = entry.pinged_at is not None and entry.pinged_at >= heard
            action = due(now - heard, entry.limit, pinged, self.ping_after, self.pong_wait)
            if action == "close":
                self.forget(entry)
                entry.on_silent()
                self._do(close_or_abort(entry.connection, 1001, "silent past watchdog"))
            elif action == "ping":
                entry.pinged_at = now
                self._do(_ping(entry.connection))

    def _do(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._doing.add(task)
        task.add_done_callback(self._doing.discard)


async def _ping(connection: Watchable) -> None:
    """Send one ping; its pong is noted by the connection (no need to wait for it here)."""
    with contextlib.suppress(ConnectionClosed):
        await connection.ping()
