"""The buffered-frames budget against the real simulator: bursts of near-limit frames on every
socket at once push the bridge past what the budget holds; the readers wait (TCP pushes back on
the simulator), the bytes held never pass the budget (its own gauges say so), the waits are
counted, and every frame sent still ends published."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, running_bridge, scrape, settings_for
from tests.integration.test_relay_upstream import delivered_ids, file_sink

MAX_FRAME = 100_000
BUDGET = 2 * MAX_FRAME  # the smallest budget the settings take: two near-limit frames
TOKENS = {f"shop-{n}": f"tok-budget-{n}-7777" for n in range(4)}


def sample(text: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics answer."""
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} missing"
    return float(match.group(1))


async def flood(sim: Simulator, instance: str) -> None:
    """Twelve frames just under the frame limit, then 300 small ones, as fast as they go."""
    for _ in range(12):
        assert await sim.send_huge(instance, MAX_FRAME - 5_000) is not None
    assert await sim.burst(instance, 300) == 300


async def test_the_budget_holds_under_bursts_and_every_frame_is_published(tmp_path: Path) -> None:
    """Four sockets each sending 1.1 MB at once into a 200 kB budget: the readers wait
    (ryze_bridge_reader_budget_waits_total > 0), ryze_bridge_buffered_bytes and its peak stay
    within ryze_bridge_buffer_budget_bytes, and every frame sent is in the sink."""
    async with Simulator(SimConfig(instances=TOKENS, rate=-1, record_frames=False)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in TOKENS.items()},
            sink=file_sink(tmp_path),
            upstream={"max_frame_bytes": MAX_FRAME, "buffer_budget_bytes": BUDGET},
        )
        async with running_bridge(settings) as bridge:
            port = bridge.admin.port
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in TOKENS))
            seen: list[float] = []

            async def watch() -> None:
                while True:
                    seen.append(sample(await scrape(port), "ryze_bridge_buffered_bytes"))
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            try:
                await asyncio.wait_for(asyncio.gather(*(flood(sim, n) for n in TOKENS)), 60)
                sent = {name: set(sim.sent_ids(name)) for name in TOKENS}
                assert all(len(ids) == 312 for ids in sent.values())
                await eventually(
                    lambda: all(set(delivered_ids(tmp_path, n)) == sent[n] for n in TOKENS)
                )
            finally:
                watcher.cancel()
            text = await scrape(port)
    assert sample(text, "ryze_bridge_buffer_budget_bytes") == BUDGET
    assert 0 < sample(text, "ryze_bridge_buffered_bytes_peak") <= BUDGET
    assert seen
    assert max(seen) <= BUDGET
    assert sample(text, "ryze_bridge_reader_budget_waits_total") > 0
    assert sample(text, "ryze_bridge_reader_budget_wait_seconds_total") > 0
    assert sample(text, "ryze_bridge_buffered_bytes") == 0  # all of it in the spool
