"""One ``/metrics`` scrape at fleet size: series, bytes (plain and gzipped) and the time to
render it, per ``metrics.per_instance`` mode:

    python -m bench.metrics_scrape [--instances 5000] [--important 20] [--rounds 5]
    python -m bench.metrics_scrape --live [--instances 1000] [--modes important,all]

``--live`` runs the simulator and a bridge (file sink) as their own processes with that many
instances, waits for every socket, and scrapes its ``/metrics`` over HTTP: the wall time of a
gzipped scrape (median of ``--rounds``), its bytes, the plain bytes and the series.

Every instance's series are made as the fleet and a runner make them (``init_instance``,
then the counts a runner that saw each event, a reconnect, a ping and a filtered frame
leaves), and the instance states come from a snapshot of runners as the scrape reads it.
The render is what ``/metrics`` does in its worker thread (``render_metrics``). Times are
process CPU time (medians of the rounds), so a busy machine disturbs them less than wall
time would; the target (issue 20) is <= 1 MB and <= 100 ms by default at 5,000 instances.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    bridge_args,
    bridge_config,
    process,
    sim_stats,
    simulator,
    write_bridge_config,
)
from bridge.admin import GZIP_LEVEL, render_metrics
from bridge.metrics import Metrics, create_metrics, init_instance
from bridge.metrics_fold import InstanceState, PerInstance
from bridge.pipeline.events import EVENT_NAMES

STATES = ("connected",) * 8 + ("reconnecting", "failed")


def fleet(mode: PerInstance, instances: int, important: int) -> Metrics:
    """A registry holding what ``instances`` runners (the first ``important`` of them
    marked important) have counted after a while."""
    metrics = create_metrics(per_instance=mode)
    rows = []
    now = time.time()
    for i in range(instances):
        name = f"inst-{i:05d}"
        label = init_instance(metrics, name, i < important)
        for event in EVENT_NAMES:
            metrics.events_received.labels(label, event).inc()
        metrics.events_received.labels(label, "other").inc()
        metrics.events_dropped.labels(label, "filtered").inc()
        metrics.ws_reconnects.labels(label, "abnormal").inc()
        metrics.ws_reconnects.labels(label, "watchdog").inc()
        metrics.ws_pings.labels(label).inc()
        metrics.ensure.labels(label, "unchanged").inc()
        rows.append(InstanceState(name, STATES[i % len(STATES)], now - i % 90))
    metrics.fleet_view.source = lambda: rows
    for event in EVENT_NAMES:
        metrics.events_published.labels("kafka", event).inc()
    return metrics


def measure(mode: PerInstance, instances: int, important: int, rounds: int) -> dict[str, Any]:
    metrics = fleet(mode, instances, important)
    render, zipped = [], []
    body = packed = b""
    for _ in range(rounds):
        start = time.process_time()
        body = render_metrics(metrics.registry, gzipped=False)
        middle = time.process_time()
        packed = gzip.compress(body, compresslevel=GZIP_LEVEL)
        render.append(middle - start)
        zipped.append(time.process_time() - middle)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "mode": mode,
        "instances": instances,
        "important": important,
        "series": series,
        "bytes": len(body),
        "gzip_bytes": len(packed),
        "render_cpu_ms": round(statistics.median(render) * 1000, 1),
        "gzip_cpu_ms": round(statistics.median(zipped) * 1000, 1),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def all_connected(url: str, instances: int, within: float = 600.0) -> float:
    """Seconds until the simulator sees every instance's socket (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        stats = await sim_stats(url)
        if sum(1 for s in stats["instances"].values() if s["open_sockets"]) >= instances:
            return time.monotonic() - started
        await asyncio.sleep(1)
    raise TimeoutError(f"not all {instances} instances connected within {within} s")


async def live(mode: PerInstance, instances: int, rounds: int) -> dict[str, Any]:
    """Scrape a real bridge with ``instances`` sockets open (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-scrape-") as tmp:
        work = Path(tmp)
        async with simulator(work, instances=instances, rate=0.2, prebuilt=20) as source:
            port = free_port()
            sink = {"kind": "file", "file": {"path": str(work / "events.jsonl")}}
            extra = {"admin": {"host": "127.0.0.1", "port": port},
                     "metrics": {"per_instance": mode}}  # fmt: skip
            config = bridge_config(source.url, work, sink, instances=instances, extra=extra)
            async with process(bridge_args(write_bridge_config(work, config)), work / "b.log"):
                connect = await all_connected(source.url, instances)
                await asyncio.sleep(5)
                url = f"http://127.0.0.1:{port}/metrics"
                async with httpx.AsyncClient(timeout=60) as http:
                    walls, raw = [], b""
                    for _ in range(rounds):
                        start = time.perf_counter()
                        async with http.stream("GET", url) as answer:  # gzip, as Prometheus
                            raw = b"".join([c async for c in answer.aiter_raw()])
                        walls.append(time.perf_counter() - start)
                    plain = (await http.get(url, headers={"Accept-Encoding": "identity"})).content
    series = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))
    return {
        "mode": mode,
        "instances": instances,
        "seconds_to_all_connected": round(connect, 1),
        "series": series,
        "bytes": len(plain),
        "gzip_bytes": len(raw),
        "scrape_wall_ms": round(statistics.median(walls) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--important", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--live", action="store_true", help="scrape a real bridge")
    parser.add_argument("--modes", default="important,none,all")
    args = parser.parse_args(argv)
    modes: list[PerInstance] = [m for m in ("important", "none", "all") if m in args.modes]
    if args.live:
        for mode in modes:
            print(asyncio.run(live(mode, args.instances, args.rounds)), flush=True)
        return
    header = f"{'mode':<10} {'instances':>9} {'series':>7} {'bytes':>10} {'gzip':>8}"
    print(header + f" {'render ms':>9} {'gzip ms':>8}  (process CPU, median)")
    for mode in modes:
        row = measure(mode, args.instances, args.important, args.rounds)
        print(
            f"{row['mode']:<10} {row['instances']:>9} {row['series']:>7} {row['bytes']:>10} "
            f"{row['gzip_bytes']:>8} {row['render_cpu_ms']:>9} {row['gzip_cpu_ms']:>8}"
        )


if __name__ == "__main__":
    main()
