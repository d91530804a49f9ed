"""Static scale-out: index/count split the instances without any coordination."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.cluster.balance import shard_of
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, running_bridge, settings_for

pytestmark = pytest.mark.integration


async def test_static_replicas_split_the_instances_by_index(tmp_path: Path) -> None:
    """Two replicas in static mode (index 0 and 1 of 2) each connect exactly the instances of
    their shards: together every instance once, none twice; /instances names the shards and
    each replica reports its share; readiness can require owning shards."""
    names = [f"shop-{i}" for i in range(12)]
    tokens = {name: f"tok-static-{i:02d}" for i, name in enumerate(names)}
    environ = {f"T{i}": token for i, token in enumerate(tokens.values())}
    async with Simulator(SimConfig(instances=tokens, rate=2)) as sim:
        runs = []
        for index in (0, 1):
            settings = settings_for(
                sim.base_url,
                tmp_path / f"r{index}",
                instances={n: {"token_env": f"T{i}"} for i, n in enumerate(names)},
                sink={"kind": "file", "file": {"path": str(tmp_path / f"r{index}.jsonl")}},
                cluster={"mode": "static", "count": 2, "index": index, "shards": 8},
            )
            runs.append(running_bridge(settings, environ=environ))
        async with runs[0] as first, runs[1] as second:
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in names), 20)
            for bridge, index in ((first, 0), (second, 1)):
                assert set(bridge.runners) == {n for n in names if shard_of(n, 8) % 2 == index}
                status = bridge.cluster_status()
                assert status["owned"] == [s for s in range(8) if s % 2 == index]
                ready = await bridge.check_ready()
                assert ready.ready, ready.reasons
            assert max(sim.stats(n)["max_sockets"] for n in names) == 1


async def test_shards_taken_once_shutdown_began_start_no_socket(tmp_path: Path) -> None:
    """A replica whose shutdown has begun is handed more shards (as a leaving peer's shards
    reach a replica that is draining): it starts none of their instances, so no frame is read
    that the drain could miss; its own instances are stopped and nothing holds a socket."""
    names = [f"shop-{i}" for i in range(8)]
    tokens = {name: f"tok-late-{i:02d}" for i, name in enumerate(names)}
    environ = {f"T{i}": token for i, token in enumerate(tokens.values())}
    async with Simulator(SimConfig(instances=tokens, rate=5)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={n: {"token_env": f"T{i}"} for i, n in enumerate(names)},
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
            cluster={"mode": "static", "count": 2, "index": 0, "shards": 8},
        )
        mine = {n for n in names if shard_of(n, 8) % 2 == 0}
        others = set(names) - mine
        assert mine
        assert others
        async with running_bridge(settings, environ=environ) as bridge:
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in mine), 20)
            bridge.request_stop()
            await eventually(lambda: not bridge.runners, within=10)
            await bridge.parts.shards.take(frozenset(range(1, 8, 2)))
            assert not bridge.runners
        await asyncio.sleep(1.0)  # a runner started by the take would have connected by now
        assert [sim.stats(n)["upgrades"] for n in sorted(others)] == [0] * len(others)
        assert all(sim.stats(n)["open_sockets"] == 0 for n in names)
