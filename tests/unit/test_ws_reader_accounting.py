"""The socket reader counts every message it read and did not hand over, once: the rest of a
fragmented message under way when the consumer left is not counted again; a message cut off
in fragments by the connection's end is counted; messages completed after the consumer left
are reported once, with the connection's end. Back-pressure really pauses the transport, and a
paused socket still reads the server's close: closing it is a clean handshake, not an abort
after close_timeout. Real sockets throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bridge.upstream.budget import BufferBudget
from bridge.upstream.ws import MAX_FRAGMENTS, PAUSE_FRAMES, MessageReader, WatchedConnection
from tests.unit.test_ws_batches import client_of


def reporting(connection: WatchedConnection) -> tuple[MessageReader, list[int]]:
    """The connection's reader, attached to a roomy budget, and the counts it reports once the
    consumer left (``on_lost``)."""
    reader = connection.reader.attach(BufferBudget(1 << 30))
    reported: list[int] = []
    reader.on_lost = reported.append
    return reader, reported


async def slow_fragments(pause: float) -> AsyncIterator[str]:
    yield "part1-"
    await asyncio.sleep(pause)
    yield "part2"


async def test_a_fragmented_message_under_way_when_the_consumer_leaves_is_counted_once() -> None:
    """The consumer leaves while a message's first fragment is in: close() counts it; its
    last fragment arriving later is not counted again."""

    async def handler(server: ServerConnection) -> None:
        await server.send("before")
        await server.send(slow_fragments(0.3))
        with contextlib.suppress(ConnectionClosed):
            await server.wait_closed()

    async with client_of(handler) as connection:
        reader, reported = reporting(connection)
        assert await asyncio.wait_for(reader.batch(), 5) == [b"before"]
        await asyncio.sleep(0.1)
        assert reader.close() == 1
        await asyncio.sleep(0.5)  # the last fragment arrives
        await connection.close()
    assert reported == []
    assert reader.lost == 0


async def test_a_message_cut_off_by_the_connections_end_is_counted() -> None:
    """The upstream dies after a message's first fragment: the reading ends with the
    connection's error, and the message read in part is among those never handed over."""

    async def handler(server: ServerConnection) -> None:
        await server.send("before")

        async def dying() -> AsyncIterator[str]:
            yield "part1-"
            await asyncio.sleep(0.2)
            server.transport.abort()
            await asyncio.sleep(10)
            yield "never"

        with contextlib.suppress(Exception):
            await server.send(dying())

    async with client_of(handler) as connection:
        reader = connection.reader.attach(BufferBudget(1 << 30))
        assert await asyncio.wait_for(reader.batch(), 5) == [b"before"]
        ended = None
        try:
            await asyncio.wait_for(reader.batch(), 5)
        except ConnectionClosed as exc:
            ended = exc
        assert ended is not None
        assert reader.close() == 1


async def test_messages_completed_after_the_consumer_left_are_reported_once() -> None:
    """After close() the socket is read on (for the closing handshake); the messages the
    server still sends are counted and reported in one call when the connection ends."""

    async def handler(server: ServerConnection) -> None:
        await server.send("first")
        await asyncio.sleep(0.3)
        for i in range(50):
            await server.send(f"late-{i}")
        await asyncio.sleep(0.2)
        await server.close()

    async with client_of(handler) as connection:
        reader, reported = reporting(connection)
        assert await asyncio.wait_for(reader.batch(), 5) == [b"first"]
        assert reader.close() == 0
        await asyncio.wait_for(connection.wait_closed(), 5)
    assert reported == [50]


async def test_back_pressure_pauses_the_transport_and_a_close_is_still_clean() -> None:
    """Messages nobody takes (the budget full) pause the socket's transport; closing it then
    reads the server's close: the handshake completes well within close_timeout, cleanly."""

    async def handler(server: ServerConnection) -> None:
        for _ in range(3 * PAUSE_FRAMES):
            await server.send(b"x" * 1000)
        with contextlib.suppress(ConnectionClosed):
            await server.wait_closed()

    async with client_of(handler) as connection:
        connection.close_timeout = 3
        budget = BufferBudget(1000)
        await budget.take(1000)  # another socket's batch fills the budget
        reader = connection.reader.attach(budget)
        await asyncio.sleep(0.5)
        assert not connection.transport.is_reading()
        assert budget.state.waiting == 1  # counted from the first message held
        started = time.monotonic()
        await connection.close(1001, "bridge stopping")
        took = time.monotonic() - started
        reader.close()
    assert took < 2
    assert connection.protocol.close_rcvd is not None
    assert budget.state.waiting == 0
    assert budget.state.used == 1000


def test_after_a_too_many_fragments_failure_each_later_message_is_counted_once() -> None:
    """Frames parsed in the same read after the failing fragment are not processed: the
    failing message's rest is not counted (it is the frame_too_large one), each later message
    is counted once, whole or in fragments, and one cut off by the connection's end too."""
    from websockets.frames import Frame, Opcode  # noqa: PLC0415

    reader = MessageReader(lambda: None, lambda: None)
    reader.attach(BufferBudget(1 << 30))
    assert reader.frame(Frame(Opcode.TEXT, b"a", fin=False))
    results = [reader.frame(Frame(Opcode.CONT, b"a", fin=False)) for _ in range(MAX_FRAGMENTS)]
    assert results[-1] is False
    assert reader.too_large
    reader.frame(Frame(Opcode.CONT, b"a", fin=True))  # the failing message's rest
    reader.frame(Frame(Opcode.TEXT, b"x"))  # whole
    reader.frame(Frame(Opcode.TEXT, b"y1", fin=False))
    reader.frame(Frame(Opcode.CONT, b"y2", fin=True))  # in fragments
    reader.frame(Frame(Opcode.BINARY, b"z1", fin=False))  # cut off by the end
    assert reader.lost == 2
    reader.end(ConnectionError("gone"))
    assert reader.lost == 3
    assert reader.close() == 3


def test_a_message_we_closed_as_too_large_is_not_counted_again_at_the_end() -> None:
    """A message whose fragments passed the size limit ends the connection with our 1009 (the
    runner counts it as frame_too_large): its fragments in hand are not counted a second time
    when the connection ends; without that close they are counted (cut off)."""
    from websockets.frames import Frame, Opcode  # noqa: PLC0415

    for ours, expected in ((True, 0), (False, 1)):
        reader = MessageReader(lambda: None, lambda: None)
        reader.attach(BufferBudget(1 << 30))
        reader.frame(Frame(Opcode.TEXT, b"first part", fin=False))
        reader.end(ConnectionError("closed"), closed_too_large=ours)
        assert reader.close() == expected


async def test_messages_read_by_a_connection_nobody_took_are_counted_at_its_end() -> None:
    """A connection whose upgrade was abandoned (no session ever attached its reader) still
    counts the messages that came with the answer, once, when it ends."""
    import functools  # noqa: PLC0415

    from websockets.asyncio.client import connect  # noqa: PLC0415
    from websockets.asyncio.server import serve  # noqa: PLC0415

    async def handler(server: ServerConnection) -> None:
        await server.send("with the answer")
        await server.send("and one more")
        await asyncio.sleep(0.3)
        await server.close()

    orphaned: list[int] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        factory = functools.partial(WatchedConnection, on_orphaned=orphaned.append)
        connection = await connect(f"ws://127.0.0.1:{port}", create_connection=factory)  # type: ignore[arg-type]
        await asyncio.wait_for(connection.wait_closed(), 5)
    assert orphaned == [2]
