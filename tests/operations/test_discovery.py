"""Discovery: an account's instances are found, connected within the request budget without a
single 429, new ones join within a refresh, removed ones are stopped after draining."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for

ACCOUNT = "tok-account-discovery-77"


def delivered(path: Path, instance: str) -> list[str]:
    if not path.exists():
        return []
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [line["data"]["data"]["id"] for line in lines if line["instance"] == instance]


async def test_fifty_instances_discovered_connected_within_budget(
    tmp_path: Path, monkeypatch: object
) -> None:
    """50 instances of an account are listed, configured and connected with the account
    token's one budget (server: 100 requests per 6 s window): zero 429s, about as fast as the
    budget allows; an instance added upstream streams within one refresh; a removed one is
    stopped once its frames are delivered."""
    instances = {f"loja-{n:02d}": f"tok-inst-{n:02d}" for n in range(50)}
    events = tmp_path / "events.jsonl"
    config = SimConfig(
        instances=instances, account_tokens=[ACCOUNT], rate=2, rate_limit=100, rate_window=6
    )
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            discovery={
                "token_env": "RYZE_ACCOUNT_TOKEN",
                "refresh_seconds": 1.0,
                "exclude": ["skip-*"],
            },
            sink={"kind": "file", "file": {"path": str(events)}},
            upstream={"rate_limit_per_minute": 800},
        )
        sim.add_instance("skip-me", "tok-skip")
        environ = {"RYZE_ACCOUNT_TOKEN": ACCOUNT}
        started = time.monotonic()
        async with running_bridge(settings, environ=environ) as bridge:
            await eventually(
                lambda: sum(sim.stats(n)["open_sockets"] for n in instances) == 50, within=40
            )
            took = time.monotonic() - started
            eta = counter(bridge.metrics, "ryze_bridge_discovery_connect_eta_seconds")
            assert "skip-me" not in bridge.runners

            sim.add_instance("loja-late", "tok-late")
            await eventually(lambda: len(delivered(events, "loja-late")) > 0, within=10)

            sim.pause("loja-00")
            await eventually(
                lambda: len(delivered(events, "loja-00")) == sim.stats("loja-00")["frames_sent"]
            )
            await sim.remove_instance("loja-00")
            await eventually(lambda: "loja-00" not in bridge.runners, within=10)
        assert sim.rate_limited_of(ACCOUNT) == 0
        assert sim.all_stats()["rate_limited"] == 0
        assert sum(sim.stats(n)["upgrades"] for n in instances) >= 50
    assert 4 <= eta <= 12  # (101 requests - burst 10) at 800/min
    assert took < eta + 15
    assert delivered(events, "loja-00") == sim.sent_ids("loja-00")
