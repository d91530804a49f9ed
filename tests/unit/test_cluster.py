"""The pure rules of scale-out: shard map, cooperative assignment, fair share, static split,
and the settings that guard them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from bridge.cluster import static_owned
from bridge.cluster.balance import (
    cooperative_assign,
    fair_share,
    pod_ordinal,
    preference,
    shard_of,
    static_shards,
)
from bridge.cluster.kafka import (
    KafkaMembership,
    assignments,
    decode_claims,
    encode_claims,
    stale_claims,
)
from bridge.errors import ConfigError
from bridge.metrics import create_metrics
from bridge.settings import ClusterSettings, Settings
from bridge.sinks.base import Rejected
from bridge.sinks.redis import classify
from bridge.spool import wait_settled
from tests.unit.spools import local_spool
from tests.unit.test_spool_worker import record


def test_shard_of_is_stable_and_spreads() -> None:
    """The same name maps to the same shard in every process (a fixed value, not hash()),
    and 6,400 names fill all 64 shards roughly evenly."""
    assert shard_of("shop-a", 64) == shard_of("shop-a", 64) == 28
    counts = [0] * 64
    for i in range(6400):
        counts[shard_of(f"instance-{i}", 64)] += 1
    assert min(counts) > 60
    assert max(counts) < 150


def test_first_assignment_splits_evenly() -> None:
    """Three members holding nothing get 22/21/21 of 64, every shard exactly once."""
    plan = cooperative_assign(64, {"a": frozenset(), "b": frozenset(), "c": frozenset()})
    assert sorted(len(s) for s in plan.values()) == [21, 21, 22]
    assert sorted(s for shards in plan.values() for s in shards) == list(range(64))


def test_a_joiner_gets_nothing_until_the_holders_let_go() -> None:
    """A fourth member joining three full ones: each keeps 16, the shards above that are
    assigned to nobody this round (their holders must release first), and the joiner gets
    them in the next round once they are free. Only the surplus moves."""
    first = cooperative_assign(64, {"a": frozenset(), "b": frozenset(), "c": frozenset()})
    held = {m: frozenset(s) for m, s in first.items()} | {"d": frozenset()}
    second = cooperative_assign(64, held)
    assert [len(second[m]) for m in "abcd"] == [16, 16, 16, 0]
    assert all(second[m] <= held[m] for m in "abc")
    released = {m: frozenset(second[m]) for m in "abcd"}
    third = cooperative_assign(64, released)
    assert len(third["d"]) == 16
    assert all(third[m] == second[m] for m in "abc")
    moved = sum(len(held[m] - third[m]) for m in "abc")
    assert moved == 16


def test_a_departure_hands_its_shards_to_the_survivors_at_once() -> None:
    """A member gone from the group claims nothing: its shards are free and are assigned to
    the survivors in the same round, the survivors keeping what they hold."""
    held = {"a": frozenset(range(32)), "b": frozenset(range(32, 48))}
    plan = cooperative_assign(64, held)
    assert plan["a"] == set(range(32))
    assert held["b"] <= plan["b"]
    assert sorted(s for shards in plan.values() for s in shards) == list(range(64))


def test_contested_shards_go_to_nobody() -> None:
    """Two members claiming a shard (one was thrown out and came back) both lose it this
    round, so it is never read twice; claims outside the shard range are ignored."""
    plan = cooperative_assign(4, {"a": frozenset({0, 1, 99}), "b": frozenset({1, 2})})
    assert 1 not in plan["a"] | plan["b"]
    assert 0 in plan["a"]
    assert 2 in plan["b"]


def test_join_metadata_round_trips_and_garbage_claims_nothing() -> None:
    """What a member reports at join is read back by the leader; unreadable metadata from an
    unknown client claims no shard rather than breaking the round."""
    assert decode_claims(encode_claims("r1", {3, 1})) == {1, 3}
    assert decode_claims(b"\\xff not json") == frozenset()
    assert decode_claims(b"[1, 2]") == frozenset()
    assert decode_claims(b"") == frozenset()


def test_leader_answer_names_the_coordination_topic() -> None:
    """The leader's per-member assignment lists the member's shards as partitions of the
    coordination topic."""

    class Meta:
        def __init__(self, data: bytes) -> None:
            self.user_data = data

    answer = assignments("t", 2, {"m1": Meta(b""), "m2": Meta(encode_claims("r2", [0]))})
    assert answer["m2"].assignment == [("t", [0])]
    assert answer["m1"].assignment == [("t", [1])]


def test_fair_share_static_split_and_ordinals() -> None:
    """Redis fair share rounds up; static replicas split shards by index; pod ordinals come
    from StatefulSet names; each replica's preference order is its own permutation."""
    assert [fair_share(64, n) for n in (0, 1, 3, 4)] == [64, 64, 22, 16]
    assert static_shards(6, 1, 3) == {1, 4}
    assert pod_ordinal("ryze-bridge-12") == 12
    assert pod_ordinal("laptop") is None
    assert sorted(preference("r1", 64)) == list(range(64))
    assert preference("r1", 64) != preference("r2", 64)


def test_static_index_defaults_to_the_pod_ordinal() -> None:
    """In static mode without an index, POD_NAME's ordinal is used; a name without one is a
    config error naming cluster.index."""
    settings = ClusterSettings(mode="static", count=2, shards=4)
    assert static_owned(settings, {"POD_NAME": "rb-1"}) == {1, 3}
    with pytest.raises(ConfigError, match=r"cluster\.index"):
        static_owned(settings, {"POD_NAME": "laptop"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cluster": {"mode": "kafka"}, "sink": {"kind": "redis"}}, "set sink.kind: kafka"),
        ({"cluster": {"mode": "static"}}, "static mode needs count"),
        ({"cluster": {"mode": "static", "count": 2, "index": 2}}, "must be below count"),
        ({"cluster": {"heartbeat_interval_ms": 5000}}, "at most a third"),
        ({"cluster": {"mode": "raft"}}, "cluster.mode"),
    ],
)
def test_inconsistent_cluster_settings_are_refused(data: dict[str, object], message: str) -> None:
    """A cluster mode without its sink, static without a count, an index out of range and a
    heartbeat too slow for the session are refused with a readable reason."""
    with pytest.raises(ValueError, match=message):
        Settings.model_validate(data)


def test_fenced_write_is_a_dlq_outcome() -> None:
    """A write refused by the fencing script is not retried: it goes to the DLQ, reason
    ``fenced``."""
    outcome = classify(redis_errors.ResponseError("FENCED shard owned by a newer lease holder"))
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "fenced"


async def test_wait_settled_waits_for_records_before_the_mark_only(tmp_path: Path) -> None:
    """A release waits until what was read before it is delivered, not for records appended
    after (other shards keep reading meanwhile)."""
    spool = local_spool(tmp_path, max_bytes=1 << 20)
    spool.append(record(1))
    mark = spool.appended_total()
    spool.append(record(2))
    batch = await spool.read(1)
    assert len(batch) == 1
    spool.ack(1)
    await asyncio.wait_for(wait_settled(spool.writer, mark), 5)
    assert spool.stats().events == 1
    spool.close()


class StandInOwner:
    """A ShardOwner that runs nothing."""

    async def take(self, shards: frozenset[int]) -> None:
        return None

    async def release(self, shards: frozenset[int], *, lost: bool) -> None:
        return None


class StandInCoordinator:
    """What the membership reaches of aiokafka's group coordinator: its rejoin requests."""

    member_id = "m-1"

    def __init__(self) -> None:
        self.rejoins = 0

    def request_rejoin(self) -> None:
        self.rejoins += 1


class StandInConsumer:
    def __init__(self) -> None:
        self._coordinator = StandInCoordinator()


def test_claims_are_stale_when_shards_were_let_go_during_the_round() -> None:
    """Claims sent with a join differ from what the member holds once its assignment arrives
    exactly when it let shards go meanwhile."""
    assert stale_claims(frozenset({1, 2, 5}), frozenset({1, 2}))
    assert not stale_claims(frozenset({1, 2}), frozenset({1, 2}))


def test_a_release_finished_during_a_round_asks_for_another_round() -> None:
    """A member joined claiming shards it was releasing, and the release ended before the
    round's assignment came (aiokafka forgot the rejoin the release asked for): on that
    assignment it asks for another round, so the leader can hand the shards on. With claims
    still true, an assignment asks for nothing."""
    settings = Settings.model_validate(
        {
            "sink": {"kind": "kafka", "kafka": {"bootstrap_servers": "127.0.0.1:1"}},
            "cluster": {"mode": "kafka", "shards": 8},
        }
    )
    membership = KafkaMembership(settings, StandInOwner(), create_metrics(), "r0", None)
    consumer = StandInConsumer()
    membership._consumer = consumer
    membership._running = {1, 2}
    membership._releasing = {5}
    assert membership.advertise() == frozenset({1, 2, 5})  # the join's metadata
    membership.assigned(frozenset({1, 2}))
    assert consumer._coordinator.rejoins == 0
    membership.advertise()
    membership._releasing.clear()  # the release ends while the round runs
    membership.assigned(frozenset({1, 2}))
    assert consumer._coordinator.rejoins == 1
