"""The process-wide buffered-frames budget: readers of real sockets sharing a small budget
stop reading when it is full and read everything once there is room (nothing dropped, order
kept); the bytes held never pass the budget; waiting is counted; a closed reader gives back
what it held."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.server import ServerConnection

from bridge.upstream.budget import BudgetState, BufferBudget
from bridge.upstream.ws import MessageReader, WatchedConnection
from tests.unit.test_ws_batches import client_of

SIZE = 100_000
COUNT = 30


async def sender(server: ServerConnection) -> None:
    for i in range(COUNT):
        await server.send(bytes([i]) * SIZE)
    await server.wait_closed()


def reading(connection: WatchedConnection, budget: BufferBudget) -> MessageReader:
    return connection.reader.attach(budget)


async def read_slowly(reader: MessageReader, seen: list[int]) -> None:
    """Take batches with a pause before each is done (a consumer slower than the socket)."""
    while len(seen) < COUNT:
        batch = await asyncio.wait_for(reader.batch(), 5)
        seen.extend(m[0] for m in batch)
        await asyncio.sleep(0.02)
        reader.done()


async def test_readers_sharing_a_full_budget_wait_and_lose_nothing() -> None:
    """Two sockets each sending 30 messages of 100 kB into a 300 kB budget: every message
    arrives, in order, the bytes held never pass 300 kB, and the readers' waits are counted."""
    budget = BufferBudget(3 * SIZE)
    async with client_of(sender) as first, client_of(sender) as second:
        readers = [reading(first, budget), reading(second, budget)]
        seen: list[list[int]] = [[], []]
        try:
            await asyncio.gather(*(read_slowly(r, s) for r, s in zip(readers, seen, strict=True)))
        finally:
            for reader in readers:
                reader.close()
    assert seen == [list(range(COUNT)), list(range(COUNT))]
    state = budget.state
    assert 0 < state.peak <= 3 * SIZE
    assert state.waits > 0
    assert state.seconds_waited(budget.clock()) > 0
    assert state.used == 0  # the closed readers gave back what they held


def test_a_message_always_fits_an_empty_budget_and_never_overfills_one() -> None:
    """An empty budget takes any message; a non-empty one only what keeps it within."""
    state = BudgetState(limit=100)
    assert state.fits(500)
    state.used = 60
    assert state.fits(40)
    assert not state.fits(41)


async def test_a_waiting_reader_resumes_when_bytes_are_released() -> None:
    """A take that does not fit waits until a release makes room; the wait is counted."""
    budget = BufferBudget(100)
    await budget.take(80)
    waiting = asyncio.create_task(budget.take(50))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert budget.state.waiting == 1
    budget.release(80)
    await asyncio.wait_for(waiting, 1)
    assert budget.state.used == 50
    assert budget.state.waits == 1
    assert budget.state.waiting == 0


async def test_a_message_held_waiting_for_room_is_counted_when_the_reader_closes() -> None:
    """A message read off the socket while the budget is full is held outside it and the
    consumer waits for room (counted as a wait); the consumer leaving then (the socket ends)
    counts it among the messages never taken, and what the budget holds is unchanged (the
    held message never entered it)."""
    budget = BufferBudget(SIZE)
    await budget.take(SIZE)  # another socket's batch fills the budget

    async def one(server: ServerConnection) -> None:
        await server.send(b"x" * SIZE)
        await server.wait_closed()

    async with client_of(one) as client:
        reader = reading(client, budget)
        taking = asyncio.create_task(reader.batch())
        for _ in range(500):  # at most 5 s for the message to reach the full budget
            if budget.state.waiting:
                break
            await asyncio.sleep(0.01)
        assert budget.state.waiting == 1
        assert not taking.done()
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        left = reader.close()
    assert left == 1
    assert budget.state.used == SIZE
    assert budget.state.waiting == 0
