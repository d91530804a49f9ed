"""The histograms of ryze-bridge: :class:`BatchHistogram`, a collector of ours on the
client's public collector interface, exposed exactly as the client's ``Histogram``: a batch of
latencies is counted at once, and the shipper's counts reach the bridge process as data
(:mod:`bridge.metrics_sink`) added bucket by bucket, without the client's internals.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


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

    def children(self) -> list[tuple[tuple[str, ...], HistogramChild]]:
        """Every label set's values and child, as made so far."""
        with self._lock:
            return list(self._children.items())

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children():
            buckets, total = child.snapshot()
            family.add_metric(list(key), buckets, total)
        yield family


def observe_all(histogram: HistogramChild, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every amount, counted at once (a batch of latencies)."""
    histogram.observe_all(amounts)


@functools.cache  # a histogram's few bounds, read at every exposition and acknowledgement
def le_label(bound: float) -> str:
    """A bucket's ``le`` label as the client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
