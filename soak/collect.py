"""Everything the sinks and DLQs hold, read back at the end (and a topic's records just
before the soak deletes it): the ground truth to set against what the simulator sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from soak.invariants import Seen, frame_id_of


def unix(rfc3339: str) -> float:
    try:
        return datetime.fromisoformat(rfc3339).timestamp()
    except ValueError:
        return 0.0


def seen_from_kafka(message: Any, generation: int) -> Seen:
    headers = {k: v.decode("utf-8", "replace") for k, v in (message.headers or [])}
    value: bytes = message.value or b""
    return Seen(
        instance=headers.get("ryze-instance", ""),
        frame_id=frame_id_of(value),
        ryze_id=headers.get("ryze-id", ""),
        where=message.topic,
        position=(generation, message.partition, message.offset),
        received_at=unix(headers.get("ryze-received-at", "")),
        acked_at=message.timestamp / 1000,
        dlq_reason=headers.get("ryze-dlq-reason"),
    )


async def read_kafka(
    bootstrap: str, topics: Iterable[str], generations: dict[str, int], within: float = 120.0
) -> tuple[list[Seen], list[bytes]]:
    """Every record of ``topics`` from the beginning to the end offsets of now; the Seen
    records and the raw values and headers (to look for tokens)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    seen: list[Seen] = []
    raw: list[bytes] = []
    try:
        partitions = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in parts]
        if not partitions:
            return seen, raw
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + within
        while left and time.monotonic() < deadline:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=20000)
            for tp, messages in batches.items():
                for message in messages:
                    seen.append(seen_from_kafka(message, generations.get(tp.topic, 0)))
                    raw.append(message.value or b"")
                    raw.extend(v for _, v in message.headers or [])
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        if left:
            raise RuntimeError(f"could not read {sorted(map(str, left))} within {within} s")
    finally:
        await consumer.stop()
    return seen, raw


def entry_position(entry_id: bytes) -> tuple[float, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms) / 1000, int(ms) * 1_000_000 + int(seq or 0)


async def read_redis(client: aioredis.Redis) -> tuple[list[Seen], list[bytes]]:
    """Every entry of every ``ryze:*`` stream."""
    seen: list[Seen] = []
    raw: list[bytes] = []
    async for key in client.scan_iter(match="ryze:*", _type="stream", count=1000):
        start = "-"
        while True:
            entries: Any = await client.xrange(key, min=start, max="+", count=5000)
            if not entries:
                break
            for entry_id, fields in entries:
                seen.append(seen_from_redis(key.decode(), entry_id, fields))
                raw.extend(fields.values())
            last = bytes(entries[-1][0]).decode()
            ms, _, seq = last.partition("-")
            start = f"{ms}-{int(seq) + 1}"
            await asyncio.sleep(0)
    return seen, raw


def seen_from_redis(stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Seen:
    text = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items() if k != b"data"}
    acked, position = entry_position(entry_id)
    reason = text.get("reason")
    return Seen(
        instance=text.get("instance", ""),
        frame_id=frame_id_of(fields.get(b"data", b"")),
        ryze_id=text.get("id", ""),
        where=stream,
        position=(0, 0, position),
        received_at=unix(text.get("received_at", "")),
        acked_at=acked,
        dlq_reason=reason if reason else None,
    )


def leaks(blobs: Iterable[bytes], tokens: Iterable[str], where: str) -> list[str]:
    """Where any token appears in ``blobs``."""
    needles = [t.encode() for t in tokens]
    found = []
    for blob in blobs:
        for needle in needles:
            if needle in blob:
                found.append(f"{where}: token of length {len(needle)}")
                break
    return found
