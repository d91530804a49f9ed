"""Every Prometheus metric of ryze-bridge, defined once, on a registry the caller gives.

Prefix ``ryze_bridge_``, base units, ``_total`` counters. Labels stay low-cardinality: the
``ryze_instance`` label holds an instance's name only for the instances that get series of
their own (``metrics.per_instance``, :mod:`bridge.metrics_fold`), every other one is counted
under ``_other``; event names are the documented ones or ``other``; reasons and error classes
are the code's own names. Never topic or stream names, message ids, chat ids or tokens. Tests
pass a fresh ``CollectorRegistry``.

The histograms are :class:`~bridge.histogram.BatchHistogram`; the instance gauges and the
``instances{state}`` aggregate are computed at scrape time (:class:`FleetCollector`), the
process metrics read from ``/proc`` (:class:`ProcessCollector`); the shipper's sink-side
counts arrive through :mod:`bridge.metrics_sink`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
)

from bridge import __version__
from bridge.histogram import BatchHistogram as BatchHistogram  # noqa: PLC0414
from bridge.histogram import HistogramChild as HistogramChild  # noqa: PLC0414
from bridge.histogram import le_label as le_label  # noqa: PLC0414
from bridge.histogram import observe_all as observe_all  # noqa: PLC0414
from bridge.metrics_fold import OTHER, FleetCollector, PerInstance, SeriesLabels, remove_series
from bridge.metrics_fold import Children as Children  # noqa: PLC0414
from bridge.metrics_labels import event_label as event_label  # noqa: PLC0414
from bridge.metrics_labels import reason_label as reason_label  # noqa: PLC0414
from bridge.processmetrics import ProcessCollector

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
PREFIX = "ryze_bridge"
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
UPSTREAM_LAG_BUCKETS = (  # the frame's own time to receipt: ms (a live feed) to an hour (a backlog)
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip
INSTANCE = "ryze_instance"  # not ``instance``: Prometheus' own target label


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    build_info: Info
    series: SeriesLabels  # which instances have series of their own
    fleet_view: FleetCollector  # ws_connected, instance_failed, ws_last_frame, instances
    processes: ProcessCollector
    ws_reconnects: Counter
    ws_pings: Counter
    events_received: Counter
    events_unknown: Counter
    events_dropped: Counter
    events_published: Counter
    dlq_records: Counter
    publish_errors: Counter
    publish_latency: BatchHistogram
    upstream_lag: BatchHistogram
    spool_bytes: Gauge
    spool_events: Gauge
    spool_max_bytes: Gauge
    spool_recovered: Counter
    spool_errors: Counter
    ensure: Counter
    rate_limited: Counter
    rate_limit_wait: Counter
    sink_up: Gauge
    instances_configured: Gauge
    discovery_runs: Counter
    discovery_eta: Gauge
    discovery_skipped: Counter
    config_reloads: Counter
    cluster_shards_owned: Gauge
    reader_paused: Counter
    cluster_rebalances: Counter
    cluster_handover: BatchHistogram
    shipper_restarts: Counter
    sink_worker_restarts: Counter
    admin_connections_dropped: Counter


HANDOVER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


def create_metrics(
    registry: CollectorRegistry | None = None, per_instance: PerInstance = "important"
) -> Metrics:
    """Register every metric on ``registry`` (a fresh one when None) and return them."""
    reg = registry if registry is not None else CollectorRegistry()
    series = SeriesLabels(per_instance)
    fleet_view = FleetCollector(PREFIX, series)
    processes = ProcessCollector(PREFIX)
    reg.register(fleet_view)
    reg.register(processes)

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=reg)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, labels, registry=reg)

    info = Info(f"{PREFIX}_build", "Version of ryze-bridge and of Python.", registry=reg)
    info.info({"version": __version__, "python": platform.python_version()})
    metrics = Metrics(
        registry=reg,
        build_info=info,
        series=series,
        fleet_view=fleet_view,
        processes=processes,
        ws_reconnects=counter(
            "ws_reconnects",
            "Socket (re)connect attempts after a loss, by reason.",
            (INSTANCE, "reason"),
        ),
        ws_pings=counter("ws_pings", "Server pings answered, per instance.", (INSTANCE,)),
        events_received=counter(
            "events_received", "Frames read off the sockets.", (INSTANCE, "event")
        ),
        events_unknown=counter(
            "events_unknown",
            "Frames with an event name the upstream does not document.",
            (INSTANCE,),
        ),
        events_dropped=counter(
            "events_dropped",
            "Frames not published, by reason (filtered, spool_full, disk_full, …).",
            (INSTANCE, "reason"),
        ),
        events_published=counter(
            "events_published",
            "Records the sink acknowledged, by event; DLQ records are in dlq_records instead.",
            ("sink", "event"),
        ),
        dlq_records=counter(
            "dlq_records", "Records written to the dead-letter destination.", ("reason",)
        ),
        publish_errors=counter(
            "publish_errors", "Failed publish attempts, by error class.", ("sink", "error")
        ),
        publish_latency=BatchHistogram(
            f"{PREFIX}_publish_latency_seconds",
            "From receipt off the socket to the broker's acknowledgement.",
            ("sink",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ),
        upstream_lag=BatchHistogram(
            f"{PREFIX}_upstream_lag_seconds",
            "From the time a frame carries (data.message.timestamp / data.timestamp) to its "
            "receipt off the socket; frames with a usable time, the oldest of each read batch.",
            (),
            buckets=UPSTREAM_LAG_BUCKETS,
            registry=reg,
        ),
        spool_bytes=gauge("spool_bytes", "Bytes held in the spool, not yet acknowledged."),
        spool_events=gauge("spool_events", "Records held in the spool, not yet acknowledged."),
        spool_max_bytes=gauge("spool_max_bytes", "The spool's configured size bound."),
        spool_recovered=counter(
            "spool_recovered_records",
            "Entries found at start-up: replayed, or damaged/torn and skipped.",
            ("outcome",),
        ),
        spool_errors=counter(
            "spool_errors",
            "Failed spool disk operations (write, fsync, ack, delete), e.g. disk full; the records "
            "a failed write cost are counted in events_dropped (disk_full, disk_error).",
            ("op",),
        ),
        ensure=counter(
            "ensure", "Upstream WebSocket config checks, by outcome.", (INSTANCE, "outcome")
        ),
        rate_limited=counter(
            "upstream_rate_limited", "429 answers from the upstream.", (INSTANCE,)
        ),
        rate_limit_wait=counter(
            "upstream_rate_limit_wait_seconds",
            "Seconds spent waiting for the per-token request budget.",
            (INSTANCE,),
        ),
        sink_up=gauge("sink_up", "1 while the sink answers.", ("sink",)),
        instances_configured=gauge("instances_configured", "Instances this process runs."),
        discovery_runs=counter(
            "discovery_runs", "Listings of the account's instances, by outcome.", ("outcome",)
        ),
        discovery_skipped=counter(
            "discovery_skipped",
            "Listed instances discovery did not run, by reason (invalid_name: not a valid "
            "instance name).",
            ("reason",),
        ),
        discovery_eta=gauge(
            "discovery_connect_eta_seconds",
            "Expected seconds to connect the instances the last refresh found new (budget).",
        ),
        config_reloads=counter(
            "config_reloads",
            "Config reloads, by outcome (applied, unchanged, invalid).",
            ("outcome",),
        ),
        cluster_shards_owned=gauge("cluster_shards_owned", "Shards this replica owns now."),
        reader_paused=counter(
            "reader_paused_seconds",
            "Seconds the socket readers waited for the sink worker (delivering, far behind).",
        ),
        cluster_rebalances=counter(
            "cluster_rebalances", "Changes of this replica's shards (assignments, leases)."
        ),
        cluster_handover=BatchHistogram(
            f"{PREFIX}_cluster_handover_seconds",
            "Shard moves: 'release' = sockets closed and drained before letting a shard go; "
            "'takeover' = from gaining a shard to all its instances connected.",
            ("phase",),
            buckets=HANDOVER_BUCKETS,
            registry=reg,
        ),
        shipper_restarts=counter(
            "shipper_restarts",
            "Times the shipper process (the sink worker beside the bridge), or its supervision, "
            "ended unexpectedly and was started again.",
        ),
        sink_worker_restarts=counter(
            "sink_worker_restarts",
            "Times the sink worker (the publisher, in either process) died of an unexpected "
            "error and was started again.",
        ),
        admin_connections_dropped=counter(
            "admin_connections_dropped",
            "Admin port connections closed by the guard: over_limit (admin.max_connections "
            "open already), header_timeout (no complete request headers in time).",
            ("reason",),
        ),
    )
    init_instance(metrics, OTHER)
    return metrics


ENSURE_OUTCOMES = ("unchanged", "created", "updated", "drift", "error")
DROP_REASONS = ("filtered", "spool_full", "disk_full")  # present from the start, at zero
DLQ_REASONS = (
    "malformed_json",
    "unknown_shape",
    "invalid_event",
    "too_large",
    "missing_topic",
    "invalid_topic",
    "not_authorized",
    "rejected_by_broker",
    "fenced",
)


def per_instance_counters(metrics: Metrics) -> list[tuple[Counter, tuple[str, ...]]]:
    """The counters labelled by ``ryze_instance``, with their label names."""
    return [
        (metrics.ws_reconnects, (INSTANCE, "reason")),
        (metrics.ws_pings, (INSTANCE,)),
        (metrics.events_received, (INSTANCE, "event")),
        (metrics.events_unknown, (INSTANCE,)),
        (metrics.events_dropped, (INSTANCE, "reason")),
        (metrics.ensure, (INSTANCE, "outcome")),
        (metrics.rate_limited, (INSTANCE,)),
        (metrics.rate_limit_wait, (INSTANCE,)),
    ]


def init_instance(metrics: Metrics, instance: str, important: bool = False) -> str:
    """Record how an instance is counted and create the series it counts into at zero (so
    rates and increases see its first event); returns its ``ryze_instance`` label. An
    instance that now folds into ``_other`` loses the series it had of its own."""
    series = metrics.series
    (series.important.add if important else series.important.discard)(instance)
    label = series.label(instance)
    if instance == OTHER:  # the fold itself (never an instance's name: see the settings)
        pass
    elif label == OTHER:
        drop_own_series(metrics, {instance})
    else:
        series.owned.add(instance)
    metrics.ws_pings.labels(label)
    metrics.events_unknown.labels(label)
    metrics.rate_limited.labels(label)
    metrics.rate_limit_wait.labels(label)
    for outcome in ENSURE_OUTCOMES:
        metrics.ensure.labels(label, outcome)
    for reason in DROP_REASONS:
        metrics.events_dropped.labels(label, reason)
    return label


def drop_own_series(metrics: Metrics, instances: set[str]) -> None:
    """Remove the counters these instances had under their own names, in one pass (they are
    counted under ``_other`` from now on: what they counted before leaves the sum as a
    counter reset would, never counted twice)."""
    series = metrics.series
    gone = instances & series.owned
    if gone:
        series.owned -= gone
        remove_series(per_instance_counters(metrics), gone)
        series.generation += 1


def set_per_instance(metrics: Metrics, mode: PerInstance, running: dict[str, bool]) -> None:
    """Change ``metrics.per_instance`` while running: ``running`` maps each running instance
    to whether it is important; those that lose their own series fold into ``_other``."""
    metrics.series.mode = mode
    drop_own_series(metrics, {n for n in metrics.series.owned if metrics.series.label(n) == OTHER})
    for name, important in running.items():
        init_instance(metrics, name, important)


def init_cluster(metrics: Metrics) -> None:
    """Create the hand-over series at zero (dashboards and alerts see them from the start)."""
    for phase in ("release", "takeover"):
        metrics.cluster_handover.labels(phase)


def init_sink(metrics: Metrics, sink: str) -> None:
    """Create the sink's error and DLQ series at zero."""
    metrics.publish_errors.labels(sink, "SinkUnavailableError")
    metrics.sink_up.labels(sink).set(0)
    for reason in DLQ_REASONS:
        metrics.dlq_records.labels(reason)
