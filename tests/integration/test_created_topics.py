"""``sink.kafka.create_topics`` on the real Kafka creates only the topics of documented
events, gap markers and the DLQ: an unknown upstream event never creates one (its missing
topic is a ``missing_topic`` dead letter), and an event name with ``_`` (which Kafka counts as
``.``, so it would block the documented topic) is an ``invalid_event`` dead letter."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for
from tests.services import consume, create_topics, unique

pytestmark = pytest.mark.integration

TOKEN = "tok-created-7d3e9a1b"


def raw_frame(event: str) -> bytes:
    return orjson.dumps(
        {"event": event, "data": {"id": "u1"}, "instanceData": {"instance": "shop", "token": TOKEN}}
    )


async def prefixed_topics(bootstrap: str, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefix)}
    finally:
        await admin.close()


async def test_create_topics_makes_only_documented_event_topics(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With ``create_topics`` on, a documented event's topic is created and used; an unknown
    event (``poll.vote``) creates no topic and is dead-lettered ``missing_topic``; an event
    ``message_status`` creates nothing and is dead-lettered ``invalid_event``."""
    prefix = unique("created")
    dlq = f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [dlq])
    async with Simulator(SimConfig(instances={"shop": TOKEN}, rate=0)) as sim:
        sim.pause("shop")
        kafka = {
            "bootstrap_servers": kafka_bootstrap,
            "topic": prefix + ".{event}",
            "create_topics": True,
        }
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": TOKEN}},
            sink={"kind": "kafka", "dlq": dlq, "gap_markers": False, "kafka": kafka},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            for event in ("message_status", "poll.vote"):
                assert await sim.send_raw("shop", raw_frame(event))
            await sim.burst("shop", 2, event="label.update")
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= 2
            )
            dead = await consume(kafka_bootstrap, [dlq], 2, 20)
    reasons = sorted(dict(r.headers)["ryze-dlq-reason"] for r in dead)
    assert reasons == [b"invalid_event", b"missing_topic"]
    assert await prefixed_topics(kafka_bootstrap, prefix) == {dlq, f"{prefix}.label.update"}
