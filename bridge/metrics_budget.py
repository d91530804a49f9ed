"""The buffered-frames budget's metrics (:mod:`bridge.upstream.budget`): read at scrape time
from the budget's state, no cost on the reading path."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.metrics import PREFIX
from bridge.upstream.budget import BudgetState


class BudgetCollector(Collector):
    """The process-wide budget of bytes read off the sockets and not yet in the spool."""

    def __init__(self, state: BudgetState, clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        state = self.state
        yield GaugeMetricFamily(
            f"{PREFIX}_buffered_bytes",
            "Bytes read off the sockets and not yet in the spool, all sockets together.",
            value=state.used,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_buffered_bytes_peak",
            "The most buffered_bytes has been since the process started.",
            value=state.peak,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_buffer_budget_bytes",
            "The budget buffered_bytes stays within (upstream.buffer_budget_bytes).",
            value=state.limit,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_reader_budget_waits",
            "Times a socket reader stopped reading because the budget was full.",
            value=state.waits,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_reader_budget_wait_seconds",
            "Seconds during which at least one socket reader waited for the budget "
            "(the upstream was pushed back on: TCP flow control, nothing dropped).",
            value=state.seconds_waited(self.clock()),
        )


def register_budget(
    registry: CollectorRegistry, state: BudgetState, clock: Callable[[], float]
) -> None:
    registry.register(BudgetCollector(state, clock))
