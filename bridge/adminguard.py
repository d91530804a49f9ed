"""The admin port's connection guard, between the listening socket and aiohttp's handler.

- At most ``max_connections`` connections are open at once; one accepted past that is closed
  at once (TLS: as soon as its handshake ends) and counted as ``over_limit``.
- Every connection must send its request's headers within ``header_timeout`` seconds of being
  accepted (TLS handshake included); one that does not — a slowloris trickling bytes, a client
  that connects and says nothing — is closed and counted as ``header_timeout``.
- The admin server answers one request per connection (``Connection: close``,
  :meth:`bridge.admin.AdminServer.guard`), so the headers the timer waits for are the first
  ones and no idle keep-alive connection holds a slot.

The guard wraps aiohttp's protocol object and passes every call through; it only watches the
bytes for the end of the headers (a blank line) and closes the transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

HEADERS_END = (b"\r\n\r\n", b"\n\n")
OVER_LIMIT = "over_limit"
HEADER_TIMEOUT = "header_timeout"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 256
    header_timeout: float = 5.0


def headers_complete(tail: bytes, data: bytes) -> tuple[bool, bytes]:
    """Whether the blank line ending the headers is in ``tail + data``, and the bytes to keep
    for the next call (a blank line may straddle two reads) (pure)."""
    seen = tail + data
    if any(end in seen for end in HEADERS_END):
        return True, b""
    return False, seen[-3:]


class ConnectionGuard:
    """Counts the open connections and makes the per-connection protocol wrappers."""

    def __init__(self, limits: ConnectionLimits, on_drop: Callable[[str], None]) -> None:
        self.limits = limits
        self.on_drop = on_drop
        self.open = 0

    def wrap(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's ``inner`` one."""

        def factory() -> asyncio.Protocol:
            if self.open >= self.limits.max_connections:
                self.on_drop(OVER_LIMIT)
                return Refused()
            self.open += 1
            return GuardedConnection(self, inner())

        return factory


class Refused(asyncio.Protocol):
    """A connection over the limit: closed (reset) as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()  # create_server's: a stream


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the header deadline and the slot kept."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._tail = b""
        self._held = True  # this connection counts in guard.open
        self._expired = False
        self._inner_made = False  # aiohttp saw connection_made
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            guard.limits.header_timeout, self._expire
        )

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._guard.open -= 1

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._expired = True
        self._guard.on_drop(HEADER_TIMEOUT)
        if self._transport is None:  # the TLS handshake has not ended (asyncio ends it too)
            self._release()
        else:
            self._transport.abort()  # connection_lost follows and releases the slot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_server's: a stream
        if self._expired:  # a TLS handshake that ended just after the deadline
            self._transport.abort()
            return
        self._inner_made = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            done, self._tail = headers_complete(self._tail, data)
            if done:
                self._stop_timer()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._release()
        if self._inner_made:
            self._inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = cast(web.Server, self._runner.server)  # set up: BaseSite checked it
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._guard.limits.header_timeout if self._ssl_context else None,
        )
