"""The shard coordinator: in a cluster mode, which instances this replica runs.

It is the membership's :class:`~bridge.cluster.ShardOwner`. Of the instances the fleet wants
(config, discovery) it has the fleet run those whose shard it owns (:class:`Ownership`),
starting them when a shard is taken and stopping and draining them before a shard is released.
It follows the membership (a coordination error that will not fix itself ends the process,
anything else is retried, the replica owning nothing meanwhile), times each takeover until the
shard's instances are connected, and leaves the cluster at shutdown. It talks to the fleet
through :class:`RunnerSet` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge.cluster import Membership, ShardOwner
from bridge.cluster.balance import shard_of
from bridge.errors import ClusterError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.retry import RetryPolicy
from bridge.sinks.base import Fencing
from bridge.spool import Spool, wait_settled

log = get_logger(__name__)
TAKEOVER_WATCH_SECONDS = 120.0
TAKEOVER_POLL_SECONDS = 0.25
LEAVE_SECONDS = 10.0
# The membership's retries: the one retry policy, reset after a minute of membership.
MEMBERSHIP_RETRIES = RetryPolicy(1.0, 30.0, healthy_after=60.0)


@dataclass
class Ownership:
    """Which shards this replica owns: ``None`` is every one (no cluster)."""

    shards: int
    owned: frozenset[int] | None = None

    def shard(self, name: str) -> int:
        return shard_of(name, self.shards)

    def mine(self, name: str) -> bool:
        """Whether this replica runs instance ``name``."""
        return self.owned is None or self.shard(name) in self.owned


class RunnerSet(Protocol):
    """What the coordinator needs of the fleet."""

    def changes(self) -> asyncio.Lock: ...

    @property
    def closing(self) -> bool: ...

    async def start_wanted(self, which: Callable[[str], bool], *, takeover: bool) -> int: ...

    async def stop_where(self, which: Callable[[str], bool]) -> int: ...

    def all_connected(self, which: Callable[[str], bool]) -> bool: ...


def settled_takeovers(
    takeovers: dict[int, float], connected: Callable[[int], bool], now: float
) -> tuple[dict[int, float], list[float]]:
    """The takeovers still being watched and the durations of those complete (every instance
    of the shard connected); one watched longer than the bound is given up (pure)."""
    watching: dict[int, float] = {}
    durations: list[float] = []
    for shard, since in takeovers.items():
        if connected(shard):
            durations.append(now - since)
        elif now - since <= TAKEOVER_WATCH_SECONDS:
            watching[shard] = since
    return watching, durations


class ShardCoordinator:
    def __init__(
        self,
        ownership: Ownership,
        runners: RunnerSet,
        spool: Spool,
        metrics: Metrics,
        join: Callable[[ShardOwner], Membership | None],
        *,
        mode: str,
        replica: str,
    ) -> None:
        self.mode = mode
        self.replica = replica
        self.ownership = ownership
        self.runners = runners
        self.spool = spool
        self.metrics = metrics
        self.membership = join(self)
        if self.membership is not None:
            ownership.owned = frozenset()
        self._took_shards = False
        self._takeovers: dict[int, float] = {}

    def fencing(self) -> Fencing | None:
        """The fencing the sink must honour, if the membership has one."""
        return None if self.membership is None else self.membership.fencing()

    def _in(self, shards: frozenset[int]) -> Callable[[str], bool]:
        return lambda name: self.ownership.shard(name) in shards

    # ---- ShardOwner ---------------------------------------------------------------------
    async def take(self, shards: frozenset[int]) -> None:
        """Start the wanted instances of ``shards``; refused once shutdown has begun (what
        would be read then could no longer be drained): the shards stay unowned here, and
        the others take them once this replica has left."""
        async with self.runners.changes():
            if self.runners.closing:
                log.info("cluster.take_refused", shards=len(shards), reason="shutting_down")
                return
            takeover = self._took_shards
            self._took_shards = True
            self.ownership.owned = (self.ownership.owned or frozenset()) | shards
            now = time.monotonic()
            for shard in shards:
                self._takeovers[shard] = now
            started = await self.runners.start_wanted(self._in(shards), takeover=takeover)
        log.info("cluster.took", shards=len(shards), instances=started)

    async def release(self, shards: frozenset[int], *, lost: bool) -> None:
        """Stop reading the instances of ``shards``; unless ``lost``, wait until what they
        read is delivered (bounded by the membership's drain timeout)."""
        async with self.runners.changes():
            if self.ownership.owned is not None:
                self.ownership.owned -= shards
            for shard in shards:
                self._takeovers.pop(shard, None)
            stopped = await self.runners.stop_where(self._in(shards))
        if lost or self.membership is None:
            return
        mark = self.spool.appended_total()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                wait_settled(self.spool, mark), timeout=self.membership.drain_timeout()
            )
        log.info("cluster.drained", shards=len(shards), instances=stopped)

    # ---- following the membership -------------------------------------------------------
    async def follow(self) -> None:
        """Run the membership until cancelled; a :class:`ClusterError` (will not fix itself)
        propagates, anything else is retried after releasing every shard as lost."""
        membership = self.membership
        if membership is None:
            return
        watcher = asyncio.create_task(self.watch_takeovers())
        failures = MEMBERSHIP_RETRIES.start()
        try:
            while True:
                failures.healthy(time.monotonic())
                try:
                    await membership.run()
                    return
                except ClusterError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep coordinating whatever broke
                    log.warning("cluster.error", mode=membership.mode, error=repr(exc))
                    await self.release(self.ownership.owned or frozenset(), lost=True)
                    await asyncio.sleep(failures.next_delay(time.monotonic()))
        finally:
            watcher.cancel()

    async def watch_takeovers(self) -> None:
        """Time each shard taken over until all of its instances are connected."""
        while True:
            await asyncio.sleep(TAKEOVER_POLL_SECONDS)
            self._takeovers, durations = settled_takeovers(
                self._takeovers,
                lambda shard: self.runners.all_connected(self._in(frozenset((shard,)))),
                time.monotonic(),
            )
            for seconds in durations:
                self.metrics.cluster_handover.labels("takeover").observe(seconds)

    async def leave(self, following: asyncio.Task[None] | None) -> None:
        """Hand the shards over (every socket is closed and drained by now), then stop
        following the membership."""
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.leave(), timeout=LEAVE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the others take over after the timeout then
            log.warning("cluster.leave_failed", error=repr(exc))
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await following
        log.info("cluster.left", mode=self.membership.mode)

    # ---- what operators and readiness see ----------------------------------------------------
    def with_shards(self, rows: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
        """Status rows, each with its instance's shard in a cluster mode."""
        if self.membership is not None:
            for name, row in rows.items():
                row["shard"] = self.ownership.shard(name)
        return rows

    def status(self) -> dict[str, object]:
        """The ``cluster`` part of ``/instances``."""
        if self.membership is None:
            return {"mode": self.mode}
        return {
            "mode": self.mode,
            "replica": self.replica,
            "shards": self.ownership.shards,
            "owned": sorted(self.ownership.owned or ()),
        }

    def owns_nothing(self) -> bool:
        return not self.ownership.owned
