"""Throughput of the relay with each spool policy, as ratios to baselines of the same run.

    python3 -m uv run python bench/spool_cost.py [--seconds 8] [--sink file|kafka]

The simulator runs as its own process in fast mode (frames as fast as the socket takes).
Measured, one after the other, for ``--seconds`` each:

- ``raw_ws``: a bare ``websockets`` client reading the same frames;
- ``raw_producer`` (Kafka): a bare aiokafka producer with the bridge's producer settings
  sending those frames; the lower of the two raw rates is the ceiling the ratios use;
- the bridge (in this process) with the disk spool under ``fsync`` = never / interval /
  always (the in-memory buffer it was once compared with is gone: the spool is always on
  disk), each also as a ratio to ``fsync`` = never.

Prints a table and writes ``bench/results/spool-<date>.json``. For Kafka, start the test
services first (``bash scripts/services.sh up``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from websockets.asyncio.client import connect

from bench.common import RAW_LINGER_MS
from bridge.compose import assemble
from bridge.metrics import create_metrics
from bridge.settings import KafkaSinkSettings, Settings
from bridge.sinks.kafka import producer_options

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-bench-000"  # noqa: S105 - a simulator token


@contextlib.asynccontextmanager
async def simulator() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.simulator", "--port", "0", "--rate", "0",
        "--preconfigured", "--config", str(write_sim_config()),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = re.search(r"(http://\S+)", line)
    assert match, line
    try:
        yield match.group(1)
    finally:
        process.terminate()
        await process.wait()


def write_sim_config() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ryze-bench-")) / "sim.yaml"
    path.write_text(json.dumps({"instances": {"bench": TOKEN}}), encoding="utf-8")
    return path


async def raw_ws(base_url: str, seconds: float, sample: list[bytes]) -> float:
    """Frames per second a bare websockets client reads from the simulator (keeps a sample
    of the frames for the producer baseline)."""
    url = base_url.replace("http://", "ws://") + "/ws/bench"
    count = 0
    async with connect(url, additional_headers={"token": TOKEN}, max_size=None) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = await ws.recv(decode=False)
            if len(sample) < 2000:
                sample.append(frame)
            count += 1
    return count / seconds


async def raw_producer(bootstrap: str, seconds: float, sample: list[bytes]) -> float:
    """Records per second a bare aiokafka producer with the bridge's producer settings
    (acks=all, idempotent, zstd, same batching) gets acknowledged, sending the same frames."""
    kafka = KafkaSinkSettings(bootstrap_servers=bootstrap)
    topic = f"ryze.bench.raw.{int(time.time())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**{**producer_options(kafka), "linger_ms": RAW_LINGER_MS})
    await producer.start()
    acked = 0
    try:
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        while time.monotonic() < deadline:
            futures = [await producer.send(topic, frame, key=b"bench") for frame in sample[:1000]]
            await asyncio.gather(*futures)
            acked += len(futures)
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
    return acked / elapsed


def settings(base_url: str, work: Path, sink: str, fsync: str, bootstrap: str | None) -> Settings:
    sink_section: dict[str, Any] = {"kind": "file", "file": {"path": str(work / "events.jsonl")}}
    if sink == "kafka":
        sink_section = {
            "kind": "kafka",
            "kafka": {"bootstrap_servers": bootstrap, "create_topics": True},
            "dlq": "ryze.bench.dlq",
        }
    return Settings.model_validate(
        {
            "upstream": {"base_url": base_url},
            "instances": {"bench": {"token": TOKEN}},
            "sink": sink_section,
            "spool": {"dir": str(work / "spool"), "fsync": fsync},
            "admin": {"host": "127.0.0.1", "port": 0},
        }
    )


async def bridge(
    base_url: str, seconds: float, variant: str, sink: str, bootstrap: str | None
) -> float:
    """Records per second the bridge delivers (broker-acknowledged) in steady state."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-") as tmp:
        config = settings(base_url, Path(tmp), sink, variant, bootstrap)
        metrics = create_metrics()
        supervisor = assemble(config, metrics=metrics, handle_signals=False)
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(2.0)  # connect and warm up
        start_count, start = published(metrics), time.monotonic()
        await asyncio.sleep(seconds)
        rate = (published(metrics) - start_count) / (time.monotonic() - start)
        supervisor.request_stop()
        await asyncio.wait_for(task, 60)
        return rate


def published(metrics: Any) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "ryze_bridge_events_published_total":
                total += sample.value
    return total


def kafka_bootstrap() -> str | None:
    path = ROOT / ".services" / "services.json"
    if not path.exists():
        return None
    bootstrap: str = json.loads(path.read_text())["kafka"]["bootstrap_servers"]
    return bootstrap


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--sink", choices=["file", "kafka"], default="file")
    args = parser.parse_args()
    bootstrap = kafka_bootstrap() if args.sink == "kafka" else None
    if args.sink == "kafka" and bootstrap is None:
        raise SystemExit("start the services first: bash scripts/services.sh up")
    results: dict[str, float] = {}
    sample: list[bytes] = []
    async with simulator() as base_url:
        results["raw_ws"] = await raw_ws(base_url, args.seconds, sample)
        if bootstrap is not None:
            results["raw_producer"] = await raw_producer(bootstrap, args.seconds, sample)
        for variant in ("never", "interval", "always"):
            results[variant] = await bridge(base_url, args.seconds, variant, args.sink, bootstrap)
    ceiling = min(results["raw_ws"], results.get("raw_producer", results["raw_ws"]))
    print(f"{'run':<22}{'frames/s':>12}{'÷ min(raw)':>12}{'÷ never':>12}")
    for name, rate in results.items():
        label = name if name.startswith("raw") else f"spool fsync={name}"
        print(f"{label:<22}{rate:>12.0f}{rate / ceiling:>12.2f}{rate / results['never']:>12.2f}")
    out = ROOT / "bench" / "results" / f"spool-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sink": args.sink, "seconds": args.seconds, **results}, indent=2))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
