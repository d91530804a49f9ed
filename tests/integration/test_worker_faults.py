"""The sink worker under real faults: one instance's topics deleted while another's flow, a
DLQ really refused by an ACL, the worker really crashing, a sink that cannot start.

Each test prints one line ``FAULT name: …`` (shown with ``pytest -s``) for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.settings import EVENT_NAMES
from bridge.shipper.parent import ShipperDelivery
from bridge.simulator import SimConfig, Simulator
from bridge.spool.disk import DiskSpool
from tests.brokerdump import delete_kafka_topics
from tests.integration.harness import counter, eventually, kafka_sink, running_bridge, settings_for
from tests.services import consume_all, create_topics, read_services, read_stream, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def frame_ids(values: list[bytes]) -> list[str]:
    """The upstream frame ids of event values (gap markers left out)."""
    documents = [orjson.loads(v) for v in values]
    return [d["data"]["id"] for d in documents if d["event"] != "bridge.gap"]


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    await delete_kafka_topics(bootstrap, names)


def received_at(record: Any) -> float:
    stamp = dict(record.headers)["ryze-received-at"].decode()
    return datetime.fromisoformat(stamp).timestamp()


async def readyz(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
    return answer.status_code, answer.text


async def test_a_deleted_topic_does_not_hold_another_instance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """While shop-a's topics are deleted (then recreated), shop-b's records keep being
    published: p99 from receipt to the producer's send under 5 s, every one of them there
    exactly once (by ryze-id)."""
    prefix = unique("isolate")
    tokens = {"shop-a": "tok-isolate-a-1", "shop-b": "tok-isolate-b-1"}
    a_topics = [f"{prefix}.shop-a.{e}" for e in EVENT_NAMES]
    b_topics = [f"{prefix}.shop-b.{e}" for e in EVENT_NAMES]
    dlq = f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [*a_topics, *b_topics, dlq])
    async with Simulator(SimConfig(instances=tokens, rate=150)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={n: {"token": t} for n, t in tokens.items()},
            sink=kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", dlq),
        )
        async with running_bridge(settings) as bridge:
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") > 300
            )
            loop = asyncio.get_running_loop()
            fault_started = loop.time()
            began = datetime.now().timestamp()
            await delete_topics(kafka_bootstrap, a_topics)
            await asyncio.sleep(10)
            await create_topics(kafka_bootstrap, a_topics)
            ended = datetime.now().timestamp()
            fault_seconds = loop.time() - fault_started
            await asyncio.sleep(3)
            for name in tokens:
                sim.pause(name)
            sent_b = sim.sent_ids("shop-b")
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_spool_events") == 0, within=60
            )
    b_records = await consume_all(kafka_bootstrap, b_topics)
    counts = Counter(frame_ids([r.value for r in b_records]))
    during = [r for r in b_records if began <= received_at(r) <= ended]
    waits = sorted(r.timestamp / 1000 - received_at(r) for r in during)
    p99 = waits[int(0.99 * (len(waits) - 1))]
    duplicated = sum(c - 1 for c in counts.values())
    print(  # noqa: T201 - the fault report
        f"FAULT topic-deleted ({fault_seconds:.1f} s): other instance sent={len(sent_b)} "
        f"delivered={len(counts)} duplicated={duplicated} during={len(during)} "
        f"p50={statistics.median(waits):.3f}s p99={p99:.3f}s max={waits[-1]:.3f}s"
    )
    assert set(counts) == set(sent_b)
    assert duplicated == 0
    assert len(during) > 500
    assert p99 < 5.0


async def acl_keys(admin: Redis, *rules: str) -> None:
    """ACL SETUSER bridge ``rules`` on the test Redis (key patterns only)."""
    await admin.execute_command("ACL", "SETUSER", "bridge", *rules)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def acl_restored(admin: Redis) -> AsyncIterator[None]:
    """The test Redis user ``bridge`` back to XADD on ``ryze:*`` only, whatever happens."""
    try:
        yield
    finally:
        await acl_keys(admin, "resetkeys", "~ryze:*")


async def test_a_refused_dlq_write_is_retried_and_lands_once_writable(
    redis_url: str, tmp_path: Path
) -> None:
    """Records Redis refuses (NOPERM: the ACL revoked at runtime) whose DLQ stream the ACL
    refuses too are kept and retried, never dropped; readiness names the DLQ meanwhile; once
    the ACL allows the DLQ each record lands there exactly once."""
    services = read_services()
    if "redis_tls" not in services:
        pytest.skip("the services run without TLS (no ACL user)")
    prefix = unique("dlqacl")
    dlq = f"dlq:{prefix}"
    password = Path(services["redis_tls"]["password_file"]).read_text().strip()
    tokens = {"shop": "tok-dlqacl-1"}
    admin = Redis.from_url(redis_url)
    async with acl_restored(admin), Simulator(SimConfig(instances=tokens, rate=0)) as sim:
        sim.pause("shop")
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink={
                "kind": "redis",
                "dlq": dlq,
                "redis": {
                    "url": services["redis_tls"]["url"],
                    "stream": "ryze:" + prefix + ":{instance}:{event}",
                    "username": services["redis_tls"]["username"],
                    "password_env": "REDIS_PASSWORD",
                    "ssl_ca_file": services["tls"]["ca_file"],
                },
            },
        )
        async with running_bridge(settings, environ={"REDIS_PASSWORD": password}) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            await eventually(lambda: bridge.delivery.problem is None)
            probe = f"~ryze:{prefix}:__probe__:*"
            await acl_keys(admin, "resetkeys", probe)
            await sim.burst("shop", 40)
            sent = sim.sent_ids("shop")
            await eventually(lambda: bridge.spool.stats().events == 40)
            await eventually(lambda: "cannot be written" in (bridge.delivery.problem or ""))
            status, body = await readyz(bridge.admin.port)
            assert status == 503
            assert f"sink: the DLQ {dlq!r} cannot be written" in body
            await asyncio.sleep(2)  # retried for a while: nothing leaves, nothing dropped
            assert bridge.spool.stats().events == 40
            await acl_keys(admin, f"~{dlq}")
            await eventually(lambda: bridge.spool.stats().events == 0, within=30)
            await eventually(lambda: bridge.delivery.problem is None, within=10)
            dropped = counter(bridge.metrics, "ryze_bridge_events_dropped_total")
            restarts = counter(bridge.metrics, "ryze_bridge_sink_worker_restarts_total")
    try:
        entries = await read_stream(admin, dlq)
    finally:
        await admin.aclose()
    letters = Counter(orjson.loads(f[b"data"])["data"]["id"] for _, f in entries)
    reasons = {f.get(b"reason") for _, f in entries}
    print(  # noqa: T201 - the fault report
        f"FAULT dlq-refused: sent={len(sent)} in_dlq={len(letters)} "
        f"duplicated={sum(c - 1 for c in letters.values())} dropped={dropped}"
    )
    assert set(letters) == set(sent)
    assert all(c == 1 for c in letters.values())
    assert dropped == 0
    assert restarts == 0
    assert len(reasons) == 1
    assert None not in reasons  # each a DLQ entry with its reason


async def test_a_crashed_worker_is_restarted_counted_and_shown(
    redis_url: str, tmp_path: Path
) -> None:
    """In-process delivery: the spool's segment file really gone for a while (renamed away)
    makes the worker die of FileNotFoundError when it reads it back; the death is counted
    and logged, /readyz says why, and once the file is back a new worker delivers
    everything, without a restart of the bridge or its sockets."""
    prefix = unique("crash")
    tokens = {"shop": "tok-crash-1"}
    async with Simulator(SimConfig(instances=tokens, rate=100)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink={
                "kind": "redis",
                "separate_process": False,
                "dlq": f"{prefix}:dlq",
                "redis": {"url": redis_url, "stream": prefix + ":{instance}:{event}"},
            },
        )
        async with running_bridge(settings) as bridge:
            spool = bridge.spool
            assert isinstance(spool, DiskSpool)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") > 100
            )
            segments = sorted((tmp_path / "spool").glob("seg-*.log"))
            moved = [path.with_name(path.name + ".away") for path in segments]
            for path, away in zip(segments, moved, strict=True):
                os.rename(path, away)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_sink_worker_restarts_total") >= 1,
                within=10,
            )
            assert not bridge.delivery.delivering
            status, body = await readyz(bridge.admin.port)
            assert status == 503
            assert "sink: the sink worker crashed (FileNotFoundError" in body
            await asyncio.sleep(1)
            for path, away in zip(segments, moved, strict=True):
                os.rename(away, path)
            await eventually(lambda: bridge.delivery.problem is None, within=15)
            await asyncio.sleep(1)
            sim.pause("shop")
            sent = sim.sent_ids("shop")
            await eventually(lambda: spool.stats().events == 0, within=30)
            restarts = counter(bridge.metrics, "ryze_bridge_sink_worker_restarts_total")
            upgrades = sim.stats("shop")["upgrades"]
            status, _ = await readyz(bridge.admin.port)
    client = Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in await client.keys(f"{prefix}:shop:*") if isinstance(k, bytes)]
        values = [f[b"data"] for k in keys for _, f in await read_stream(client, k)]
    finally:
        await client.aclose()
    counts = Counter(frame_ids(values))
    print(  # noqa: T201 - the fault report
        f"FAULT worker-crash: sent={len(sent)} delivered={len(counts)} "
        f"duplicated={sum(c - 1 for c in counts.values())} restarts={restarts:.0f}"
    )
    assert set(counts) == set(sent)
    assert restarts >= 1
    assert upgrades == 1, "the socket was not touched"
    assert status == 200


async def test_a_sink_that_cannot_start_keeps_the_bridge_reading(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With the Kafka DLQ topic missing the sink cannot start: the bridge keeps running and
    reading into the spool, /readyz says why, and once the topic is created everything read
    meanwhile is delivered (shipper process: its problem travels over the link)."""
    prefix = unique("nostart")
    tokens = {"shop": "tok-nostart-1"}
    topics = [f"{prefix}.shop.{e}" for e in EVENT_NAMES]
    dlq = f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, topics)
    async with Simulator(SimConfig(instances=tokens, rate=100)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink=kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", dlq),
        )
        async with running_bridge(settings) as bridge:
            assert isinstance(bridge.delivery, ShipperDelivery)
            await eventually(lambda: "cannot start" in (bridge.delivery.problem or ""), within=20)
            await eventually(lambda: bridge.spool.stats().events > 200, within=20)
            status, body = await readyz(bridge.admin.port)
            assert status == 503
            assert f"sink: the sink cannot start: kafka: the DLQ topic {dlq!r} does not" in body
            assert counter(bridge.metrics, "ryze_bridge_events_published_total") == 0
            await create_topics(kafka_bootstrap, [dlq])
            await eventually(lambda: bridge.delivery.problem is None, within=30)
            sim.pause("shop")
            sent = sim.sent_ids("shop")
            await eventually(lambda: bridge.spool.stats().events == 0, within=30)
            status, _ = await readyz(bridge.admin.port)
    records = await consume_all(kafka_bootstrap, topics)
    counts = Counter(frame_ids([r.value for r in records]))
    print(  # noqa: T201 - the fault report
        f"FAULT sink-cannot-start: sent={len(sent)} delivered={len(counts)} "
        f"duplicated={sum(c - 1 for c in counts.values())}"
    )
    assert set(counts) == set(sent)
    assert status == 200
