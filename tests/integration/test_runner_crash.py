"""A runner that crashes closes its socket: the fleet's restart never leaves a second socket
open beside a forgotten one (whose frames nobody would read)."""

from __future__ import annotations

from pathlib import Path

from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for

TOKEN = "tok-crash-0001"


async def test_a_crashed_runners_socket_is_closed_before_its_restart(tmp_path: Path) -> None:
    """The spool is closed under a running bridge (a real fault: every append then raises
    SpoolError): the runner crashes at its next batch and the fleet restarts it, again and
    again. Each crashed runner's socket is closed, so after several restarts the instance
    holds at most the one socket of its current try at the simulator; the frames read
    meanwhile are counted as dropped."""
    async with Simulator(SimConfig(instances={"shop": TOKEN}, rate=50)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": TOKEN}},
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
            shutdown_timeout=2,
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1, within=10)
            bridge.spool.close()
            await eventually(lambda: sim.stats("shop")["upgrades"] >= 3, within=20)
            await eventually(lambda: sim.stats("shop")["open_sockets"] <= 1, within=5)
            crashes = sim.stats("shop")["upgrades"]
            await eventually(lambda: sim.stats("shop")["upgrades"] > crashes, within=10)
            await eventually(lambda: sim.stats("shop")["open_sockets"] <= 1, within=5)
            # every frame read since the spool went is counted, none vanishes
            assert counter(bridge.metrics, "ryze_bridge_events_dropped_total") > 0
        await eventually(lambda: sim.stats("shop")["open_sockets"] == 0, within=5)
