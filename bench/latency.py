"""Latency: receipt → broker acknowledgement at fixed offered rates, and how much a neighbour
sending 4 MB frames delays another instance's small frames.

The bench topics keep the broker's append time (``message.timestamp.type=LogAppendTime``),
so for every record the consumer sees ``append time − ryze-received-at`` (receipt off the
socket → written by the broker, i.e. the ack) and ``its own receive time − ryze-received-at``
(the consumer's view). Same machine, same clock; Kafka times are in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from bench.common import (
    HEAD,
    Build,
    Services,
    bridge_args,
    bridge_config,
    create_topics,
    process,
    simulator,
    unique,
    write_bridge_config,
)
from bridge.pipeline.records import HEADER_RECEIVED_AT
from bridge.settings import EVENT_NAMES

LOG_APPEND = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": str(16 << 20)}


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p99/p999/max of ``values`` (milliseconds), nearest-rank (pure)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
    }


def received_ns(headers: Any) -> int | None:
    for key, value in headers or ():
        if key == HEADER_RECEIVED_AT:
            moment = datetime.fromisoformat(value.decode().replace("Z", "+00:00"))
            return int(moment.timestamp() * 1e9)
    return None


def record_latencies(
    received: int | None, append_ms: int, seen_ns: int, since_ns: int
) -> tuple[float, float] | None:
    """(receipt → broker append, receipt → seen by the consumer) in ms of one record, or None
    for a record without a receipt time or received before the window opened: that one waited
    in the consumer's prefetch buffer while it was being assigned, which says nothing about
    the bridge (pure)."""
    if received is None or received < since_ns:
        return None
    return (append_ms * 1e6 - received) / 1e6, (seen_ns - received) / 1e6


async def sample_latency(
    bootstrap: str, topics: list[str], seconds: float
) -> tuple[list[float], list[float]]:
    """(ack latencies, consumer-view latencies) in ms of records appended for ``seconds``."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=32 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    ack: list[float] = []
    seen: list[float] = []
    try:
        await asyncio.sleep(1.0)  # assignment to the end offsets
        since = time.time_ns()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time_ns()
            for records in batches.values():
                for record in records:
                    found = record_latencies(
                        received_ns(record.headers), record.timestamp, now, since
                    )
                    if found is not None:
                        ack.append(found[0])
                        seen.append(found[1])
    finally:
        await consumer.stop()
    return ack, seen


async def at_rate(
    services: Services, rate: float, seconds: float, build: Build = HEAD
) -> dict[str, Any]:
    """One instance at ``rate`` events/s, default fsync policy; latencies of every record."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-lat-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.lat")
        topics = [f"{prefix}.{e}" for e in (*EVENT_NAMES, "bridge.gap")]
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"], configs=LOG_APPEND)
        async with simulator(work, instances=1, rate=rate, prebuilt=1000) as source:
            url = source.url
            sink = {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {"bootstrap_servers": services.kafka, "topic": prefix + ".{event}"},
            }
            path = write_bridge_config(work, bridge_config(url, work, sink, instances=1))
            args = bridge_args(path, build)
            async with process(args, work / "bridge.log", cwd=build.cwd):
                await asyncio.sleep(3)
                ack, seen = await sample_latency(services.kafka, topics, seconds)
    return {
        "rate": rate,
        "delivered_per_s": len(ack) / seconds,
        "ack_ms": percentiles(ack),
        "consumer_ms": percentiles(seen),
    }


async def isolation(services: Services, seconds: float) -> dict[str, Any]:
    """inst-001 sends ~300 B frames at 500/s; measured alone, then with inst-000 sending 4 MB
    frames at 5/s (20 MB/s) through the same bridge. The difference in inst-001's p99 is the
    delay the big frames cause."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-iso-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.iso")
        topics = [f"{prefix}.{e}" for e in (*EVENT_NAMES, "bridge.gap")]
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"], configs=LOG_APPEND)
        async with (
            simulator(
                work,
                instances=2,
                rate=5,
                prebuilt=0,
                media_bytes=4_000_000,
                mix={"message.exchange": 1},
            ) as source,
            httpx.AsyncClient(base_url=source.url) as http,
        ):
            url = source.url

            async def knob(name: str, body: dict[str, Any]) -> None:
                (await http.post(f"/_sim/{name}", json=body)).raise_for_status()

            await knob("set_mix", {"mix": {"message.status": 1}, "instance": "inst-001"})
            await knob("set_rate", {"rate": 500, "instance": "inst-001"})
            await knob("set_rate", {"rate": -1, "instance": "inst-000"})
            sink = {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {
                    "bootstrap_servers": services.kafka,
                    "topic": prefix + ".{event}",
                    "max_request_bytes": 8 << 20,
                },
            }
            path = write_bridge_config(work, bridge_config(url, work, sink, instances=2))
            small = [f"{prefix}.message.status"]
            async with process(bridge_args(path), work / "bridge.log"):
                await asyncio.sleep(3)
                alone, _ = await sample_latency(services.kafka, small, seconds)
                await knob("set_rate", {"rate": 5, "instance": "inst-000"})
                await asyncio.sleep(2)
                crowded, _ = await sample_latency(services.kafka, small, seconds)
                with contextlib.suppress(httpx.HTTPError):
                    await knob("set_rate", {"rate": -1, "instance": "inst-000"})
    before, after = percentiles(alone), percentiles(crowded)
    return {
        "small_alone_ms": before,
        "small_beside_4mb_ms": after,
        "p99_delay_ms": float(after.get("p99", 0)) - float(before.get("p99", 0)),
    }
