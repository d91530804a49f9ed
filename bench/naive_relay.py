"""The relay a user would write by hand: websockets in, ``send_and_wait`` per frame out.

    python bench/naive_relay.py WS_URL TOKEN BOOTSTRAP TOPIC

A peer in the benchmark, to show what the product adds; not part of the product. It
reconnects, but keeps nothing it read when the broker is away, and waits for every ack.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def relay(url: str, token: str, bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, compression_type="zstd"
    )
    await producer.start()
    try:
        async for ws in connect(url, additional_headers={"token": token}, max_size=None):
            try:
                async for message in ws:
                    value = message.encode() if isinstance(message, str) else message
                    await producer.send_and_wait(topic, value)
            except ConnectionClosed:
                continue
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(relay(*sys.argv[1:5]))
