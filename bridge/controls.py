"""The operator's controls behind the admin API (``/instances``, its reconnect, pause and
resume actions): what the fleet runs, annotated by the shard coordinator."""

from __future__ import annotations

from bridge.fleet import Fleet
from bridge.reconfigure import Current
from bridge.shards import ShardCoordinator
from bridge.status import with_states


class OperatorControls:
    """:class:`bridge.admin.Control` for this process."""

    def __init__(self, fleet: Fleet, shards: ShardCoordinator, current: Current) -> None:
        self.fleet = fleet
        self.shards = shards
        self.current = current

    def instances_status(self) -> dict[str, dict[str, object]]:
        """Each instance with its exclusive state (:mod:`bridge.status`) and its shard."""
        silence = self.current.settings.admin.ready_max_silence_seconds
        return self.shards.with_shards(with_states(self.fleet.status(), silence))

    def cluster_status(self) -> dict[str, object]:
        return self.shards.status()

    async def control(self, name: str, action: str) -> bool:
        """reconnect, pause or resume one instance; False when it is not known."""
        if action == "reconnect":
            return await self.fleet.reconnect(name)
        if action == "pause":
            return await self.fleet.pause(name)
        if action == "resume":
            return self.fleet.resume(name, self.current.paused_instance(name))
        return False
