"""Cluster scale, CI-sized: the benchmark's cluster-scale part (bench/cluster_scale.py) run
with 400 instances over 4 replicas in ``cluster.mode: kafka`` — real bridge processes, real
Kafka, the simulator as its own process, each instance with its own token."""

from __future__ import annotations

from typing import Any

import pytest

from bench import cluster_scale
from bench.common import Services, delete_created_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

INSTANCES = 400
REPLICAS = 4


async def test_a_killed_replica_is_taken_over_and_a_rolling_restart_keeps_the_budget(
    kafka_bootstrap: str,
) -> None:
    """Four replicas connect 400 instances with no 429 (an instance moves at most once
    while the others join). One is SIGKILLed while events flow: the others reconnect its
    instances within the group's session timeout plus half a minute, with no 429 and never
    two sockets for one instance. It restarts on its spool; then each replica in turn is
    SIGTERMed (exit 0) and started again: no 429, never two sockets, each instance
    reconnected at most a few times. Every frame the simulator wrote to a socket is in Kafka
    (duplicates allowed), but for those written to the killed replica's sockets (unread when
    it died, or written to them after it died)."""
    try:
        result = await cluster_scale.run(
            Services(kafka_bootstrap, ""), INSTANCES, replicas=REPLICAS, rate=0.2, window=5
        )
    finally:
        await delete_created_topics(kafka_bootstrap)
    start, kill, rolling = result["start"], result["kill"], result["rolling"]
    print(f"\ncluster scale {INSTANCES}/{REPLICAS}: {summary(result)}")  # for pytest -s
    assert [start["rate_limited_429"], kill["rate_limited_429"], rolling["rate_limited_429"]] == [
        0,
        0,
        0,
    ]
    assert [start["most_doubled"], kill["most_doubled"], rolling["most_doubled"]] == [0, 0, 0]
    assert INSTANCES <= start["connects"] <= 2 * INSTANCES  # a joiner's shards move once
    assert kill["instances_moved"] >= INSTANCES // REPLICAS // 2
    assert kill["seconds_to_reconnected"] <= cluster_scale.SESSION_MS / 1000 + 30
    assert rolling["connects"] <= 3 * INSTANCES, rolling
    assert result["exit_codes"] == [0] * REPLICAS
    assert [s["exit"] for s in rolling["steps"]] == [0] * REPLICAS
    assert result["loss"]["sent"] > INSTANCES
    assert result["loss"]["missing_otherwise"] == 0, result["loss"]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures without the start's timeline (pure)."""
    start = {k: v for k, v in result["start"].items() if k != "timeline"}
    return {**result, "start": start}
