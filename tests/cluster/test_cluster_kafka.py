"""Scale-out on Kafka's group protocol: real bridge processes, real Kafka, the simulator."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from tests.cluster.harness import (
    Replica,
    events_after_stopping,
    every_instance_once,
    most_sockets,
    owned,
    owns_at_least,
    reconnected,
    replicas,
    sum_is,
    timed,
    unheard,
)
from tests.integration.harness import eventually, expected_value
from tests.services import consume, create_topics, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCES = 60
SESSION_TIMEOUT = 6.0


def cluster_config(sim: Simulator, bootstrap: str, prefix: str) -> dict[str, Any]:
    return {
        "upstream": {"base_url": sim.base_url, "backoff_initial": 0.1, "backoff_max": 1.0},
        "instances": {f"inst-{i:02d}": {"token_env": f"TOKEN_{i}"} for i in range(INSTANCES)},
        "sink": {
            "kind": "kafka",
            "dlq": f"{prefix}.dlq",
            "kafka": {"bootstrap_servers": bootstrap, "topic": prefix + ".{event}"},
        },
        "cluster": {
            "mode": "kafka",
            "group": prefix,
            "topic": f"{prefix}.cluster",
            "session_timeout_ms": int(SESSION_TIMEOUT * 1000),
            "heartbeat_interval_ms": 1000,
        },
        "shutdown_timeout": 15,
    }


async def test_kafka_group_shares_instances_fails_over_and_rebalances_cooperatively(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Three replicas in one group run 60 instances, each exactly once. A fourth joins: about
    a quarter of the 64 shards move and no instance ever has two sockets. One replica is
    SIGKILLed: the survivors reconnect its instances within the session timeout plus a few
    seconds, and deliver everything read from then on. One is SIGTERMed: it hands its shards
    over losing nothing it had read, and exits 0; two SIGTERMed together open no socket
    once their shutdown began (the shards one hands the other then are refused). Every
    other frame sent is in Kafka."""
    prefix = unique("clk")
    names = [f"inst-{i:02d}" for i in range(INSTANCES)]
    tokens = {name: f"tok-{prefix}-{i:02d}-secret" for i, name in enumerate(names)}
    topics = [f"{prefix}.{e}" for e in EVENT_NAMES]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.bridge.gap", f"{prefix}.dlq"])
    sim_config = SimConfig(instances=tokens, rate=3, record_frames=True, always_emit=True)
    async with Simulator(sim_config) as sim:
        config = cluster_config(sim, kafka_bootstrap, prefix)
        env = {f"TOKEN_{i}": tokens[name] for i, name in enumerate(names)}
        r1, r2, r3, r4 = (Replica(f"r{n}", tmp_path / f"r{n}", config, env) for n in range(1, 5))
        async with replicas(r1, r2, r3, r4):
            await asyncio.gather(r1.start(), r2.start(), r3.start())
            await timed(lambda: every_instance_once(sim, names), 60)
            await eventually(lambda: sum_is(owned([r1, r2, r3]), 64), 30)
            await asyncio.sleep(2)
            assert every_instance_once(sim, names)
            assert most_sockets(sim, names) == 1
            before = await owned([r1, r2, r3])

            # a fourth replica joins: only the shards that must move, move
            lost_before_join = unheard(sim, names)
            await r4.start()
            await eventually(lambda: owns_at_least(r4, 14), 60)
            await eventually(lambda: sum_is(owned([r1, r2, r3, r4]), 64), 30)
            await timed(lambda: every_instance_once(sim, names), 30)
            after = await owned([r1, r2, r3, r4])
            moved = sum(max(0, before[r] - after[r]) for r in before)
            assert 14 <= moved <= 20, (before, after)
            assert most_sockets(sim, names) == 1
            join_loss = unheard(sim, names) - lost_before_join

            # SIGKILL: the survivors take over within the session timeout + a few seconds
            victim_instances = await r2.instances()
            moved_away = reconnected(sim, victim_instances)
            lost_before_kill = unheard(sim, names)
            r2.send(signal.SIGKILL)
            takeover = await timed(
                lambda: moved_away() and every_instance_once(sim, names), SESSION_TIMEOUT + 15
            )
            from_index = {n: len(sim.sent_frames(n)) for n in names}
            kill_loss = unheard(sim, names) - lost_before_kill
            assert most_sockets(sim, names) == 1

            # SIGTERM: a graceful hand-over, nothing it read is lost
            lost_before_term = unheard(sim, names)
            handed = reconnected(sim, await r3.instances())
            r3.send(signal.SIGTERM)
            handover = await timed(lambda: handed() and every_instance_once(sim, names), 30)
            assert await r3.wait(30) == 0, r3.log_text()[-3000:]
            term_loss = unheard(sim, names) - lost_before_term
            await asyncio.sleep(2)
            assert most_sockets(sim, names) == 1
            for member in (r1, r4):
                member.send(signal.SIGTERM)
            assert [await r1.wait(30), await r4.wait(30)] == [0, 0]
            for member in (r1, r3, r4):  # shards handed over mid-shutdown start nothing
                for event in ("ws.connected", "runner.crashed"):
                    assert events_after_stopping(member.log_text(), event) == 0, member.name
        sent = {n: sim.sent_frames(n) for n in names}
        for member in (r1, r2, r3, r4):
            for token in tokens.values():
                assert token not in member.log_text()
    expected = set()
    for name, frames in sent.items():
        start = from_index[name] if name in victim_instances else 0
        expected |= {expected_value(f, tokens[name]) for f in frames[start:]}
    total = sum(len(f) for f in sent.values())
    records = await consume(kafka_bootstrap, [*topics, f"{prefix}.bridge.gap"], total, 20)
    values = {r.value for r in records}
    missing = expected - values
    assert not missing, f"{len(missing)} of {len(expected)} frames not delivered"
    takeovers = [orjson.loads(r.value)["data"] for r in records if r.topic.endswith(".gap")]
    assert any(g["reason"] == "shard_takeover" for g in takeovers)
    print(  # the numbers for the scale-out report (pytest -s)
        f"\nkafka mode: shards moved on join {moved} of 64 ({before} -> {after}); "
        f"takeover after SIGKILL {takeover:.1f} s; hand-over after SIGTERM {handover:.1f} s; "
        f"frames lost upstream: join {join_loss}, kill {kill_loss}, term {term_loss}; "
        f"frames delivered {len(values)} of {total} sent"
    )
