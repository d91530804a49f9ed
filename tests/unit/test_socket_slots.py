"""Socket slots: a process holds at most its open-files limit less a reserve of sockets;
sources past it wait in order and connect as sockets close; a stopping source stops waiting;
a slot handed to a wait being cancelled is passed on, never lost; the count of slots used
never passes the limit."""

from __future__ import annotations

import asyncio
import contextlib

from bridge.fdlimit import HEADROOM
from bridge.upstream.slots import SocketSlots, slots_for


async def test_waiters_get_freed_slots_first_come_first_served() -> None:
    """Two slots, four takers: two take at once, two wait and are served in the order they
    came as slots are given back; used never passes the limit."""
    slots = SocketSlots(2)
    stopping = asyncio.Event()
    assert await slots.take(stopping)
    assert await slots.take(stopping)
    order: list[str] = []

    async def take(name: str) -> None:
        assert await slots.take(stopping)
        order.append(name)

    third = asyncio.create_task(take("third"))
    await asyncio.sleep(0)
    fourth = asyncio.create_task(take("fourth"))
    await asyncio.sleep(0.01)
    assert slots.state.waiting == 2
    assert slots.state.waits == 2
    slots.give()
    await asyncio.wait_for(third, 1)
    assert order == ["third"]
    assert not fourth.done()
    slots.give()
    await asyncio.wait_for(fourth, 1)
    assert order == ["third", "fourth"]
    assert slots.state.used == 2
    assert slots.state.waiting == 0


async def test_a_stopping_source_stops_waiting_without_a_slot() -> None:
    """A source waiting for a slot returns False once it is told to stop; nothing is taken."""
    slots = SocketSlots(1)
    assert await slots.take(asyncio.Event())
    stopping = asyncio.Event()
    waiting = asyncio.create_task(slots.take(stopping))
    await asyncio.sleep(0.01)
    stopping.set()
    assert await asyncio.wait_for(waiting, 1) is False
    assert slots.state.used == 1
    assert slots.state.waiting == 0
    slots.give()
    assert slots.state.used == 0


async def test_a_slot_handed_to_a_cancelled_wait_goes_to_the_next() -> None:
    """A wait cancelled in the same turn its slot was handed over passes the slot on to the
    next waiter (or frees it): no slot is lost."""
    slots = SocketSlots(1)
    stopping = asyncio.Event()
    assert await slots.take(stopping)
    first = asyncio.create_task(slots.take(stopping))
    await asyncio.sleep(0)
    second = asyncio.create_task(slots.take(stopping))
    await asyncio.sleep(0.01)
    slots.give()  # handed to the first waiter ...
    first.cancel()  # ... whose task is cancelled before it runs again
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1)
    assert slots.state.used == 1
    slots.give()
    assert slots.state.used == 0


def test_slots_are_the_open_files_less_the_reserve() -> None:
    """The limit less the reserve for the spool, the sink and admin; half of a small limit."""
    assert slots_for(20_000) == 20_000 - HEADROOM
    assert slots_for(1024) == 1024 - HEADROOM
    assert slots_for(256) == 128
