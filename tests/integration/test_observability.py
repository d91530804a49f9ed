"""Observability against a real Prometheus: every dashboard and alert expression has data,
the rules pass promtool, a stalled socket shows up and heals, no token leaks."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.logs import configure_logging
from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import (
    counter,
    eventually,
    kafka_sink,
    running_bridge,
    scrape,
    settings_for,
)
from tests.services import create_topics, unavailable, unique

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "ryze-bridge-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ryze-bridge.json"
TOKENS = {"shop": "tok-obs-shop-4d4d", "busy": "tok-obs-busy-5e5e", "bad": "tok-obs-bad-6f6f"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian package prometheus)")
    assert path is not None
    return path


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    """promtool accepts the rules, and its unit tests fire each alert from synthetic series
    and keep all of them silent on a healthy series."""
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable, value in (("$__rate_interval", "30s"), ("$__range", "1m")):
        exprs = [e.replace(variable, value) for e in exprs]
    return [re.sub(r"\$(job|namespace|pod)\b", ".*", e) for e in exprs]


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A real Prometheus on a free port; yields its URL and its config file to fill in."""
    binary = tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs: []\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                try:
                    return (await client.get(f"{url}/-/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, within=30, every=0.2)
        yield url, config
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def query(client: httpx.AsyncClient, url: str, expr: str) -> list[Any]:
    answer = (await client.get(f"{url}/api/v1/query", params={"query": expr})).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


async def test_every_dashboard_and_alert_expression_has_data(
    prometheus: tuple[str, Path], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Prometheus scrapes the bridge during a run against the simulator and Kafka (with an
    auth failure, a reconnect, a malformed frame): every dashboard query returns series, and
    every metric an alert rule uses exists. No token is in the logs or in /metrics."""
    url, config = prometheus
    prefix = unique("obs")
    await create_topics(
        kafka_bootstrap,
        [f"{prefix}.{i}.{e}" for i in TOKENS for e in EVENT_NAMES] + [f"{prefix}.dlq"],
    )
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    # frames carry their send time, so the upstream-lag panel has data
    async with Simulator(SimConfig(instances=TOKENS, rate=50, stamp_sent=True)) as sim:
        instances: dict[str, Any] = {n: {"token": t} for n, t in TOKENS.items()}
        instances["bad"] = {"token": "tok-obs-wrong-7a7a"}
        settings = settings_for(
            sim.base_url, tmp_path, instances=instances,
            sink=kafka_sink(kafka_bootstrap, prefix + ".{instance}.{event}", f"{prefix}.dlq"),
            metrics={"per_instance": "all"},  # the per-instance panels have data
        )  # fmt: skip
        async with running_bridge(settings) as bridge, httpx.AsyncClient() as client:
            scrape_config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{
                    "job_name": "ryze-bridge",
                    "static_configs": [{"targets": [f"127.0.0.1:{bridge.admin.port}"]}],
                }],
            }  # fmt: skip
            config.write_text(yaml.safe_dump(scrape_config), encoding="utf-8")
            assert (await client.post(f"{url}/-/reload")).status_code == 200
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            await sim.send_malformed("shop")
            await sim.drop("busy")
            await eventually(lambda: sim.stats("busy")["upgrades"] >= 2)
            metrics_text = await scrape(bridge.admin.port)

            async def scraped_enough() -> bool:  # rates need two points; take four
                up = 'count_over_time(up{job="ryze-bridge"}[30s]) >= 4'
                return bool(await query(client, url, up))

            await eventually(scraped_enough, within=40, every=0.5)

            missing = [e for e in dashboard_expressions() if not await query(client, url, e)]
            assert missing == [], f"dashboard queries without data: {missing}"
            names = {n for e in rule_expressions() for n in re.findall(r"ryze_bridge_\w+", e)}
            absent = [n for n in sorted(names) if not await query(client, url, f"group({n})")]
            assert absent == [], f"alert rules use metrics that do not exist: {absent}"
            for expr in rule_expressions():
                await query(client, url, expr)  # every expression evaluates
            assert await query(client, url, 'up{job="ryze-bridge"} == 1')
            assert counter(bridge.metrics, "ryze_bridge_instance_failed", ryze_instance="bad") == 1
    text = logs.getvalue()
    assert "instance.failed" in text
    assert "ws.reconnecting" in text
    for token in [*TOKENS.values(), "tok-obs-wrong-7a7a"]:
        assert token not in text
        assert token not in metrics_text


async def test_stalled_socket_grows_silence_fails_readiness_then_heals(tmp_path: Path) -> None:
    """A socket on which the upstream stops sending and pinging: the last-frame age grows,
    /readyz turns 503 naming the silent instance, and once the watchdog reconnects (the
    stall over), /readyz is 200 again."""
    tokens = {"shop": "tok-stall-8b8b"}
    config = SimConfig(instances=tokens, rate=20, ping_interval=0.2)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url, tmp_path,
            instances={"shop": {"token": tokens["shop"], "important": True}},
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
            upstream={"watchdog_seconds": 3.0},
            admin={"ready_max_silence_seconds": 1.0, "ready_min_connected_ratio": 1.0},
        )  # fmt: skip
        async with running_bridge(settings) as bridge, httpx.AsyncClient() as client:
            readyz = f"http://127.0.0.1:{bridge.admin.port}/readyz"
            await eventually(lambda: _status(client, readyz, 200))
            sim.stall("shop", 2.5)
            await eventually(lambda: _status(client, readyz, 503), within=5)
            body = (await client.get(readyz)).text
            assert "connected but silent: shop" in body
            stamp = "ryze_bridge_ws_last_frame_timestamp_seconds"
            assert counter(bridge.metrics, stamp, ryze_instance="shop") < time.time() - 1
            await eventually(lambda: _status(client, readyz, 200), within=15)
            healthz = await client.get(f"http://127.0.0.1:{bridge.admin.port}/healthz")
            assert healthz.status_code == 200


async def _status(client: httpx.AsyncClient, url: str, status: int) -> bool:
    return (await client.get(url)).status_code == status
