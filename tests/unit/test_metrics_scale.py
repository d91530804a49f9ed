"""Metrics that stay small at thousands of instances: per-instance series only for the
instances that get their own (``metrics.per_instance``), everything else folded into
``ryze_instance="_other"`` with the same sums, the aggregate ``instances{state}``, labels
that never carry what the upstream made up."""

from __future__ import annotations

import time

import pytest

from bench.metrics_scrape import measure
from bridge.fleet import Fleet
from bridge.metrics import (
    Children,
    Metrics,
    create_metrics,
    event_label,
    init_instance,
    reason_label,
)
from bridge.metrics_fold import OTHER, InstanceState, PerInstance, classify, fold
from bridge.settings import DiscoverySettings, InstanceSettings, Settings
from tests.unit.test_fleet import Made, running

NOW = 1_000_000.0


def series_count(metrics: Metrics) -> int:
    return sum(len(family.samples) for family in metrics.registry.collect())


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def label_values(metrics: Metrics, name: str) -> set[str]:
    return {
        s.labels["ryze_instance"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


def fleet_of(metrics: Metrics, count: int, important: set[str]) -> list[InstanceState]:
    """``count`` instances counted as a busy runner would count them, and their states."""
    rows = []
    for i in range(count):
        name = f"inst-{i:05d}"
        label = init_instance(metrics, name, name in important)
        metrics.events_received.labels(label, "message.exchange").inc()
        metrics.ws_reconnects.labels(label, "abnormal").inc()
        state = ("connected", "failed", "reconnecting")[i % 3]
        rows.append(InstanceState(name, state, time.time()))
    metrics.fleet_view.source = lambda: rows
    return rows


def test_series_count_does_not_grow_with_quiet_instances() -> None:
    """50 or 5,000 instances none of which is important: the same number of series (the
    fold), with two important ones a fixed few more, whatever the fleet's size."""
    counts = []
    for count in (50, 5_000):
        metrics = create_metrics()
        fleet_of(metrics, count, important=set())
        counts.append(series_count(metrics))
    assert counts[0] == counts[1]
    metrics = create_metrics()
    fleet_of(metrics, 5_000, important={"inst-00001", "inst-00002"})
    with_important = series_count(metrics)
    assert counts[0] < with_important < counts[0] + 2 * 40


@pytest.mark.parametrize("mode", ["important", "all", "none"])
def test_sums_over_ryze_instance_are_the_same_in_every_mode(mode: PerInstance) -> None:
    """Counters add and the gauges count: summed over ``ryze_instance`` they read the same
    whichever instances have series of their own."""
    metrics = create_metrics(per_instance=mode)
    fleet_of(metrics, 30, important={"inst-00003", "inst-00004"})
    received = "ryze_bridge_events_received_total"
    assert sum_of(metrics, received) == 30
    assert sum_of(metrics, "ryze_bridge_ws_connected") == 10
    assert sum_of(metrics, "ryze_bridge_instance_failed") == 10
    own = label_values(metrics, received) - {OTHER}
    expected = {"all": 30, "important": 2, "none": 0}[mode]
    assert len(own) == expected


def sum_of(metrics: Metrics, name: str) -> float:
    return sum(
        s.value for family in metrics.registry.collect() for s in family.samples if s.name == name
    )


def test_instances_by_state_are_exclusive_and_sum_to_the_configured() -> None:
    """Each instance is in exactly one state; a connected socket silent past the limit is
    ``silent``, not ``connected``; failed wins over everything (pure)."""
    rows = [
        InstanceState("a", "connected", NOW - 1),
        InstanceState("b", "connected", NOW - 100),
        InstanceState("c", "failed", None),
        InstanceState("d", "reconnecting", NOW - 500),
        InstanceState("e", "starting", None),
    ]
    folded = fold(rows, lambda name: OTHER, NOW, max_silence=75)
    assert folded.states == {"connected": 1, "silent": 1, "connecting": 2, "failed": 1}
    assert sum(folded.states.values()) == len(rows)
    assert classify(InstanceState("x", "connected", NOW - 75), NOW, 75) == "connected"


def test_other_keeps_the_oldest_last_frame_of_its_open_sockets() -> None:
    """``_other``'s last frame is the oldest among its connected instances (a disconnected
    one does not pin it); an own series keeps its own (pure)."""
    rows = [
        InstanceState("vip", "connected", NOW - 500),
        InstanceState("a", "connected", NOW - 10),
        InstanceState("b", "connected", NOW - 40),
        InstanceState("gone", "reconnecting", NOW - 900),
    ]
    folded = fold(rows, lambda name: name if name == "vip" else OTHER, NOW, 75)
    assert folded.last_frame == {"vip": NOW - 500, OTHER: NOW - 40}
    assert folded.connected == {"vip": 1, OTHER: 2}


def test_an_instance_moved_to_other_loses_its_own_series_and_is_not_counted_twice() -> None:
    """An important instance counts under its name; made not important (a reload), its own
    series are removed and what it counts from then on goes to ``_other``; made important
    again, it starts a fresh series of its own (the runner's cached child follows)."""
    metrics = create_metrics()
    label = init_instance(metrics, "vip", important=True)
    assert label == "vip"
    received = Children(metrics.events_received, metrics.series)
    received("vip", "message.status").inc(5)
    assert init_instance(metrics, "vip", important=False) == OTHER
    assert "vip" not in label_values(metrics, "ryze_bridge_events_received_total")
    assert "vip" not in label_values(metrics, "ryze_bridge_ensure_total")
    received(OTHER, "message.status").inc(2)
    assert init_instance(metrics, "vip", important=True) == "vip"
    received("vip", "message.status").inc(1)
    name = "ryze_bridge_events_received_total"
    assert sample(metrics, name, ryze_instance="vip", event="message.status") == 1
    assert sample(metrics, name, ryze_instance=OTHER, event="message.status") == 2


async def test_a_reload_of_per_instance_moves_running_instances() -> None:
    """The fleet's running instances follow a new ``metrics.per_instance`` at once: ``all``
    gives each its series, ``none`` folds them all into ``_other`` and removes theirs;
    ``ryze_bridge_instances`` counts every runner."""
    metrics = create_metrics()
    made = Made()
    fleet = Fleet(made, metrics)
    desired = {
        "vip": InstanceSettings(token="t", important=True),
        "a": InstanceSettings(token="t"),
        "b": InstanceSettings(token="t"),
    }
    await fleet.apply(desired)
    await running(made, 3)
    name = "ryze_bridge_ws_pings_total"
    assert label_values(metrics, name) == {"vip", OTHER}
    assert sample(metrics, "ryze_bridge_instances", state="connected") == 3
    assert sample(metrics, "ryze_bridge_ws_connected", ryze_instance=OTHER) == 2
    fleet.per_instance("all")
    assert label_values(metrics, name) == {"vip", "a", "b", OTHER}
    fleet.per_instance("none")
    assert label_values(metrics, name) == {OTHER}
    assert sample(metrics, "ryze_bridge_ws_connected", ryze_instance=OTHER) == 3
    await fleet.stop_all()
    assert sample(metrics, "ryze_bridge_instances", state="connected") == 0
    assert sample(metrics, "ryze_bridge_instances_configured") == 0


def test_labels_never_hold_what_the_upstream_made_up() -> None:
    """Event labels are the documented names, ``bridge.gap`` or ``other``; reconnect reasons
    keep the code's names and fold an upstream's own close codes and odd statuses."""
    assert event_label("message.exchange") == "message.exchange"
    assert event_label("bridge.gap") == "bridge.gap"
    assert event_label("bridge.anything-else") == "other"
    assert event_label("ryze.tenant-42.topic") == "other"
    assert reason_label("watchdog") == "watchdog"
    assert reason_label("close_1011") == "close_1011"
    assert reason_label("close_4321") == "close_other"
    assert reason_label("http_401") == "http_401"
    assert reason_label("http_503") == "http_5xx"
    assert reason_label("http_418") == "http_4xx"


def test_importance_is_a_setting_of_instances_and_of_discovery() -> None:
    """``important`` on an instance, ``discovery.important`` by name, and the mode under
    ``metrics.per_instance`` (default ``important``); an unknown mode names its key."""
    settings = Settings.model_validate({"instances": {"a": {"token": "t", "important": True}}})
    assert settings.instances["a"].important is True
    assert settings.metrics.per_instance == "important"
    discovery = DiscoverySettings(token_env="ACCOUNT", important=["vip"])
    assert discovery.instance("vip").important is True
    assert discovery.instance("other").important is False
    with pytest.raises(ValueError, match="per_instance"):
        Settings.model_validate({"metrics": {"per_instance": "some"}})


def test_the_scrape_benchmark_runs_and_shows_the_bound() -> None:
    """``bench.metrics_scrape`` (the lead's one-command figure) measures the default mode with
    as many series at 300 instances as at 30, and ``all`` growing with them; the scrape is
    gzipped to a fraction of its size."""
    small = measure("important", 30, 3, rounds=1)
    large = measure("important", 300, 3, rounds=1)
    assert small["series"] == large["series"]
    assert measure("all", 300, 3, rounds=1)["series"] > 10 * large["series"]
    assert large["gzip_bytes"] < large["bytes"] / 3
