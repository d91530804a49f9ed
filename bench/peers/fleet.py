"""The Benthos-engine peer at fleet scale: one process with as many ``websocket`` inputs as the
bridge has instances (each with its own token, all merged by a ``broker`` input) into one
Kafka topic through the same franz-go output as the throughput peer (``bench/peers/benthos``).

Measured as the scale part measures the bridge, against the same simulator: seconds until
every instance has its socket, RSS, CPU at 1 event/s per instance (in cores, and per event
delivered: process CPU time, not wall time) and with no events at all (pings only).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import (
    Proc,
    Services,
    create_topics,
    delete_created_topics,
    kafka_count,
    process,
    read_services,
    sim_stats,
    simulator,
    unique,
)
from bench.throughput import benthos_binary, benthos_config
from bridge import eventloop

RATE = 1.0  # events/s per instance while measuring CPU per event


def fleet_config(url: str, instances: int, kafka: str, topic: str) -> dict[str, Any]:
    """A Benthos config: ``instances`` websocket inputs (``inst-000`` with ``tok-000``, …) in
    one broker input, the franz-go output with the bridge's producer settings (pure)."""
    ws = url.replace("http://", "ws://")
    urls = [f"{ws}/ws/inst-{n:03d}?token=tok-{n:03d}" for n in range(instances)]
    inputs = [{"websocket": {"url": u}} for u in urls]
    return benthos_config({"broker": {"inputs": inputs}}, kafka, topic)


async def connected(url: str) -> int:
    """Instances with a socket; 0 while the simulator is too busy to answer (it serves
    thousands of sockets connecting at once)."""
    try:
        stats = await sim_stats(url)
    except httpx.HTTPError:
        return 0
    return sum(1 for s in stats["instances"].values() if s["open_sockets"] >= 1)


async def cpu_over(proc: Proc, window: float) -> tuple[float, float]:
    """(CPU seconds the process used, wall seconds) over ``window``."""
    cpu0, t0 = proc.cpu_seconds(), time.monotonic()
    await asyncio.sleep(window)
    return proc.cpu_seconds() - cpu0, time.monotonic() - t0


async def run(services: Services, instances: int, window: float = 20.0) -> dict[str, Any] | None:
    """The peer's fleet figures, or None when the peer is not built (scripts/bench.sh)."""
    binary = benthos_binary()
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ryze-bench-peer-fleet-") as tmp:
        work = Path(tmp)
        topic = unique("bench.peer.fleet")
        await create_topics(services.kafka, [topic])
        async with simulator(work, instances=instances, rate=RATE, prebuilt=20, mix=None) as src:
            path = work / "benthos.yaml"
            config = fleet_config(src.url, instances, services.kafka, topic)
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            async with process([str(binary), "-c", str(path)], work / "benthos.log") as proc:
                started = time.monotonic()
                while await connected(src.url) < instances:
                    if time.monotonic() - started > 300:
                        break
                    await asyncio.sleep(0.5)
                all_connected = time.monotonic() - started
                await asyncio.sleep(10)
                first = await kafka_count(services.kafka, [topic])
                busy, elapsed = await cpu_over(proc, window)
                events = await kafka_count(services.kafka, [topic]) - first
                rss = proc.rss_bytes()
                async with httpx.AsyncClient(base_url=src.url, timeout=60) as http:
                    await http.post("/_sim/set_rate", json={"rate": -1})
                await asyncio.sleep(3)
                idle, idle_elapsed = await cpu_over(proc, window)
                still = await connected(src.url)
                rss = max(rss, proc.rss_bytes())
    return {
        "instances": instances,
        "seconds_to_all_connected": round(all_connected, 2),
        "connected_at_end": still,
        "rss_mb": round(rss / 1e6, 1),
        "events_per_s": round(events / elapsed, 1),
        "cpu_at_1_per_s": round(busy / elapsed, 4),
        "cpu_us_per_event": round(busy / max(1, events) * 1e6, 1),
        "cpu_idle": round(idle / idle_elapsed, 4),
    }


async def main(argv: list[str] | None = None) -> None:
    """``python -m bench.peers.fleet --instances 1000,5000``: the peer alone, one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", default="1000")
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args(argv)
    services = read_services()
    try:
        for count in (int(n) for n in args.instances.split(",")):
            print(f"peer fleet: {await run(services, count, args.window)}", flush=True)
    finally:
        await delete_created_topics(services.kafka)


if __name__ == "__main__":
    eventloop.run(main())
