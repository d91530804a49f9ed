"""Scale: quiet instances per replica, the targets of issue 20's table, at 1,000 and 5,000.

    python -m bench.run --only scale [--instances 1000,5000]

Every instance has its own token (RyzeAPI gives one per instance), so the upstream's 100/min
budget is per token; the bridge spends its own budget per token as it would in production.
The bridge runs with its defaults (the shipper as a second process) into Redis. Measured:

- seconds from start until every instance has its socket, and the 429s the simulator answered;
- idle (no events, the simulator's pings only): resident memory and CPU of the bridge and the
  shipper, each and together;
- every instance at 1 event/s: µs of CPU (both processes) per event delivered, and receipt →
  ack (Redis' entry id is its append time, ``received_at`` the bridge's receipt) p50/p99.

Beside it (``peer``), the Benthos-engine peer with as many ``websocket`` inputs, measured the
same way against its own simulator (bench/peers/fleet.py).

Under it (``floor``), the read floor: the websockets library the bridge reads with, as many
plain client connections in one process on uvloop (bench/read_floor.py), measured the same way
against its own simulator, in two forms: ``iter`` (``async for message in ws``) and ``hook``
(``process_event`` counting the frames, the least the library allows). The bridge's CPU per
event is given as a ratio to each (``cpu_per_event_vs_floor``), measured in the same run.

CPU is process CPU seconds from /proc (user + system), never wall time: on a shared machine a
busy neighbour stretches wall time but not the CPU a process itself used.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench import read_floor
from bench.common import (
    CLK_TCK,
    PAGE,
    Services,
    allow_open_files,
    bridge_args,
    bridge_config,
    delete_streams,
    family,
    process,
    process_ticks,
    redis_count,
    sim_stats,
    simulator,
    unique,
    write_bridge_config,
)
from bench.latency import percentiles
from bench.peers import fleet
from bench.report import vs_floor

EVENT = "message.exchange"  # the simulator's mix: one event, one stream
CONNECT_LIMIT = 300.0


@dataclass(frozen=True)
class Targets:
    """Issue 20's table, per replica."""

    connect_seconds: float = 60.0
    rss_mb: float = 300.0
    idle_cpu_percent: float = 3.0
    cpu_us_per_event: float = 60.0
    p99_ack_ms: float = 50.0


TARGETS = Targets()


def processes(root: int) -> dict[str, list[int]]:
    """The bridge's process and the shipper (and anything else it started)."""
    members = family(root)
    return {"bridge": members[:1], "shipper": members[1:]}


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: process_ticks(pids) / CLK_TCK for name, pids in groups.items()}


def rss_mb(pids: list[int]) -> float:
    pages = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return round(pages * PAGE / 1e6, 1)


async def cpu_over(root: int, seconds: float) -> dict[str, float]:
    """CPU seconds each process used during ``seconds`` of wall time."""
    groups = processes(root)
    before = cpu_seconds(groups)
    await asyncio.sleep(seconds)
    after = cpu_seconds(groups)
    return {name: after[name] - before[name] for name in groups}


def ack_ms(entry_id: bytes, received_at: bytes) -> float:
    """Receipt → append of one Redis entry, in ms (pure): the id's first part is the append
    time in ms, ``received_at`` RFC 3339 with microseconds."""
    appended = int(entry_id.split(b"-", 1)[0])
    moment = datetime.fromisoformat(received_at.decode().replace("Z", "+00:00"))
    return appended - moment.timestamp() * 1000


async def ack_latencies(url: str, stream: str, since_ms: int, until_ms: int) -> list[float]:
    """Receipt → ack of every entry appended to ``stream`` between the two times."""
    client = Redis.from_url(url)
    found: list[float] = []
    start = f"{since_ms}-0"
    try:
        while True:
            entries: list[Any] = (
                await client.xrange(stream, min=start, max=f"{until_ms}-0", count=5000) or []
            )
            for entry_id, fields in entries:
                found.append(ack_ms(bytes(entry_id), bytes(fields[b"received_at"])))
            if len(entries) < 5000:
                return found
            start = "(" + bytes(entries[-1][0]).decode()
    finally:
        await client.aclose()


async def connected(url: str) -> tuple[int, int, int]:
    """(instances with an open socket, 429s answered so far, requests answered so far) as the
    simulator sees them; a simulator too busy to answer within a minute (thousands of
    handshakes) is asked again."""
    for _ in range(5):
        with contextlib.suppress(httpx.TimeoutException):
            stats = await sim_stats(url)
            break
    else:
        raise RuntimeError("the simulator did not answer /_sim/stats")
    count = sum(1 for s in stats["instances"].values() if s["open_sockets"] >= 1)
    return count, int(stats["rate_limited"]), int(stats["requests"])


async def connect_phase(url: str, instances: int, root: int, source: int) -> dict[str, Any]:
    """Seconds until every instance has its socket, with the timeline and the CPU seconds the
    bridge (both processes) and the simulator spent meanwhile (which of them limited it); then
    until every instance's config was checked too (an upgrade and a GET each, the configs being
    right already: the check follows the open socket), so the idle window is idle."""
    groups = {"bridge": family(root), "simulator": [source]}
    before = {name: process_ticks(pids) for name, pids in groups.items()}

    def spent() -> dict[str, float]:
        return {
            name: round((process_ticks(family(root) if name == "bridge" else pids)
                         - before[name]) / CLK_TCK, 1)
            for name, pids in groups.items()
        }  # fmt: skip

    started = time.monotonic()
    timeline: list[tuple[float, int]] = []
    entry: dict[str, Any] = {}
    while time.monotonic() - started <= CONNECT_LIMIT:
        count, _, requests = await connected(url)
        timeline.append((round(time.monotonic() - started, 2), count))
        if count >= instances and not entry:
            entry["seconds_to_all_connected"] = round(time.monotonic() - started, 2)
            entry["connect_cpu_seconds"] = spent()
        if entry and requests >= 2 * instances:
            break
        await asyncio.sleep(0.5)
    entry.setdefault("seconds_to_all_connected", round(time.monotonic() - started, 2))
    entry.setdefault("connect_cpu_seconds", spent())
    entry["seconds_to_all_checked"] = round(time.monotonic() - started, 2)
    entry["checked_cpu_seconds"] = spent()
    return {**entry, "timeline": timeline}


def judged(entry: dict[str, Any], targets: Targets = TARGETS) -> list[dict[str, Any]]:
    """The table's rows for one run, each with its value and whether it holds (pure)."""
    n = f"{entry['instances']:,} instances"
    rows = [
        (f"{n}: all connected ≤ {targets.connect_seconds:g} s", "seconds_to_all_connected",
         targets.connect_seconds),
        (f"{n}: 429s from the upstream = 0", "rate_limited", 0),
        (f"{n}: idle RSS bridge + shipper ≤ {targets.rss_mb:g} MB", "rss_idle_mb",
         targets.rss_mb),
        (f"{n}: idle CPU ≤ {targets.idle_cpu_percent:g} % of a core", "idle_cpu_percent",
         targets.idle_cpu_percent),
        (f"{n}: CPU per event at 1/s each ≤ {targets.cpu_us_per_event:g} µs",
         "cpu_us_per_event", targets.cpu_us_per_event),
        (f"{n}: p99 receipt→ack at 1/s each ≤ {targets.p99_ack_ms:g} ms", "p99_ack_ms",
         targets.p99_ack_ms),
    ]  # fmt: skip
    found = []
    for goal, key, limit in rows:
        value = entry.get(key)
        found.append({"goal": goal, "value": value, "met": value is not None and value <= limit})
    return found


async def run(
    services: Services, instances: int = 1000, window: float = 20.0, settle: float = 10.0
) -> dict[str, Any]:
    """One run of the table at ``instances``."""
    allow_open_files(2 * instances + 4096)  # the simulator's sockets and the bridge's
    with tempfile.TemporaryDirectory(prefix="ryze-bench-scale-") as tmp:
        work = Path(tmp)
        prefix = unique("bench:scale")
        async with simulator(work, instances=instances, rate=-1, prebuilt=20, mix=None) as src:
            sink = {
                "kind": "redis",
                "dlq": f"{prefix}:dlq",
                "redis": {"url": services.redis, "stream": prefix + ":{event}"},
            }
            path = write_bridge_config(
                work, bridge_config(src.url, work, sink, instances=instances)
            )
            try:
                async with process(bridge_args(path), work / "bridge.log") as proc:
                    entry = {
                        "instances": instances,
                        **await connect_phase(src.url, instances, proc.pid, src.pid),
                    }
                    entry.update(
                        await measure(
                            services, proc.pid, src.url, prefix, window=window, settle=settle
                        )
                    )
            finally:
                await delete_streams(services.redis, prefix)
    entry["targets"] = judged(entry)
    entry["floor"] = {  # the websockets library alone at the same sockets
        mode: await floor(instances, mode, window=window, settle=settle)
        for mode in read_floor.MODES
    }
    entry["cpu_per_event_vs_floor"] = vs_floor(entry.get("cpu_us_per_event"), entry["floor"])
    entry["peer"] = await fleet.run(services, instances, window)  # the same, Benthos engine
    return entry


# After the rate is set: the simulator builds every instance's frames at its first send (5,000
# x 20): its loop is held 2-4 s, then the frames due meanwhile go out at once; a window opened
# 5 s after the rate took in the end of that burst as the bridge's tail
RATE_SETTLE_SECONDS = 10.0


async def measure(
    services: Services, root: int, url: str, prefix: str, *, window: float, settle: float
) -> dict[str, Any]:
    """Idle, then every instance at 1 event/s: memory, CPU, CPU per event, receipt → ack."""
    await asyncio.sleep(settle)  # gap markers delivered, start-up garbage settled
    idle = await cpu_over(root, window)
    groups = processes(root)
    rss = {name: rss_mb(pids) for name, pids in groups.items()}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await http.post("/_sim/set_rate", json={"rate": 1})
    await asyncio.sleep(max(settle, RATE_SETTLE_SECONDS))
    stream = f"{prefix}:{EVENT}"
    first = await redis_count(services.redis, [stream])
    since_ms = int(time.time() * 1000)
    busy = await cpu_over(root, window)
    until_ms = int(time.time() * 1000)
    events = await redis_count(services.redis, [stream]) - first
    still, rate_limited, _ = await connected(url)
    latencies = await ack_latencies(services.redis, stream, since_ms, until_ms)
    spread = percentiles(latencies)
    return {
        "rate_limited": rate_limited,
        "connected_at_end": still,
        "rss_idle_mb": round(sum(rss.values()), 1),
        "rss_mb_by_process": rss,
        "idle_cpu_percent": round(100 * sum(idle.values()) / window, 2),
        "idle_cpu_percent_by_process": {k: round(100 * v / window, 2) for k, v in idle.items()},
        "events_per_second": round(events / window, 1),
        "cpu_us_per_event": round(1e6 * sum(busy.values()) / max(1, events), 1),
        "cpu_us_per_event_by_process": {
            k: round(1e6 * v / max(1, events), 1) for k, v in busy.items()
        },
        "ack_ms": {k: round(v, 2) if isinstance(v, float) else v for k, v in spread.items()},
        "p99_ack_ms": round(float(spread.get("p99", 0.0)), 2) if latencies else None,
    }


async def floor(instances: int, mode: str, *, window: float, settle: float) -> dict[str, Any]:
    """The read floor (bench/read_floor.py) in ``mode`` at ``instances``, against the scale
    part's simulator and measured as the bridge is: seconds from its start until every socket
    was tried; after ``settle``, idle CPU over ``window`` and RSS; every instance at 1 event/s,
    after the same settle, µs of CPU per event received over ``window``. A floor that fails
    gives its error instead: the bridge's figures of the run stay."""
    try:
        return await floor_run(instances, mode, window=window, settle=settle)
    except (TimeoutError, RuntimeError, ValueError, OSError, httpx.HTTPError) as exc:
        return {"instances": instances, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}


async def floor_run(instances: int, mode: str, *, window: float, settle: float) -> dict[str, Any]:
    """:func:`floor`, failures raised: its own simulator, set up as :func:`run`'s."""
    with tempfile.TemporaryDirectory(prefix="ryze-bench-floor-") as tmp:
        work = Path(tmp)
        async with simulator(work, instances=instances, rate=-1, prebuilt=20, mix=None) as src:
            started = time.monotonic()
            async with read_floor.started(src.url, instances, mode, work / "floor.log") as proc:
                async with asyncio.timeout(CONNECT_LIMIT):
                    ready = await proc.ready()
                entry: dict[str, Any] = {
                    "instances": instances,
                    "mode": mode,
                    "seconds_to_all_connected": round(time.monotonic() - started, 2),
                    **ready,
                }
                entry.update(await measure_floor(proc, src.url, window=window, settle=settle))
    return entry


async def measure_floor(
    proc: read_floor.Floor, url: str, *, window: float, settle: float
) -> dict[str, Any]:
    """Idle, then every instance at 1 event/s: the floor's memory, CPU, CPU per event."""
    await asyncio.sleep(settle)
    idle = sum((await cpu_over(proc.pid, window)).values())
    rss = rss_mb(family(proc.pid))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await http.post("/_sim/set_rate", json={"rate": 1})
    await asyncio.sleep(max(settle, RATE_SETTLE_SECONDS))
    first = await proc.count()
    busy = sum((await cpu_over(proc.pid, window)).values())
    events = await proc.count() - first
    still, rate_limited, _ = await connected(url)
    return {
        "rate_limited": rate_limited,
        "connected_at_end": still,
        "rss_idle_mb": rss,
        "idle_cpu_percent": round(100 * idle / window, 2),
        "events_per_second": round(events / window, 1),
        "cpu_us_per_event": round(1e6 * busy / max(1, events), 1),
    }
