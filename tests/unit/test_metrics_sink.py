"""The sink side's reading of its metrics, read off the children, is exactly what the
metrics' public ``collect()`` exposes, in every state they can be in."""

from __future__ import annotations

from dataclasses import replace

from bridge.metrics import Metrics, create_metrics
from bridge.metrics_sink import SINK_SIDE, SampleKey, sink_side_values


def exposed(metrics: Metrics) -> dict[SampleKey, float]:
    """The reference: every sample ``collect()`` gives, by (metric, sample, labels)."""
    values: dict[SampleKey, float] = {}
    for attr in SINK_SIDE:
        for family in getattr(metrics, attr).collect():
            for sample in family.samples:
                values[(attr, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_a_fresh_set_of_metrics_reads_as_collected() -> None:
    """Nothing counted yet: the unlabelled counter's zero, no child of the labelled ones."""
    metrics = create_metrics()
    assert sink_side_values(metrics) == exposed(metrics)


def test_every_sink_side_metric_reads_as_collected() -> None:
    """Counters and gauges with labels and without, a histogram with several label sets and
    amounts in its lowest, middle and +Inf buckets: the same samples, names and values."""
    metrics = create_metrics()
    for n, event in enumerate(("message.exchange", "call.update", "other")):
        metrics.events_published.labels("kafka", event).inc(n + 1)
    metrics.events_published.labels("redis", "message.exchange").inc(0)
    metrics.publish_errors.labels("kafka", "KafkaTimeoutError").inc(3)
    metrics.sink_up.labels("kafka").set(1)
    metrics.sink_up.labels("redis").set(0)
    metrics.dlq_records.labels("invalid_event").inc(2)
    metrics.events_dropped.labels("_other", "spool_full").inc(5)
    metrics.sink_worker_restarts.inc()
    metrics.publish_latency.labels("kafka").observe_all([0.0001, 0.02, 0.5, 1e9])
    metrics.publish_latency.labels("redis").observe(0.003)
    read = sink_side_values(metrics)
    assert read == exposed(metrics)
    assert read[("sink_worker_restarts", "ryze_bridge_sink_worker_restarts_total", ())] == 1


class Opaque:
    """A metric whose internals are not the client's (another version of it): only
    ``collect()`` is there to read."""

    def __init__(self, metric: object) -> None:
        self.collect = metric.collect  # type: ignore[attr-defined]


def test_a_metric_with_other_internals_is_read_through_collect() -> None:
    """A client metric without the expected internals is read through ``collect()``: the
    same samples, never an AttributeError that would stop the shipper."""
    metrics = create_metrics()
    metrics.events_published.labels("kafka", "message.exchange").inc(4)
    expected = exposed(metrics)
    opaque = Opaque(metrics.events_published)
    assert sink_side_values(replace(metrics, events_published=opaque)) == expected  # type: ignore[arg-type]
