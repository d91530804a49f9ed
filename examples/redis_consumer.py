"""Consume ryze-bridge Redis streams with a consumer group, acknowledging what was handled
and recovering entries a crashed consumer left pending.

    python -m examples.redis_consumer --url redis://redis:6379/0 --group my-service --name pod-1

- finds the bridge's streams (``DEFAULT_MATCH``, ``ryze:*.*``: a dotted event after the
  prefix, under the default ``ryze:{event}`` and the per-instance ``ryze:{instance}:{event}``
  alike, so a DLQ stream, default ``ryze.dlq`` or ``ryze:dlq``, is not one of them) and
  creates the group on each (from the start); a dead letter (an entry with a ``reason``) met
  anyway is acknowledged, skipped;
- first claims entries pending too long with another consumer (XAUTOCLAIM) and re-reads its
  own pending ones, then reads new entries (XREADGROUP ``>``);
- drops re-deliveries by the ``id`` field within a bounded window, handles gap markers apart;
  an entry without an ``id`` (not the bridge's) is logged, acknowledged and skipped;
- XACKs each entry after it was handled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from examples.dedup import SeenWindow

log = logging.getLogger("redis_consumer")
Handler = Callable[[bytes, dict[str, str]], Awaitable[None]]
DEFAULT_MATCH = "ryze:*.*"  # the streams of ryze:{event} and of ryze:{instance}:{event}
Entry = tuple[bytes, dict[bytes, bytes]]


async def streams(client: Redis, match: str) -> list[str]:
    return sorted({key.decode() async for key in client.scan_iter(match=match, _type="STREAM")})


async def ensure_group(client: Redis, stream: str, group: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=False)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class StreamConsumer:
    def __init__(
        self,
        client: Redis,
        group: str,
        name: str,
        on_event: Handler,
        on_gap: Handler,
        *,
        match: str = DEFAULT_MATCH,
        min_idle_ms: int = 30_000,
        window: int = 10_000,
    ) -> None:
        self.client = client
        self.group = group
        self.name = name
        self.on_event = on_event
        self.on_gap = on_gap
        self.match = match
        self.min_idle_ms = min_idle_ms
        self.seen = SeenWindow(window)

    async def recover(self, stream: str) -> None:
        """Handle what crashed consumers (and this one, before a restart) left pending."""
        start = "0-0"
        while True:
            answer: Any = await self.client.xautoclaim(
                stream, self.group, self.name, self.min_idle_ms, start, count=500
            )
            start, claimed = answer[0], answer[1]
            await self.handle(stream, claimed)
            if start in (b"0-0", "0-0"):
                break
        own: Any = await self.client.xreadgroup(self.group, self.name, {stream: "0"}, count=10_000)
        for _, entries in own or []:
            await self.handle(stream, entries)

    async def handle(self, stream: str, entries: list[Entry]) -> None:
        for entry_id, fields in entries:
            if not fields:  # deleted by MAXLEN trimming meanwhile
                await self.client.xack(stream, self.group, entry_id)
                continue
            meta = {
                k.decode(): v.decode("utf-8", "replace") for k, v in fields.items() if k != b"data"
            }
            if "reason" in meta:
                log.warning("skipped a dead letter in %s: read the DLQ apart", stream)
            elif not meta.get("id"):
                log.warning("skipped an entry of %s without an id: %r", stream, entry_id)
            elif self.seen.first_time(meta["id"]):
                callback = self.on_gap if meta.get("event") == "bridge.gap" else self.on_event
                await callback(fields.get(b"data", b""), meta)
            await self.client.xack(stream, self.group, entry_id)

    async def run(self, stop: asyncio.Event) -> None:
        known: list[str] = []
        while not stop.is_set():
            current = await streams(self.client, self.match)
            for stream in set(current) - set(known):
                await ensure_group(self.client, stream, self.group)
                await self.recover(stream)
            known = current
            if not known:
                await asyncio.sleep(0.5)
                continue
            answer: Any = await self.client.xreadgroup(
                self.group, self.name, dict.fromkeys(known, ">"), count=500, block=500
            )
            for stream, entries in answer or []:
                await self.handle(stream.decode() if isinstance(stream, bytes) else stream, entries)


async def _print(data: bytes, meta: dict[str, str]) -> None:
    """One JSON line per entry handled, the same as the Kafka examples print."""
    line = {
        "id": meta.get("id", ""),
        "event": meta.get("event", ""),
        "instance": meta.get("instance", ""),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--group", default="ryze-example")
    parser.add_argument("--name", default="consumer-1")
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")  # to standard error

    async def run() -> None:
        client = Redis.from_url(args.url)
        try:
            await StreamConsumer(client, args.group, args.name, _print, _print).run(asyncio.Event())
        finally:
            await client.aclose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
