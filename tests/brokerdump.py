"""What Kafka and Redis hold, written to files for the token grep (tests/tokengrep.py), and the
tests' teardown deletes, which keep what they delete for that grep first.

Tests delete their topics, streams and keys at teardown; ``dump-brokers`` runs after the whole
pytest stage and would never see them. So every teardown delete goes through
:func:`delete_redis_keys` / :func:`delete_kafka_topics`: in the grep run (``RYZE_TOKEN_LEDGER``
set) they first write what they are about to delete under ``deleted/`` beside the ledger.
Redis values of every type are written (streams, strings, hashes, lists, sets, sorted sets:
cluster mode coordinates through plain keys), from every database that holds keys.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import ConnectionPool, Redis

from bridge.simulator.ledger import LEDGER_ENV
from tests.services import consume_all

Key = bytes | str


def as_bytes(value: object) -> bytes:
    """A Redis or Kafka value as bytes (numbers and scores as their text)."""
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode()


def grep_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where teardowns keep what they delete: ``deleted/`` beside the ledger (grep run only)."""
    ledger = environ.get(LEDGER_ENV)
    return Path(ledger).parent / "deleted" if ledger else None


async def key_lines(client: Redis, key: bytes) -> list[bytes]:
    """Every member of ``key``, whatever its type, one line each (the key's name first)."""
    kind = as_bytes(await client.type(key))
    lines = [b"%s %s" % (kind, key)]
    if kind == b"stream":
        for entry_id, fields in await client.xrange(key) or ():
            lines.append(as_bytes(entry_id))
            lines.extend(b"%s=%s" % (as_bytes(n), as_bytes(v)) for n, v in (fields or {}).items())
    elif kind == b"string":
        lines.append(as_bytes(await client.get(key)))
    elif kind == b"hash":
        items = (await client.hgetall(key)).items()
        lines.extend(b"%s=%s" % (as_bytes(n), as_bytes(v)) for n, v in items)
    elif kind == b"list":
        lines.extend(map(as_bytes, await client.lrange(key, 0, -1)))
    elif kind == b"set":
        lines.extend(map(as_bytes, await client.smembers(key)))
    elif kind == b"zset":
        members: list[Any] = await client.zrange(key, 0, -1, withscores=True)
        lines.extend(b" ".join(map(as_bytes, pair)) for pair in members)
    return lines


async def dump_keys(client: Redis, keys: Iterable[Key], path: Path) -> int:
    """``keys`` of ``client``'s database appended to ``path``; how many values were written."""
    count = 0
    with path.open("ab") as sink:
        for key in keys:
            lines = await key_lines(client, as_bytes(key))
            count += max(len(lines) - 1, 0)
            sink.write(b"\n".join(lines) + b"\n")
    return count


def databases(info: Mapping[str, Any]) -> list[int]:
    """The databases that hold keys, from ``INFO keyspace`` (pure)."""
    return sorted(int(name[2:]) for name in info if name.startswith("db") and name[2:].isdigit())


def on_database(client: Redis, db: int) -> Redis:
    """A client of the same server on database ``db`` (TLS and credentials kept)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return Redis.from_pool(ConnectionPool(connection_class=pool.connection_class, **kwargs))


async def dump_redis(client: Redis, path: Path) -> int:
    """Every key of every database of ``client``'s server, written to ``path``."""
    path.write_bytes(b"")
    count = 0
    for db in databases(await client.info("keyspace")):
        other = on_database(client, db)
        try:
            keys = [key async for key in other.scan_iter(count=1000)]
            count += await dump_keys(other, keys, path)
        finally:
            await other.aclose()
    return count


def dump_records(records: Sequence[Any], path: Path) -> None:
    """Kafka records' keys, values and headers appended to ``path``."""
    with path.open("ab") as sink:
        for record in records:
            sink.write(b"%s\n%s\n" % (record.key or b"", record.value or b""))
            for name, value in record.headers or ():
                sink.write(b"%s=%s\n" % (name.encode(), value))


async def delete_redis_keys(
    client: Redis, *keys: Key, environ: Mapping[str, str] = os.environ
) -> None:
    """Delete ``keys`` (a test's teardown), kept for the token grep first in its run."""
    if not keys:
        return
    out = grep_dir(environ)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        await dump_keys(client, keys, out / f"redis-{uuid.uuid4().hex}.entries")
    await client.delete(*keys)


async def keep_kafka_topics(
    bootstrap: str, topics: Sequence[str], environ: Mapping[str, str] = os.environ
) -> None:
    """In the grep run, write what ``topics`` hold under the grep directory."""
    out = grep_dir(environ)
    if out is not None and topics:
        out.mkdir(parents=True, exist_ok=True)
        records = await consume_all(bootstrap, topics, within=60.0)
        dump_records(records, out / f"kafka-{uuid.uuid4().hex}.records")


async def delete_kafka_topics(
    bootstrap: str, topics: Sequence[str], environ: Mapping[str, str] = os.environ
) -> None:
    """Delete ``topics`` (a test's teardown), kept for the token grep first in its run."""
    await keep_kafka_topics(bootstrap, topics, environ)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()
