"""Every Prometheus metric of ryze-bridge, defined once, on a registry the caller gives.

Prefix ``ryze_bridge_``, base units, ``_total`` counters. Labels stay low-cardinality: instance
names, event names (unknown ones folded into ``other``), destinations, reasons; never message
ids, chat ids or tokens. Tests pass a fresh ``CollectorRegistry``.

The histograms are :class:`BatchHistogram`, a collector of ours on the client's public
collector interface, exposed exactly as the client's ``Histogram``: a batch of latencies is
counted at once, and the shipper's counts reach this process as data (``sink_side_changes``)
added bucket by bucket, without the client's internals.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
import platform
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bridge import __version__
from bridge.pipeline.filter import is_known_event

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
PREFIX = "ryze_bridge"
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class Children:
    """The labelled children of one metric, looked up once per label set (hot-path cache;
    the label sets are bounded: instances by event kinds, destinations, reasons)."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self.metric.labels(*labels)
        return child


class HistogramChild:
    """One label set of a :class:`BatchHistogram`: plain per-bucket counts and a sum, ours to
    add to a batch at a time (one lock per batch, not two locked increments per amount)."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # ascending, the last one +Inf
        self._counts = [0.0] * len(bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        """One amount, into the first bucket whose bound is >= it (as the client does)."""
        index = bisect.bisect_left(self._bounds, amount)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def observe_all(self, amounts: Iterable[float]) -> None:
        """Every amount, as :meth:`observe` one by one would count them."""
        values = amounts if isinstance(amounts, list | tuple) else list(amounts)
        counts = Tally(map(functools.partial(bisect.bisect_left, self._bounds), values))
        total = sum(values)
        with self._lock:
            for index, count in counts.items():
                self._counts[index] += count
            self._sum += total

    def add_cumulative(self, cumulative: Mapping[str, float], total: float) -> None:
        """Add another histogram's increases: bucket counts by ``le`` label, cumulative as
        exposed, and the sum. A bound missing from ``cumulative`` adds nothing to its bucket
        (its amounts go to the next bound given)."""
        with self._lock:
            below = 0.0
            for index, bound in enumerate(self._bounds):
                value = cumulative.get(le_label(bound))
                if value is None:
                    continue
                self._counts[index] += value - below
                below = value
            self._sum += total

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs, +Inf last, and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(self._bounds, counts, strict=True):
            running += count
            buckets.append((le_label(bound), running))
        return buckets, total


class BatchHistogram(Collector):
    """A labelled Prometheus histogram whose counts are plain data of ours, exposed through
    the client's public collector interface (``Collector`` + ``HistogramMetricFamily``):
    batches observe at once (:func:`observe_all`) and the shipper's increases are added
    (:func:`apply_sink_side`) without touching the client's internals. Exposition is that of
    ``prometheus_client.Histogram`` (``_bucket{le}``, ``_count``, ``_sum``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str, **named: str) -> HistogramChild:
        """The child of one label set, made at zero the first time (as the client's)."""
        key = tuple(named[n] for n in self.labelnames) if named else tuple(map(str, values))
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {key}")
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = HistogramChild(self._bounds)
        return child

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            buckets, total = child.snapshot()
            family.add_metric(list(key), buckets, total)
        yield family


def observe_all(histogram: HistogramChild, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every amount, counted at once (a batch of latencies)."""
    histogram.observe_all(amounts)


def le_label(bound: float) -> str:
    """A bucket's ``le`` label as the client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def event_label(event: str) -> str:
    """The event as a label value: one of the six known names, ``bridge.*``, or ``other``."""
    return event if is_known_event(event) or event.startswith("bridge.") else "other"


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    build_info: Info
    ws_connected: Gauge
    ws_reconnects: Counter
    ws_last_frame: Gauge
    ws_pings: Counter
    instance_failed: Gauge
    events_received: Counter
    events_unknown: Counter
    events_dropped: Counter
    events_published: Counter
    dlq_records: Counter
    publish_errors: Counter
    publish_latency: BatchHistogram
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
    config_reloads: Counter
    cluster_shards_owned: Gauge
    reader_paused: Counter
    cluster_rebalances: Counter
    cluster_handover: BatchHistogram
    shipper_restarts: Counter
    sink_worker_restarts: Counter


HANDOVER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


def create_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Register every metric on ``registry`` (a fresh one when None) and return them."""
    reg = registry if registry is not None else CollectorRegistry()

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=reg)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, labels, registry=reg)

    info = Info(f"{PREFIX}_build", "Version of ryze-bridge and of Python.", registry=reg)
    info.info({"version": __version__, "python": platform.python_version()})
    return Metrics(
        registry=reg,
        build_info=info,
        ws_connected=gauge("ws_connected", "1 while the instance's socket is open.", ("instance",)),
        ws_reconnects=counter(
            "ws_reconnects",
            "Socket (re)connect attempts after a loss, by reason.",
            ("instance", "reason"),
        ),
        ws_last_frame=gauge(
            "ws_last_frame_timestamp_seconds",
            "Unix time of the last frame or ping received on the instance's socket.",
            ("instance",),
        ),
        ws_pings=counter("ws_pings", "Server pings answered, per instance.", ("instance",)),
        instance_failed=gauge(
            "instance_failed",
            "1 while the instance is failed (bad token, unknown instance); retried slowly.",
            ("instance",),
        ),
        events_received=counter(
            "events_received", "Frames read off the sockets.", ("instance", "event")
        ),
        events_unknown=counter(
            "events_unknown",
            "Frames with an event name the upstream does not document.",
            ("instance",),
        ),
        events_dropped=counter(
            "events_dropped",
            "Frames not published, by reason (filtered, spool_full, disk_full, …).",
            ("instance", "reason"),
        ),
        events_published=counter(
            "events_published", "Records the broker acknowledged.", ("sink", "destination")
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
            "ensure", "Upstream WebSocket config checks, by outcome.", ("instance", "outcome")
        ),
        rate_limited=counter(
            "upstream_rate_limited", "429 answers from the upstream.", ("instance",)
        ),
        rate_limit_wait=counter(
            "upstream_rate_limit_wait_seconds",
            "Seconds spent waiting for the per-token request budget.",
            ("instance",),
        ),
        sink_up=gauge("sink_up", "1 while the sink answers.", ("sink",)),
        instances_configured=gauge("instances_configured", "Instances this process runs."),
        discovery_runs=counter(
            "discovery_runs", "Listings of the account's instances, by outcome.", ("outcome",)
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
    )


ENSURE_OUTCOMES = ("unchanged", "created", "updated", "drift", "error")
DROP_REASONS = ("filtered", "spool_full", "disk_full")  # present from the start, at zero
DLQ_REASONS = (
    "malformed_json",
    "unknown_shape",
    "too_large",
    "missing_topic",
    "invalid_topic",
    "not_authorized",
    "rejected_by_broker",
    "fenced",
    "invalid_event_name",
)


def init_instance(metrics: Metrics, instance: str) -> None:
    """Create an instance's series at zero, so rates and increases see its first event."""
    metrics.ws_connected.labels(instance).set(0)
    metrics.instance_failed.labels(instance).set(0)
    metrics.ws_pings.labels(instance)
    metrics.events_unknown.labels(instance)
    metrics.rate_limited.labels(instance)
    metrics.rate_limit_wait.labels(instance)
    for outcome in ENSURE_OUTCOMES:
        metrics.ensure.labels(instance, outcome)
    for reason in DROP_REASONS:
        metrics.events_dropped.labels(instance, reason)


def forget_instance(metrics: Metrics, instance: str) -> None:
    """Remove the per-instance gauges of an instance this process no longer runs."""
    for gauge in (metrics.ws_connected, metrics.instance_failed, metrics.ws_last_frame):
        with contextlib.suppress(KeyError):
            gauge.remove(instance)


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


# ---- the sink side, counted in the shipper process, carried over to this one ------------
SINK_SIDE_LABELS: dict[str, tuple[str, ...]] = {  # metric attribute → its label names
    "events_published": ("sink", "destination"),
    "publish_latency": ("sink",),
    "publish_errors": ("sink", "error"),
    "sink_up": ("sink",),
    "dlq_records": ("reason",),
    "events_dropped": ("instance", "reason"),
    "sink_worker_restarts": (),
}
SINK_SIDE = tuple(SINK_SIDE_LABELS)
SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # metric attribute, sample, labels
Change = tuple[str, str, list[tuple[str, str]], float]
SUM = "sum"  # the key of a histogram's sum beside its ``le`` bounds (never a bound's label)


def sink_side_values(metrics: Metrics) -> dict[SampleKey, float]:
    """Every sample of the metrics the sink worker moves, by (metric, sample, labels)."""
    values: dict[SampleKey, float] = {}
    for attr in SINK_SIDE:
        for family in getattr(metrics, attr).collect():
            for sample in family.samples:
                values[(attr, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def sink_side_changes(
    before: dict[SampleKey, float], after: dict[SampleKey, float]
) -> list[Change]:
    """What moved between two readings (pure): gauges as their new value, counters and
    histogram samples as the increase."""
    changes: list[Change] = []
    for key, value in after.items():
        old = before.get(key)
        if old == value or (old is None and value == 0):
            continue
        attr, sample, labels = key
        amount = value if attr == "sink_up" else value - (old or 0.0)
        changes.append((attr, sample, list(labels), amount))
    return changes


def change_problem(change: Change) -> str | None:
    """What is wrong with a change the shipper sent (None: nothing), checked before any is
    applied (pure): a metric that is not a sink-side one, label names other than the
    metric's (``le`` besides on a histogram bucket), an amount not finite, a counter or
    histogram that would go down."""
    attr, sample, pairs, amount = change
    names = SINK_SIDE_LABELS.get(attr)
    if names is None:
        return f"{attr!r} is not a sink-side metric"
    given = [name for name, _ in pairs]
    bucket = attr == "publish_latency" and sample.endswith("_bucket")
    expected = {*names, "le"} if bucket else set(names)
    if len(given) != len(set(given)) or set(given) != expected:
        return f"{attr}: labels {sorted(given)}, expected {sorted(expected)}"
    if not math.isfinite(amount) or (amount < 0 and attr != "sink_up"):
        return f"{attr}: amount {amount}"
    return None


def apply_sink_side(metrics: Metrics, changes: Iterable[Change]) -> None:
    """Add what the shipper counted to this process's metrics (see :func:`sink_side_changes`).
    Histogram buckets arrive cumulative (``le``) and are added bucket by bucket, with the sum
    (:meth:`HistogramChild.add_cumulative`)."""
    histograms: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float]] = {}
    for attr, sample, pairs, amount in changes:
        labels = dict(pairs)
        metric = getattr(metrics, attr)
        if isinstance(metric, BatchHistogram):
            if sample.endswith("_bucket"):
                le = labels.pop("le")
                key = (attr, tuple(sorted(labels.items())))
                histograms.setdefault(key, {})[le] = amount
            elif sample.endswith("_sum"):
                key = (attr, tuple(sorted(labels.items())))
                histograms.setdefault(key, {})[SUM] = amount
        elif isinstance(metric, Gauge):
            metric.labels(**labels).set(amount)
        else:  # a counter; one without labels (sink_worker_restarts) is its own child
            (metric.labels(**labels) if labels else metric).inc(amount)
    for (attr, label_pairs), amounts in histograms.items():
        total = amounts.pop(SUM, 0.0)
        getattr(metrics, attr).labels(**dict(label_pairs)).add_cumulative(amounts, total)
