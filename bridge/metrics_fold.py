"""Per-instance series that stay bounded at thousands of instances.

``metrics.per_instance`` chooses which instances get series of their own under
``ryze_instance="<name>"``: ``important`` (the default: those marked ``important: true``, or
named in ``discovery.important``), ``all`` or ``none``. Every other instance is counted under
``ryze_instance="_other"``, so a ``sum()`` over ``ryze_instance`` is the same in every mode and
the series count is bounded by (own-series instances + 1) whatever the fleet's size.

Counters fold by adding. The instance gauges are not kept per event at all: they are computed
at scrape time by :class:`FleetCollector` from a snapshot of the runners' states (no per-event
cost): ``ws_connected`` and ``instance_failed`` of ``_other`` count the folded instances in that
state, ``ws_last_frame_timestamp_seconds`` of ``_other`` is the *oldest* last frame of the folded
instances whose socket is open (``time() - it`` is the longest silence among them), and
``ryze_bridge_instances{state}`` counts every instance in exactly one of ``connected``,
``silent``, ``connecting``, ``failed``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OTHER = "_other"
LABEL = "ryze_instance"
PerInstance = Literal["important", "all", "none"]
STATES = ("connected", "silent", "connecting", "failed")


class SeriesLabels:
    """Which ``ryze_instance`` label an instance is counted under, and the bookkeeping that
    moves an instance between its own series and ``_other`` without double counting."""

    def __init__(self, mode: PerInstance = "important") -> None:
        self.mode: PerInstance = mode
        self.important: set[str] = set()
        self.owned: set[str] = set()  # names whose own series may exist
        self.generation = 0  # bumped whenever own series are removed (caches drop them)

    def label(self, name: str) -> str:
        """The label value ``name`` is counted under (its own name or ``_other``)."""
        return name if own_series(self.mode, name in self.important) else OTHER


def own_series(mode: PerInstance, important: bool) -> bool:
    """Whether an instance gets series of its own (pure)."""
    return mode == "all" or (mode == "important" and important)


class Children:
    """The labelled children of one metric, looked up once per label set (hot-path cache).
    With ``series`` given, the cache is dropped when own series were removed (a child taken
    before would count into a series no longer exposed)."""

    def __init__(self, metric: Any, series: SeriesLabels | None = None) -> None:
        self.metric = metric
        self.series = series
        self._generation = series.generation if series is not None else 0
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        if self.series is not None and self.series.generation != self._generation:
            self._cache.clear()
            self._generation = self.series.generation
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self.metric.labels(*labels)
        return child


def remove_series(metrics: Iterable[tuple[Any, tuple[str, ...]]], labels: Collection[str]) -> int:
    """Remove every child whose ``ryze_instance`` is one of ``labels`` from each ``(metric,
    its label names)``, one pass over each metric whatever the number of labels (through the
    client's public ``collect``/``remove``); how many were removed."""
    removed = 0
    for metric, names in metrics:
        seen: set[tuple[str, ...]] = set()
        for family in metric.collect():
            for sample in family.samples:
                if sample.labels.get(LABEL) in labels:
                    seen.add(tuple(sample.labels[n] for n in names))
        for values in seen:
            with contextlib.suppress(KeyError):
                metric.remove(*values)
                removed += 1
    return removed


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One runner as the scrape sees it (read from its status, never written)."""

    name: str
    state: str  # the runner's status.state: connected, failed, starting, reconnecting, …
    last_heard: float | None  # Unix time of the last frame/ping, or of the connection


def classify(row: InstanceState, now: float, max_silence: float) -> str:
    """The one aggregate state of an instance (pure)."""
    if row.state == "failed":
        return "failed"
    if row.state != "connected":
        return "connecting"
    silent = row.last_heard is not None and now - row.last_heard > max_silence
    return "silent" if silent else "connected"


@dataclass(frozen=True, slots=True)
class FleetSample:
    """What the scrape exposes from one snapshot (pure result of :func:`fold`)."""

    states: dict[str, int]
    connected: dict[str, int]
    failed: dict[str, int]
    last_frame: dict[str, float]


def fold(
    rows: Sequence[InstanceState], label: Callable[[str], str], now: float, max_silence: float
) -> FleetSample:
    """The aggregate and per-label gauges of a snapshot (pure): states count every row once;
    ``_other`` counts its connected/failed rows and keeps its oldest open socket's last frame."""
    states = dict.fromkeys(STATES, 0)
    connected: dict[str, int] = {OTHER: 0}
    failed: dict[str, int] = {OTHER: 0}
    last_frame: dict[str, float] = {}
    for row in rows:
        states[classify(row, now, max_silence)] += 1
        key = label(row.name)
        connected[key] = connected.get(key, 0) + (row.state == "connected")
        failed[key] = failed.get(key, 0) + (row.state == "failed")
        if row.last_heard is None or (key == OTHER and row.state != "connected"):
            continue
        seen = last_frame.get(key)
        last_frame[key] = row.last_heard if seen is None else min(seen, row.last_heard)
    return FleetSample(states, connected, failed, last_frame)


class FleetCollector(Collector):
    """The instance gauges, computed at scrape time from ``source()`` (a snapshot of the
    runners; set by the composition root once the fleet exists)."""

    def __init__(self, prefix: str, series: SeriesLabels, max_silence: float = 75.0) -> None:
        self.prefix = prefix
        self.series = series
        self.max_silence = max_silence
        self.source: Callable[[], Sequence[InstanceState]] = tuple

    def collect(self) -> Iterable[Metric]:
        sample = fold(self.source(), self.series.label, time.time(), self.max_silence)
        p = self.prefix
        yield by_label(
            f"{p}_instances", "Instances by state (exclusive; silent = socket open, nothing "
            "heard past admin.ready_max_silence_seconds); the sum is instances_configured.",
            "state", sample.states,
        )  # fmt: skip
        yield by_label(
            f"{p}_ws_connected", "1 while the instance's socket is open (_other: how many).",
            LABEL, sample.connected,
        )  # fmt: skip
        yield by_label(
            f"{p}_instance_failed", "1 while the instance is failed (bad token, unknown "
            "instance), retried slowly (_other: how many).", LABEL, sample.failed,
        )  # fmt: skip
        yield by_label(
            f"{p}_ws_last_frame_timestamp_seconds", "Unix time of the last frame or ping on "
            "the instance's socket (_other: the oldest among its open sockets).",
            LABEL, sample.last_frame,
        )  # fmt: skip


def by_label(name: str, doc: str, label: str, values: dict[str, int] | dict[str, float]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=(label,))
    for value, amount in sorted(values.items()):
        family.add_metric([value], float(amount))
    return family
