"""The buffered-frames budget's metrics (:mod:`bridge.upstream.budget`) and the socket slots'
(:mod:`bridge.upstream.slots`): read at scrape time from their state, no cost on the reading
path."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.metrics import PREFIX
from bridge.upstream.budget import BudgetState
from bridge.upstream.slots import SlotState


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


class SlotsCollector(Collector):
    """The sockets the process may hold (its open-files limit) and the instances waiting."""

    def __init__(self, state: SlotState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state = self.state
        yield GaugeMetricFamily(
            f"{PREFIX}_socket_slots",
            "Upstream sockets the process may hold: its open-files limit less a reserve.",
            value=state.limit,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_socket_slots_used",
            "Socket slots held: upstream sockets open or opening.",
            value=state.used,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_socket_slot_waiting",
            "Instances waiting for a socket slot (more instances than the open-files limit "
            "holds; they connect as sockets close).",
            value=state.waiting,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_socket_slot_waits",
            "Times an instance waited for a socket slot.",
            value=state.waits,
        )


def register_slots(registry: CollectorRegistry, state: SlotState) -> None:
    registry.register(SlotsCollector(state))
