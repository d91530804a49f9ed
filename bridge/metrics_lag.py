"""The upstream-lag histogram (issue 24): how long frames took from the time they carry to
their receipt off the socket, one estimate per read batch. No labels: one series per process."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry

from bridge.histogram import BatchHistogram, HistogramChild
from bridge.metrics import PREFIX

UPSTREAM_LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip
_UPSTREAM_LAG: weakref.WeakKeyDictionary[CollectorRegistry, BatchHistogram] = (
    weakref.WeakKeyDictionary()
)


def upstream_lag(registry: CollectorRegistry) -> HistogramChild:
    """``ryze_bridge_upstream_lag_seconds`` (no labels) of ``registry``, made once: the
    estimate of how long frames took from the upstream's own time to the bridge's receipt."""
    histogram = _UPSTREAM_LAG.get(registry)
    if histogram is None:
        histogram = _UPSTREAM_LAG[registry] = BatchHistogram(
            f"{PREFIX}_upstream_lag_seconds",
            "From the time a frame carries (data.message.timestamp / data.timestamp) to its "
            "receipt off the socket; frames with a usable time, the newest of each read batch.",
            (),
            buckets=UPSTREAM_LAG_BUCKETS,
            registry=registry,
        )
    return histogram.labels()
