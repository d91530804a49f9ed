"""The composition root: every part of the process built once from settings, and wired.

metrics → disk spool (+ last-seen times, its keeper) → fleet → shard coordinator (and the
membership it owns) → delivery (fenced by the membership if it fences) → pacer → upstream
access (HTTP client, TLS, budgets, runner context) → config applier → readiness, operator
controls, admin server → config watcher → :class:`~bridge.supervisor.Supervisor`.
Nothing else constructs these parts; none of them checks another's concrete type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from bridge.access import UpstreamAccess
from bridge.admin import AdminServer
from bridge.adminguard import ConnectionLimits
from bridge.cluster import replica_name
from bridge.cluster.build import build_membership
from bridge.controls import OperatorControls
from bridge.delivery import Delivery, build_delivery
from bridge.fleet import Fleet, FleetRunner
from bridge.lastseen import LastSeen
from bridge.logs import get_logger, register_secret
from bridge.metrics import Metrics, create_metrics
from bridge.pacing import Pacer
from bridge.ready import ReadinessCheck
from bridge.reconfigure import ConfigApplier, Current, DeliverySlot
from bridge.reload import ConfigWatcher
from bridge.runner import Runner
from bridge.settings import (
    InstanceSettings,
    Settings,
    ignored_important,
    insecure_choices,
    read_secret,
)
from bridge.shards import Ownership, ShardCoordinator
from bridge.spool.disk import DiskSpool
from bridge.spoolkeeper import SpoolKeeper
from bridge.supervisor import Parts, Supervisor
from bridge.upstream.rest import WsConfig
from bridge.wiring import admin_tls, build_pipeline

LAST_SEEN_FILE = "last-seen.json"

log = get_logger(__name__)


def admin_token(settings: Settings, environ: Mapping[str, str]) -> SecretStr | None:
    """The admin API's bearer token, if configured (masked in logs like every secret)."""
    admin = settings.admin
    token = read_secret("admin.token", admin.token_env, admin.token_file, environ)
    if token is not None:
        register_secret(token.get_secret_value())
    return token


def disk_spool(settings: Settings) -> DiskSpool:
    spool = settings.spool
    return DiskSpool(
        spool.dir, spool.max_bytes, spool.when_full, spool.fsync, spool.fsync_interval_ms
    )


def assemble(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    handle_signals: bool = True,
) -> Supervisor:
    """The whole process, built from ``settings``, ready to :meth:`~Supervisor.run`."""
    for choice in insecure_choices(settings):  # accepted by allow_insecure: said at every start
        log.warning("config.insecure", choice=choice)
    ignored = ignored_important(settings)
    if ignored:  # the mark only chooses series under per_instance: important
        log.warning(
            "config.important_ignored",
            per_instance=settings.metrics.per_instance,
            instances=ignored[:20],
            count=len(ignored),
        )
    environ = environ if environ is not None else os.environ
    metrics = metrics or create_metrics()
    metrics.series.mode = settings.metrics.per_instance
    metrics.fleet_view.max_silence = settings.admin.ready_max_silence_seconds
    current = Current(settings)
    spool = disk_spool(settings)
    last_seen = LastSeen(settings.spool.dir / LAST_SEEN_FILE)
    ownership = Ownership(settings.cluster.shards)

    def make_runner(
        name: str, instance: InstanceSettings, known: WsConfig | None, *, takeover: bool
    ) -> FleetRunner:
        # the settings and the runner context in force when it starts (``access`` is built
        # below, long before the first runner starts)
        pipeline = build_pipeline(current.settings, instance)
        return Runner(name, instance, pipeline, access.ctx, known, takeover=takeover)

    fleet = Fleet(make_runner, metrics, owns=ownership.mine)

    shards = ShardCoordinator(
        ownership,
        fleet,
        spool,
        metrics,
        lambda owner: build_membership(settings, owner, metrics, environ),
        mode=settings.cluster.mode,
        replica=replica_name(settings.cluster, environ),
    )

    def new_delivery(settings: Settings) -> Delivery:
        return build_delivery(settings, spool, metrics, environ=environ, fencing=shards.fencing())

    delivery = DeliverySlot(new_delivery(settings), spool)
    # the shipper's pid when the sink worker runs in its own process (read at scrape time)
    metrics.processes.shipper_pid = lambda: getattr(delivery.current, "pid", None)
    pacer = Pacer(
        spool.stats,
        lambda: delivery.current.shares_loop_with_readers and delivery.current.delivering,
        on_pause=metrics.reader_paused.inc,
    )
    access = UpstreamAccess(
        settings,
        spool=spool,
        metrics=metrics,
        environ=environ,
        last_seen=last_seen,
        pace=pacer,
        held=pacer.held,
    )
    applier = ConfigApplier(
        current,
        fleet=fleet,
        delivery=delivery,
        access=access,
        new_delivery=new_delivery,
        metrics=metrics,
        environ=environ,
    )
    ready = ReadinessCheck(
        settings.admin,
        requires_shards=settings.cluster.ready_requires_shards,
        delivery=delivery,
        spool=spool,
        fleet=fleet,
        shards=shards,
    )
    admin = AdminServer(
        metrics,
        ready,
        host=settings.admin.host,
        port=settings.admin.port,
        control=OperatorControls(fleet, shards, current),
        token=admin_token(settings, environ),
        tls=admin_tls(settings),
        limits=ConnectionLimits(
            settings.admin.max_connections, settings.admin.header_timeout_seconds
        ),
    )
    watcher = None
    if config_path is not None:
        reload = settings.reload
        watcher = ConfigWatcher(
            config_path, applier.apply, metrics, reload.poll_seconds, watch=reload.watch
        )
    parts = Parts(
        current=current,
        metrics=metrics,
        spool=spool,
        keeper=SpoolKeeper(spool, last_seen, settings.spool, metrics),
        delivery=delivery,
        access=access,
        fleet=fleet,
        shards=shards,
        applier=applier,
        admin=admin,
        ready=ready,
        watcher=watcher,
    )
    return Supervisor(parts, handle_signals=handle_signals)
