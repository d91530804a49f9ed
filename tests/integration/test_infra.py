"""The test infrastructure itself: the real Kafka and Redis answer and keep what they get."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from tests.brokerdump import delete_redis_keys
from tests.services import consume, create_topics, read_stream, unique

pytestmark = pytest.mark.integration


async def test_kafka_roundtrip(kafka_bootstrap: str) -> None:
    """Records produced to the real broker with keys and headers come back byte-identical."""
    topic = unique("infra")
    await create_topics(kafka_bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(20):
            await producer.send_and_wait(
                topic, b'{"n": %d}' % n, key=b"k%d" % (n % 3), headers=[("h", b"v%d" % n)]
            )
    finally:
        await producer.stop()
    records = await consume(kafka_bootstrap, [topic], 20)
    assert sorted(r.value for r in records) == sorted(b'{"n": %d}' % n for n in range(20))
    assert all(r.headers == (("h", b"v" + r.value[6:-1]),) for r in records)


async def test_redis_roundtrip(redis_url: str) -> None:
    """Entries XADDed to the real Redis come back in order with their fields."""
    stream = unique("infra")
    client = Redis.from_url(redis_url)
    try:
        for n in range(10):
            await client.xadd(stream, {"n": str(n), "data": b"\x00\xff"})
        entries = await read_stream(client, stream)
    finally:
        await delete_redis_keys(client, stream)
        await client.aclose()
    assert [e[1][b"n"] for e in entries] == [str(n).encode() for n in range(10)]
    assert all(e[1][b"data"] == b"\x00\xff" for e in entries)
