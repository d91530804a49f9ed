"""Consume ryze-bridge topics with an aiokafka consumer group, each frame handled once.

    python -m examples.kafka_consumer --bootstrap kafka:9092 --group my-service

- subscribes to the bridge's event and gap-marker topics (``DEFAULT_PATTERN``, a regex; new
  instances' topics are picked up); the DLQ is left out (read it apart: its records are raw
  frames, possibly not JSON), and a dead letter a custom pattern reaches is skipped;
- drops re-deliveries by ``ryze-id`` within a bounded window (the bridge is at-least-once);
- logs and skips a record that is not the bridge's: one without a ``ryze-id`` header, or whose
  value is not a JSON object (a tombstone, another producer's bytes), and commits past it;
- hands gap markers (``bridge.gap``) to their own callback, to alert or reconcile;
- commits offsets only after the batch was handled (a crash re-reads what was not committed:
  the window lives in memory, so keep handling idempotent or persist the ids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from examples.dedup import SeenWindow

log = logging.getLogger("kafka_consumer")
Handler = Callable[[dict[str, Any], dict[str, str]], Awaitable[None]]

# The topics of the default template ryze.{event} (ryze.message.exchange, ryze.bridge.gap) and
# of the per-instance ryze.{instance}.{event} alike: a prefix, then at least two dot-separated
# parts. The DLQ (default ryze.dlq) has one, so it is not matched.
DEFAULT_PATTERN = r"ryze\.[^.]+\..+"


def header_map(headers: Any) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in headers or ()}


def json_object(value: bytes | None) -> dict[str, Any] | None:
    """A record value decoded as a JSON object; None for a tombstone or anything else (pure)."""
    if value is None:
        return None
    try:
        document = json.loads(value)
    except ValueError:  # not UTF-8 or not JSON
        return None
    return document if isinstance(document, dict) else None


def foreign(headers: dict[str, str], value: dict[str, Any] | None) -> str | None:
    """Why a record is not one the bridge wrote, or None when it is (pure)."""
    if not headers.get("ryze-id"):
        return "no ryze-id header"
    if value is None:
        return "its value is not a JSON object"
    if headers.get("ryze-event") == "bridge.gap" and not isinstance(value.get("data"), dict):
        return "a gap marker without data"
    return None


async def consume(
    bootstrap: str,
    group: str,
    on_event: Handler,
    on_gap: Handler,
    stop: asyncio.Event,
    *,
    pattern: str = DEFAULT_PATTERN,
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
                    if "ryze-dlq-reason" in headers:
                        log.warning("skipped a dead letter in %s: read the DLQ apart", record.topic)
                        continue
                    value = json_object(record.value)
                    why = foreign(headers, value)
                    if why is not None or value is None:
                        log.warning(
                            "skipped a record of %s[%d] at offset %d: %s",
                            record.topic, record.partition, record.offset, why,
                        )  # fmt: skip
                        continue
                    if not seen.first_time(headers["ryze-id"]):
                        continue
                    if headers.get("ryze-event") == "bridge.gap":
                        await on_gap(value["data"], headers)
                    else:
                        await on_event(value, headers)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


def line(headers: dict[str, str]) -> str:
    """The line printed per record handled, the same in every language's example."""
    keys = (("id", "ryze-id"), ("event", "ryze-event"), ("instance", "ryze-instance"))
    return json.dumps({key: headers.get(header, "") for key, header in keys})


async def _print(value: dict[str, Any], headers: dict[str, str]) -> None:
    print(line(headers), flush=True)


async def _gap(data: dict[str, Any], headers: dict[str, str]) -> None:
    log.warning(
        "gap in %s: %s .. %s", data["instance"], data["last_frame_at"], data["connected_at"]
    )
    print(line(headers), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default="ryze-example")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN)
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")  # to standard error
    stop = asyncio.Event()
    asyncio.run(run(args.bootstrap, args.group, args.pattern, stop))


async def run(bootstrap: str, group: str, pattern: str, stop: asyncio.Event) -> None:
    """``consume`` until SIGTERM or SIGINT, which leave the group cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consume(bootstrap, group, _print, _gap, stop, pattern=pattern)


if __name__ == "__main__":
    main()
