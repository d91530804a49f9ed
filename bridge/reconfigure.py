"""Applying a configuration: the settings in force, where the wanted instances come from
(the config's ``instances``, discovery), and a reloaded config applied in place.

A reload changes only what changed: sections that need a restart (:data:`RESTART_SECTIONS`)
are refused (logged) and keep their running values; a new sink is built before anything is
stopped, so one that cannot even be built is refused and the running sink keeps delivering;
then it takes over from the spool (:class:`DeliverySlot`). New upstream, filter or sink
settings restart every runner on a new upstream client; a new instance list or discovery
section restarts discovery (one where only ``important`` changed moves the series instead:
no relist, no reconnect); the fleet is then brought in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.access import Built, UpstreamAccess
from bridge.delivery import Delivery
from bridge.discovery import Discovery
from bridge.errors import ConfigError
from bridge.fleet import Fleet
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.settings import InstanceSettings, Settings
from bridge.spool.disk import DiskSpool

log = get_logger(__name__)
RESTART_SECTIONS = ("spool", "admin", "log", "reload", "cluster")
SWAP_CLOSE_SECONDS = 10.0


@dataclass
class Current:
    """The settings in force: every part reads them when it uses them; only a reload
    replaces them."""

    settings: Settings

    def paused_instance(self, name: str) -> InstanceSettings | None:
        """How a paused instance runs again when resumed: as configured, else as
        discovery would run it (None: neither)."""
        wanted = self.settings.instances.get(name)
        if wanted is None and self.settings.discovery is not None:
            wanted = self.settings.discovery.instance(name)
        return wanted


def not_important(settings: Settings) -> tuple[object, object]:
    """The discovery and instance sections with every ``important`` left out (pure)."""
    discovery = settings.discovery
    return (
        None if discovery is None else discovery.model_copy(update={"important": []}),
        {n: s.model_copy(update={"important": False}) for n, s in settings.instances.items()},
    )


def reclassified(
    wanted: Mapping[str, InstanceSettings], new: Settings
) -> dict[str, InstanceSettings]:
    """The wanted instances with ``important`` as ``new`` says: configured ones as configured,
    discovered ones by ``discovery.important`` (pure)."""
    important = [] if new.discovery is None else new.discovery.important
    return {
        n: new.instances.get(n) or s.model_copy(update={"important": n in important})
        for n, s in wanted.items()
    }


def restart_sections(old: Settings, new: Settings) -> dict[str, object]:
    """The sections that changed but need a restart, with their running values (pure)."""
    return {k: getattr(old, k) for k in RESTART_SECTIONS if getattr(new, k) != getattr(old, k)}


class DeliverySlot:
    """The running delivery; a sink reload replaces it whole."""

    def __init__(self, delivery: Delivery, spool: DiskSpool) -> None:
        self.current = delivery
        self.spool = spool

    async def swap(self, replacement: Delivery) -> None:
        """Replace the delivery by ``replacement`` (built beforehand), the spool in between:
        the old worker stops (what it held stays in the spool), the new one drains the spool
        from the acknowledged position."""
        await self.current.close(SWAP_CLOSE_SECONDS)
        self.current = replacement
        self.current.start()
        log.info("sink.restarted", sink=self.current.kind)


class ConfigApplier:
    def __init__(
        self,
        current: Current,
        *,
        fleet: Fleet,
        delivery: DeliverySlot,
        access: UpstreamAccess,
        new_delivery: Callable[[Settings], Delivery],
        metrics: Metrics,
        environ: Mapping[str, str],
    ) -> None:
        self.current = current
        self.fleet = fleet
        self.delivery = delivery
        self.access = access
        self.new_delivery = new_delivery
        self.metrics = metrics
        self.environ = environ
        self.discovery: Discovery | None = None
        self._discovery_task: asyncio.Task[None] | None = None

    # ---- where the wanted instances come from ---------------------------------------------
    async def start(self) -> None:
        """Run the configured instances, then discovery if configured."""
        await self.fleet.apply(self.current.settings.instances)
        self.start_discovery()

    def start_discovery(self) -> None:
        settings = self.current.settings
        if settings.discovery is None:
            self.discovery = None
            return
        self.discovery = Discovery(
            settings.discovery,
            explicit=settings.instances,
            rest_factory=self.access.rest_client,
            buckets=self.access.buckets,
            metrics=self.metrics,
            environ=self.environ,
            apply=self.fleet.apply,
        )
        self._discovery_task = asyncio.create_task(self.discovery.run())

    async def stop_discovery(self) -> None:
        task, self._discovery_task = self._discovery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def rediscover(self, old: Settings, new: Settings) -> None:
        """Discovery or the instance list changed: restart discovery, unless only
        ``important`` changed (then no relist, no reconnect: the series move)."""
        if self.discovery is not None and not_important(new) == not_important(old):
            await self.reclassify(new)
            return
        if self._discovery_task is not None:
            self._discovery_task.cancel()
        self.start_discovery()

    async def reclassify(self, new: Settings) -> None:
        """Only ``important`` changed in discovery or the instances: the running discovery
        takes the new sections and the fleet moves the series, keeping every socket."""
        if self.discovery is None or new.discovery is None:  # not reached: checked by apply
            return
        self.discovery.settings, self.discovery.explicit = new.discovery, dict(new.instances)
        await self.fleet.apply(reclassified(self.fleet.wanted, new))

    # ---- a reloaded config ------------------------------------------------------------------
    async def _prepare(
        self, old: Settings, new: Settings, everything: bool
    ) -> tuple[Built | None, Delivery | None] | None:
        """What a reload puts in place, built before anything running stops: the upstream's
        contexts and REST client (when the runners restart) and the new sink (when it
        changed); None, logged, when one cannot be built (a CA or password file unreadable
        mid-rotation): the running ones are kept."""
        built = None
        if everything:
            try:
                built = self.access.build(new)
            except (OSError, ssl.SSLError) as exc:
                problem = f"upstream.ca_file: {type(exc).__name__}: {exc}"
                log.error("config.reload_refused", problems=[problem], kept="the running instances")
                return None
        replacement = None
        if new.sink != old.sink:
            try:
                replacement = self.new_delivery(new)
            except ConfigError as exc:
                log.error("config.reload_refused", problems=[str(exc)], kept="the running sink")
                if built is not None:  # never put in use
                    await built[1].aclose()
                return None
        return built, replacement

    async def apply(self, new: Settings) -> str:
        """A reloaded config: apply what changed; a few sections need a restart."""
        old = self.current.settings
        if new == old:
            return "unchanged"
        frozen = restart_sections(old, new)
        if frozen:
            log.warning("config.needs_restart", sections=sorted(frozen))
        new = new.model_copy(update=frozen)
        everything = (new.upstream, new.filter, new.sink) != (old.upstream, old.filter, old.sink)
        prepared = await self._prepare(old, new, everything)
        if prepared is None:
            return "invalid"
        built, replacement = prepared
        self.current.settings = new
        if new.metrics != old.metrics:
            self.fleet.per_instance(new.metrics.per_instance)
        if replacement is not None:
            await self.delivery.swap(replacement)
        if built is not None:  # (whenever everything changed)
            for name in list(self.fleet.runners):  # one at a time, each drained
                await self.fleet.remove(name)
            await self.access.rebuild(new, built)  # a new base URL or CA reaches REST too
        if new.discovery != old.discovery or new.instances != old.instances:
            await self.rediscover(old, new)
        if self.discovery is None:
            await self.fleet.apply(new.instances)
        elif everything:
            await self.discovery.refresh()  # bring the stopped runners back now
        return "applied"
