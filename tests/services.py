"""Pytest plugin: the real Kafka and Redis started by ``scripts/services.sh``.

Fixtures read ``services.json`` (``$RYZE_SERVICES_DIR`` or ``.services/``). When a service is
not there: with ``CI=true`` or ``BRIDGE_REQUIRE_SERVICES=1`` the test fails, otherwise it is
skipped with the command that starts it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"


def services_file() -> Path:
    return Path(os.environ.get("RYZE_SERVICES_DIR", ROOT / ".services")) / "services.json"


def services_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("BRIDGE_REQUIRE_SERVICES") == "1"


def unavailable(what: str) -> None:
    message = f"{what}; start it with: bash scripts/services.sh up"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


def read_services() -> dict[str, Any]:
    path = services_file()
    if not path.exists():
        unavailable(f"no {path}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class Services:
    """The running services, with stop/start for fault-injection tests."""

    kafka_bootstrap: str
    redis_url: str

    def stop(self, name: str) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", name], check=True, timeout=60)

    def start(self, name: str) -> None:
        subprocess.run(["bash", str(SCRIPT), "start", name], check=True, timeout=180)


async def _kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    finally:
        await admin.close()
    return True


async def _redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        return bool(await client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap: str = read_services()["kafka"]["bootstrap_servers"]
    if not asyncio.run(_kafka_answers(bootstrap)):
        unavailable(f"Kafka does not answer on {bootstrap}")
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    url: str = read_services()["redis"]["url"]
    if not asyncio.run(_redis_answers(url)):
        unavailable(f"Redis does not answer on {url}")
    return url


@pytest.fixture(scope="session")
def services(kafka_bootstrap: str, redis_url: str) -> Services:
    return Services(kafka_bootstrap, redis_url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3) -> None:
    """Create topics (the test broker does not auto-create them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def from_the_start(bootstrap: str, *topics: str) -> AIOKafkaConsumer:
    """A started consumer outside any group, reading from the earliest offset."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    return consumer


async def consume(
    bootstrap: str, topics: Iterable[str], count: int, within: float = 30.0
) -> list[Any]:
    """Read exactly ``count`` records from the beginning of ``topics`` (bounded wait)."""
    consumer = await from_the_start(bootstrap, *topics)
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for batch in batches.values():
                    records.extend(batch)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return records


async def topic_partitions(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    """The partitions of ``topics`` that exist, as the broker describes them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic["error_code"] == 0
        for partition in topic["partitions"]
    ]


async def consume_all(bootstrap: str, topics: Iterable[str], within: float = 30.0) -> list[Any]:
    """Every record in ``topics`` at the time of the call, duplicates included: read from the
    beginning up to the end offsets taken first (no waiting for records that will not come)."""
    async with asyncio.timeout(within):
        wanted = await topic_partitions(bootstrap, list(topics))
    if not wanted:
        return []
    consumer = await from_the_start(bootstrap)
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            consumer.assign(wanted)
            await consumer.seek_to_beginning(*wanted)
            ends = await consumer.end_offsets(wanted)
            pending = {tp for tp, end in ends.items() if end > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
                for batch in batches.values():
                    records.extend(batch)
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return records


StreamEntry = tuple[bytes, dict[bytes, bytes]]


async def read_stream(client: Redis, stream: str) -> list[StreamEntry]:
    """Every entry of ``stream``, oldest first."""
    return cast(list[StreamEntry], await client.xrange(stream))
