"""The process's keepalive ticker: a socket is left alone while the server is heard, pinged
once after a silence, kept when the pong comes, and closed (the source told first) when
nothing answers or the watchdog's silence is reached."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.server import ServerConnection

from bridge.upstream.keepalive import SLICE, Keepalive, due
from tests.integration.harness import eventually
from tests.unit.test_ws_batches import client_of


@pytest.mark.parametrize(
    ("silent", "limit", "pinged", "action"),
    [
        (10.0, 90.0, False, None),  # heard lately
        (25.0, 90.0, False, "ping"),  # silent: one ping
        (30.0, 90.0, True, None),  # pinged, waiting for the pong
        (45.0, 90.0, True, "close"),  # no pong within 20 s
        (3.0, 3.0, False, "close"),  # the watchdog's silence, before any ping
    ],
)
def test_what_a_silent_socket_needs(
    silent: float, limit: float, pinged: bool, action: str | None
) -> None:
    """Ping after 25 s of silence, close 20 s after an unanswered ping or at the watchdog."""
    assert due(silent, limit, pinged) == action


async def quiet(server: ServerConnection) -> None:
    """A server that sends nothing but answers pings (the library does it)."""
    await server.wait_closed()


async def deaf(server: ServerConnection) -> None:
    """A server that stops reading its socket (it answers no ping), then drops it."""
    server.transport.pause_reading()
    await asyncio.sleep(2)
    server.transport.abort()


async def test_a_quiet_server_that_answers_pings_keeps_its_socket() -> None:
    """Silent past ping_after several times over, the socket is pinged, the pongs count as
    heard, and it stays open."""
    keepalive = Keepalive(ping_after=0.2, pong_wait=0.4)
    silent: list[bool] = []
    async with client_of(quiet) as connection:
        connection.last_activity = started = time.monotonic()  # as a session starts
        keepalive.watch(connection, 30.0, lambda: silent.append(True))
        await asyncio.sleep(1.5)
        assert connection.last_activity > started  # a pong was heard
        assert connection.state.name == "OPEN"
    assert silent == []


async def test_a_server_that_answers_no_ping_is_closed_and_the_source_told() -> None:
    """A server that stops answering: pinged after ping_after, closed after pong_wait more;
    the callback runs before the close."""
    keepalive = Keepalive(ping_after=0.2, pong_wait=0.4)
    silent: list[float] = []
    async with client_of(deaf) as connection:
        connection.last_activity = started = time.monotonic()  # as a session starts
        keepalive.watch(connection, 30.0, lambda: silent.append(time.monotonic() - started))
        await eventually(lambda: connection.state.name == "CLOSED" or bool(silent), within=5)
    assert len(silent) == 1
    assert 0.5 <= silent[0] < 2.0  # before the server dropped the socket


class StubTransport(asyncio.Transport):
    """A transport that only notes an abort."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeSocket:
    """A watchable socket that records the keepalive's pings."""

    def __init__(self) -> None:
        self.last_activity = time.monotonic() - 1.0  # silent past ping_after
        self.pings = 0
        self.transport = StubTransport()

    async def ping(self) -> None:
        self.pings += 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


async def test_a_tick_looks_at_thousands_of_sockets_in_slices() -> None:
    """With more sockets than a slice, one tick still pings every silent one, and other
    tasks get turns in between (a fleet's tick no longer holds the loop for all of them)."""
    keepalive = Keepalive(ping_after=0.05, pong_wait=60.0)
    sockets = [FakeSocket() for _ in range(3 * SLICE + 1)]
    turns: list[int] = []

    async def other() -> None:
        while True:
            turns.append(sum(s.pings for s in sockets))
            await asyncio.sleep(0)

    for socket in sockets:
        keepalive.watch(socket, 600.0, lambda: None)
    task = asyncio.create_task(other())
    await eventually(lambda: all(s.pings == 1 for s in sockets), within=5)
    task.cancel()
    inside = {n for n in turns if 0 < n < len(sockets)}
    assert len(inside) >= 3  # other work ran between the slices of the one tick
