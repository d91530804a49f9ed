"""Which replica owns which shard: the pure rules every membership mode uses.

An instance belongs to one shard, by a stable hash of its name, so every replica computes the
same map without talking. The assignment rules are cooperative: a shard only moves once its
owner has let it go, so no instance is ever read by two replicas at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

ORDINAL = re.compile(r"-(\d+)$")


def shard_of(name: str, shards: int) -> int:
    """The shard of an instance: blake2b of its name, modulo the shard count (stable across
    processes, Python versions and restarts, unlike ``hash``)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def quotas(members: Iterable[str], shards: int, owned: Mapping[str, int]) -> dict[str, int]:
    """How many shards each member should hold: an even split, the remainder going to the
    members that hold the most already (so fewer shards move), ties broken by name."""
    ordered = sorted(members, key=lambda m: (-owned.get(m, 0), m))
    if not ordered:
        return {}
    base, extra = divmod(shards, len(ordered))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(ordered)}


def cooperative_assign(shards: int, owned: Mapping[str, frozenset[int]]) -> dict[str, set[int]]:
    """The next assignment, given what each member reports it holds now.

    A member keeps what it holds up to its quota. A shard held by nobody goes to the member
    furthest below its quota. A shard that must move (its holder is over quota) or that two
    members claim is given to nobody this round: its holder sees it missing, lets it go and
    rejoins, and the round after that hands it on. Hence never two owners at once.
    """
    claims: dict[int, list[str]] = {}
    for member, held in owned.items():
        for shard in held:
            if 0 <= shard < shards:
                claims.setdefault(shard, []).append(member)
    sole = {s: ms[0] for s, ms in claims.items() if len(ms) == 1}
    counts = {m: sum(1 for s in sole if sole[s] == m) for m in owned}
    quota = quotas(owned, shards, counts)
    result: dict[str, set[int]] = {m: set() for m in owned}
    for member in owned:
        mine = sorted(s for s, m in sole.items() if m == member)
        result[member].update(mine[: quota[member]])
    for shard in range(shards):
        if shard in claims:
            continue
        needy = max(owned, key=lambda m: (quota[m] - len(result[m]), m), default=None)
        if needy is None or len(result[needy]) >= quota[needy]:
            break
        result[needy].add(shard)
    return result


def fair_share(shards: int, live_members: int) -> int:
    """The most shards one replica should hold when ``live_members`` share them (redis mode)."""
    return -(-shards // max(1, live_members))


def static_shards(shards: int, index: int, count: int) -> frozenset[int]:
    """The shards of replica ``index`` of ``count``: every count-th one."""
    return frozenset(s for s in range(shards) if s % count == index)


def pod_ordinal(hostname: str) -> int | None:
    """The ordinal of a StatefulSet pod from its hostname (``ryze-bridge-2`` → 2)."""
    match = ORDINAL.search(hostname)
    return int(match.group(1)) if match else None


def preference(replica: str, shards: int) -> list[int]:
    """The order in which a replica tries to take free shards: a per-replica permutation, so
    replicas starting together do not all race for shard 0 (pure)."""

    def rank(shard: int) -> bytes:
        return hashlib.blake2b(f"{replica}/{shard}".encode(), digest_size=8).digest()

    return sorted(range(shards), key=rank)
