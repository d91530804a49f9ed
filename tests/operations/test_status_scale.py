"""``ryze-bridge status`` at scale, against real bridge processes on the simulator: a summary
line, filters by state and name, a limit applied by the replica itself, a stable JSON form,
and a cluster-wide view over two replicas sharing instances by Redis leases that says which
replica owns which instance and which replicas did not answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.simulator import SimConfig, Simulator
from tests.cluster.harness import Replica, every_instance_once, free_port, owned, replicas, sum_is
from tests.integration.harness import eventually
from tests.services import unique

pytestmark = [pytest.mark.slow]

GOOD = [f"shop-{i:02d}" for i in range(10)]
BAD = ["bad-a", "bad-b"]
NONE = "0 connecting, 0 silent, 0 paused"


async def status(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge status ARGS`` as a user runs it (bounded)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "status", *args],
        capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ),
    )  # fmt: skip


async def summary_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = (await client.get(f"{url}/instances", params={"limit": "0"})).json()
    result: dict[str, Any] = answer["summary"]
    return result


def base_config(sim: Simulator, tmp_path: Path, names: list[str]) -> dict[str, Any]:
    return {
        "upstream": {"base_url": sim.base_url, "backoff_initial": 0.1, "backoff_max": 1.0},
        "instances": {n: {"token_env": f"TOKEN_{n.replace('-', '_').upper()}"} for n in names},
        "sink": {"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
        "shutdown_timeout": 10,
    }


def env_for(tokens: dict[str, str]) -> dict[str, str]:
    return {f"TOKEN_{n.replace('-', '_').upper()}": t for n, t in tokens.items()}


async def test_status_summary_filters_and_json_of_a_running_bridge(tmp_path: Path) -> None:
    """A bridge process runs 10 instances and 2 with refused tokens. ``status`` prints the
    summary line and the failed rows first; ``--state failed --json`` lists exactly the two,
    with the summary over all 12; ``--name`` and ``--limit`` keep what they say and tell how
    many matched; the replica itself refuses a bad filter (400) and ships only ``limit``
    rows; a bad ``--state`` exits 2."""
    tokens = {n: f"tok-status-{n}-7d7d" for n in GOOD}
    async with Simulator(SimConfig(instances=tokens, rate=2)) as sim:
        env = env_for({**tokens, **{b: f"tok-wrong-{b}" for b in BAD}})
        bridge = Replica("solo", tmp_path / "solo", base_config(sim, tmp_path, GOOD + BAD), env)
        url = f"http://127.0.0.1:{bridge.admin_port}"
        async with replicas(bridge):
            await bridge.start()
            expected = {"failed": 2, "connecting": 0, "silent": 0, "paused": 0,
                        "connected": 10, "total": 12}  # fmt: skip

            async def settled() -> bool:
                try:
                    return await summary_of(url) == expected
                except httpx.HTTPError:
                    return False

            await eventually(settled, within=60, every=0.5)

            text = await status("--url", url)
            assert text.returncode == 0, text.stderr
            lines = text.stdout.splitlines()
            assert (
                lines[0] == "12 instances: 2 failed, 0 connecting, 0 silent, 0 paused, 10 connected"
            )
            assert [line.split()[:2] for line in lines[2:4]] == [
                ["bad-a", "failed"],
                ["bad-b", "failed"],
            ]
            assert len(lines) == 2 + 12

            failed = await status("--url", url, "--state", "failed", "--json")
            view = json.loads(failed.stdout)
            assert set(view) == {"summary", "matched", "shown", "instances", "replicas"}
            assert view["summary"] == expected
            assert (view["matched"], view["shown"]) == (2, 2)
            assert [(r["name"], r["state"]) for r in view["instances"]] == [
                ("bad-a", "failed"), ("bad-b", "failed"),
            ]  # fmt: skip
            assert "401" in view["instances"][0]["last_error"]
            assert view["replicas"] == [{"url": url, "ok": True, "mode": "none"}]
            assert "tok-" not in failed.stdout

            some = await status("--url", url, "--name", "shop-0[0-4]", "--limit", "3")
            rows = some.stdout.splitlines()[2:-1]
            assert [r.split()[0] for r in rows] == ["shop-00", "shop-01", "shop-02"]
            assert some.stdout.splitlines()[-1] == "showing 3 of 5 matching (--limit 0: all)"

            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                two = (await client.get("/instances", params={"limit": "2"})).json()
                assert (len(two["instances"]), two["matched"]) == (2, 12)
                refused = await client.get("/instances", params={"state": "sleeping"})
                assert refused.status_code == 400
                assert "unknown state sleeping" in refused.json()["error"]
            bad = await status("--url", url, "--state", "sleeping")
            assert bad.returncode == 2
            assert "unknown state sleeping" in bad.stderr


@pytest.mark.integration
async def test_cluster_view_over_two_redis_replicas(redis_url: str, tmp_path: Path) -> None:
    """Two replicas share 20 instances by Redis leases. ``status --replicas`` merges both:
    every instance once, each naming the replica that owns it (both own some), the summary
    over all 20. A third address nobody answers on is named as not answering, the others'
    rows still shown, and the exit code is 1."""
    prefix = unique("stc")
    names = [f"inst-{i:02d}" for i in range(20)]
    tokens = {n: f"tok-{prefix}-{n}" for n in names}
    async with Simulator(SimConfig(instances=tokens, rate=2)) as sim:
        config = base_config(sim, tmp_path, names)
        stream = {"url": redis_url, "stream": prefix + ":{instance}"}
        config["sink"] = {"kind": "redis", "dlq": f"{prefix}-dlq", "redis": stream}
        config["cluster"] = {"mode": "redis", "group": prefix, "lease_ttl_ms": 3000}
        r1, r2 = (Replica(f"r{n}", tmp_path / f"r{n}", config, env_for(tokens)) for n in (1, 2))
        urls = [f"http://127.0.0.1:{r.admin_port}" for r in (r1, r2)]
        async with replicas(r1, r2):
            await asyncio.gather(r1.start(), r2.start())
            await eventually(lambda: sum_is(owned([r1, r2]), 64), within=60, every=0.5)
            await eventually(lambda: every_instance_once(sim, names), within=60, every=0.5)

            async def merged() -> dict[str, Any]:
                done = await status("--replicas", ",".join(urls), "--json", "--limit", "0")
                assert done.returncode == 0, done.stderr
                view: dict[str, Any] = json.loads(done.stdout)
                return view

            async def all_connected() -> bool:
                connected: int = (await merged())["summary"]["connected"]
                return connected == 20

            await eventually(all_connected, within=30, every=0.5)
            view = await merged()
            assert sorted(r["name"] for r in view["instances"]) == names
            assert {r["owner"] for r in view["instances"]} == {"r1", "r2"}
            assert [(e["replica"], e["ok"], e["mode"]) for e in view["replicas"]] == [
                ("r1", True, "redis"), ("r2", True, "redis"),
            ]  # fmt: skip

            dead = f"http://127.0.0.1:{free_port()}"
            partial = await status("--replicas", ",".join([*urls, dead]), "--limit", "5")
            assert partial.returncode == 1
            lines = partial.stdout.splitlines()
            assert (
                lines[0] == "20 instances: 0 failed, 0 connecting, 0 silent, 0 paused, 20 connected"
            )
            assert (
                lines[1] == f"replicas: 2 answered (r1, r2); did not answer: {dead} (ConnectError)"
            )
            assert lines[2].split()[:4] == ["instance", "state", "phase", "owner"]
            assert len(lines) == 3 + 5 + 1
            assert dead in partial.stderr
