"""Our histograms (plain bucket arrays behind the client's public collector interface) expose
exactly what prometheus-client's own Histogram exposes, and the shipper's increases carried
as data add up in the main process to what the shipper counted."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from bridge.metrics import LATENCY_BUCKETS, BatchHistogram, create_metrics, observe_all
from bridge.metrics_sink import apply_sink_side, sink_side_changes, sink_side_values


def amounts(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.choice([0.0, 0.001, 0.0025, 60.0, 1e9, rng.random() * 3]) for _ in range(n)]


@pytest.mark.parametrize("render", [generate_latest, generate_openmetrics])
def test_exposition_is_the_clients_histogram_exposition(
    render: Callable[[CollectorRegistry], bytes],
) -> None:
    """Same name, labels and observations: the text (Prometheus and OpenMetrics formats) of
    our histogram is byte for byte the client's Histogram's — series created at zero by
    ``labels()`` included. This fails loudly if the client's public interface changes."""
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram(
        "x_seconds", "doc", ("sink",), buckets=LATENCY_BUCKETS, registry=theirs_registry
    )
    ours = BatchHistogram("x_seconds", "doc", ("sink",), LATENCY_BUCKETS, ours_registry)
    values = amounts(3, 500)
    for value in values:
        theirs.labels("kafka").observe(value)
    theirs.labels("redis").observe(0.3)
    theirs.labels("file")
    observe_all(ours.labels("kafka"), values)
    ours.labels(sink="redis").observe(0.3)
    ours.labels("file")
    assert render(ours_registry) == render(theirs_registry)


def test_shipper_counts_carried_as_data_add_up_in_the_main_process() -> None:
    """Two rounds of the shipper's latencies, carried as changes, leave the main process's
    histogram equal to the shipper's; what the main process had counted itself is kept."""
    shipper, main = create_metrics(), create_metrics()
    observe_all(main.publish_latency.labels("redis"), [0.5])
    before = sink_side_values(shipper)
    for seed in (1, 2):
        observe_all(shipper.publish_latency.labels("kafka"), amounts(seed, 300))
        after = sink_side_values(shipper)
        apply_sink_side(main, sink_side_changes(before, after))
        before = after

    def kafka_samples(registry: CollectorRegistry) -> list[tuple[str, str, float]]:
        return [
            (s.name, s.labels.get("le", ""), s.value)
            for family in registry.collect()
            if family.name == "ryze_bridge_publish_latency_seconds"
            for s in family.samples
            if s.labels["sink"] == "kafka"
        ]

    got, want = kafka_samples(main.registry), kafka_samples(shipper.registry)
    assert [(n, le) for n, le, _ in got] == [(n, le) for n, le, _ in want]
    assert [v for *_, v in got] == pytest.approx([v for *_, v in want])
    redis = main.registry.get_sample_value(
        "ryze_bridge_publish_latency_seconds_count", {"sink": "redis"}
    )
    assert redis == 1.0


def test_labels_must_match_the_label_names() -> None:
    """A wrong number of label values is refused, as the client refuses it."""
    histogram = BatchHistogram("y_seconds", "doc", ("phase",), (1.0,), CollectorRegistry())
    with pytest.raises(ValueError, match="labels"):
        histogram.labels("a", "b")


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.sampled_from([0.0, 0.0004, 0.002, 0.003, 0.2, 7.0, 45.0, 1e9]), max_size=12),
        min_size=1,
        max_size=5,
    )
)
def test_a_histogram_carried_in_few_changes_adds_up_the_same(rounds: list[list[float]]) -> None:
    """Any rounds of observations, two sinks: the changes leave out every bucket whose
    increase is the one below it, and the main process's histograms still equal the
    shipper's after each round; a round sends at most one bucket change per bucket its
    observations fell in."""
    shipper, main = create_metrics(), create_metrics()
    before = sink_side_values(shipper)
    for observed in rounds:
        observe_all(shipper.publish_latency.labels("kafka"), observed)
        observe_all(shipper.publish_latency.labels("redis"), observed[::2])
        after = sink_side_values(shipper)
        changes = sink_side_changes(before, after)
        apply_sink_side(main, changes)
        before = after
        buckets = [change for change in changes if change[1].endswith("_bucket")]
        hit = {bisect.bisect_left(LATENCY_BUCKETS, value) for value in observed}
        hit_redis = {bisect.bisect_left(LATENCY_BUCKETS, value) for value in observed[::2]}
        assert len(buckets) <= len(hit) + len(hit_redis)
        for sink in ("kafka", "redis"):
            got, want = (m.publish_latency.labels(sink).snapshot() for m in (main, shipper))
            assert got[0] == want[0]
            assert got[1] == pytest.approx(want[1])
