"""``ryze-bridge demo``: the simulator as upstream, the bridge, the file sink, a live summary.

Nothing to install or configure: three simulated instances stream into a JSON-lines file
while a line per interval shows events per second and per event type. Ctrl-C (or
``--duration``) stops the bridge gracefully, draining what it received.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from bridge.metrics import Metrics, create_metrics
from bridge.settings import Settings
from bridge.simulator import SimConfig, Simulator

DEMO_INSTANCES = ("loja-centro", "loja-norte", "suporte")


class Runnable(Protocol):
    async def run(self) -> int: ...

    def request_stop(self) -> None: ...


SupervisorFactory = Callable[..., Runnable]


def demo_settings(base_url: str, events_path: Path, spool_dir: Path) -> Settings:
    instances: dict[str, Any] = {name: {"token": f"demo-token-{name}"} for name in DEMO_INSTANCES}
    instances["loja-norte"]["events"] = ["message.exchange", "message.status"]
    return Settings.model_validate(
        {
            "upstream": {"base_url": base_url},
            "instances": instances,
            "sink": {"kind": "file", "file": {"path": str(events_path)}},
            "spool": {"dir": str(spool_dir), "fsync": "never"},
            "admin": {"host": "127.0.0.1", "port": 0},
            "shutdown_timeout": 10,
        }
    )


def counts(metrics: Metrics, name: str, label: str) -> Counter[str]:
    """Current totals of a counter family, summed by one label."""
    totals: Counter[str] = Counter()
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                totals[sample.labels.get(label, "")] += int(sample.value)
    return totals


def summary_line(before: Counter[str], after: Counter[str], seconds: float) -> str:
    """``N ev/s | event a/s …`` from two snapshots of received-by-event totals (pure)."""
    rates = {k: (after[k] - before[k]) / seconds for k in after}
    total = sum(rates.values())
    parts = " ".join(f"{k}={v:.0f}/s" for k, v in sorted(rates.items()) if v)
    return f"{total:6.0f} events/s | received {sum(after.values()):6d} | {parts}"


async def run_demo(
    make_supervisor: SupervisorFactory,
    *,
    duration: float | None,
    rate: float,
    output: Path,
    interval: float = 2.0,
    out: TextIO = sys.stdout,
) -> int:
    tokens = {name: f"demo-token-{name}" for name in DEMO_INSTANCES}
    metrics = create_metrics()
    output.parent.mkdir(parents=True, exist_ok=True)
    config = SimConfig(instances=tokens, rate=rate, seed=7)
    with tempfile.TemporaryDirectory(prefix="ryze-demo-spool-") as spool_dir:
        async with Simulator(config) as sim:
            settings = demo_settings(sim.base_url, output, Path(spool_dir))
            supervisor = make_supervisor(settings, metrics=metrics)
            task = asyncio.create_task(supervisor.run())
            print(f"simulator on {sim.base_url}; writing {output}; Ctrl-C to stop", file=out)
            await _report(task, metrics, duration, interval, out)
            supervisor.request_stop()
            code = await task
    published = counts(metrics, "ryze_bridge_events_published_total", "destination")
    print(f"stopped: {sum(published.values())} records in {output}", file=out)
    return code


async def _report(
    task: asyncio.Task[int], metrics: Metrics, duration: float | None, interval: float, out: TextIO
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    before = counts(metrics, "ryze_bridge_events_received_total", "event")
    while not task.done() and (deadline is None or loop.time() < deadline):
        await asyncio.wait({task}, timeout=interval)
        after = counts(metrics, "ryze_bridge_events_received_total", "event")
        print(summary_line(before, after, interval), file=out, flush=True)
        before = after
