"""Membership through a Kafka consumer group, the way Kafka Connect spreads tasks.

Replicas join ``cluster.group`` on a coordination topic with one partition per shard (made by
the bridge if missing, nothing is ever written to it); the partitions Kafka assigns a replica
are the shards it owns. Kafka does membership, failure detection and rebalancing.

aiokafka speaks only the eager protocol, so the cooperative part is done by our own assignor:
each member reports in its join metadata the shards it still holds; the leader keeps every
holder's shards where they are, gives free shards to the members below their share, and gives a
shard that must move to nobody. Its holder sees it missing, drains it, lets it go and asks for
another round, which hands it on. Revocations at the start of a round are ignored (a member
keeps reading through a rebalance), except when the member was thrown out of the group: then
everything it held is lost and its sockets close at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata

# aiokafka's top-level package exports no assignor API: a custom assignor subclasses these
# (the way its own RoundRobinPartitionAssignor does), and two things only its group
# coordinator knows are read from it (see coordinator_of). aiokafka is pinned to the tested
# range in pyproject.toml; tests/unit/test_aiokafka_contract.py fails loudly when any of it moves.
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import ConsumerStoppedError, KafkaError, TopicAlreadyExistsError
from pydantic import SecretStr

from bridge.cluster import ShardOwner
from bridge.cluster.balance import cooperative_assign
from bridge.errors import ClusterError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.sinks.base import Fencing
from bridge.sinks.kafka import security_options

log = get_logger(__name__)
ASSIGNOR_NAME = "ryze-cooperative-shards"


def encode_claims(replica: str, shards: Iterable[int]) -> bytes:
    return orjson.dumps({"v": 1, "replica": replica, "owned": sorted(shards)})


def decode_claims(user_data: bytes) -> frozenset[int]:
    """The shards a member says it holds; anything unreadable claims nothing (pure)."""
    try:
        data = orjson.loads(user_data) if user_data else {}
        owned = data.get("owned", []) if isinstance(data, dict) else []
        return frozenset(s for s in owned if isinstance(s, int))
    except orjson.JSONDecodeError:
        return frozenset()


def assignments(
    topic: str, shards: int, members: Mapping[str, ConsumerProtocolMemberMetadata]
) -> dict[str, ConsumerProtocolMemberAssignment]:
    """The leader's answer for one round (pure): :func:`cooperative_assign` on the claims."""
    claims = {m: decode_claims(meta.user_data) for m, meta in members.items()}
    plan = cooperative_assign(shards, claims)
    return {
        m: ConsumerProtocolMemberAssignment(0, [(topic, sorted(plan[m]))], b"") for m in members
    }


def stale_claims(advertised: frozenset[int], held: frozenset[int]) -> bool:
    """Whether the claims a member sent with its last join are out of date once the round's
    assignment arrives (pure): it let shards go while the round was under way. aiokafka forgets
    a rejoin asked for between its JoinGroup and its SyncGroup, so the rejoin the release asked
    for may have been lost; the leader kept those shards for this member, gave them to nobody,
    and without another round nobody would ever run them."""
    return advertised != held


def make_assignor(
    topic: str, shards: int, replica: str, claimed: Any
) -> type[AbstractPartitionAssignor]:
    """An assignor class bound to this member (aiokafka takes classes, not objects)."""

    class CooperativeShardAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
        name = ASSIGNOR_NAME
        version = 0

        @classmethod
        def assign(
            cls,
            cluster: ClusterMetadata,
            members: Mapping[str, ConsumerProtocolMemberMetadata],
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            return assignments(topic, shards, members)

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(
                cls.version, sorted(topics), encode_claims(replica, claimed())
            )

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            return None

    return CooperativeShardAssignor


async def _partition_count(admin: AIOKafkaAdminClient, topic: str, tries: int = 40) -> int:
    """Partitions of ``topic``; a topic another replica has just created may show none for
    a moment while its metadata spreads, so ask again for a few seconds."""
    partitions = 0
    for _ in range(tries):
        described = await admin.describe_topics([topic])
        entry = described[0] if described else {}
        partitions = len(entry.get("partitions") or [])
        if partitions and not entry.get("error_code"):
            return partitions
        await asyncio.sleep(0.25)
    return partitions


def coordinator_of(consumer: AIOKafkaConsumer | None) -> Any:
    """The consumer's group coordinator (None before start): the only place aiokafka keeps
    the member id (``""`` once the group has thrown the member out) and the only way to ask
    for a new round (``request_rejoin``) without leaving the group; it has no public API for
    either."""
    return getattr(consumer, "_coordinator", None)


def thrown_out(coordinator: Any) -> bool:
    """Whether the group has forgotten this member (its member id reset to unknown)."""
    return coordinator is not None and getattr(coordinator, "member_id", None) == ""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, membership: KafkaMembership) -> None:
        self.membership = membership

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.membership.revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.membership.assigned(frozenset(tp.partition for tp in assigned))


class KafkaMembership:
    mode = "kafka"

    def __init__(
        self,
        settings: Settings,
        owner: ShardOwner,
        metrics: Metrics,
        replica: str,
        password: SecretStr | None,
    ) -> None:
        self.cluster = settings.cluster
        self.kafka = settings.sink.kafka
        self.settings_shutdown = settings.shutdown_timeout
        self.owner = owner
        self.metrics = metrics
        self.replica = replica
        self._password = password
        self._assigned: frozenset[int] = frozenset()
        self._running: set[int] = set()
        self._releasing: set[int] = set()
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._leaving = False
        self._advertised: frozenset[int] = frozenset()  # claims sent with the last join

    def owned(self) -> frozenset[int]:
        return frozenset(self._running)

    def claimed(self) -> frozenset[int]:
        """What this member still holds, reported at every join (being released included)."""
        return frozenset(self._running | self._releasing)

    def advertise(self) -> frozenset[int]:
        """The claims for a join's metadata, remembered to compare with the round's outcome."""
        self._advertised = self.claimed()
        return self._advertised

    def _reset(self) -> None:
        """Forget what an earlier run held: its owner released it all as lost when that run
        failed, so a new run claims nothing and takes whatever it is assigned."""
        self._assigned = frozenset()
        self._running.clear()
        self._releasing.clear()
        self._changed.clear()
        self._advertised = frozenset()
        self._report()

    async def run(self) -> None:
        self._reset()
        security = security_options(self.kafka, self._password)
        await self._ensure_topic(security)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            client_id=f"{self.kafka.client_id}-cluster",
            group_id=self.cluster.group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=self.cluster.session_timeout_ms,
            heartbeat_interval_ms=self.cluster.heartbeat_interval_ms,
            max_poll_interval_ms=max(60_000, self.cluster.session_timeout_ms * 3),
            partition_assignment_strategy=(
                make_assignor(
                    self.cluster.topic, self.cluster.shards, self.replica, self.advertise
                ),
            ),
            **security,
        )
        consumer.subscribe([self.cluster.topic], listener=_Listener(self))
        self._consumer = consumer
        try:
            await consumer.start()
            reconcile = asyncio.create_task(self._reconcile())
            try:
                while not self._leaving:  # polling keeps the member in (max_poll_interval)
                    with contextlib.suppress(ConsumerStoppedError):
                        await consumer.getmany(timeout_ms=1000)
            finally:
                reconcile.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconcile
        finally:
            self._consumer = None
            await consumer.stop()

    async def _ensure_topic(self, security: dict[str, Any]) -> None:
        """The coordination topic, one partition per shard; made if missing."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.kafka.bootstrap_servers,
            client_id=f"{self.kafka.client_id}-cluster-admin",
            **security,
        )
        topic, shards = self.cluster.topic, self.cluster.shards
        try:
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, shards, self.kafka.topic_replication)])
                log.info("cluster.topic_created", topic=topic, partitions=shards)
            except TopicAlreadyExistsError:
                pass
            partitions = await _partition_count(admin, topic)
        except KafkaError as exc:
            message = f"cluster: cannot create or describe topic {topic!r}: {exc}"
            raise ClusterError(message) from None
        finally:
            await admin.close()
        if partitions != shards:
            raise ClusterError(
                f"cluster.shards: {shards}, but coordination topic {topic!r} has {partitions} "
                "partitions; every replica must agree (use another cluster.topic or match it)"
            )

    # ---- listener callbacks (on the consumer's coordinator task) -------------------------
    async def revoked(self) -> None:
        """The start of a round. A member still in the group keeps reading; one that was
        thrown out (session expired, e.g. after a freeze) has lost everything: stop now."""
        if thrown_out(coordinator_of(self._consumer)) and self.claimed():
            lost = self.claimed()
            log.warning("cluster.shards_lost", shards=len(lost))
            async with self._lock:
                self._running -= lost
                self._assigned = frozenset()
                await self.owner.release(lost, lost=True)
                self._report()

    def assigned(self, shards: frozenset[int]) -> None:
        self.metrics.cluster_rebalances.inc()
        log.info("cluster.assigned", shards=len(shards))
        self._assigned = shards
        self._changed.set()
        if stale_claims(self._advertised, self.claimed()):
            self._rejoin()  # after the SyncGroup: aiokafka keeps this request

    # ---- making the runners follow the assignment -----------------------------------------
    async def _reconcile(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            async with self._lock:
                if self._leaving:  # leave() hands everything over: take nothing more
                    return
                target = self._assigned
                gained = frozenset(target - self._running - self._releasing)
                gone = frozenset(self._running - target)
                if gained:
                    self._running |= gained
                    await self.owner.take(gained)
                if gone:
                    self._running -= gone
                    self._releasing |= gone
                self._report()
            if gone:
                started = time.monotonic()
                await self.owner.release(gone, lost=False)
                self._releasing -= gone
                self.metrics.cluster_handover.labels("release").observe(time.monotonic() - started)
                log.info("cluster.released", shards=len(gone))
                self._rejoin()
                self._changed.set()

    def _rejoin(self) -> None:
        """Ask for another round now that released shards are free to be handed on."""
        coordinator = coordinator_of(self._consumer)
        if coordinator is not None:
            coordinator.request_rejoin()

    def _report(self) -> None:
        self.metrics.cluster_shards_owned.set(len(self._running))

    def drain_timeout(self) -> float:
        return self.settings_shutdown

    def fencing(self) -> Fencing | None:
        return None  # a partition's owner is the group's word; there are no fencing tokens

    async def leave(self) -> None:
        """Release everything (drained), then leave the group so the others rebalance now."""
        self._leaving = True
        async with self._lock:
            held = frozenset(self._running)
            self._running.clear()
            self._assigned = frozenset()
            self._report()
        if held:
            await self.owner.release(held, lost=False)
        if self._consumer is not None:
            await self._consumer.stop()  # sends LeaveGroup
