"""The fleet layout on the real Kafka (one topic per event, keyed by instance, order per key),
``ryze-bridge topics --check`` against the real broker, and hostile event names from the
simulator ending in the DLQ without naming a topic or a stream."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from bridge.cli import main
from bridge.pipeline.names import INVALID_EVENT
from bridge.settings import EVENT_NAMES, KafkaSinkSettings
from bridge.simulator import SimConfig, Simulator
from tests.brokerdump import delete_redis_keys
from tests.integration.harness import (
    counter,
    event_of,
    eventually,
    expected_value,
    running_bridge,
    settings_for,
)
from tests.services import (
    consume,
    consume_all,
    create_topics,
    read_services,
    read_stream,
    unavailable,
    unique,
)

pytestmark = pytest.mark.integration

TOKENS = {"shop-a": "tok-fleet-a-3c9d1e", "shop-b": "tok-fleet-b-8f2a6b"}
HOSTILE = ["message.exchange:evil/../x y", "bridge.gap"]


def hostile_frame(event: str, token: str) -> bytes:
    return orjson.dumps(
        {
            "event": event,
            "data": {"id": "h1"},
            "instanceData": {"instance": "shop-a", "token": token},
        }
    )


async def broker_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_the_default_layout_shares_one_topic_per_event_keyed_in_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With the default layout (``<prefix>.{event}``, key left at its default), two instances'
    frames share the six event topics: each record keyed by its instance, and within a
    partition each instance's records of an event are in the order they were sent."""
    assert KafkaSinkSettings().topic == "ryze.{event}"  # the shape tested, under a prefix
    prefix = unique("fleet")
    topics = [f"{prefix}.{event}" for event in EVENT_NAMES]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    config = SimConfig(instances=TOKENS, rate=300, record_frames=True, seed=7)
    async with Simulator(config) as sim:
        sink = {"bootstrap_servers": kafka_bootstrap, "topic": prefix + ".{event}"}
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in TOKENS.items()},
            sink={"kind": "kafka", "dlq": f"{prefix}.dlq", "kafka": sink},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: all(sim.stats(n)["frames_sent"] >= 600 for n in TOKENS))
            for name in TOKENS:
                sim.pause(name)
            sent = {name: sim.sent_frames(name) for name in TOKENS}
            total = sum(len(frames) for frames in sent.values())
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= total
            )
    records = await consume_all(kafka_bootstrap, topics)
    assert len(records) == total
    assert {r.topic for r in records} == set(topics)
    got: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        assert dict(record.headers)["ryze-instance"] == record.key
        got[record.topic, record.key].append(record.value)
        partitions[record.topic, record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())  # one key, one partition
    for name, frames in sent.items():
        for event in EVENT_NAMES:
            expected = [expected_value(f, TOKENS[name]) for f in frames if event_of(f) == event]
            assert got[f"{prefix}.{event}", name.encode()] == expected, (name, event)


def write_config(tmp_path: Path, bootstrap: str, prefix: str) -> Path:
    path = tmp_path / "bridge.yaml"
    config = {
        "instances": {name: {"token_env": "UNUSED"} for name in TOKENS},
        "sink": {
            "kind": "kafka",
            "dlq": f"{prefix}.dlq",
            "kafka": {"bootstrap_servers": bootstrap, "topic": prefix + ".{event}"},
        },
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def test_topics_check_names_the_missing_topics_and_exits_non_zero(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``topics --check`` lists the eight topics of two instances under the default layout,
    marks the ones the broker lacks MISSING and exits 1; once they exist it exits 0."""
    prefix = unique("check")
    config = str(write_config(tmp_path, kafka_bootstrap, prefix))
    wanted = [f"{prefix}.{event}" for event in (*EVENT_NAMES, "bridge.gap")] + [f"{prefix}.dlq"]
    await create_topics(kafka_bootstrap, wanted[:3])
    assert await run_cli(["topics", "--config", config, "--check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    state = {line.split()[0]: line.split()[-1] for line in lines if not line.startswith("#")}
    assert state == {t: ("present" if t in wanted[:3] else "MISSING") for t in wanted}
    assert lines[-1].startswith(f"# 5 of 8 missing on {kafka_bootstrap}")

    await create_topics(kafka_bootstrap, wanted[3:])

    async def complete() -> bool:  # a new topic shows in the metadata within moments
        return await run_cli(["topics", "--config", config, "--check"]) == 0

    await eventually(complete, within=30, every=0.5)
    assert capsys.readouterr().out.splitlines()[-1].startswith("# 0 of 8 missing")


async def test_topics_check_passes_when_the_bridge_creates_the_missing_topics(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``sink.kafka.create_topics: true`` the topics the broker lacks are listed as
    "will be created" (the bridge makes them itself) and ``--check`` exits 0."""
    prefix = unique("create")
    path = write_config(tmp_path, kafka_bootstrap, prefix)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["sink"]["kafka"]["create_topics"] = True
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert await run_cli(["topics", "--config", str(path), "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if not line.startswith("#")]
    assert rows
    assert all(line.endswith("will be created") for line in rows)
    assert "MISSING" not in "\n".join(lines)
    assert lines[-1].endswith("(the bridge creates them: sink.kafka.create_topics)")


async def test_topics_check_says_so_when_the_broker_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker that refuses the connection (a port nothing listens on) is a clear error on
    stderr naming the address, and exit 1 — not a listing with everything missing."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{free.getsockname()[1]}"
    config = str(write_config(tmp_path, address, unique("gone")))
    assert await run_cli(["topics", "--config", config, "--check"]) == 1
    captured = capsys.readouterr()
    assert f"cannot check the topics: kafka: cannot reach {address}" in captured.err
    assert "MISSING" not in captured.out


async def run_cli(argv: list[str]) -> int:
    """The command line in a worker thread (it runs its own event loop)."""
    return await asyncio.wait_for(asyncio.to_thread(main, argv), timeout=60)


async def test_hostile_event_names_go_to_the_redis_dlq_and_name_no_stream(
    redis_url: str, tmp_path: Path
) -> None:
    """Frames named ``message.exchange:evil/../x y`` and ``bridge.gap`` from the simulator
    land in the DLQ stream with reason ``invalid_event`` and no token; no stream is made
    for them (only the good events' streams and the DLQ exist under the prefix)."""
    prefix = unique("hostile")
    token = TOKENS["shop-a"]
    async with Simulator(SimConfig(instances={"shop-a": token}, rate=0)) as sim:
        sim.pause("shop-a")
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-a": {"token": token}},
            sink={
                "kind": "redis",
                "dlq": f"{prefix}:dlq",
                "redis": {"url": redis_url, "stream": prefix + ":{instance}:{event}"},
            },
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop-a")["open_sockets"] == 1)
            for event in HOSTILE:
                assert await sim.send_raw("shop-a", hostile_frame(event, token))
            await sim.burst("shop-a", 3, event="call.update")
            await eventually(
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_events_published_total")
                    + counter(bridge.metrics, "ryze_bridge_dlq_records_total")  # dead letters apart
                    >= 5
                )
            )
            dead_count = counter(
                bridge.metrics, "ryze_bridge_dlq_records_total", reason=INVALID_EVENT
            )
    client = Redis.from_url(redis_url)
    try:
        keys = {k.decode() for k in await client.keys(f"{prefix}*") if isinstance(k, bytes)}
        dead = await read_stream(client, f"{prefix}:dlq")
        await delete_redis_keys(client, *keys)
    finally:
        await client.aclose()
    assert keys == {f"{prefix}:shop-a:call.update", f"{prefix}:dlq"}
    assert [fields[b"reason"] for _, fields in dead] == [INVALID_EVENT.encode()] * 2
    assert dead_count == 2
    assert not any(token.encode() in value for _, f in dead for value in f.values())


async def test_hostile_event_names_create_no_kafka_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With ``create_topics`` on, hostile names still create no topic: they land in the DLQ
    topic with reason ``invalid_event``, and the only topics under the prefix are the
    DLQ and the good event's."""
    prefix = unique("hostile")
    token = TOKENS["shop-b"]
    await create_topics(kafka_bootstrap, [f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances={"shop-b": token}, rate=0)) as sim:
        sim.pause("shop-b")
        kafka = {
            "bootstrap_servers": kafka_bootstrap,
            "topic": prefix + ".{instance}.{event}",
            "create_topics": True,
        }
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-b": {"token": token}},
            sink={"kind": "kafka", "dlq": f"{prefix}.dlq", "kafka": kafka},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop-b")["open_sockets"] == 1)
            for event in HOSTILE:
                assert await sim.send_raw("shop-b", hostile_frame(event, token))
            await sim.burst("shop-b", 2, event="label.update")
            await eventually(
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_events_published_total")
                    + counter(bridge.metrics, "ryze_bridge_dlq_records_total")  # dead letters apart
                    >= 4
                )
            )
    dead = await consume(kafka_bootstrap, [f"{prefix}.dlq"], 2, 20)
    assert [dict(r.headers)["ryze-dlq-reason"] for r in dead] == [INVALID_EVENT.encode()] * 2
    assert [dict(r.headers)["ryze-event"] for r in dead] == [b"unknown"] * 2
    assert not any(token.encode() in r.value for r in dead)
    made = {t for t in await broker_topics(kafka_bootstrap) if t.startswith(prefix)}
    assert made == {f"{prefix}.dlq", f"{prefix}.shop-b.label.update"}


async def test_topics_check_logs_in_with_the_sinks_sasl_and_tls_settings(
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over the broker's SASL_SSL listener, ``--check`` logs in as the sink would (SCRAM, the
    private CA) and lists what exists; with a wrong password it says the login failed, exits
    1, and prints the password nowhere."""
    services = read_services()
    if "kafka_sasl_ssl" not in services:
        unavailable("the services run without TLS; restart them: scripts/services.sh down && up")
    secure = services["kafka_sasl_ssl"]
    prefix = unique("sasl-check")
    await create_topics(kafka_bootstrap, [f"{prefix}.{e}" for e in (*EVENT_NAMES, "bridge.gap")])
    kafka = {
        "bootstrap_servers": secure["bootstrap_servers"],
        "topic": prefix + ".{event}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": secure["username"],
        "sasl_password_env": "TOPICS_KAFKA_PASSWORD",
        "ssl_cafile": services["tls"]["ca_file"],
    }
    config = tmp_path / "bridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "instances": {"shop-a": {"token_env": "UNUSED"}},
                "sink": {"kind": "kafka", "dlq": f"{prefix}.dlq", "kafka": kafka},
            }
        ),
        encoding="utf-8",
    )
    real = Path(secure["password_file"]).read_text(encoding="utf-8").strip()
    monkeypatch.setenv("TOPICS_KAFKA_PASSWORD", real)
    assert await run_cli(["topics", "--config", str(config), "--check"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("# 1 of 8 missing")
    assert f"{prefix}.dlq" in out.split("MISSING")[0].splitlines()[-1]

    wrong = "not-the-password-4242"
    monkeypatch.setenv("TOPICS_KAFKA_PASSWORD", wrong)
    assert await run_cli(["topics", "--config", str(config), "--check"]) == 1
    captured = capsys.readouterr()
    assert "SASL authentication" in captured.err
    assert wrong not in captured.err + captured.out
    assert real not in captured.err + captured.out
