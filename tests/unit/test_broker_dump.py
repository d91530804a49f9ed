"""What the token grep reads back from Redis (tests/brokerdump.py): every key's values
whatever its type (streams, strings, hashes, lists, sets, sorted sets), from every database
that holds keys; and a teardown's delete keeps what it deletes for the grep (in the grep run
only) before the keys go. Against a real Redis."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

import tests.tokengrep as grep
from bridge.simulator.ledger import LEDGER_ENV
from tests.brokerdump import databases, delete_redis_keys, dump_redis, on_database
from tests.services import unique

# built, not a literal: CI's own grep of this run must not find what these tests plant
TOKEN = "-".join(("tok", "dump", "unit", "41be"))


async def plant(client: Redis, prefix: str) -> list[str]:
    """One key of each type, each holding the token somewhere."""
    keys = [f"{prefix}:{kind}" for kind in ("stream", "string", "hash", "list", "set", "zset")]
    await client.xadd(keys[0], {"raw": f"x{TOKEN}x"})
    await client.set(keys[1], TOKEN)
    await client.hset(keys[2], mapping={"owner": f"lease {TOKEN}"})
    await client.rpush(keys[3], "a", TOKEN)
    await client.sadd(keys[4], TOKEN)
    await client.zadd(keys[5], {TOKEN: 1.0})
    return keys


async def test_every_key_type_of_every_database_is_dumped(redis_url: str, tmp_path: Path) -> None:
    """Keys of every type in database 0 and in database 5 all reach the dump: the grep finds
    the token once per key (the old dump read only database 0's streams)."""
    client = Redis.from_url(redis_url)
    other = on_database(client, 5)
    prefix = unique("dump")
    kinds = ("stream", "string", "hash", "list", "set", "zset")
    try:
        planted = await plant(client, prefix) + await plant(other, prefix)
        assert 5 in databases(await client.info("keyspace"))
        count = await dump_redis(client, tmp_path / "redis.entries")
    finally:
        await client.delete(*[f"{prefix}:{k}" for k in kinds])
        await other.delete(*[f"{prefix}:{k}" for k in kinds])
        await client.aclose()
        await other.aclose()
    assert count >= len(planted)
    report = grep.scan([tmp_path], {TOKEN})
    assert len(report.hits) == len(planted) == 12


async def test_a_teardown_delete_keeps_what_it_deletes_in_the_grep_run(
    redis_url: str, tmp_path: Path
) -> None:
    """With a ledger set (the grep run) the keys' values are written under deleted/ beside
    it, then the keys are gone; without one nothing is written and the keys are still
    deleted."""
    client = Redis.from_url(redis_url)
    try:
        keys = await plant(client, unique("teardown"))
        environ = {LEDGER_ENV: str(tmp_path / "tokens.ledger")}
        await delete_redis_keys(client, *keys, environ=environ)
        assert await client.exists(*keys) == 0
        kept = list((tmp_path / "deleted").iterdir())
        assert len(kept) == 1
        assert len(grep.scan([tmp_path / "deleted"], {TOKEN}).hits) == len(keys)
        again = await plant(client, unique("teardown"))
        await delete_redis_keys(client, *again, environ={})
        assert await client.exists(*again) == 0
        assert len(list((tmp_path / "deleted").iterdir())) == 1
    finally:
        await client.aclose()
