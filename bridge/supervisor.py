"""The supervisor: the life of the process, over parts built once by :mod:`bridge.compose`.

open the spool → start the delivery → start admin → run the configured instances, then
discovery → follow the cluster membership → watch the config file → run → on SIGTERM/SIGINT
stop intake (start nothing more, close every socket, keep what was read) → drain the spool to
the sink within ``shutdown_timeout`` → leave the cluster (and stop and drain anything a take
racing the stop still started) → close. A second signal exits at once; SIGHUP
reloads the config. A coordination error that will not fix itself ends the process (exit 1).

Who does what: the fleet (:mod:`bridge.fleet`) owns the runners, the shard coordinator
(:mod:`bridge.shards`) decides which instances this replica runs, the config applier
(:mod:`bridge.reconfigure`) applies a reloaded config, the spool keeper
(:mod:`bridge.spoolkeeper`) opens, fsyncs and closes the spool, readiness is
:mod:`bridge.ready`, the admin API's controls :mod:`bridge.controls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bridge.access import UpstreamAccess
from bridge.admin import AdminServer, Readiness
from bridge.delivery import Delivery
from bridge.errors import ClusterError
from bridge.fleet import Fleet, FleetRunner
from bridge.heap import HeapKeeper
from bridge.logs import get_logger
from bridge.metrics import Metrics, init_cluster
from bridge.ready import ReadinessCheck
from bridge.reconfigure import ConfigApplier, Current, DeliverySlot
from bridge.reload import ConfigWatcher
from bridge.settings import Settings
from bridge.shards import ShardCoordinator
from bridge.signals import SignalHandlers
from bridge.spool.disk import DiskSpool
from bridge.spoolkeeper import SpoolKeeper

log = get_logger(__name__)


@dataclass(frozen=True)
class Parts:
    """Everything the process runs, built once from settings (:func:`bridge.compose.assemble`)."""

    current: Current
    metrics: Metrics
    spool: DiskSpool
    keeper: SpoolKeeper
    delivery: DeliverySlot
    access: UpstreamAccess
    fleet: Fleet
    shards: ShardCoordinator
    applier: ConfigApplier
    admin: AdminServer
    ready: ReadinessCheck
    watcher: ConfigWatcher | None


class Supervisor:
    def __init__(self, parts: Parts, *, handle_signals: bool = True) -> None:
        self.parts = parts
        self.handle_signals = handle_signals
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._following: asyncio.Task[None] | None = None

    # ---- what tests and tools look at -----------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.parts.current.settings

    @property
    def metrics(self) -> Metrics:
        return self.parts.metrics

    @property
    def spool(self) -> DiskSpool:
        return self.parts.spool

    @property
    def delivery(self) -> Delivery:
        return self.parts.delivery.current

    @property
    def admin(self) -> AdminServer:
        return self.parts.admin

    @property
    def runners(self) -> dict[str, FleetRunner]:
        return self.parts.fleet.runners

    async def apply(self, new: Settings) -> str:
        return await self.parts.applier.apply(new)

    async def check_ready(self) -> Readiness:
        return await self.parts.ready()

    def cluster_status(self) -> dict[str, object]:
        return self.parts.shards.status()

    # ---- the life -------------------------------------------------------------------------
    async def run(self) -> int:
        """The whole life of the process; returns the exit code."""
        signals = SignalHandlers(self._on_stop_signal, self._on_hangup)
        if self.handle_signals:
            signals.install()
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if self.handle_signals:
                signals.remove()
        if self._fatal is not None:
            log.error("bridge.fatal", error=self._fatal)
            return 1
        return 0

    async def start(self) -> None:
        parts = self.parts
        init_cluster(parts.metrics)
        parts.keeper.open()
        self._tasks.append(asyncio.create_task(parts.keeper.run()))
        keepalive = parts.access.sockets.keepalive  # the fleet's heap, frozen once settled
        heap = HeapKeeper(
            lambda: keepalive.watches, lambda: keepalive.unwatched, lambda: keepalive.watching
        )
        self._tasks.append(asyncio.create_task(heap.run()))
        parts.delivery.current.start()
        await parts.admin.start()
        log.info("admin.listening", host=self.settings.admin.host, port=parts.admin.port)
        await parts.applier.start()
        if parts.shards.membership is not None:
            self._following = asyncio.create_task(self._follow_membership())
        if parts.watcher is not None:
            self._tasks.append(asyncio.create_task(parts.watcher.run()))
        log.info("bridge.started", instances=len(self.runners), sink=self.delivery.kind)

    async def _follow_membership(self) -> None:
        try:
            await self.parts.shards.follow()
        except ClusterError as exc:
            self._fail(str(exc))

    def request_stop(self) -> None:
        self._stop.set()

    def _fail(self, error: str) -> None:
        """Something that will not fix itself (the cluster's coordination): stop the process
        (exit 1). A sink that cannot start is not such a thing: it is retried, readiness
        false meanwhile."""
        self._fatal = error
        self._stop.set()

    async def shutdown(self) -> None:
        """Stop intake, drain within ``shutdown_timeout``, leave the cluster, close."""
        parts = self.parts
        deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("bridge.stopping", instances=len(self.runners))
        parts.fleet.close()  # from now on nothing starts: not a take, a reload, a restart
        await parts.fleet.stop_all()
        drained = await self._drain(deadline)
        await parts.shards.leave(self._following)
        # whatever a take under way at close() still started is stopped and drained here,
        # while the worker runs: nothing is appended once the worker stops
        await parts.fleet.stop_all()
        drained = parts.spool.stats().events == 0 or await self._drain(deadline)
        await self.delivery.stop_worker()
        await parts.applier.stop_discovery()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = parts.spool.stats()
        if not drained:
            log.error("bridge.undelivered", events=left.events, bytes=left.bytes)
        await self.delivery.close(deadline - time.monotonic())
        await parts.admin.close()
        await parts.access.close()
        parts.keeper.close()
        log.info("bridge.stopped", drained=drained, undelivered=left.events)

    async def _drain(self, deadline: float) -> bool:
        spool = self.parts.spool
        if self._fatal is not None or not self.delivery.running:
            return spool.stats().events == 0
        try:
            await asyncio.wait_for(spool.wait_empty(), timeout=deadline - time.monotonic())
        except TimeoutError:
            return False
        return True

    def _on_hangup(self) -> None:
        if self.parts.watcher is not None:
            log.info("bridge.signal", signal="SIGHUP")
            self.parts.watcher.request()

    def _on_stop_signal(self, name: str) -> None:
        log.info("bridge.signal", signal=name)
        self._stop.set()
