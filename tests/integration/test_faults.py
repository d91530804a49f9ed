"""Nothing lost: broker outages, crashes, graceful stops with the sink down, a full spool.

Each test prints one line ``FAULT name: sent=… delivered=… duplicated=… lost=… dropped=…``
(shown with ``pytest -s``) for the durability report.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from redis.asyncio import Redis

from bridge.pipeline import Record
from bridge.settings import EVENT_NAMES
from bridge.shipper.parent import ShipperDelivery
from bridge.simulator import SimConfig, Simulator
from bridge.spool.disk import DiskSpool
from tests.integration.harness import (
    counter,
    eventually,
    kafka_sink,
    redis_sink,
    running_bridge,
    settings_for,
)
from tests.services import Services, consume_all, create_topics, read_stream, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def report(name: str, sent: list[str], delivered: list[str], dropped: int = 0) -> Counter[str]:
    """Print the fault line; return the delivery count per id."""
    counts = Counter(delivered)
    duplicated = sum(c - 1 for c in counts.values() if c > 1)
    lost = len(set(sent) - set(counts))
    print(  # noqa: T201 - the durability report
        f"FAULT {name}: sent={len(sent)} delivered={len(counts)} duplicated={duplicated} "
        f"lost={lost} dropped={dropped}"
    )
    return counts


def ids_of(values: list[bytes]) -> list[str]:
    """The frame ids of event values (gap markers, which have none, left out)."""
    documents = [orjson.loads(v) for v in values]
    return [d["data"]["id"] for d in documents if d["event"] != "bridge.gap"]


async def redis_ids(url: str, prefix: str) -> list[str]:
    client = Redis.from_url(url)
    try:
        keys = [k for k in await client.keys(f"{prefix}:*") if isinstance(k, bytes)]
        values = [f[b"data"] for k in keys for _, f in await read_stream(client, k.decode())]
    finally:
        await client.aclose()
    return ids_of(values)


@pytest.mark.timeout(300)  # a real broker stopped and started again: slow on a loaded machine
async def test_kafka_outage_of_20_s_loses_nothing(services: Services, tmp_path: Path) -> None:
    """Kafka is stopped for 20 s while ~1,000 events/s stream in: the socket keeps reading
    and answering pings (no drop), the spool holds the frames, and afterwards every frame
    sent is in Kafka."""
    prefix = unique("outage")
    tokens = {"shop-a": "tok-outage-a-1", "shop-b": "tok-outage-b-2"}
    topics = [f"{prefix}.{i}.{e}" for i in tokens for e in EVENT_NAMES]
    await create_topics(services.kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    config = SimConfig(instances=tokens, rate=500, ping_interval=1.0, pong_timeout=3.0)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={n: {"token": t} for n, t in tokens.items()},
            sink=kafka_sink(
                services.kafka_bootstrap, prefix + ".{instance}.{event}", f"{prefix}.dlq"
            ),
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: all(sim.stats(n)["frames_sent"] > 1000 for n in tokens))
            await asyncio.to_thread(services.stop, "kafka")
            try:
                await asyncio.sleep(20)
                held = counter(bridge.metrics, "ryze_bridge_spool_events")
            finally:
                await asyncio.to_thread(services.start, "kafka")
            for name in tokens:
                sim.pause(name)
            sent = [i for n in tokens for i in sim.sent_ids(n)]
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= len(sent),
                within=120,
            )
        stats = {n: sim.stats(n) for n in tokens}
    records = await consume_all(services.kafka_bootstrap, topics)
    counts = report("kafka-outage-20s", sent, ids_of([r.value for r in records]))
    assert set(counts) == set(sent)
    assert held > 5000
    assert all(s["upgrades"] == 1 and s["pong_timeouts"] == 0 for s in stats.values())


async def test_redis_restart_loses_nothing(services: Services, tmp_path: Path) -> None:
    """Redis is stopped for 5 s and started again while frames stream in: every frame sent
    ends up in its stream, and the socket was never dropped."""
    prefix = unique("rrestart")
    tokens = {"shop": "tok-rrestart-3"}
    config = SimConfig(instances=tokens, rate=500, ping_interval=1.0, pong_timeout=3.0)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink=redis_sink(services.redis_url, prefix),
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 500)
            await asyncio.to_thread(services.stop, "redis")
            try:
                await asyncio.sleep(5)
            finally:
                await asyncio.to_thread(services.start, "redis")
            sim.pause("shop")
            sent = sim.sent_ids("shop")
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= len(sent),
                within=60,
            )
        stats = sim.stats("shop")
    counts = report("redis-restart-5s", sent, await redis_ids(services.redis_url, prefix))
    assert set(counts) == set(sent)
    assert stats["upgrades"] == 1
    assert stats["pong_timeouts"] == 0


def bridge_config(tmp_path: Path, base_url: str, tokens: dict[str, str], sink: dict[str, Any],
                  **extra: Any) -> Path:  # fmt: skip
    """A config file for a bridge process, tokens passed by environment."""
    config = {
        "upstream": {"base_url": base_url, "backoff_initial": 0.05, "backoff_max": 0.5},
        "instances": {name: {"token_env": f"TOKEN_{n}"} for n, name in enumerate(tokens)},
        "sink": {**sink, "retry_initial": 0.05, "retry_max": 0.5},
        "spool": {"dir": str(tmp_path / "spool")},
        "admin": {"host": "127.0.0.1", "port": 0},
        **extra,
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def start_bridge(path: Path, tokens: dict[str, str]) -> asyncio.subprocess.Process:
    env = {f"TOKEN_{n}": token for n, token in enumerate(tokens.values())}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(path),
        env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> str:
    """Signal the process, wait (bounded), return its stderr (logs)."""
    if process.returncode is None:
        process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return (await process.stderr.read()).decode() if process.stderr else ""


async def test_a_killed_shipper_is_started_again_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The shipper process (the sink worker beside the bridge) is SIGKILLed mid-stream: the
    bridge goes on reading, starts a new shipper from the spool's acknowledged position, and
    every frame sent is in Kafka (what the dead one had in flight possibly twice)."""
    prefix = unique("shipper")
    tokens = {"shop-a": "tok-shipper-a-3"}
    topics = [f"{prefix}.{i}.{e}" for i in tokens for e in EVENT_NAMES]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances=tokens, rate=500)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={n: {"token": t} for n, t in tokens.items()},
            sink=kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", f"{prefix}.dlq"),
        )
        async with running_bridge(settings) as bridge:
            delivery = bridge.delivery
            assert isinstance(delivery, ShipperDelivery)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") > 500
            )
            killed = delivery.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            await eventually(lambda: delivery.pid not in (None, killed), within=30)
            assert counter(bridge.metrics, "ryze_bridge_shipper_restarts_total") == 1
            await eventually(lambda: all(sim.stats(n)["frames_sent"] > 2500 for n in tokens))
            for name in tokens:
                sim.pause(name)
            sent = [i for n in tokens for i in sim.sent_ids(n)]
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_spool_events") == 0, within=60
            )
            upgrades = {n: sim.stats(n)["upgrades"] for n in tokens}
    records = await consume_all(kafka_bootstrap, topics)
    counts = report("shipper-sigkill", sent, ids_of([r.value for r in records]))
    assert set(counts) == set(sent)
    assert all(u == 1 for u in upgrades.values()), "the sockets were not touched"


async def test_sigkill_then_restart_delivers_what_was_received(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The bridge is killed with SIGKILL mid-stream and started again on the same spool:
    every frame it had received is delivered (at least once; duplicates counted). Frames the
    upstream had sent but the bridge had not yet read off the socket (in flight at the kill)
    are the only ones missing, and only at the tail."""
    prefix = unique("crash")
    tokens = {"shop-a": "tok-crash-a-7", "shop-b": "tok-crash-b-8"}
    topics = [f"{prefix}.{i}.{e}" for i in tokens for e in EVENT_NAMES]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances=tokens, rate=500)) as sim:
        sink = kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", f"{prefix}.dlq")
        path = bridge_config(tmp_path, sim.base_url, tokens, sink)
        first = await start_bridge(path, tokens)
        await eventually(lambda: all(sim.stats(n)["frames_sent"] > 1500 for n in tokens), 30)
        await stop(first, signal.SIGKILL)
        await eventually(lambda: all(sim.stats(n)["open_sockets"] == 0 for n in tokens), 10)
        before_kill = {n: sim.sent_ids(n) for n in tokens}
        second = await start_bridge(path, tokens)
        await eventually(lambda: all(sim.stats(n)["upgrades"] == 2 for n in tokens), 30)
        await asyncio.sleep(1.0)
        for name in tokens:
            sim.pause(name)
        sent = [i for n in tokens for i in sim.sent_ids(n)]
        after_restart = set(sent) - {i for ids in before_kill.values() for i in ids}
        records: list[Any] = []
        for _ in range(60):
            records = await consume_all(kafka_bootstrap, topics)
            if after_restart <= set(ids_of([r.value for r in records])):
                break
        logs = await stop(second)
    counts = report("sigkill-restart", sent, ids_of([r.value for r in records]))
    assert after_restart <= set(counts)
    for name, ids in before_kill.items():
        missing = [i for i in ids if i not in counts]
        tail = set(ids[-400:])  # < 0.4 s of this instance's stream at 500 frames/s
        assert all(i in tail for i in missing), f"{name}: lost {len(missing)} not at the tail"
    assert '"replay":' in logs


async def test_graceful_stop_with_sink_down_keeps_everything_for_next_start(
    services: Services, tmp_path: Path
) -> None:
    """With Redis down, SIGTERM still exits 0 within the shutdown timeout; what could not be
    delivered stays in the spool and the next start delivers all of it."""
    prefix = unique("downstop")
    tokens = {"shop": "tok-downstop-9"}
    sink = redis_sink(services.redis_url, prefix)
    async with Simulator(SimConfig(instances=tokens, rate=300)) as sim:
        path = bridge_config(tmp_path, sim.base_url, tokens, sink, shutdown_timeout=5)
        await asyncio.to_thread(services.stop, "redis")
        try:
            first = await start_bridge(path, tokens)
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 600, 30)
            sim.pause("shop")
            await asyncio.sleep(0.5)
            started = asyncio.get_running_loop().time()
            logs = await stop(first)
            took = asyncio.get_running_loop().time() - started
        finally:
            await asyncio.to_thread(services.start, "redis")
        assert first.returncode == 0, logs[-2000:]
        assert took < 5 + 5
        assert '"event": "bridge.undelivered"' in logs
        sent = sim.sent_ids("shop")
        second = await start_bridge(path, tokens)
        try:
            await eventually(
                lambda: _ids_in(services.redis_url, prefix, len(sent)), within=30, every=0.5
            )
        finally:
            await stop(second)
    counts = report("graceful-stop-sink-down", sent, await redis_ids(services.redis_url, prefix))
    assert set(counts) == set(sent)


async def _ids_in(url: str, prefix: str, count: int) -> bool:
    return len(set(await redis_ids(url, prefix))) >= count


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_full_spool_drops_exactly_what_it_counts(
    services: Services, tmp_path: Path, policy: str
) -> None:
    """With a tiny spool and Redis down, the policy drops frames; once Redis is back, the
    frames delivered plus the frames counted as dropped are exactly the frames sent."""
    prefix = unique("full")
    tokens = {"shop": "tok-full-0"}
    async with Simulator(SimConfig(instances=tokens, rate=0)) as sim:
        sim.pause("shop")
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink=redis_sink(services.redis_url, prefix),
            spool={"max_bytes": 200_000, "when_full": policy},
        )
        await asyncio.to_thread(services.stop, "redis")
        try:
            async with running_bridge(settings) as bridge:
                await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
                await sim.burst("shop", 1500)
                received = "ryze_bridge_events_received_total"
                await eventually(lambda: counter(bridge.metrics, received) >= 1500)
                await asyncio.to_thread(services.start, "redis")
                dropped = counter(bridge.metrics, "ryze_bridge_events_dropped_total")
                await eventually(
                    lambda: (
                        counter(bridge.metrics, "ryze_bridge_events_published_total") + dropped
                        >= 1500
                    ),
                    within=30,
                )
        finally:
            await asyncio.to_thread(services.start, "redis")
        sent = sim.sent_ids("shop")
    delivered = await redis_ids(services.redis_url, prefix)
    counts = report(f"spool-full-{policy}", sent, delivered, int(dropped))
    assert dropped > 0
    assert len(counts) + dropped == len(sent) == 1500
    if policy == "drop_newest":
        assert max(counts, key=sent.index) != sent[-1]
    else:
        assert sent[-1] in counts


async def test_damaged_spool_recovers_and_delivers_the_rest(tmp_path: Path) -> None:
    """One segment cut mid-entry and one with a flipped byte: start-up counts one torn and one
    damaged entry, and every other entry is delivered."""
    spool = DiskSpool(tmp_path / "spool", max_bytes=10_000_000, fsync="never", segment_bytes=1500)
    spool.open()
    for n in range(40):
        value = b'{"event":"call.update","data":{"id":"r%d"}}' % n
        spool.append(
            Record("ryze.shop.call.update", b"shop", value, "call.update", "shop", n, f"i{n}")
        )
    spool.close()
    segments = sorted((tmp_path / "spool").glob("seg-*.log"))
    assert len(segments) >= 3
    first = bytearray(segments[0].read_bytes())
    first[len(first) // 2] ^= 0x01
    segments[0].write_bytes(bytes(first))
    last = segments[-1].read_bytes()
    segments[-1].write_bytes(last[:-10])
    events = tmp_path / "events.jsonl"
    settings = settings_for(
        "http://127.0.0.1:9", tmp_path, sink={"kind": "file", "file": {"path": str(events)}}
    )
    async with running_bridge(settings) as bridge:
        await eventually(lambda: counter(bridge.metrics, "ryze_bridge_spool_events") == 0)
        damaged = counter(
            bridge.metrics, "ryze_bridge_spool_recovered_records_total", outcome="damaged"
        )
        torn = counter(bridge.metrics, "ryze_bridge_spool_recovered_records_total", outcome="torn")
    delivered = [
        orjson.loads(line)["data"]["data"]["id"] for line in events.read_bytes().splitlines()
    ]
    report("damaged-spool", [f"r{n}" for n in range(40)], delivered)
    assert (damaged, torn) == (1, 1)
    assert len(delivered) == 38
    assert len(set(delivered)) == 38
