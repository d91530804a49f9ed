"""Readers and the sink worker share one loop: the pacer keeps flooding readers from
starving a worker that is delivering, and never holds readers while the sink is down."""

from __future__ import annotations

import asyncio
import time

from bridge.pacing import Pacer
from bridge.spool import SpoolStats


class Backlog:
    def __init__(self, events: int) -> None:
        self.events = events

    def stats(self) -> SpoolStats:
        return SpoolStats(events=self.events, bytes=self.events * 100)


async def test_no_wait_while_the_worker_keeps_up() -> None:
    """Under the high mark a reader only yields its turn."""
    pacer = Pacer(Backlog(10).stats, lambda: True, high_records=100)
    started = time.monotonic()
    for _ in range(100):
        await pacer()
    assert time.monotonic() - started < 0.5


async def test_readers_wait_until_a_delivering_worker_catches_up() -> None:
    """Over the high mark, with the sink delivering, readers wait until the backlog is under a
    quarter of the mark, and the time waited is reported."""
    backlog = Backlog(1000)
    paused: list[float] = []
    pacer = Pacer(backlog.stats, lambda: True, high_records=100, max_pause=5.0,
                  on_pause=paused.append)  # fmt: skip

    async def worker() -> None:
        await asyncio.sleep(0.1)
        backlog.events = 20

    task = asyncio.create_task(worker())
    started = time.monotonic()
    await asyncio.gather(pacer(), pacer(), pacer())
    waited = time.monotonic() - started
    await task
    assert 0.08 <= waited < 1.0
    assert len(paused) == 1
    assert paused[0] >= 0.08


async def test_a_wait_is_bounded() -> None:
    """A worker that stays behind holds readers at most ``max_pause`` at a time, so sockets
    are still read (and pings answered) many times a second."""
    pacer = Pacer(Backlog(1000).stats, lambda: True, high_records=100, max_pause=0.05)
    started = time.monotonic()
    await pacer()
    assert time.monotonic() - started < 0.3


async def test_no_wait_while_the_sink_is_down() -> None:
    """A sink that is not delivering (down, retrying) never holds the readers: the spool is
    there to take everything meanwhile."""
    pacer = Pacer(Backlog(10**6).stats, lambda: False, high_records=100, max_pause=5.0)
    started = time.monotonic()
    await pacer()
    assert time.monotonic() - started < 0.2


async def test_the_gate_is_held_while_a_reader_waits() -> None:
    """While the worker is behind the gate is held, so other readers stop at their next frame
    rather than after their next few dozen; it opens when the worker has caught up."""
    backlog = Backlog(1000)
    pacer = Pacer(backlog.stats, lambda: True, high_records=100, max_pause=5.0)
    assert not pacer.held()
    waiting = asyncio.create_task(pacer())
    await asyncio.sleep(0.02)
    assert pacer.held()
    backlog.events = 10
    await asyncio.wait_for(waiting, 1.0)
    assert not pacer.held()


async def test_readers_keep_half_the_time_when_the_sink_cannot_keep_up() -> None:
    """A worker that stays behind past ``max_pause`` opens the gate for another ``max_pause``:
    readers pass without waiting meanwhile, then wait again."""
    pacer = Pacer(Backlog(1000).stats, lambda: True, high_records=100, max_pause=0.1)
    await pacer()  # waits up to 0.1 s, the worker does not catch up
    assert not pacer.held()
    started = time.monotonic()
    for _ in range(50):
        await pacer()
    assert time.monotonic() - started < 0.05
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await pacer()
    assert time.monotonic() - started >= 0.05
