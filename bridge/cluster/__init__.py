"""Sharing instances across replicas.

Each instance maps to one of ``cluster.shards`` shards (:func:`shard_of`); a replica runs the
instances of the shards it owns. Who owns what is decided by a :class:`Membership`, riding on
infrastructure the bridge depends on anyway: a Kafka consumer group (``kafka``), leases in
Redis (``redis``), the pod ordinal (``static``), or nobody (``none``: one process owns all).

A membership tells its :class:`ShardOwner` (the shard coordinator, :mod:`bridge.shards`) to
``take`` shards and to ``release`` them; a release returns only once the shards' sockets are
closed and what they read is delivered (unless the shards were ``lost``, when there is no time
to drain). A membership whose leases carry fencing tokens (``redis``) hands the sink its
:class:`~bridge.sinks.base.Fencing` through :meth:`Membership.fencing`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Protocol

from bridge.cluster.balance import pod_ordinal, shard_of, static_shards
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.settings import ClusterSettings
from bridge.sinks.base import Fencing

__all__ = [
    "Membership",
    "ShardOwner",
    "StaticMembership",
    "replica_name",
    "shard_of",
    "static_owned",
]


class ShardOwner(Protocol):
    async def take(self, shards: frozenset[int]) -> None: ...

    async def release(self, shards: frozenset[int], *, lost: bool) -> None: ...


class Membership(Protocol):
    """How a replica learns which shards it owns."""

    mode: str

    def owned(self) -> frozenset[int]: ...

    async def run(self) -> None:
        """Join, then keep the owner's shards in line with the group until cancelled."""

    async def leave(self) -> None:
        """Release every shard (drained) and leave, so the others take over at once."""

    def drain_timeout(self) -> float:
        """How long releasing a shard may wait for what it read to be delivered."""

    def fencing(self) -> Fencing | None:
        """What tells the sink which fencing token guards an instance's writes (None: the
        membership has no fencing tokens)."""


class StaticMembership:
    """``static``: the shards follow from index and count; ``none``: one process owns all.
    No failover beyond the orchestrator restarting the pod."""

    def __init__(self, mode: str, shards: frozenset[int], owner: ShardOwner, metrics: Metrics):
        self.mode = mode
        self._shards = shards
        self._owned: frozenset[int] = frozenset()
        self.owner = owner
        self.metrics = metrics

    def owned(self) -> frozenset[int]:
        return self._owned

    async def run(self) -> None:
        self._owned = self._shards
        self.metrics.cluster_shards_owned.set(len(self._shards))
        await self.owner.take(self._shards)
        await asyncio.Event().wait()

    async def leave(self) -> None:
        self._owned = frozenset()

    def drain_timeout(self) -> float:
        return 0.0

    def fencing(self) -> Fencing | None:
        return None


def replica_name(settings: ClusterSettings, environ: Mapping[str, str]) -> str:
    """This replica's name: ``cluster.replica_id``, else the pod name, else the hostname."""
    return settings.replica_id or environ.get("POD_NAME") or socket.gethostname()


def static_owned(settings: ClusterSettings, environ: Mapping[str, str]) -> frozenset[int]:
    """The shards of a static replica; the index defaults to the StatefulSet pod ordinal."""
    count = settings.count or 1
    index = settings.index
    if index is None:
        index = pod_ordinal(replica_name(settings, environ))
    if index is None:
        raise ConfigError(
            ["cluster.index: not set and the replica name has no pod ordinal (name-N)"]
        )
    if index >= count:
        raise ConfigError([f"cluster.index: {index} is not below cluster.count {count}"])
    return static_shards(settings.shards, index, count)
