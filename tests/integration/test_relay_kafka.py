"""The relay into the real Kafka: exact delivery, keys, headers, order, DLQ, no tokens."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import (
    counter,
    event_of,
    eventually,
    expected_value,
    kafka_sink,
    running_bridge,
    scrape,
    settings_for,
)
from tests.services import consume, consume_all, create_topics, unique

pytestmark = pytest.mark.integration

TOKENS = {"shop-a": "tok-a-5f1e2d3c4b5a", "shop-b": "tok-b-6a7b8c9d0e1f", "shop-c": "tok-c-1a2b3c"}


def topics_for(prefix: str, instances: list[str]) -> list[str]:
    return [f"{prefix}.{i}.{e}" for i in instances for e in EVENT_NAMES]


async def test_every_frame_arrives_exactly_with_key_headers_and_value(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Thousands of mixed frames from three instances land in Kafka exactly once each, on
    ryze.{instance}.{event}, keyed by instance, with the four headers, the value byte-identical
    to the frame minus its token, in per-key order; no token appears anywhere."""
    prefix = unique("exact")
    dlq = f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [*topics_for(prefix, list(TOKENS)), dlq])
    config = SimConfig(instances=TOKENS, rate=400, record_frames=True, seed=1)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in TOKENS.items()},
            sink={
                "kind": "kafka",
                "dlq": dlq,
                "kafka": {
                    "bootstrap_servers": kafka_bootstrap,
                    "topic": prefix + ".{instance}.{event}",
                },
            },
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sum(sim.stats(n)["frames_sent"] for n in TOKENS) >= 4500)
            for name in TOKENS:
                sim.pause(name)
            sent = {name: sim.sent_frames(name) for name in TOKENS}
            total = sum(len(frames) for frames in sent.values())
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= total
            )
            metrics_text = await scrape(bridge.admin.port)
    records = await consume_all(kafka_bootstrap, topics_for(prefix, list(TOKENS)))
    assert len(records) == total

    by_value = {r.value: r for r in records}
    assert len(by_value) == total
    for name, frames in sent.items():
        for frame in frames:
            record = by_value[expected_value(frame, TOKENS[name])]
            assert record.topic == f"{prefix}.{name}.{event_of(frame)}"
            assert record.key == name.encode()
            headers = dict(record.headers)
            assert headers["ryze-event"] == event_of(frame).encode()
            assert headers["ryze-instance"] == name.encode()
            assert headers["ryze-received-at"].endswith(b"Z")
            assert len(headers["ryze-id"]) == 32

    order: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        order[(record.topic, record.partition)].append(record.value)
    for name, frames in sent.items():
        for event in EVENT_NAMES:
            expected = [expected_value(f, TOKENS[name]) for f in frames if event_of(f) == event]
            topic = f"{prefix}.{name}.{event}"
            got = [v for (t, _), values in order.items() if t == topic for v in values]
            assert got == expected, f"order differs on {topic}"

    blobs = [r.value for r in records] + [v for r in records for _, v in r.headers]
    for token in TOKENS.values():
        assert not any(token.encode() in blob for blob in blobs)
        assert token not in metrics_text


async def test_malformed_and_oversized_frames_go_to_dlq_and_stream_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A non-JSON frame and a frame over the producer's limit land in the DLQ topic with their
    reasons and without the token; frames after them are delivered."""
    prefix = unique("dlq")
    dlq = f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [*topics_for(prefix, ["shop-a"]), dlq])
    config = SimConfig(instances={"shop-a": TOKENS["shop-a"]}, rate=0, record_frames=True)
    async with Simulator(config) as sim:
        sim.pause("shop-a")
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-a": {"token": TOKENS["shop-a"]}},
            sink={
                "kind": "kafka",
                "dlq": dlq,
                "kafka": {
                    "bootstrap_servers": kafka_bootstrap,
                    "topic": prefix + ".{instance}.{event}",
                },
            },
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop-a")["open_sockets"] == 1)
            await sim.burst("shop-a", 5)
            await sim.send_malformed("shop-a")
            await sim.send_huge("shop-a", 2_000_000)
            await sim.send_without_event("shop-a")
            await sim.burst("shop-a", 5)
            await eventually(  # 10 published, 3 dead letters (counted apart)
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_events_published_total") >= 10
                    and counter(bridge.metrics, "ryze_bridge_dlq_records_total") >= 3
                )
            )
    dead = await consume(kafka_bootstrap, [dlq], 3, 15)
    reasons = sorted(dict(r.headers)["ryze-dlq-reason"] for r in dead)
    assert reasons == [b"malformed_json", b"too_large", b"unknown_shape"]
    assert not any(TOKENS["shop-a"].encode() in r.value for r in dead)
    good = await consume(kafka_bootstrap, topics_for(prefix, ["shop-a"]), 10, 15)
    assert len(good) == 10


async def test_missing_topic_is_a_dlq_record_naming_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With topic creation off, a record for a topic that does not exist goes to the DLQ with
    an error naming the topic; with create_topics on, the topic is created and used."""
    prefix = unique("missing")
    dlq = f"{prefix}-dlq"  # "<prefix>.dlq" is what "<prefix>.{instance}" makes of instance "dlq"
    await create_topics(kafka_bootstrap, [dlq])
    async with Simulator(SimConfig(instances={"shop-a": TOKENS["shop-a"]}, rate=0)) as sim:
        sim.pause("shop-a")
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-a": {"token": TOKENS["shop-a"]}},
            sink=kafka_sink(kafka_bootstrap, prefix + ".{instance}", dlq),
        )
        async with running_bridge(settings):
            await eventually(lambda: sim.stats("shop-a")["open_sockets"] == 1)
            await sim.burst("shop-a", 2)
            dead = await consume(kafka_bootstrap, [dlq], 2, 20)
        assert [dict(r.headers)["ryze-dlq-reason"] for r in dead] == [b"missing_topic"] * 2
        assert f"{prefix}.shop-a".encode() in dict(dead[0].headers)["ryze-dlq-error"]

        creating = settings.model_copy(
            update={
                "sink": settings.sink.model_copy(
                    update={"kafka": settings.sink.kafka.model_copy(update={"create_topics": True})}
                )
            }
        )
        async with running_bridge(creating):
            await eventually(lambda: sim.stats("shop-a")["open_sockets"] == 1)
            await sim.burst("shop-a", 3)
            created = await consume(kafka_bootstrap, [f"{prefix}.shop-a"], 3, 20)
        assert len(created) == 3
