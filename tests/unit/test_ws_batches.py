"""Frames are read in batches: the message awaited plus the whole ones already read behind it,
in order, bounded, fragmented messages reassembled; server pings reach the connection's
activity note (the one undocumented websockets hook the bridge relies on); the latency
histogram observed a batch at a time holds what observing one by one would hold."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry, Histogram
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from bridge.metrics import BatchHistogram, observe_all
from bridge.upstream.budget import BufferBudget
from bridge.upstream.ws import BATCH_BYTES, BATCH_FRAMES, MAX_FRAGMENTS, WatchedConnection

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def client_of(handler: Handler) -> AsyncIterator[WatchedConnection]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}",
            create_connection=WatchedConnection,
            compression=None,
            max_size=None,
            max_queue=None,
        ) as connection:
            assert isinstance(connection, WatchedConnection)
            yield connection


async def drain(connection: WatchedConnection, expected: int) -> list[list[bytes]]:
    """Batches until ``expected`` messages were read (after the server sent them all)."""
    reader = connection.reader.attach(BufferBudget(1 << 30))
    await asyncio.sleep(0.3)  # everything sent is buffered client side
    batches: list[list[bytes]] = []
    try:
        while sum(map(len, batches)) < expected:
            batches.append(await asyncio.wait_for(reader.batch(), 5))
    finally:
        reader.close()
    return batches


async def test_buffered_messages_come_in_order_in_bounded_batches() -> None:
    """200 messages sent at once are read in batches of at most BATCH_FRAMES, in order, text
    frames as bytes."""

    async def handler(server: ServerConnection) -> None:
        for i in range(200):
            await server.send(f'{{"n":{i}}}')
        await asyncio.sleep(2)

    async with client_of(handler) as connection:
        batches = await drain(connection, 200)
    flat = [m for batch in batches for m in batch]
    assert flat == [f'{{"n":{i}}}'.encode() for i in range(200)]
    assert max(map(len, batches)) == BATCH_FRAMES
    assert len(batches) < 10


async def test_the_handshake_is_let_go_and_frames_still_flow() -> None:
    """Once the handshake is shed (its request, with the token's header, and its response's
    headers freed), the frames after it are still read as messages, in order, and a server
    ping still counts as activity: the library tells its answer from the frames by
    ``response`` not being None, which the emptied answer keeps."""
    pinged = asyncio.Event()

    async def handler(server: ServerConnection) -> None:
        await pinged.wait()
        await server.ping()
        for i in range(20):
            await server.send(f"m{i}")
        await asyncio.sleep(1)

    async with client_of(handler) as connection:
        assert connection.request is not None
        connection.shed_handshake()
        assert connection.request is None
        assert connection.response is not None
        assert not list(connection.response.headers.raw_items())
        before = connection.last_activity
        pinged.set()
        batches = await drain(connection, 20)
        assert connection.last_activity > before
    assert [m for batch in batches for m in batch] == [f"m{i}".encode() for i in range(20)]


async def test_a_batch_stops_at_the_byte_bound() -> None:
    """Large messages end a batch once BATCH_BYTES are in it."""
    size = BATCH_BYTES // 3 + 1

    async def handler(server: ServerConnection) -> None:
        for i in range(6):
            await server.send(bytes([i]) * size)
        await asyncio.sleep(2)

    async with client_of(handler) as connection:
        batches = await drain(connection, 6)
    assert [len(b) for b in batches] == [3, 3]
    assert [m[0] for batch in batches for m in batch] == list(range(6))


async def test_a_fragmented_message_comes_whole_and_in_order() -> None:
    """A message in fragments is reassembled and comes whole, between the messages sent
    before and after it."""

    async def handler(server: ServerConnection) -> None:
        await server.send("a")
        await server.send("b")
        await server.send(iter(["frag-", "ment-", "ed"]))
        await server.send("c")
        await asyncio.sleep(2)

    async with client_of(handler) as connection:
        batches = await drain(connection, 4)
    assert [m for batch in batches for m in batch] == [b"a", b"b", b"frag-ment-ed", b"c"]


async def test_a_message_in_too_many_fragments_fails_the_connection_with_1009() -> None:
    """A message sent in more fragments than MAX_FRAGMENTS fails the connection as the
    library's own reader would (close 1009, which the runner counts as frame_too_large); the
    message before it still comes."""

    async def handler(server: ServerConnection) -> None:
        await server.send("before")
        await server.send(iter(["x"] * (MAX_FRAGMENTS + 10)))
        await server.wait_closed()

    async with client_of(handler) as connection:
        reader = connection.reader.attach(BufferBudget(1 << 30))
        got = await asyncio.wait_for(reader.batch(), 5)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(reader.batch(), 5)
        reader.close()
    assert got == [b"before"]
    assert closed.value.sent is not None
    assert closed.value.sent.code == CloseCode.MESSAGE_TOO_BIG


async def test_a_closed_socket_ends_the_reading_after_the_messages_before_it() -> None:
    """The server sends three messages and closes: the three come first, then the close."""

    async def handler(server: ServerConnection) -> None:
        for i in range(3):
            await server.send(f"m{i}")
        await server.close(code=1001)

    async with client_of(handler) as connection:
        reader = connection.reader.attach(BufferBudget(1 << 30))
        await asyncio.sleep(0.3)
        got = await asyncio.wait_for(reader.batch(), 5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(reader.batch(), 5)
        reader.close()
    assert got == [b"m0", b"m1", b"m2"]


def held_by_the_library() -> int:
    """Bytes still allocated by websockets' own code (its reader's buffers and the frames it
    cut from them), as tracemalloc traced them."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/websockets/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.parametrize("fragments", [1, 4], ids=["whole", "fragmented"])
async def test_a_quiet_socket_keeps_no_copy_of_its_last_big_message(fragments: int) -> None:
    """Once a big message was read and its batch let go, the socket keeps nothing of it while
    it waits for the next frame: the library's parser holds on to the last frame it cut until
    the socket's next one, so a burst of media on a quiet fleet would hold one more copy per
    socket, outside the buffer budget."""
    size = 8 << 20
    part = size // fragments
    measured = asyncio.Event()  # the server sends nothing more (not even a close) until then

    async def handler(server: ServerConnection) -> None:
        if fragments == 1:
            await server.send("x" * size)
        else:  # the last fragment big too (send() of an iterable ends with an empty one)
            protocol = server.protocol
            protocol.send_text(b"x" * part, fin=False)
            for n in range(2, fragments + 1):
                protocol.send_continuation(b"x" * part, fin=n == fragments)
            server.send_data()
        await measured.wait()

    tracemalloc.start()
    try:
        async with client_of(handler) as connection:
            reader = connection.reader.attach(BufferBudget(1 << 30))
            try:
                batch = await asyncio.wait_for(reader.batch(), 5)
                assert [len(message) for message in batch] == [size]
                del batch
                await asyncio.sleep(0.2)  # the server's sending buffers let go too
                assert held_by_the_library() < size // 8  # the library's parser
                assert tracemalloc.get_traced_memory()[0] < size // 8  # the bridge's side too
            finally:
                measured.set()
                reader.close()
    finally:
        tracemalloc.stop()


async def test_a_server_ping_is_seen_as_activity() -> None:
    """A server ping (answered by the library itself) reaches ``on_ping`` and moves
    ``last_activity`` on, though no message is read: the watchdog and the ping count rely on
    websockets calling ``process_event`` for every frame. If a websockets release stops
    doing so, this fails."""
    pinged = asyncio.Event()

    async def handler(server: ServerConnection) -> None:
        await asyncio.sleep(0.2)
        await server.ping()
        await asyncio.sleep(2)

    async with client_of(handler) as connection:
        connection.on_ping = pinged.set
        before = connection.last_activity
        await asyncio.wait_for(pinged.wait(), 5)
        assert connection.last_activity > before


@pytest.mark.parametrize("seed", [1, 2])
def test_observe_all_equals_observing_one_by_one(seed: int) -> None:
    """Bucket counts, count and sum match the client's Histogram observing one by one,
    bounds included."""
    rng = random.Random(seed)
    registry = CollectorRegistry()
    one = Histogram("one", "x", registry=registry)
    many = BatchHistogram("many", "x", (), Histogram.DEFAULT_BUCKETS, registry)
    values = [rng.choice([0.0, 0.005, 0.01, 0.25, 10.0, 1e6, rng.random()]) for _ in range(5000)]
    for value in values:
        one.observe(value)
    observe_all(many.labels(), values)

    def samples(histogram: Histogram | BatchHistogram) -> dict[str, float]:
        return {
            f"{s.name.split('_', 1)[1]}{s.labels}": s.value
            for s in next(iter(histogram.collect())).samples
            if not s.name.endswith("_created")
        }

    got, want = samples(many), samples(one)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value)


def test_batch_bounds_take_at_least_one_and_stop_at_either_bound() -> None:
    """A batch takes at least one message, however big; then messages while under
    BATCH_FRAMES of them and BATCH_BYTES of bytes."""
    from bridge.upstream.ws import batch_bounds  # noqa: PLC0415

    assert batch_bounds([b"x" * (BATCH_BYTES + 5)]) == (1, BATCH_BYTES + 5)
    assert batch_bounds([b"ab"] * (BATCH_FRAMES + 10)) == (BATCH_FRAMES, 2 * BATCH_FRAMES)
    half = b"h" * (BATCH_BYTES // 2)
    assert batch_bounds([half, half, half]) == (2, BATCH_BYTES)
    assert batch_bounds([b"a", b"bc"]) == (2, 3)
