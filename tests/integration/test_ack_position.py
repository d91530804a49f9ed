"""The acknowledged position on disk keeps up with the broker: a bridge SIGKILLed after a
backlog was delivered publishes none of it again when it starts.

Prints ``FAULT sigkill-after-drain: …`` (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, redis_sink
from tests.integration.test_faults import bridge_config, redis_ids, report, start_bridge, stop
from tests.services import Services, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(120)
async def test_a_drained_backlog_is_not_published_again_after_a_sigkill(
    services: Services, tmp_path: Path
) -> None:
    """Redis stopped for 3 s while 300 frames/s stream in, then back: the backlog drains in a
    burst of acknowledgements. Half a second after the last one the bridge is SIGKILLed and
    started again on the same spool: it publishes nothing a second time (the acknowledged
    position was saved within ~100 ms of the last ack, though no ack followed it)."""
    prefix = unique("ackpos")
    tokens = {"shop": "tok-ackpos-4"}
    sink = redis_sink(services.redis_url, prefix)
    async with Simulator(SimConfig(instances=tokens, rate=300)) as sim:
        path = bridge_config(tmp_path, sim.base_url, tokens, sink)
        first = await start_bridge(path, tokens)
        try:
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 300, 30)
            await asyncio.to_thread(services.stop, "redis")
            try:
                await asyncio.sleep(3)
            finally:
                await asyncio.to_thread(services.start, "redis")
            sim.pause("shop")
            sent = sim.sent_ids("shop")

            async def drained() -> bool:
                return set(sent) <= set(await redis_ids(services.redis_url, prefix))

            await eventually(drained, within=30, every=0.1)
            await asyncio.sleep(0.5)
        finally:
            await stop(first, signal.SIGKILL)
        second = await start_bridge(path, tokens)
        try:
            await eventually(lambda: sim.stats("shop")["upgrades"] == 2, 30)
            await asyncio.sleep(2)  # a replay would be published by now
        finally:
            await stop(second)
    delivered = await redis_ids(services.redis_url, prefix)
    counts = report("sigkill-after-drain", sent, delivered)
    assert set(counts) == set(sent)
    assert len(sent) > 1000
    assert sum(c - 1 for c in counts.values()) == 0
