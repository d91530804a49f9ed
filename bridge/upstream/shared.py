"""What every socket of the process shares: the buffered-frames budget, the keepalive ticker,
the socket slots (its open-files limit), the pace of the upstream-config re-checks made
while connected, and the dispatch that hands messages to waiting consumers once a loop turn
(:mod:`bridge.upstream.dispatch`).

The re-checks (one REST call each, every ``upstream.ensure_interval_seconds`` per instance)
are the one periodic cost of a quiet socket that grows with the fleet: 5,000 instances every
300 s would make 17 calls a second for as long as the process runs. They share a bucket of
``RECHECKS_PER_SECOND`` for the whole process instead, so an instance is re-checked every
``max(ensure_interval_seconds, instances / RECHECKS_PER_SECOND)`` seconds (about 42 minutes at
5,000). A socket's first check, made once it is open (:class:`bridge.upstream.ws.InstanceSource`),
shares another pace, ``FIRST_CHECKS_PER_SECOND``: a fleet starting at once spends its sockets'
upgrades first and its config reads behind them. Checks after a refused upgrade (400: the config
is missing or disabled) are made before the next upgrade and are not paced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.settings import BUFFER_BUDGET_BYTES
from bridge.upstream.budget import BufferBudget
from bridge.upstream.dispatch import Dispatch
from bridge.upstream.keepalive import Keepalive
from bridge.upstream.ratelimit import TokenBucket
from bridge.upstream.slots import SocketSlots, process_slots

RECHECKS_PER_SECOND = 2.0
FIRST_CHECKS_PER_SECOND = 50.0


def recheck_bucket() -> TokenBucket:
    return TokenBucket(per_minute=RECHECKS_PER_SECOND * 60, burst=1)


def first_check_bucket() -> TokenBucket:
    return TokenBucket(per_minute=FIRST_CHECKS_PER_SECOND * 60, burst=FIRST_CHECKS_PER_SECOND)


@dataclass(frozen=True)
class SocketsShared:
    budget: BufferBudget = field(default_factory=lambda: BufferBudget(BUFFER_BUDGET_BYTES))
    keepalive: Keepalive = field(default_factory=Keepalive)
    rechecks: TokenBucket = field(default_factory=recheck_bucket)
    first_checks: TokenBucket = field(default_factory=first_check_bucket)
    slots: SocketSlots = field(default_factory=lambda: SocketSlots(process_slots()))
    dispatch: Dispatch = field(default_factory=Dispatch)
