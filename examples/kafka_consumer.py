"""Consume ryze-bridge topics with an aiokafka consumer group, each frame handled once.

    python examples/kafka_consumer.py --bootstrap kafka:9092 --group my-service

- subscribes to every ``ryze.*`` topic (a regex; new instances' topics are picked up);
- drops re-deliveries by ``ryze-id`` within a bounded window (the bridge is at-least-once);
- hands gap markers (``bridge.gap``) to their own callback, to alert or reconcile;
- commits offsets only after the batch was handled (a crash re-reads, the window de-dups).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from examples.dedup import SeenWindow

Handler = Callable[[dict[str, Any], dict[str, str]], Awaitable[None]]


def header_map(headers: Any) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in headers or ()}


async def consume(
    bootstrap: str,
    group: str,
    on_event: Handler,
    on_gap: Handler,
    stop: asyncio.Event,
    *,
    pattern: str = r"ryze\..*",
    window: int = 10_000,
) -> None:
    """Run until ``stop`` is set; every distinct record reaches exactly one callback once."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=5_000,
    )
    consumer.subscribe(pattern=pattern)
    seen = SeenWindow(window)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
            for records in batches.values():
                for record in records:
                    headers = header_map(record.headers)
                    if not seen.first_time(headers.get("ryze-id", "")):
                        continue
                    value = json.loads(record.value)
                    if headers.get("ryze-event") == "bridge.gap":
                        await on_gap(value["data"], headers)
                    else:
                        await on_event(value, headers)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def _print(value: dict[str, Any], headers: dict[str, str]) -> None:
    print(headers["ryze-instance"], headers["ryze-event"], headers["ryze-received-at"])


async def _gap(data: dict[str, Any], headers: dict[str, str]) -> None:
    print(f"GAP {data['instance']}: {data['last_frame_at']} .. {data['connected_at']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default="ryze-example")
    args = parser.parse_args()
    asyncio.run(consume(args.bootstrap, args.group, _print, _gap, asyncio.Event()))


if __name__ == "__main__":
    main()
