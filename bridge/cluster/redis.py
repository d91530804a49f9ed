"""Membership through per-shard leases in Redis, for deployments whose sink is Redis.

Keys, under ``ryze-bridge:{group}:``: ``members`` (a sorted set, each replica scored with the
Redis-clock time its membership expires), ``lease:{shard}`` (``SET NX PX``: the holder and its
fencing token) and ``fence:{shard}`` (a counter bumped at every acquisition: the token).

Every tick (a quarter of the TTL) a replica refreshes its membership, renews its leases (only if
still its own), lets go of shards above its fair share (draining them first), and takes free
ones up to it. A replica that could not renew within the TTL, e.g. because it was frozen,
knows its leases may be someone else's: it closes those sockets at once, and the sink's fenced
writes refuse whatever it read after the new holder's token took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bridge.cluster import ShardOwner
from bridge.cluster.balance import fair_share, preference, shard_of
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.sinks.base import Fencing
from bridge.sinks.redis import connect

log = get_logger(__name__)
TICKS_PER_TTL = 4

JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '/' .. token, 'PX', ARGV[2])
  return token
end
return false
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisMembership:
    mode = "redis"

    def __init__(
        self,
        settings: Settings,
        owner: ShardOwner,
        metrics: Metrics,
        replica: str,
        password: SecretStr | None,
        *,
        client: Redis | None = None,
    ) -> None:
        self.cluster = settings.cluster
        self.redis = settings.sink.redis
        self.owner = owner
        self.metrics = metrics
        self.replica = replica
        self._password = password
        self._client = client
        self.prefix = f"ryze-bridge:{self.cluster.group}"
        self.ttl_ms = self.cluster.lease_ttl_ms
        self._held: dict[int, int] = {}  # shard → fencing token
        self._tokens: dict[int, int] = {}  # last token held per shard, kept after a loss
        self._valid_until = 0.0  # monotonic time our leases surely still hold
        self._leaving = False

    # ---- Fencing for the sink --------------------------------------------------------------
    def fencing(self) -> Fencing | None:
        """This membership is the sink's fencing: its leases carry the tokens."""
        return self

    def fence(self, instance: str) -> tuple[str, str] | None:
        shard = shard_of(instance, self.cluster.shards)
        token = self._tokens.get(shard)
        return None if token is None else (self._key("fence", shard), str(token))

    def owned(self) -> frozenset[int]:
        return frozenset(self._held)

    def _key(self, kind: str, shard: int) -> str:
        return f"{self.prefix}:{kind}:{shard}"

    def _value(self, shard: int) -> str:
        return f"{self.replica}/{self._held[shard]}"

    async def run(self) -> None:
        if self._client is None:
            self._client = connect(self.redis, self._password)
        tick = self.ttl_ms / 1000 / TICKS_PER_TTL
        while not self._leaving:
            try:
                await self._tick(self._client)
            except (redis_errors.RedisError, OSError) as exc:
                log.warning("cluster.redis_unavailable", error=str(exc))
            await self._expire_if_stale()
            await asyncio.sleep(tick)

    def drain_timeout(self) -> float:
        """How long a release may wait for delivery: well inside the TTL, so the other
        leases are renewed in time (what is not delivered by then stays in the spool)."""
        return self.ttl_ms / 1000 / 2

    async def _expire_if_stale(self) -> None:
        """Leases we could not renew in time may be someone else's now: stop reading."""
        if self._held and time.monotonic() >= self._valid_until:
            lost = frozenset(self._held)
            self._held.clear()
            log.warning("cluster.leases_lost", shards=len(lost))
            await self.owner.release(lost, lost=True)
            self._report()

    async def _tick(self, client: Redis) -> None:
        await self._expire_if_stale()  # first thing after a freeze: before any renewal
        started = time.monotonic()
        members = int(
            await client.eval(JOIN, 1, f"{self.prefix}:members", self.replica, str(self.ttl_ms))
        )
        await self._renew(client, started)
        share = fair_share(self.cluster.shards, members)
        if len(self._held) > share:
            await self._give_up(client, len(self._held) - share)
        elif len(self._held) < share:
            await self._acquire(client, share - len(self._held), started)

    async def _renew(self, client: Redis, started: float) -> None:
        if not self._held:
            self._valid_until = started + self.ttl_ms / 1000
            return
        pipe = client.pipeline(transaction=False)
        shards = sorted(self._held)
        for shard in shards:
            pipe.eval(RENEW, 1, self._key("lease", shard), self._value(shard), str(self.ttl_ms))
        results = await pipe.execute(raise_on_error=True)
        lost = frozenset(s for s, ok in zip(shards, results, strict=True) if not ok)
        self._valid_until = started + self.ttl_ms / 1000 * 0.9
        if lost:
            for shard in lost:
                del self._held[shard]
            log.warning("cluster.leases_lost", shards=len(lost))
            await self.owner.release(lost, lost=True)
            self._report()

    async def _acquire(self, client: Redis, wanted: int, started: float) -> None:
        gained: dict[int, int] = {}
        for shard in preference(self.replica, self.cluster.shards):
            if len(gained) >= wanted:
                break
            if shard in self._held:
                continue
            token = await client.eval(
                ACQUIRE,
                2,
                self._key("lease", shard),
                self._key("fence", shard),
                self.replica,
                str(self.ttl_ms),
            )
            if token is not None:
                gained[shard] = int(token)
        if gained:
            self._held.update(gained)
            self._tokens.update(gained)
            if len(self._held) == len(gained):
                self._valid_until = started + self.ttl_ms / 1000 * 0.9
            self.metrics.cluster_rebalances.inc()
            log.info("cluster.acquired", shards=len(gained), held=len(self._held))
            await self.owner.take(frozenset(gained))
            self._report()

    async def _give_up(self, client: Redis, count: int, *, every: bool = False) -> None:
        """Let go of ``count`` shards: stop their sockets, drain, then delete the leases."""
        order = preference(self.replica, self.cluster.shards)
        mine = [s for s in reversed(order) if s in self._held]
        going = frozenset(mine if every else mine[:count])
        if not going:
            return
        started = time.monotonic()
        await self.owner.release(going, lost=False)
        if time.monotonic() >= self._valid_until:  # the drain outlived the lease: not ours
            return
        pipe = client.pipeline(transaction=False)
        for shard in sorted(going):
            pipe.eval(RELEASE, 1, self._key("lease", shard), self._value(shard))
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await pipe.execute(raise_on_error=False)
        for shard in going:
            self._held.pop(shard, None)
        self.metrics.cluster_rebalances.inc()
        self.metrics.cluster_handover.labels("release").observe(time.monotonic() - started)
        log.info("cluster.released", shards=len(going), held=len(self._held))
        self._report()

    def _report(self) -> None:
        self.metrics.cluster_shards_owned.set(len(self._held))

    async def leave(self) -> None:
        """Release every lease (drained first) and leave the member set."""
        self._leaving = True
        if self._client is None:
            return
        client: Any = self._client
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await self._give_up(client, len(self._held), every=True)
            await client.zrem(f"{self.prefix}:members", self.replica)
        await client.aclose()
        self._client = None
