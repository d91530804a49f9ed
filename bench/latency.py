"""Latency: from the source's send time to a consumer's hands at fixed offered rates, hop by
hop, and how much a neighbour sending 4 MB frames delays another instance's small frames.

The simulator stamps each frame's send time into it (``--stamp-sent``); the bench topics keep
the broker's append time (``message.timestamp.type=LogAppendTime``), so for every record the
consumer knows sent → received (``ryze-received-at``) → appended by the broker (the ack) →
seen by its own poll (bench.hops). Same machine, same clock; Kafka times are in milliseconds.
``python -m bench.source_clock`` runs the source-clock comparison with the Benthos peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from aiokafka import AIOKafkaConsumer

from bench.common import (
    CLK_TCK,
    HEAD,
    Build,
    CpuMeter,
    Proc,
    Services,
    bridge_args,
    bridge_config,
    create_topics,
    every_process,
    family,
    kafka_count,
    process,
    sim_stats,
    simulator,
    unique,
    write_bridge_config,
)
from bench.hops import HOPS, PEER_HOPS, Times, sent_ns, summary
from bridge.pipeline.records import HEADER_RECEIVED_AT
from bridge.settings import EVENT_NAMES

LOG_APPEND = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": str(16 << 20)}


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p99/p999/max of ``values`` (milliseconds), nearest-rank (pure)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": rank(0.5),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
    }


def received_ns(headers: Any) -> int | None:
    for key, value in headers or ():
        if key == HEADER_RECEIVED_AT:
            moment = datetime.fromisoformat(value.decode().replace("Z", "+00:00"))
            return int(moment.timestamp() * 1e9)
    return None


def record_latencies(
    received: int | None, append_ms: int, seen_ns: int, since_ns: int
) -> tuple[float, float] | None:
    """(receipt → broker append, receipt → seen by the consumer) in ms of one record, or None
    for a record without a receipt time or received before the window opened: that one waited
    in the consumer's prefetch buffer while it was being assigned, which says nothing about
    the bridge (pure)."""
    if received is None or received < since_ns:
        return None
    return (append_ms * 1e6 - received) / 1e6, (seen_ns - received) / 1e6


@contextlib.contextmanager
def priority(nice: int) -> Iterator[int]:
    """This thread (the measuring consumer's loop) at scheduling priority ``nice`` meanwhile,
    if the system lets it (raising it takes root or CAP_SYS_NICE); yields the value in force.
    Processes started meanwhile would inherit it: none is, the window only polls."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        yield before
        return
    try:
        yield nice
    finally:
        with contextlib.suppress(OSError):  # back down to before: may need the privilege
            os.setpriority(os.PRIO_PROCESS, 0, before)


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """No garbage-collector pass in this process meanwhile (the measuring consumer's window).

    The window keeps every polled record (75,000 at 5,000/s for 15 s, each a record with its
    headers): the collector's passes over them grew with the window, 37-145 ms every 2.5-4 s
    with the consumer's loop held, and every record appended meanwhile waited for the next poll.
    That was the bridge's "consumer hop" tail (p99 50-80 ms; its records carry headers, the
    peer's do not, so the peer's passes were rarer). The records are parsed after the window."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


CONSUMER_NICE = -10  # the measuring consumer ahead of what it measures on a shared machine


class Sampled(NamedTuple):
    """A window's records' times and the priority its consumer really had."""

    times: list[Times]
    nice: int


async def sample_times(
    bootstrap: str,
    topics: list[str],
    seconds: float,
    *,
    settle: float = 1.0,
    nice: int = CONSUMER_NICE,
    window: WindowCpu | None = None,
) -> Sampled:
    """Every record's times (bench.hops) of the records a plain consumer (5 ms fetch wait)
    sees for ``seconds``; a record without a send stamp counts with ``sent`` = its receipt, and
    one sent (or received) before the window opened is skipped: it waited in the consumer's
    prefetch buffer while it was being assigned, which says nothing about the bridge.

    The consumer polls with its process's garbage collector off (``no_collection``: its own
    passes over the records kept were the measured tail) and at scheduling priority ``nice``
    (-10 by default: on the 2-core development machine it shares the cores with the bridge, the
    simulator and the broker, where a consumer has a machine of its own); 0 measures it as one
    more process among the others. ``window`` is opened and closed with the window itself
    (not the consumer's start, settle and stop, nor the parsing after it)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=32 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    polled: list[tuple[Any, int]] = []  # parsed after the window: the consumer only polls
    try:
        await asyncio.sleep(settle)  # assignment to the end offsets
        since = time.time_ns()
        deadline = time.monotonic() + seconds
        if window is not None:
            window.open()
        with no_collection(), priority(nice) as in_force:
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time_ns()
                polled.extend((r, now) for records in batches.values() for r in records)
        if window is not None:
            window.close()
    finally:
        await consumer.stop()
    found = (record_times(record, now) for record, now in polled)
    return Sampled([t for t in found if t is not None and t.sent >= since], in_force)


def record_times(record: Any, seen: int) -> Times | None:
    """A consumed record's times, or None without a send stamp or a receipt header."""
    received = received_ns(record.headers)
    sent = sent_ns(record.value) if record.value else None
    sent = sent if sent is not None else received
    if sent is None:
        return None
    return Times(sent, received, record.timestamp * 1_000_000, seen)


async def sample_latency(
    bootstrap: str, topics: list[str], seconds: float
) -> tuple[list[float], list[float]]:
    """(ack latencies, consumer-view latencies) in ms from the bridge's receipt, of records
    appended for ``seconds``."""
    ack: list[float] = []
    seen: list[float] = []
    for times in (await sample_times(bootstrap, topics, seconds)).times:
        if times.received is not None:
            ack.append((times.appended - times.received) / 1e6)
            seen.append((times.seen - times.received) / 1e6)
    return ack, seen


def layout_topics(prefix: str) -> list[str]:
    """The topics the bridge's default layout writes under ``prefix``: one per event and the
    gap markers' (the DLQ aside) (pure)."""
    return [f"{prefix}.{event}" for event in (*EVENT_NAMES, "bridge.gap")]


async def at_rate(
    services: Services,
    rate: float,
    seconds: float,
    build: Build = HEAD,
    *,
    instances: int = 1,
    env: dict[str, str] | None = None,
    nice: int = CONSUMER_NICE,
) -> dict[str, Any]:
    """``instances`` at ``rate`` events/s each, default settings, the frames stamped with
    their send time: receipt → ack and receipt → consumer (the bridge's own clock) and the
    hops from the source's clock (bench.hops) of every record."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-lat-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.lat")
        topics = layout_topics(prefix)
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"], configs=LOG_APPEND)
        prebuilt = 1000 if instances == 1 else 5
        async with simulator(
            work, instances=instances, rate=rate, prebuilt=prebuilt, stamp_sent=True
        ) as source:
            url = source.url
            sink = {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {"bootstrap_servers": services.kafka, "topic": prefix + ".{event}"},
            }
            config = bridge_config(url, work, sink, instances=instances)
            path = write_bridge_config(work, config)
            args = bridge_args(path, build)
            async with process(args, work / "bridge.log", env=env, cwd=build.cwd) as proc:
                await warm_up(url, instances, services.kafka, topics)
                window = WindowCpu(proc, source.pid, services.kafka_pid)
                sampled = await sample_times(
                    services.kafka, topics, seconds, nice=nice, window=window
                )
            dead = await dead_letters(services.kafka, f"{prefix}.dlq")
    return result_of(rate * instances, seconds, sampled, window) | {"dlq": dead}


async def dead_letters(bootstrap: str, topic: str) -> int | None:
    """Records in a run's DLQ topic; None if the broker cannot say (the run's figures stand)."""
    try:
        return await kafka_count(bootstrap, [topic])
    except Exception:  # noqa: BLE001 - a count lost is said as None, not the run
        return None


class WindowCpu:
    """CPU over a measured window: the client's own seconds (and its children's: the
    shipper) and the cores of every part (:func:`window_meter`)."""

    def __init__(self, client: Proc, source: int, broker: int) -> None:
        self.client = client
        self.meter = window_meter(client.pid, source, broker)
        self.parts = (source, broker, os.getpid())
        self.cpu = 0.0
        self.cores: dict[str, float] = {}
        self.others: dict[str, float] = {}  # the busiest processes outside the parts
        self.closed = False
        self._everyone: dict[int, tuple[str, int]] = {}
        self._opened_at = 0.0

    def open(self) -> None:
        self.meter.start()
        self.cpu = -self.client.cpu_seconds()
        self._everyone, self._opened_at = every_process(), time.monotonic()

    def close(self) -> None:
        self.cpu += self.client.cpu_seconds()
        self.cores = with_other(self.meter.stop())
        seconds = time.monotonic() - self._opened_at
        known = {*family(self.client.pid), *self.parts}
        self.others = busiest(self._everyone, every_process(), known, seconds)
        self.closed = True


def busiest(
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    known: set[int],
    seconds: float,
    *,
    top: int = 3,
    least: float = 0.01,
) -> dict[str, float]:
    """The ``top`` processes outside ``known`` by cores used between two samples over
    ``seconds`` (those under ``least`` left out), as ``name[pid]`` → cores: who took the
    machine's ``other`` share (pure). One started in between counts from its start."""
    used = {
        f"{name}[{pid}]": (ticks - before.get(pid, (name, 0))[1]) / CLK_TCK / seconds
        for pid, (name, ticks) in after.items()
        if pid not in known and seconds > 0
    }
    ranked = sorted(used.items(), key=lambda item: -item[1])[:top]
    return {name: round(cores, 3) for name, cores in ranked if cores >= least}


def with_other(cores: dict[str, float]) -> dict[str, float]:
    """``cores`` and ``other``: what the machine (``box``) spent beyond the parts measured
    (kernel threads, anything else running), never below 0 (pure)."""
    if "box" not in cores:
        return cores
    parts = sum(used for name, used in cores.items() if name != "box")
    return {**cores, "other": round(max(0.0, cores["box"] - parts), 3)}


def window_meter(client: int, source: int, broker: int) -> CpuMeter:
    """Cores used in a measured window by ``client`` and the processes it started (the
    bridge and its shipper, or the peer), the simulator (``source``), the broker, this
    process (the consumer polling, ``bench``) and the whole machine (``box``): on a shared
    machine a tail follows how busy the machine was, so each run says it."""
    return CpuMeter(
        {
            "client": lambda: family(client),
            "source": lambda: [source],
            "broker": lambda: [broker] if broker else [],
            "bench": lambda: [os.getpid()],
        }
    )


async def warm_up(url: str, instances: int, bootstrap: str, topics: list[str]) -> None:
    """Until every instance has its socket and records reach the broker, and for a fleet
    until every instance's config was checked too (an upgrade and a GET each: the checks
    follow the open sockets, paced, and their REST calls are not the workload measured); at
    most 5 minutes (on a loaded machine the bridge and its shipper start slowly), then 3 s
    more, 10 s for a fleet (its connection storm's backlog delivered)."""
    deadline = time.monotonic() + 300
    checks = 2 * instances if instances > 1 else 0
    while time.monotonic() < deadline:
        stats = await sim_stats(url)
        connected = sum(1 for s in stats["instances"].values() if s["open_sockets"] >= 1)
        checked = int(stats["requests"]) >= checks
        if connected >= instances and checked and await kafka_count(bootstrap, topics) > 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3 if instances == 1 else 10)


def result_of(rate: float, seconds: float, sampled: Sampled, window: WindowCpu) -> dict[str, Any]:
    """A run's figures: delivered rate, CPU s per 1,000 events (process CPU time of the bridge
    and its shipper, not wall time), the cores each part and the machine used in the window
    (:func:`window_meter`), the bridge-clock views and the source-clock hops."""
    if not window.closed:
        raise RuntimeError("a run's CPU window was never opened and closed")
    times = sampled.times
    hops = [t.hops() for t in times]
    receipts = [(t, t.received) for t in times if t.received is not None]
    return {
        "rate": rate,
        "consumer_nice": sampled.nice,
        "delivered_per_s": len(times) / seconds,
        "cpu_s_per_1000": round(1000 * window.cpu / max(1, len(times)), 4),
        "cores": window.cores,
        "others": window.others,
        "ack_ms": percentiles([(t.appended - r) / 1e6 for t, r in receipts]),
        "consumer_ms": percentiles([(t.seen - r) / 1e6 for t, r in receipts]),
        "source_clock": summary(hops, HOPS if receipts else PEER_HOPS),
        "window_ns": [
            min((t.sent for t in times), default=0),
            max((t.seen for t in times), default=0),
        ],
    }


async def isolation(services: Services, seconds: float) -> dict[str, Any]:
    """inst-001 sends ~300 B frames at 500/s; measured alone, then with inst-000 sending 4 MB
    frames at 5/s (20 MB/s) through the same bridge. The difference in inst-001's p99 is the
    delay the big frames cause."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-iso-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.iso")
        topics = layout_topics(prefix)
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"], configs=LOG_APPEND)
        async with (
            simulator(
                work,
                instances=2,
                rate=5,
                prebuilt=0,
                media_bytes=4_000_000,
                mix={"message.exchange": 1},
            ) as source,
            httpx.AsyncClient(base_url=source.url) as http,
        ):
            url = source.url

            async def knob(name: str, body: dict[str, Any]) -> None:
                (await http.post(f"/_sim/{name}", json=body)).raise_for_status()

            await knob("set_mix", {"mix": {"message.status": 1}, "instance": "inst-001"})
            await knob("set_rate", {"rate": 500, "instance": "inst-001"})
            await knob("set_rate", {"rate": -1, "instance": "inst-000"})
            sink = {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {
                    "bootstrap_servers": services.kafka,
                    "topic": prefix + ".{event}",
                    "max_request_bytes": 8 << 20,
                },
            }
            path = write_bridge_config(work, bridge_config(url, work, sink, instances=2))
            small = [f"{prefix}.message.status"]
            async with process(bridge_args(path), work / "bridge.log"):
                await asyncio.sleep(3)
                alone, _ = await sample_latency(services.kafka, small, seconds)
                await knob("set_rate", {"rate": 5, "instance": "inst-000"})
                await asyncio.sleep(2)
                crowded, _ = await sample_latency(services.kafka, small, seconds)
                with contextlib.suppress(httpx.HTTPError):
                    await knob("set_rate", {"rate": -1, "instance": "inst-000"})
    before, after = percentiles(alone), percentiles(crowded)
    return {
        "small_alone_ms": before,
        "small_beside_4mb_ms": after,
        "p99_delay_ms": float(after.get("p99", 0)) - float(before.get("p99", 0)),
    }
