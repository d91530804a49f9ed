"""Discovery mode against the real simulator and the real Redis: the bridge connects with the
account token and never learns the instance token from its configuration, yet hostile frames
that carry the instance token (cut short after an escaped key, a list at the top, invalid
UTF-8, pasted in a text and a URL, a duplicate ``instanceData``) leave it nowhere: not in the
DLQ stream, the event streams, the spool's files, the logs or the admin answers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bridge.logs import configure_logging
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, redis_sink, running_bridge, scrape, settings_for
from tests.services import read_stream, unique

pytestmark = pytest.mark.integration

ACCOUNT = "tok-account-hostile-4411"
INSTANCE_TOKEN = "tok-instance-hostile-8d3e"


async def stream_dump(client: Redis, prefix: str) -> tuple[bytes, dict[str, int]]:
    """Every field of every entry of every stream under ``prefix``, and the entries each."""
    dump, counts = b"", {}
    async for key in client.scan_iter(match=f"{prefix}:*"):
        entries = await read_stream(client, key.decode())
        counts[key.decode()] = len(entries)
        for _, fields in entries:
            dump += b"".join(k + b"=" + v + b"\n" for k, v in fields.items())
    return dump, counts


async def test_hostile_frames_never_put_the_instance_token_in_the_dlq(
    redis_url: str, tmp_path: Path
) -> None:
    """Five hostile frames through discovery mode into Redis: three are dead-lettered with
    their reasons, two published, and neither token is in any stream, spool file, log line,
    /instances or /metrics."""
    prefix = unique("hostile")
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    config = SimConfig(instances={"shop": INSTANCE_TOKEN}, account_tokens=[ACCOUNT], rate=20)
    client = Redis.from_url(redis_url)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            discovery={"token_env": "RYZE_ACCOUNT_TOKEN", "refresh_seconds": 1.0},
            sink=redis_sink(redis_url, prefix),
        )
        async with running_bridge(settings, environ={"RYZE_ACCOUNT_TOKEN": ACCOUNT}) as bridge:
            await eventually(lambda: sim.stats("shop")["frames_sent"] >= 5, within=20)
            assert await sim.send_hostile("shop") == 5
            sim.pause("shop")
            dlq = f"{prefix}:dlq"

            async def dead_lettered() -> bool:
                return int(await client.xlen(dlq)) >= 3

            await eventually(dead_lettered, within=20)
            spool = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("seg-*"))
            admin = (await scrape(bridge.admin.port, "/instances")).encode()
            admin += (await scrape(bridge.admin.port)).encode()
        streams, counts = await stream_dump(client, prefix)
    reasons = [fields[b"reason"] for _, fields in await read_stream(client, dlq)]
    await client.aclose()
    assert sorted(reasons) == [b"malformed_json", b"malformed_json", b"unknown_shape"]
    assert sum(counts.values()) > len(reasons)  # the ordinary frames and two hostile ones
    for where, blob in (
        ("streams", streams),
        ("spool", spool),
        ("logs", logs.getvalue().encode()),
        ("admin", admin),
    ):
        assert INSTANCE_TOKEN.encode() not in blob, where
        assert ACCOUNT.encode() not in blob, where
    assert b'"token":"***"' in streams  # the cut-short frame's escaped key, masked
