"""Real sockets through real sessions: a quiet socket's messages reach the consumer from the
process's dispatch (no task of the session running them), in the order the upstream sent
them, each once; a consumer that paces gets its pacing awaited by the session task, and the
next messages wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bridge.pipeline import Frame
from bridge.simulator import SimConfig, Simulator
from bridge.upstream.shared import SocketsShared
from bridge.upstream.ws import BATCH_FRAMES
from tests.integration.test_socket_slots import TOKENS, Quiet, source_for


def sequence_of(frame: Frame) -> int:
    """The simulator's per-instance sequence number of a frame (the end of its id)."""
    return int(orjson.loads(frame.raw)["data"]["id"].rsplit("-", 1)[1])


async def test_quiet_sockets_are_handed_their_messages_by_the_dispatch() -> None:
    """Two instances at 20 frames/s: every batch is handed over outside any task (the
    dispatch's callback), the sequence numbers come in order without a gap or a repeat."""
    config = SimConfig(instances=TOKENS, preconfigured=True, rate=20.0)
    async with Simulator(config) as sim:
        shared = SocketsShared()
        seen: dict[str, list[int]] = {name: [] for name in TOKENS}
        in_task: list[bool] = []

        def consumer(name: str) -> Callable[[list[Frame]], Awaitable[None] | None]:
            def consume(batch: list[Frame]) -> Awaitable[None] | None:
                in_task.append(asyncio.current_task() is not None)
                seen[name].extend(sequence_of(frame) for frame in batch)
                return None

            return consume

        sources = {name: source_for(sim.base_url, name, Quiet(), shared) for name in TOKENS}
        tasks = [asyncio.create_task(sources[name].run(consumer(name))) for name in TOKENS]
        for _ in range(300):
            if all(len(numbers) >= 10 for numbers in seen.values()):
                break
            await asyncio.sleep(0.02)
        for source in sources.values():
            await source.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    for numbers in seen.values():
        assert len(numbers) >= 10
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    # in a task, a socket's batch read with the upgrade, and one behind the connection's end
    assert in_task.count(True) <= 2 * len(TOKENS)
    assert in_task.count(False) >= len(TOKENS)


async def test_a_pacing_consumer_is_awaited_by_its_session() -> None:
    """A consumer that asks to be paced after every batch, under a burst of several batches
    at once: the next batch comes only once the last pacing was awaited, by the session's
    own task, and every frame comes once, in order."""
    config = SimConfig(instances={"shop-a": TOKENS["shop-a"]}, preconfigured=True, rate=50.0)
    async with Simulator(config) as sim:
        source = source_for(sim.base_url, "shop-a", Quiet(), SocketsShared())
        awaited_by: list[asyncio.Task[Any] | None] = []
        seen: list[int] = []
        pending: list[bool] = []

        async def pace() -> None:
            awaited_by.append(asyncio.current_task())
            await asyncio.sleep(0.05)
            pending.pop()

        def consume(batch: list[Frame]) -> Awaitable[None]:
            assert not pending  # the last pacing was awaited before this batch came
            seen.extend(sequence_of(frame) for frame in batch)
            pending.append(True)
            return pace()

        task = asyncio.create_task(source.run(consume))
        for _ in range(300):
            if len(seen) >= 5:
                break
            await asyncio.sleep(0.02)
        await sim.burst("shop-a", 3 * BATCH_FRAMES)  # several batches ready at once
        for _ in range(300):
            if len(seen) >= 3 * BATCH_FRAMES + 5:
                break
            await asyncio.sleep(0.02)
        await source.stop()
        await asyncio.wait_for(task, 5)
    assert len(seen) >= 3 * BATCH_FRAMES + 5
    assert seen == list(range(seen[0], seen[0] + len(seen)))
    assert awaited_by
    assert set(awaited_by) == {task}
