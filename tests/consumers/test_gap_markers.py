"""Gap markers: one per hole in an instance's stream, with the right window and reason."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, running_bridge, settings_for

TOKENS = {"shop": "tok-gap-shop-1", "other": "tok-gap-other-2"}


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def gaps(path: Path, instance: str) -> list[dict[str, Any]]:
    return [
        line["data"]["data"]
        for line in lines(path)
        if line["event"] == "bridge.gap" and line["instance"] == instance
    ]


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def settings(base_url: str, tmp_path: Path) -> Any:
    return settings_for(
        base_url,
        tmp_path,
        instances={n: {"token": t} for n, t in TOKENS.items()},
        sink={
            "kind": "file",
            "file": {"path": str(tmp_path / "events.jsonl")},
            "gap_markers": True,
        },
    )


async def test_a_dropped_socket_gives_exactly_one_marker(tmp_path: Path) -> None:
    """A socket dropped by the upstream and reopened produces one bridge.gap for that instance
    (none for the other), routed by the default layout to ryze.bridge.gap keyed by the
    instance, saying reconnect, the close
    reason, the last frame before and the first moment connected after."""
    events = tmp_path / "events.jsonl"
    async with Simulator(SimConfig(instances=TOKENS, rate=50)) as sim:
        async with running_bridge(settings(sim.base_url, tmp_path)):
            await eventually(
                lambda: len(gaps(events, "shop")) == 1 and len(gaps(events, "other")) == 1
            )
            await eventually(lambda: len(lines(events)) > 40)
            await sim.drop("shop", code=1011)
            await eventually(lambda: len(gaps(events, "shop")) == 2)
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 60)
        start, reconnect = gaps(events, "shop")
        assert len(gaps(events, "other")) == 1
    assert start["reason"] == "bridge_start"
    assert start["last_frame_at"] is None
    assert reconnect["reason"] == "reconnect"
    assert reconnect["detail"] == "close_1011"
    assert when(reconnect["last_frame_at"]) <= when(reconnect["connected_at"])
    assert 0 <= reconnect["gap_seconds"] < 5
    shop_lines = [line for line in lines(events) if line["instance"] == "shop"]
    before = [line for line in shop_lines if line["event"] != "bridge.gap"]
    marker_index = next(
        i for i, line in enumerate(shop_lines)
        if line["event"] == "bridge.gap" and line["data"]["data"]["reason"] == "reconnect"
    )  # fmt: skip
    last_before = shop_lines[marker_index - 1]
    assert last_before["received_at"] == reconnect["last_frame_at"]
    assert before
    marker_line = shop_lines[marker_index]
    assert (marker_line["destination"], marker_line["key"]) == ("ryze.bridge.gap", "shop")


async def test_a_restart_gives_one_marker_per_instance(tmp_path: Path) -> None:
    """Stopping and starting the bridge on the same spool gives one bridge_restart marker per
    instance, whose last_frame_at is the last frame the previous process read."""
    events = tmp_path / "events.jsonl"
    async with Simulator(SimConfig(instances=TOKENS, rate=50)) as sim:
        async with running_bridge(settings(sim.base_url, tmp_path)):
            await eventually(lambda: len(lines(events)) > 40)
        last = {
            name: [line for line in lines(events) if line["instance"] == name][-1]["received_at"]
            for name in TOKENS
        }
        async with running_bridge(settings(sim.base_url, tmp_path)):
            await eventually(lambda: all(len(gaps(events, n)) == 2 for n in TOKENS))
    for name in TOKENS:
        first, restart = gaps(events, name)
        assert first["reason"] == "bridge_start"
        assert restart["reason"] == "bridge_restart"
        assert restart["last_frame_at"] == last[name]
        assert restart["gap_seconds"] > 0
