"""Scale-out on Redis leases: real bridge processes, real Redis, the simulator."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge.simulator import SimConfig, Simulator
from tests.cluster.harness import (
    Replica,
    every_instance_once,
    most_sockets,
    owned,
    reconnected,
    replicas,
    sum_is,
    timed,
    unheard,
)
from tests.integration.harness import eventually
from tests.services import read_stream, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = 30
TTL = 3.0


def cluster_config(sim: Simulator, redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "upstream": {"base_url": sim.base_url, "backoff_initial": 0.1, "backoff_max": 1.0},
        "instances": {f"inst-{i:02d}": {"token_env": f"TOKEN_{i}"} for i in range(INSTANCES)},
        "sink": {
            "kind": "redis",
            "dlq": f"{prefix}-dlq",
            "redis": {"url": redis_url, "stream": prefix + ":{instance}"},
        },
        "cluster": {"mode": "redis", "group": prefix, "lease_ttl_ms": int(TTL * 1000)},
        "shutdown_timeout": 15,
    }


async def test_redis_leases_fail_over_and_fence_a_replica_that_froze(
    redis_url: str, tmp_path: Path
) -> None:
    """Three replicas share 30 instances by leases, each instance exactly once. One is
    SIGKILLed: its instances are connected again within the lease TTL plus a few seconds.
    One freezes (SIGSTOP) past the TTL: the other takes its shards; woken up, the frozen one
    notices its leases are gone and stops those sockets, and whatever it wrote for them was
    refused by fencing (DLQ reason ``fenced``), so no frame is in a stream twice. It then
    takes a fair share again and every instance is back to one socket."""
    prefix = unique("clr")
    names = [f"inst-{i:02d}" for i in range(INSTANCES)]
    tokens = {name: f"tok-{prefix}-{i:02d}-secret" for i, name in enumerate(names)}
    sim_config = SimConfig(instances=tokens, rate=3, record_frames=True, always_emit=True)
    async with Simulator(sim_config) as sim:
        config = cluster_config(sim, redis_url, prefix)
        env = {f"TOKEN_{i}": tokens[name] for i, name in enumerate(names)}
        r1, r2, r3 = (Replica(f"r{n}", tmp_path / f"r{n}", config, env) for n in range(1, 4))
        async with replicas(r1, r2, r3):
            await asyncio.gather(r1.start(), r2.start(), r3.start())
            await timed(lambda: every_instance_once(sim, names), 60)
            await eventually(lambda: sum_is(owned([r1, r2, r3]), 64), 30)
            await asyncio.sleep(TTL)
            assert every_instance_once(sim, names)
            assert most_sockets(sim, names) == 1

            # SIGKILL: the leases expire, the survivors take the shards
            moved_away = reconnected(sim, await r1.instances())
            lost_before_kill = unheard(sim, names)
            r1.send(signal.SIGKILL)
            takeover = await timed(
                lambda: moved_away() and every_instance_once(sim, names), TTL + 10
            )
            kill_loss = unheard(sim, names) - lost_before_kill
            assert most_sockets(sim, names) == 1

            # SIGSTOP past the TTL: r3 takes r2's shards while r2 sleeps
            frozen = await r2.instances()
            taken = reconnected(sim, frozen)
            r2.send(signal.SIGSTOP)
            freeze_takeover = await timed(taken, 2 * TTL + 10)
            await asyncio.sleep(1)
            r2.send(signal.SIGCONT)
            await eventually(lambda: "cluster.leases_lost" in r2.log_text(), 15)
            await timed(lambda: every_instance_once(sim, names), 30)
            await eventually(lambda: sum_is(owned([r2, r3]), 64), 30)
            fenced = await r2.settled_metric("ryze_bridge_dlq_records_total", reason="fenced")
            for member in (r2, r3):
                member.send(signal.SIGTERM)
            assert [await r2.wait(30), await r3.wait(30)] == [0, 0]
        sent = sum(len(sim.sent_frames(n)) for n in names)
        logs = r1.log_text() + r2.log_text() + r3.log_text()
        for token in tokens.values():
            assert token not in logs
    client = Redis.from_url(redis_url)
    try:
        delivered: Counter[bytes] = Counter()
        for name in names:
            for entry in await read_stream(client, f"{prefix}:{name}"):
                if entry[1][b"event"] != b"bridge.gap":
                    delivered[entry[1][b"id"]] += 1
        dlq = await read_stream(client, f"{prefix}-dlq")
    finally:
        await client.aclose()
    twice = [i for i, n in delivered.items() if n > 1]
    assert not twice, f"{len(twice)} frames written twice"
    fenced_entries = [e for e in dlq if e[1].get(b"reason") == b"fenced"]
    assert fenced is not None
    assert len(fenced_entries) == int(fenced)
    assert fenced > 0, "the frozen replica wrote nothing after waking: nothing was fenced"
    print(
        f"\nredis mode: takeover after SIGKILL {takeover:.1f} s (TTL {TTL} s); after SIGSTOP "
        f"{freeze_takeover:.1f} s; frames lost upstream on kill {kill_loss}; stale writes "
        f"fenced {int(fenced)}; frames in streams {sum(delivered.values())} of {sent} sent"
    )
