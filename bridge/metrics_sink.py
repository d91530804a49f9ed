"""The sink side of the metrics: counted in the shipper process, carried over to the bridge
process as data (:func:`sink_side_changes` there, :func:`apply_sink_side` here), checked
before use (:func:`change_problem`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from bridge.histogram import BatchHistogram

if TYPE_CHECKING:
    from bridge.metrics import Metrics

SINK_SIDE_LABELS: dict[str, tuple[str, ...]] = {  # metric attribute → its label names
    "events_published": ("sink", "event"),
    "publish_latency": ("sink",),
    "publish_errors": ("sink", "error"),
    "sink_up": ("sink",),
    "dlq_records": ("reason",),
    "events_dropped": ("ryze_instance", "reason"),
    "sink_worker_restarts": (),
}
SINK_SIDE = tuple(SINK_SIDE_LABELS)
SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # metric attribute, sample, labels
Change = tuple[str, str, list[tuple[str, str]], float]
SUM = "sum"  # the key of a histogram's sum beside its ``le`` bounds (never a bound's label)


def sink_side_values(metrics: Metrics) -> dict[SampleKey, float]:
    """Every sample of the metrics the sink worker moves, by (metric, sample, labels): what
    their ``collect()`` exposes, read off the children directly. It runs at every
    acknowledgement (they carry what moved), where ``collect()``, which builds the whole
    exposition, cost ~150 µs for 30 samples; tests/unit/test_metrics_sink.py holds the two
    readings equal. A client metric whose internals are not as expected (another version of
    the client) is read through ``collect()``, slower but the same."""
    values: dict[SampleKey, float] = {}
    for attr in SINK_SIDE:
        metric = getattr(metrics, attr)
        if _is_histogram(type(metric)):
            _histogram_values(attr, metric, values)
            continue
        try:
            _client_values(attr, metric, values)
        except AttributeError:
            _collected_values(attr, metric, values)
    return values


def _is_histogram(kind: type) -> bool:
    """``issubclass`` remembered (through the client's ABC it costs more than a reading)."""
    known = _HISTOGRAM_KINDS.get(kind)
    if known is None:
        known = _HISTOGRAM_KINDS[kind] = issubclass(kind, BatchHistogram)
    return known


_HISTOGRAM_KINDS: dict[type, bool] = {}


def _collected_values(attr: str, metric: Any, values: dict[SampleKey, float]) -> None:
    for family in metric.collect():
        for sample in family.samples:
            values[(attr, sample.name, tuple(sorted(sample.labels.items())))] = sample.value


def _client_values(attr: str, metric: Any, values: dict[SampleKey, float]) -> None:
    """A client Counter or Gauge: its children's values (the metric itself without labels)."""
    sample = metric._name + ("_total" if metric._type == "counter" else "")
    names = metric._labelnames
    if not names:
        values[(attr, sample, ())] = metric._value.get()
        return
    with metric._lock:
        children = list(metric._metrics.items())
    keys = _KEYS.setdefault(attr, {})
    if len(keys) > 2 * len(children) + 64:  # children removed (instances gone): start over
        keys.clear()
    for labelvalues, child in children:
        key = keys.get(labelvalues)
        if key is None:
            pairs = tuple(sorted(zip(names, labelvalues, strict=True)))
            key = keys[labelvalues] = (attr, sample, pairs)
        values[key] = child._value.get()


_KEYS: dict[str, dict[tuple[str, ...], SampleKey]] = {}


def _histogram_values(attr: str, metric: BatchHistogram, values: dict[SampleKey, float]) -> None:
    for key, child in metric.children():
        labels = tuple(zip(metric.labelnames, key, strict=True))
        buckets, total = child.snapshot()
        for le, count in buckets:
            values[(attr, f"{metric.name}_bucket", tuple(sorted((*labels, ("le", le)))))] = count
        pairs = tuple(sorted(labels))
        values[(attr, f"{metric.name}_count", pairs)] = buckets[-1][1]
        values[(attr, f"{metric.name}_sum", pairs)] = total


def sink_side_changes(
    before: dict[SampleKey, float], after: dict[SampleKey, float]
) -> list[Change]:
    """What moved between two readings (pure): gauges as their new value, counters and
    histogram samples as the increase. A histogram bucket whose increase is the bucket's
    below it (no new observation fell between their bounds) is left out: the main process's
    :meth:`HistogramChild.add_cumulative` adds nothing to a bound not given. A histogram then
    moves in a few changes, not one per bound above its smallest new observation (~35 an
    acknowledgement at fleet scale, each sent, checked and applied). A reading lists each
    histogram's buckets in a row, in the order of their bounds (:func:`sink_side_values`)."""
    changes: list[Change] = []
    below: tuple[str, list[tuple[str, str]], float] | None = None  # the last bucket's increase
    for key, value in after.items():
        old = before.get(key)
        attr, sample, labels = key
        amount = value if attr == "sink_up" else value - (old or 0.0)
        if sample.endswith("_bucket"):
            child = [pair for pair in labels if pair[0] != "le"]
            same_as_below = below is not None and below == (attr, child, amount)
            below = (attr, child, amount)
            if same_as_below:
                continue
        if old == value or (old is None and value == 0):
            continue
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
