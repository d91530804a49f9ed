"""The bridge's own view of the upstream's delay: frames that carry their send time (the
simulator's ``stamp_sent``) fill ``ryze_bridge_upstream_lag_seconds`` with small lags;
frames whose only time is a fixture's months-old one give no estimate at all."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, running_bridge, scrape, settings_for

LAG = "ryze_bridge_upstream_lag_seconds"


def sample(text: str, name: str) -> float:
    """The value of an unlabelled sample in an exposition (0 when absent)."""
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def lag_exposition(tmp_path: Path, *, stamp_sent: bool, frames: int) -> str:
    """/metrics of a bridge that has written ``frames`` frames from one simulated instance."""
    token = "tok-lag-5c5c"
    config = SimConfig(
        instances={"shop": token},
        preconfigured=True,
        rate=50,
        stamp_sent=stamp_sent,
        mix={"message.exchange": 1},
    )
    events = tmp_path / "events.jsonl"
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": token}},
            sink={"kind": "file", "file": {"path": str(events)}},
        )
        async with running_bridge(settings) as bridge:

            def written() -> bool:
                return events.exists() and events.read_bytes().count(b"\n") >= frames

            await eventually(written, within=20)
            return await scrape(bridge.admin.port)


async def test_stamped_frames_show_their_lag_from_the_source(tmp_path: Path) -> None:
    """With send times in the frames, the lag histogram counts them, every one under 5 s
    on a loopback simulator."""
    text = await lag_exposition(tmp_path, stamp_sent=True, frames=20)
    count = sample(text, f"{LAG}_count")
    assert count >= 1
    assert sample(text, f'{LAG}_bucket{{le="5.0"}}') == count
    assert sample(text, f"{LAG}_sum") < 5 * count


async def test_a_fixture_s_old_time_is_no_estimate(tmp_path: Path) -> None:
    """The fixtures' fixed 2026-04-28 message time is months away from receipt: absurd,
    ignored, and the series stays at zero (present, so dashboards see it)."""
    text = await lag_exposition(tmp_path, stamp_sent=False, frames=20)
    assert f"{LAG}_count 0.0" in text
