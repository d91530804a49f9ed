"""Readiness (``/readyz``): the sink answers, enough instances are connected and heard from,
neither the spool nor the delivery reports a problem, and — where the config asks for it —
this replica owns shards. Problems are masked: ``/readyz`` answers anyone.
"""

from __future__ import annotations

from bridge.admin import Readiness, readiness
from bridge.fleet import Fleet
from bridge.logs import mask_registered
from bridge.reconfigure import DeliverySlot
from bridge.settings import AdminSettings
from bridge.shards import ShardCoordinator
from bridge.spool.disk import DiskSpool

NO_SHARDS = "this replica owns no shards"


def sink_problem(problem: str | None) -> str | None:
    """A delivery problem as readiness names it (pure)."""
    return None if problem is None else f"sink: {problem}"


class ReadinessCheck:
    def __init__(
        self,
        admin: AdminSettings,
        *,
        requires_shards: bool,
        delivery: DeliverySlot,
        spool: DiskSpool,
        fleet: Fleet,
        shards: ShardCoordinator,
    ) -> None:
        self.admin = admin
        self.requires_shards = requires_shards
        self.delivery = delivery
        self.spool = spool
        self.fleet = fleet
        self.shards = shards

    async def __call__(self) -> Readiness:
        delivery = self.delivery.current
        sink_ok = await delivery.reachable()
        ready = readiness(
            sink_ok,
            self.fleet.liveness(),
            self.admin.ready_min_connected_ratio,
            self.admin.ready_max_silence_seconds,
        )
        problems = (self.spool.problem, sink_problem(delivery.problem))
        if any(problems):
            masked = (mask_registered(p) for p in problems if p)
            ready = Readiness(False, (*ready.reasons, *masked))
        if self.requires_shards and self.shards.owns_nothing():
            return Readiness(False, (*ready.reasons, NO_SHARDS))
        return ready
