"""Scale: 1,000 instances in one bridge process at a low event rate.

Every instance has its own token (as RyzeAPI gives one per instance), so the 100/min budget
is per token and all can connect at once; the bridge still spaces each token's calls by it.
Measured: seconds until every instance has its socket (with the timeline), steady RSS, CPU
at 0.2 events/s per instance (200/s in all) and with no events at all (pings only).
Beside it (``peer``), the Benthos-engine peer with as many ``websocket`` inputs, measured the
same way against its own simulator (bench/peers/fleet.py).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    Services,
    bridge_args,
    bridge_config,
    create_topics,
    process,
    sim_stats,
    simulator,
    unique,
    write_bridge_config,
)
from bench.peers import fleet
from bridge.settings import EVENT_NAMES


async def connected(url: str) -> int:
    stats = await sim_stats(url)
    return sum(1 for s in stats["instances"].values() if s["open_sockets"] >= 1)


async def run(services: Services, instances: int = 1000, window: float = 20.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ryze-bench-scale-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.scale")
        topics = [f"{prefix}.{e}" for e in (*EVENT_NAMES, "bridge.gap")]
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"])
        async with simulator(work, instances=instances, rate=0.2, prebuilt=20, mix=None) as source:
            url = source.url
            sink = {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {"bootstrap_servers": services.kafka, "topic": prefix + ".{event}"},
            }
            path = write_bridge_config(work, bridge_config(url, work, sink, instances=instances))
            timeline: list[tuple[float, int]] = []
            async with process(bridge_args(path), work / "bridge.log") as proc:
                started = time.monotonic()
                while True:
                    count = await connected(url)
                    timeline.append((round(time.monotonic() - started, 2), count))
                    if count >= instances or time.monotonic() - started > 300:
                        break
                    await asyncio.sleep(0.5)
                all_connected = time.monotonic() - started
                await asyncio.sleep(10)
                cpu0, t0 = proc.cpu_seconds(), time.monotonic()
                await asyncio.sleep(window)
                busy_cpu = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                rss = proc.rss_bytes()
                async with httpx.AsyncClient(base_url=url) as http:
                    await http.post("/_sim/set_rate", json={"rate": -1})
                await asyncio.sleep(3)
                cpu0, t0 = proc.cpu_seconds(), time.monotonic()
                await asyncio.sleep(window)
                idle_cpu = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                rss_idle = proc.rss_bytes()
                still = await connected(url)
    return {
        "instances": instances,
        "seconds_to_all_connected": round(all_connected, 2),
        "connected_at_end": still,
        "rss_mb": round(max(rss, rss_idle) / 1e6, 1),
        "cpu_low_rate": round(busy_cpu, 4),
        "cpu_idle": round(idle_cpu, 4),
        "timeline": timeline,
        "peer": await fleet.run(services, instances, window),  # the same, Benthos engine
    }
