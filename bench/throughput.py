"""Throughput: raw client limits, the bridge on every sink, fsync policies, and the peers.

For each workload the simulator (its own process) serves pre-built frames as fast as a socket
takes them. The raw baselines read (websockets) or write (aiokafka with the bridge's producer
settings, pipelined XADD with redis.asyncio) the same frames as fast as they can; the bridge
and the peers run as their own processes. Every rate is counted on the broker's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from bench.common import (
    HEAD,
    RAW_LINGER_MS,
    ROOT,
    Build,
    CpuMeter,
    Services,
    Source,
    bridge_args,
    bridge_config,
    create_topics,
    delete_streams,
    family,
    file_count,
    kafka_count,
    process,
    rate_over,
    redis_count,
    simulator,
    unique,
    write_bridge_config,
)
from bridge.settings import EVENT_NAMES, KafkaSinkSettings
from bridge.sinks.kafka import producer_options

BIG_MESSAGES = {"max.message.bytes": str(16 * 1024 * 1024)}


@dataclass(frozen=True)
class Workload:
    name: str
    media_bytes: int = 0
    instances: int = 1

    @property
    def prebuilt(self) -> int:
        """Distinct frames per instance: 1,000 small ones, or about 32 MB of big ones."""
        return 1000 if not self.media_bytes else max(2, 32_000_000 // self.media_bytes)

    @property
    def max_request(self) -> int:
        return 1024 * 1024 if not self.media_bytes else 8 * 1024 * 1024


WORKLOADS = (
    Workload("600B x1"),
    Workload("600B x50", instances=50),
    Workload("200KB x1", media_bytes=200_000),
    Workload("4MB x1", media_bytes=4_000_000),
)


@dataclass
class Timing:
    warmup: float = 3.0
    seconds: float = 6.0


@dataclass(frozen=True)
class Box:
    """What else runs during a measurement, measured with it: the source (the simulator) and
    the broker of the sink (Kafka or Redis, started by scripts/services.sh)."""

    source: Source
    services: Services

    def meter(self, client: Callable[[], list[int]], sink: str) -> CpuMeter:
        """A meter of ``client``'s processes, the source, the ``sink``'s broker and the box."""
        broker = {"kafka": self.services.kafka_pid, "redis": self.services.redis_pid}.get(sink, 0)
        return CpuMeter(
            {
                "client": client,
                "source": lambda: [self.source.pid],
                "broker": lambda: [broker] if broker else [],
            }
        )

    def here(self, sink: str) -> CpuMeter:
        """A meter of a client running in the benchmark's own process (the raw baselines)."""
        return self.meter(lambda: [os.getpid()], sink)


def cpu_fields(used: dict[str, float]) -> dict[str, float]:
    """A meter's figures as a row's fields: ``cpu`` for the measured client (pure)."""
    names = {"client": "cpu", "source": "source_cpu", "broker": "broker_cpu", "box": "box_cpu"}
    return {names[k]: v for k, v in used.items() if k in names}


async def raw_ws(
    url: str, workload: Workload, timing: Timing, meter: CpuMeter
) -> tuple[float, float, list[bytes]]:
    """Frames/s and bytes/s bare websockets clients read (one per instance, one process);
    keeps a sample of the frames for the writer baselines."""
    sample: list[bytes] = []
    counts = [0, 0]
    measuring = asyncio.Event()

    async def read(n: int) -> None:
        ws_url = url.replace("http://", "ws://") + f"/ws/inst-{n:03d}"
        async with connect(
            ws_url,
            additional_headers={"token": f"tok-{n:03d}"},
            max_size=None,
            max_queue=64,
            compression=None,  # as the bridge: no permessage-deflate, CPU is the limit
        ) as ws:
            while True:
                frame = await ws.recv(decode=False)
                if len(sample) < workload.prebuilt:
                    sample.append(frame)
                if measuring.is_set():
                    counts[0] += 1
                    counts[1] += len(frame)
                if counts[0] % 64 == 0:
                    await asyncio.sleep(0)  # a queue that never empties must not starve timers

    tasks = [asyncio.create_task(read(n)) for n in range(workload.instances)]
    await asyncio.sleep(timing.warmup)
    measuring.set()
    meter.start()
    started = time.monotonic()
    await asyncio.sleep(timing.seconds)
    elapsed = time.monotonic() - started
    meter.stop()
    frames, size = counts
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return frames / elapsed, size / elapsed, sample


async def _background(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    count: Callable[[], Awaitable[int]],
    timing: Timing,
    meter: CpuMeter,
) -> float:
    """The rate ``count`` grows at while ``work`` runs; then ``work`` is asked to stop (a flag,
    not a cancel: a client library that swallows a cancellation would keep the loop going)."""
    stop = asyncio.Event()
    task = asyncio.create_task(work(stop))
    try:
        return await rate_over(count, timing.warmup, timing.seconds, meter)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            task.cancel()


def pipelined(sample: list[bytes]) -> int:
    """How many sampled frames one pipelined round sends: up to 1,000, about 16 MB at most."""
    return max(1, min(1000, 16_000_000 // max(1, len(sample[0]))))


async def raw_producer(
    services: Services, sample: list[bytes], workload: Workload, timing: Timing, meter: CpuMeter
) -> float:
    """Records/s a bare aiokafka producer with the bridge's producer settings (acks=all,
    idempotent, zstd) and a 5 ms linger of its own (``RAW_LINGER_MS``: it sends record by
    record) gets acknowledged, sending the sampled frames pipelined."""
    topic = unique("bench.raw")
    await create_topics(services.kafka, [topic], configs=BIG_MESSAGES)
    settings = KafkaSinkSettings(
        bootstrap_servers=services.kafka, max_request_bytes=workload.max_request
    )
    producer = AIOKafkaProducer(**{**producer_options(settings), "linger_ms": RAW_LINGER_MS})
    await producer.start()
    window = pipelined(sample)

    async def produce(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for start in range(0, len(sample), window):
                chunk = sample[start : start + window]
                futures = [await producer.send(topic, f, key=b"inst-000") for f in chunk]
                await asyncio.gather(*futures)
                await asyncio.sleep(0)  # replies already there must not starve the timers

    try:
        return await _background(
            produce, lambda: kafka_count(services.kafka, [topic]), timing, meter
        )
    finally:
        await producer.stop()


async def raw_xadd(
    services: Services, sample: list[bytes], timing: Timing, meter: CpuMeter
) -> float:
    """Entries/s a bare redis.asyncio client adds with pipelined XADD (the bridge's fields)."""
    stream = unique("bench:raw")
    client = Redis.from_url(services.redis)
    window = pipelined(sample)

    async def add(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for start in range(0, len(sample), window):
                pipe = client.pipeline(transaction=False)
                for frame in sample[start : start + window]:
                    pipe.xadd(
                        stream,
                        {
                            "event": b"message.exchange",
                            "instance": b"inst-000",
                            "received_at": b"2026-01-01T00:00:00.000000Z",
                            "id": b"0123456789abcdef",
                            "data": frame,
                        },
                        maxlen=1000,
                        approximate=True,
                    )
                await pipe.execute()
                await asyncio.sleep(0)  # replies already there must not starve the timers

    try:
        return await _background(add, lambda: redis_count(services.redis, [stream]), timing, meter)
    finally:
        await client.delete(stream)
        await client.aclose()


def sink_section(
    kind: str, services: Services, work: Path, prefix: str, workload: Workload
) -> dict[str, Any]:
    if kind == "kafka":
        return {
            "kind": "kafka",
            "dlq": f"{prefix}.dlq",
            "kafka": {
                "bootstrap_servers": services.kafka,
                "topic": prefix + ".{event}",
                "max_request_bytes": workload.max_request,
            },
        }
    if kind == "redis":
        return {
            "kind": "redis",
            "dlq": f"{prefix}:dlq",
            "redis": {"url": services.redis, "stream": prefix + ":{event}", "maxlen": 1000},
        }
    return {"kind": "file", "dlq": "dlq", "file": {"path": str(work / "events.jsonl")}}


def counter_for(
    kind: str, services: Services, work: Path, prefix: str
) -> Callable[[], Awaitable[int]]:
    if kind == "kafka":
        topics = [f"{prefix}.{e}" for e in EVENT_NAMES]
        return lambda: kafka_count(services.kafka, topics)
    if kind == "redis":
        streams = [f"{prefix}:{e}" for e in EVENT_NAMES]
        return lambda: redis_count(services.redis, streams)

    async def lines() -> int:
        return file_count(work / "events.jsonl")

    return lines


async def bridge(
    box: Box,
    workload: Workload,
    kind: str,
    timing: Timing,
    *,
    fsync: str = "interval",
    one_process: bool = False,
    build: Build = HEAD,
) -> dict[str, float]:
    """Records/s the bridge (its own process, and its shipper) delivers, their CPU (with the
    source's, the broker's and the box's) and RSS; ``one_process``: the sink worker in the
    main process (no shipper)."""
    services = box.services
    with tempfile.TemporaryDirectory(prefix="ryze-bench-") as tmp:
        work = Path(tmp)
        prefix = unique(f"bench.{kind}")
        if kind == "kafka":
            topics = [f"{prefix}.{e}" for e in EVENT_NAMES] + [f"{prefix}.dlq"]
            await create_topics(services.kafka, topics, configs=BIG_MESSAGES)
        sink = sink_section(kind, services, work, prefix, workload)
        if one_process:
            sink["separate_process"] = False
        config = bridge_config(
            box.source.url,
            work,
            sink,
            instances=workload.instances,
            fsync=fsync,
        )
        path = write_bridge_config(work, config)
        count = counter_for(kind, services, work, prefix)
        args = bridge_args(path, build)
        async with process(args, work / "bridge.log", cwd=build.cwd) as proc:
            meter = box.meter(lambda: family(proc.pid), kind)
            rate = await rate_over(count, timing.warmup, timing.seconds, meter)
            rss = proc.rss_bytes()
        if kind == "redis":
            await delete_streams(services.redis, prefix)
        return {"rate": rate, **cpu_fields(meter.used), "rss_mb": rss / 1e6}


async def naive_relay(box: Box, timing: Timing) -> dict[str, Any]:
    services, url = box.services, box.source.url
    topic = unique("bench.naive")
    await create_topics(services.kafka, [topic])
    ws_url = url.replace("http://", "ws://") + "/ws/inst-000"
    args = [
        sys.executable,
        str(ROOT / "bench" / "naive_relay.py"),
        ws_url,
        "tok-000",
        services.kafka,
        topic,
    ]
    with tempfile.TemporaryDirectory(prefix="ryze-bench-") as tmp:
        return await peer_rate(box, args, Path(tmp) / "naive.log", topic, timing)


async def peer_rate(
    box: Box, args: list[str], log: Path, topic: str, timing: Timing
) -> dict[str, Any]:
    """Records/s a peer (its own process, started with ``args``) gets into ``topic``, and its
    CPU with the source's, the broker's and the box's."""
    async with process(args, log) as proc:
        meter = box.meter(lambda: [proc.pid], "kafka")
        rate = await rate_over(
            lambda: kafka_count(box.services.kafka, [topic]), timing.warmup, timing.seconds, meter
        )
    return {"rate": rate, **cpu_fields(meter.used)}


def benthos_config(
    source: dict[str, Any], bootstrap: str, topic: str, key: str | None = None
) -> dict[str, Any]:
    """A Benthos-engine config: ``source`` as its input, the franz-go output with the bridge's
    producer settings (64 in flight, 1,000 records or 5 ms a batch), keyed by ``key`` (pure)."""
    output: dict[str, Any] = {"seed_brokers": [bootstrap], "topic": topic}
    if key is not None:
        output["key"] = key
    output |= {"max_in_flight": 64, "batching": {"count": 1000, "period": "5ms"}}
    return {
        "http": {"enabled": False},
        "logger": {"level": "WARN"},
        "input": source,
        "output": {"franz_peer": output},
    }


PEER_SOURCES = (
    "bench/peers/benthos/go.mod",
    "bench/peers/benthos/go.sum",
    "bench/peers/benthos/main.go",
)
PEER = "ryze-bench-benthos"


def peer_sum(root: Path = ROOT) -> str:
    """The peer's sources' digest, as scripts/bench.sh writes it beside the binary it built
    (``sha256sum go.mod go.sum main.go | sha256sum``, 16 hex digits)."""
    listing = "".join(
        f"{hashlib.sha256((root / name).read_bytes()).hexdigest()}  {name}\n"
        for name in PEER_SOURCES
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def benthos_binary(cache: Path | None = None) -> Path | None:
    """The Benthos-engine peer: one on the PATH, else the one scripts/bench.sh built in its
    cache (``RYZE_CACHE_DIR``). The cache's is taken only with the marker of the sources as
    they are now beside it; one on the PATH (or the file a link there points to) is checked
    the same way where bench.sh's markers are beside it, and taken as given where there are
    none (built by hand). One not taken is said, and scripts/bench.sh builds it again."""
    found = shutil.which(PEER)
    if cache is None:
        cache = Path(os.environ.get("RYZE_CACHE_DIR") or Path.home() / ".cache" / "ryze-bridge")
    binary = Path(found).resolve() if found else cache / "bin" / PEER  # (a link: its target's)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return None
    markers = list(binary.parent.glob(".benthos-*"))
    if (markers or not found) and binary.parent / f".benthos-{peer_sum()}" not in markers:
        print(
            f"bench: the Benthos-engine peer at {binary} was not built from the sources as they "
            "are; left out (scripts/bench.sh builds it again)",
            file=sys.stderr,
        )
        return None
    return binary


async def benthos(box: Box, timing: Timing) -> dict[str, Any]:
    """The Benthos engine (Redpanda Connect's core) websocket input → franz-go output."""
    services, url = box.services, box.source.url
    binary = benthos_binary()
    if binary is None:
        return {"rate": None}
    topic = unique("bench.benthos")
    await create_topics(services.kafka, [topic])
    ws_url = url.replace("http://", "ws://") + "/ws/inst-000?token=tok-000"
    websocket = {"websocket": {"url": ws_url}}
    config = benthos_config(websocket, services.kafka, topic, key="inst-000")
    with tempfile.TemporaryDirectory(prefix="ryze-bench-") as tmp:
        path = Path(tmp) / "benthos.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        args = [str(binary), "-c", str(path)]
        return await peer_rate(box, args, Path(tmp) / "benthos.log", topic, timing)


def median_rows(samples: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (workload, run): the sample with the median rate (its CPU and RSS with
    it), and every sample's rate beside it (pure). A run that measured nothing keeps None."""
    rows = []
    for (workload, run), found in samples.items():
        measured = sorted(
            (s for s in found if s["rate"] is not None), key=lambda s: float(s["rate"])
        )
        middle = measured[(len(measured) - 1) // 2] if measured else {"rate": None}
        rows.append(
            {
                **middle,
                "workload": workload,
                "run": run,
                "samples": [s["rate"] for s in found],
            }
        )
    return rows


async def run(
    services: Services,
    timing: Timing,
    log: Callable[[str], None],
    workloads: tuple[Workload, ...] = WORKLOADS,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Every workload ``repeats`` times over: raw baselines, the bridge on each sink; for
    600 B x1 also the fsync policies and the peers. Measurements of one round follow each
    other closely, so a machine that is slower for a while slows the baselines as well; each
    row is the round with the median rate."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    last = [time.monotonic()]

    def row(workload: Workload, run: str, rate: float | None, **extra: Any) -> None:
        samples.setdefault((workload.name, run), []).append({"rate": rate, **extra})
        shown = "—" if rate is None else f"{rate:,.0f}/s"
        took = time.monotonic() - last[0]
        last[0] = time.monotonic()
        log(f"  {workload.name:<10} {run:<28} {shown:>12}   ({took:.0f} s)")

    for workload in workloads:
        for _ in range(repeats):
            await one_round(services, timing, workload, row)
    return median_rows(samples)


async def one_round(
    services: Services,
    timing: Timing,
    workload: Workload,
    row: Callable[..., None],
) -> None:
    with tempfile.TemporaryDirectory(prefix="ryze-bench-sim-") as tmp:
        async with simulator(
            Path(tmp),
            instances=workload.instances,
            rate=0,
            prebuilt=workload.prebuilt,
            media_bytes=workload.media_bytes,
        ) as source:
            box = Box(source, services)

            def measured(run: str, result: dict[str, Any]) -> None:
                row(workload, run, result.pop("rate"), **result)

            meter = box.here("none")
            frames, size, sample = await raw_ws(source.url, workload, timing, meter)
            measured(
                "raw websockets read",
                {
                    "rate": frames,
                    "bytes_per_s": size,
                    "frame_bytes": size / max(frames, 1),
                    **cpu_fields(meter.used),
                },
            )
            meter = box.here("kafka")
            rate = await raw_producer(services, sample, workload, timing, meter)
            measured("raw aiokafka produce", {"rate": rate, **cpu_fields(meter.used)})
            meter = box.here("redis")
            rate = await raw_xadd(services, sample, timing, meter)
            measured("raw redis XADD", {"rate": rate, **cpu_fields(meter.used)})
            for kind in ("kafka", "redis", "file"):
                measured(f"bridge → {kind}", await bridge(box, workload, kind, timing))
                if kind == "kafka" and workload is WORKLOADS[0]:  # right beside it: fair
                    result = await bridge(box, workload, kind, timing, one_process=True)
                    measured("bridge → kafka, one process", result)
            if workload is WORKLOADS[0]:  # fsync policies and peers: the main workload
                for fsync in ("never", "always"):
                    result = await bridge(box, workload, "kafka", timing, fsync=fsync)
                    measured(f"bridge → kafka fsync={fsync}", result)
                measured("peer: naive python relay", await naive_relay(box, timing))
                measured("peer: benthos engine", await benthos(box, timing))
