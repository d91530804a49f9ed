"""The spool's filesystem really full (a 1 MiB tmpfs), end to end: the bridge keeps reading,
counts what the disk refused, says so in readiness, and delivers again by itself once the
disk has room — in the same process, on the same socket.

Prints ``FAULT disk-full: sent=… delivered=… duplicated=… lost=… dropped=…`` (``pytest -s``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.simulator import SimConfig, Simulator
from tests.diskfull import small_tmpfs
from tests.integration.harness import counter, eventually, redis_sink, running_bridge, settings_for
from tests.integration.test_faults import redis_ids, report
from tests.services import Services, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DROPPED = "ryze_bridge_events_dropped_total"
RECEIVED = "ryze_bridge_events_received_total"
PUBLISHED = "ryze_bridge_events_published_total"


@pytest.mark.timeout(180)
async def test_a_full_disk_is_a_full_spool_and_the_bridge_recovers_by_itself(
    services: Services, tmp_path: Path
) -> None:
    """Redis down and the spool's 1 MiB filesystem filling (half by another file, the rest by
    the spool itself): frames the disk refuses are counted as dropped with reason disk_full,
    the write errors in spool_errors_total, readiness names the full disk, and the socket is
    never closed (one upgrade, no reconnect). Then the other file is deleted and Redis comes
    back: the spool drains, and frames sent afterwards are all
    delivered by the same process, and readiness no longer names the disk. Every frame sent
    is delivered or counted as dropped."""
    prefix = unique("diskfull")
    tokens = {"shop": "tok-diskfull-0"}
    with small_tmpfs(tmp_path / "fs", "1m") as fs:
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (512 << 10))
        async with Simulator(SimConfig(instances=tokens, rate=0)) as sim:
            sim.pause("shop")
            settings = settings_for(
                sim.base_url,
                tmp_path,
                instances={"shop": {"token": tokens["shop"]}},
                sink=redis_sink(services.redis_url, prefix),
                spool={"dir": str(fs / "spool"), "fsync": "interval", "max_bytes": 64 << 20},
            )
            await asyncio.to_thread(services.stop, "redis")
            try:
                async with running_bridge(settings) as bridge:
                    await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
                    await sim.burst("shop", 2000)  # ~1.2 MB of frames: more than is left
                    await eventually(lambda: counter(bridge.metrics, RECEIVED) >= 2000)
                    full = counter(bridge.metrics, DROPPED, reason="disk_full")
                    errors = counter(bridge.metrics, "ryze_bridge_spool_errors_total", op="write")
                    ready = await bridge.check_ready()
                    assert full > 0
                    assert errors > 0
                    assert not ready.ready
                    assert "spool: disk full (No space left on device)" in ready.reasons
                    filler.unlink()
                    await asyncio.to_thread(services.start, "redis")
                    await eventually(
                        lambda: counter(bridge.metrics, PUBLISHED) + full >= 2000, within=60
                    )
                    await sim.burst("shop", 500)
                    await eventually(
                        lambda: counter(bridge.metrics, PUBLISHED) + full >= 2500, within=60
                    )
                    late_drops = counter(bridge.metrics, DROPPED) - full
                    await eventually(lambda: bridge.spool.problem is None, within=5)
                    ready = await bridge.check_ready()
                    upgrades = sim.stats("shop")["upgrades"]
            finally:
                await asyncio.to_thread(services.start, "redis")
            sent = sim.sent_ids("shop")
    delivered = await redis_ids(services.redis_url, prefix)
    counts = report("disk-full", sent, delivered, int(full))
    assert upgrades == 1
    assert late_drops == 0
    assert not any("spool" in reason for reason in ready.reasons)
    assert all(frame in counts for frame in sent[2000:])
    assert len(counts) + full == len(sent) == 2500
