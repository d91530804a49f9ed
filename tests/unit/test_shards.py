"""The shard coordinator in isolation: ownership, takes and releases through the fleet, the
drain before a release, takeovers timed, the fencing handed to the sink.

A real fleet (with stand-in runners, see test_fleet), a real disk spool in tmp_path and the
real static membership.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest

from bridge.cluster import Membership, ShardOwner, StaticMembership
from bridge.cluster.kafka import KafkaMembership
from bridge.cluster.redis import RedisMembership
from bridge.errors import ClusterError
from bridge.fleet import Fleet
from bridge.metrics import Metrics, create_metrics
from bridge.settings import Settings
from bridge.shards import (
    MEMBERSHIP_RETRIES,
    TAKEOVER_WATCH_SECONDS,
    Ownership,
    ShardCoordinator,
    settled_takeovers,
)
from bridge.spool.disk import DiskSpool
from tests.integration.harness import eventually
from tests.unit.spools import Local, local_spool
from tests.unit.test_disk_spool import record
from tests.unit.test_fleet import Made, instance, running

SHARDS = 8


def names_in(ownership: Ownership, shard: int, count: int) -> list[str]:
    """``count`` instance names that hash to ``shard``."""
    names = (f"shop-{n}" for n in range(10_000))
    return [n for n in names if ownership.shard(n) == shard][:count]


class DrainingMembership(StaticMembership):
    """The static membership, but a release may wait ``drain`` seconds for delivery."""

    def __init__(self, shards: frozenset[int], owner: ShardOwner, metrics: Metrics, drain: float):
        super().__init__("static", shards, owner, metrics)
        self.drain = drain

    def drain_timeout(self) -> float:
        return self.drain


def coordinator(
    tmp_path: Path, owned: frozenset[int], drain: float = 0.0
) -> tuple[ShardCoordinator, Fleet, Made, Local]:
    metrics = create_metrics()
    ownership = Ownership(SHARDS)
    made = Made()
    fleet = Fleet(made, metrics, owns=ownership.mine)
    spool = local_spool(tmp_path / "spool", max_bytes=1 << 20)

    def join(owner: ShardOwner) -> Membership:
        return DrainingMembership(owned, owner, metrics, drain)

    shards = ShardCoordinator(
        ownership, fleet, spool.writer, metrics, join, mode="static", replica="bridge-0"
    )
    return shards, fleet, made, spool


def test_ownership_runs_everything_without_a_cluster_and_only_owned_shards_with_one() -> None:
    """No cluster: every instance is this replica's; in a cluster, those of owned shards."""
    ownership = Ownership(SHARDS)
    name = names_in(ownership, 3, 1)[0]
    assert ownership.mine(name)
    ownership.owned = frozenset({2})
    assert not ownership.mine(name)
    ownership.owned = frozenset({2, 3})
    assert ownership.mine(name)


async def test_taken_shards_run_their_wanted_instances_and_later_takes_are_takeovers(
    tmp_path: Path,
) -> None:
    """A replica in a cluster runs nothing until it owns shards; the first take starts the
    wanted instances of the shards taken (not a takeover), a later take is a takeover."""
    shards, fleet, made, spool = coordinator(tmp_path, frozenset({1}))
    ownership = shards.ownership
    one, two = names_in(ownership, 1, 2), names_in(ownership, 2, 1)
    await fleet.apply({n: instance() for n in [*one, *two]})
    assert fleet.runners == {}
    assert shards.owns_nothing()
    following = asyncio.create_task(shards.follow())
    await eventually(lambda: set(fleet.runners) == set(one), within=5)
    assert not any(r.takeover for r in made.runners)
    await shards.take(frozenset({2}))
    assert set(fleet.runners) == {*one, *two}
    assert [r.takeover for r in made.runners if r.name in two] == [True]
    assert shards.status() == {
        "mode": "static", "replica": "bridge-0", "shards": SHARDS, "owned": [1, 2]
    }  # fmt: skip
    rows = shards.with_shards(fleet.status())
    assert {n: row["shard"] for n, row in rows.items()} == {one[0]: 1, one[1]: 1, two[0]: 2}
    await shards.leave(following)
    assert following.done()
    await fleet.stop_all()
    spool.close()


async def test_a_release_stops_the_shards_instances_and_waits_until_their_frames_leave(
    tmp_path: Path,
) -> None:
    """Releasing a shard stops its instances (the others keep running) and returns only
    once what was in the spool at that moment is delivered, within the drain timeout."""
    shards, fleet, _made, spool = coordinator(tmp_path, frozenset({1, 2}), drain=5.0)
    ownership = shards.ownership
    one, two = names_in(ownership, 1, 1), names_in(ownership, 2, 1)
    await fleet.apply({n: instance() for n in [*one, *two]})
    await shards.take(frozenset({1, 2}))
    spool.append(record(1))
    spool.append(record(2))

    async def deliver_later() -> None:
        await asyncio.sleep(0.3)
        batch = await spool.read(10)
        spool.ack(len(batch))

    delivering = asyncio.create_task(deliver_later())
    await asyncio.wait_for(shards.release(frozenset({1}), lost=False), timeout=5)
    assert delivering.done()
    assert spool.stats().events == 0
    assert set(fleet.runners) == set(two)
    assert ownership.owned == frozenset({2})
    await fleet.stop_all()
    spool.close()


async def test_a_lost_shard_is_released_without_waiting_for_delivery(tmp_path: Path) -> None:
    """A lost shard (no time to drain) stops its instances and returns at once, the spool
    left as it is."""
    shards, fleet, _made, spool = coordinator(tmp_path, frozenset({1}), drain=30.0)
    await fleet.apply({n: instance() for n in names_in(shards.ownership, 1, 2)})
    await shards.take(frozenset({1}))
    spool.append(record(1))
    await asyncio.wait_for(shards.release(frozenset({1}), lost=True), timeout=2)
    assert fleet.runners == {}
    assert spool.stats().events == 1
    spool.close()


def test_a_takeover_is_timed_until_its_instances_are_connected_or_given_up() -> None:
    """A shard whose instances are all connected yields its duration; one still connecting
    is watched on; one watched beyond the bound is given up."""
    now = 1000.0
    takeovers = {1: now - 2.0, 2: now - 3.0, 3: now - TAKEOVER_WATCH_SECONDS - 1}
    watching, durations = settled_takeovers(takeovers, lambda shard: shard == 1, now)
    assert watching == {2: now - 3.0}
    assert durations == [2.0]


def test_the_membership_retries_follow_the_one_retry_policy() -> None:
    """A failing membership waits up to 1 s, then 2, 4 … up to 30 s (full jitter below each
    ceiling), and starts again from the first wait after a minute of working."""
    failures = MEMBERSHIP_RETRIES.start(random.Random(7))
    waits = [failures.next_delay(float(n)) for n in range(7)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all(0.0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    failures.healthy(100.0)
    assert failures.next_delay(160.0) <= 1.0


def test_only_a_fencing_membership_hands_the_sink_a_fencing(tmp_path: Path) -> None:
    """No cluster and a static one: no fencing; with Redis leases the membership itself
    tells the sink its tokens."""
    metrics = create_metrics()
    spool = DiskSpool(tmp_path / "spool", max_bytes=1 << 20, fsync="never")
    fleet = Fleet(Made(), metrics)
    alone = ShardCoordinator(Ownership(SHARDS), fleet, spool, metrics, lambda _owner: None,
                             mode="none", replica="r")  # fmt: skip
    assert alone.fencing() is None
    assert alone.status() == {"mode": "none"}
    settings = Settings.model_validate(
        {
            "sink": {"kind": "redis", "redis": {"url": "redis://127.0.0.1:1"}},
            "cluster": {"mode": "redis"},
        }
    )
    leased: list[RedisMembership] = []

    def join(owner: ShardOwner) -> Membership:
        leased.append(RedisMembership(settings, owner, metrics, "r", None))
        return leased[0]

    redis = ShardCoordinator(Ownership(SHARDS), fleet, spool, metrics, join,
                             mode="redis", replica="r")  # fmt: skip
    assert redis.fencing() is leased[0]
    static = ShardCoordinator(
        Ownership(SHARDS), fleet, spool, metrics,
        lambda owner: StaticMembership("static", frozenset({0}), owner, metrics),
        mode="static", replica="r",
    )  # fmt: skip
    assert static.fencing() is None


async def test_a_take_once_shutdown_has_begun_starts_nothing(tmp_path: Path) -> None:
    """Once shutdown has begun (the fleet closing), a take arriving while the shutdown's stop
    is still draining the runners (a leaving replica's shards handed over) starts no runner
    and owns nothing more: after the stop nothing runs, so nothing is read after the drain."""
    shards, fleet, made, spool = coordinator(tmp_path, frozenset({1}))
    ownership = shards.ownership
    one, two = names_in(ownership, 1, 1), names_in(ownership, 2, 2)
    await fleet.apply({n: instance() for n in [*one, *two]})
    await shards.take(frozenset({1}))
    await running(made, 1)
    made.runners[0].flush_seconds = 0.3
    fleet.close()
    stopping = asyncio.create_task(fleet.stop_all())
    await eventually(lambda: fleet.runners == {}, within=5)
    await shards.take(frozenset({2}))
    assert fleet.runners == {}
    await asyncio.wait_for(stopping, timeout=5)
    assert fleet.runners == {}
    assert [r.name for r in made.runners] == one
    assert ownership.owned == frozenset({1})
    assert await fleet.start_wanted(lambda _name: True, takeover=True) == 0
    spool.close()


async def test_a_release_racing_the_shutdown_stop_returns_once_its_runner_is_done(
    tmp_path: Path,
) -> None:
    """A release of a shard whose runner the shutdown's stop is already stopping returns
    only once that runner has finished reading (its last frames in the spool, so the
    release's drain mark covers them), not at once with the runner still reading."""
    shards, fleet, made, spool = coordinator(tmp_path, frozenset({1}))
    await fleet.apply({n: instance() for n in names_in(shards.ownership, 1, 1)})
    await shards.take(frozenset({1}))
    await running(made, 1)
    made.runners[0].flush_seconds = 0.5
    stopping = asyncio.create_task(fleet.stop_all())
    await eventually(lambda: fleet.runners == {}, within=5)
    assert not made.runners[0].flushed
    await asyncio.wait_for(shards.release(frozenset({1}), lost=True), timeout=5)
    assert made.runners[0].flushed
    await asyncio.wait_for(stopping, timeout=5)
    spool.close()


async def test_a_kafka_membership_takes_its_shards_again_after_a_failed_run(
    tmp_path: Path,
) -> None:
    """A Kafka membership whose run fails (here: its broker refuses connections) has had
    everything released as lost by the coordinator; its next run claims nothing it held
    before, and an assignment of those same shards starts their instances again (not
    skipped as already running)."""
    metrics = create_metrics()
    ownership = Ownership(SHARDS)
    made = Made()
    fleet = Fleet(made, metrics, owns=ownership.mine)
    spool = local_spool(tmp_path / "spool", max_bytes=1 << 20)
    settings = Settings.model_validate(
        {
            "sink": {"kind": "kafka", "kafka": {"bootstrap_servers": "127.0.0.1:1"}},
            "cluster": {"mode": "kafka", "shards": SHARDS},
        }
    )
    joined: list[KafkaMembership] = []

    def join(owner: ShardOwner) -> Membership:
        joined.append(KafkaMembership(settings, owner, metrics, "bridge-0", None))
        return joined[0]

    shards = ShardCoordinator(
        ownership, fleet, spool.writer, metrics, join, mode="kafka", replica="bridge-0"
    )
    membership = joined[0]
    one = names_in(ownership, 1, 2)
    await fleet.apply({n: instance() for n in one})

    async def assigned(shard_set: frozenset[int]) -> None:
        """The group's assignment, followed as the membership's run does."""
        reconcile = asyncio.create_task(membership._reconcile())
        membership.assigned(shard_set)
        try:
            await eventually(lambda: set(fleet.runners) == set(one), within=5)
        finally:
            reconcile.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconcile

    await assigned(frozenset({1}))
    assert membership.claimed() == frozenset({1})
    with pytest.raises(ClusterError):
        await membership.run()  # the broker refuses: the run fails
    await shards.release(ownership.owned or frozenset(), lost=True)  # as follow() does
    assert fleet.runners == {}
    assert membership.claimed() == frozenset()
    await assigned(frozenset({1}))
    assert sorted(r.name for r in made.runners) == sorted([*one, *one])
    await fleet.stop_all()
    spool.close()
