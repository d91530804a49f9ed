"""Discovery treats listed names as data: a name that is not a valid instance name is skipped
and counted once, and the account's other instances run."""

from __future__ import annotations

from pathlib import Path

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for

ACCOUNT = "tok-account-names-31"
GOOD = {"loja-ok": "tok-names-ok", "Shop_2": "tok-names-shop2"}
BAD = {"bad.name": "tok-names-dot", "evil:x": "tok-names-colon", "../up": "tok-names-path"}


async def test_invalid_discovered_names_are_skipped_counted_once_and_the_rest_run(
    tmp_path: Path,
) -> None:
    """The simulator lists two valid and three invalid names (a dot, a colon, a path): the
    valid ones connect; the others never get a runner or a socket; each is counted once
    under reason invalid_name although the account is listed again every 0.5 s."""
    config = SimConfig(instances={**GOOD, **BAD}, account_tokens=[ACCOUNT], rate=1)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            discovery={"token_env": "RYZE_ACCOUNT_TOKEN", "refresh_seconds": 0.5},
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
        )
        environ = {"RYZE_ACCOUNT_TOKEN": ACCOUNT}
        async with running_bridge(settings, environ=environ) as bridge:
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in GOOD))
            runs = "ryze_bridge_discovery_runs_total"
            listed = counter(bridge.metrics, runs, outcome="ok")
            await eventually(lambda: counter(bridge.metrics, runs, outcome="ok") >= listed + 3)
            assert set(bridge.runners) == set(GOOD)
            skipped = counter(
                bridge.metrics, "ryze_bridge_discovery_skipped_total", reason="invalid_name"
            )
        assert all(sim.stats(n)["upgrades"] == 0 for n in BAD)
    assert skipped == len(BAD)
