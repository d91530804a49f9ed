"""The consumer examples, fed at least once by the bridge (duplicates induced by a SIGKILL
and by a replayed batch), handle each frame exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from examples.kafka_consumer import consume as kafka_consume
from examples.redis_consumer import StreamConsumer
from examples.redis_consumer import streams as examples_streams
from tests.integration.harness import eventually, kafka_sink
from tests.integration.test_faults import bridge_config, start_bridge, stop
from tests.services import Services, consume_all, create_topics, read_stream, unique

pytestmark = pytest.mark.integration
TOKENS = {"shop": "tok-example-shop-1", "desk": "tok-example-desk-2"}


async def crash_and_recover(sim: Simulator, path: Path) -> None:
    """Run a bridge process, SIGKILL it mid-stream, run it again until the stream is paused."""
    first = await start_bridge(path, TOKENS)
    await eventually(lambda: all(sim.stats(n)["frames_sent"] > 800 for n in TOKENS), 30)
    await stop(first, signal.SIGKILL)
    second = await start_bridge(path, TOKENS)
    await eventually(lambda: all(sim.stats(n)["upgrades"] == 2 for n in TOKENS), 30)
    await asyncio.sleep(1.0)
    for name in TOKENS:
        sim.pause(name)
    await asyncio.sleep(2.0)
    await stop(second)


async def test_kafka_example_handles_each_frame_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The aiokafka consumer-group example drops every re-delivery by ryze-id and sees the gap
    markers apart: each frame in the topics is handled exactly once."""
    prefix = unique("example")
    topics = [f"{prefix}.{i}.{e}" for i in TOKENS for e in (*EVENT_NAMES, "bridge.gap")]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances=TOKENS, rate=400)) as sim:
        sink = kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", f"{prefix}.dlq")
        await crash_and_recover(sim, bridge_config(tmp_path, sim.base_url, TOKENS, sink))
    records = await consume_all(kafka_bootstrap, topics)
    await replay(kafka_bootstrap, records[:50])  # a retried batch, re-sent byte for byte
    frames = {
        orjson.loads(r.value)["data"].get("id") for r in records if b"bridge.gap" not in r.value
    }

    handled: Counter[str] = Counter()
    gaps: list[dict[str, Any]] = []

    async def on_event(value: dict[str, Any], headers: dict[str, str]) -> None:
        handled[value["data"]["id"]] += 1

    async def on_gap(data: dict[str, Any], headers: dict[str, str]) -> None:
        gaps.append(data)

    done = asyncio.Event()
    task = asyncio.create_task(
        kafka_consume(
            kafka_bootstrap, unique("group"), on_event, on_gap, done, pattern=prefix + r"\..*"
        )
    )
    try:
        await eventually(lambda: set(handled) >= frames, within=60)
    finally:
        done.set()
        await asyncio.wait_for(task, 30)
    assert set(handled) == frames
    assert max(handled.values()) == 1
    assert {g["reason"] for g in gaps} >= {"bridge_start", "bridge_restart"}


async def replay(bootstrap: str, records: list[Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
    finally:
        await producer.stop()


async def test_redis_example_acks_recovers_pending_and_handles_each_frame_once(
    services: Services, tmp_path: Path
) -> None:
    """The XREADGROUP example: a consumer that read entries and died before acking leaves
    them pending; the next consumer claims them, and every frame is handled exactly once
    despite the bridge's re-deliveries."""
    prefix = unique("rexample")
    stream_template = prefix + ":{instance}:{event}"
    sink = {
        "kind": "redis",
        "dlq": f"{prefix}:dlq",
        "redis": {"url": services.redis_url, "stream": stream_template},
    }
    async with Simulator(SimConfig(instances=TOKENS, rate=300)) as sim:
        await crash_and_recover(sim, bridge_config(tmp_path, sim.base_url, TOKENS, sink))
    client = Redis.from_url(services.redis_url)
    try:
        streams = sorted(await examples_streams(client, f"{prefix}:*"))
        frames = set()
        for stream in streams:
            for _, fields in await read_stream(client, stream):
                if fields[b"event"] != b"bridge.gap":
                    frames.add(orjson.loads(fields[b"data"])["data"]["id"])
        group = unique("group")
        handled: Counter[str] = Counter()

        async def on_event(data: bytes, meta: dict[str, str]) -> None:
            handled[orjson.loads(data)["data"]["id"]] += 1

        async def ignore(data: bytes, meta: dict[str, str]) -> None:
            return None

        for stream in streams:  # consumer "crashed" reads without handling or acking
            await client.xgroup_create(stream, group, id="0")
            await client.xreadgroup(group, "crashed", {stream: ">"}, count=20)
        survivor = StreamConsumer(
            client, group, "survivor", on_event, ignore, match=f"{prefix}:*", min_idle_ms=0
        )
        done = asyncio.Event()
        task = asyncio.create_task(survivor.run(done))
        try:
            await eventually(lambda: set(handled) >= frames, within=60)
        finally:
            done.set()
            await asyncio.wait_for(task, 30)
        pending = [await client.xpending(stream, group) for stream in streams]
    finally:
        await client.aclose()
    assert set(handled) == frames
    assert max(handled.values()) == 1
    assert all(p["pending"] == 0 for p in pending)
