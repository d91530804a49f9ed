"""What every benchmark part shares: the services, the simulator as a source process, the
bridge (and peers) as processes, and counting what reached the broker.

Every rate is measured on the broker's side (Kafka end offsets, Redis ``entries-added``, lines
of the file) over a window after a warm-up, so the bridge, the raw clients and the peers are
counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Services:
    kafka: str
    redis: str
    kafka_pid: int = 0
    redis_pid: int = 0


# A bare producer sending record by record batches by its own linger: the raw baselines keep
# the 5 ms the bridge's default is (the bridge lingers in its sink worker's lanes instead).
RAW_LINGER_MS = 5


def allow_open_files(needed: int) -> int:
    """Let this process and what it starts (the simulator holds a socket per instance) open
    ``needed`` files: the soft limit raised, and the hard one too when it is short and this
    process may (root). Returns the soft limit now."""
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == unlimited or soft >= needed:
        return needed if soft == unlimited else soft
    if hard != unlimited and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    wanted = needed if hard == unlimited else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_services() -> Services:
    path = ROOT / ".services" / "services.json"
    if not path.exists():
        raise SystemExit("start the services first: bash scripts/services.sh up")
    data = json.loads(path.read_text(encoding="utf-8"))
    kafka, redis = data["kafka"], data["redis"]
    return Services(
        kafka["bootstrap_servers"], redis["url"], kafka.get("pid", 0), redis.get("pid", 0)
    )


@dataclass(frozen=True)
class Source:
    """The simulator serving a run: its base URL and its process id."""

    url: str
    pid: int


# ---- CPU ------------------------------------------------------------------------------------
def process_ticks(pids: list[int]) -> int:
    """User + system clock ticks so far of ``pids`` (a process gone counts nothing)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            ticks += name_and_ticks(Path(f"/proc/{pid}/stat").read_text())[1]
    return ticks


def every_process() -> dict[int, tuple[str, int]]:
    """Each process's name and user + system clock ticks so far, from /proc (kernel threads
    too; one gone while read is left out; a process that ends before the next sample takes
    its ticks with it: what :func:`bench.latency.busiest` names are alive at both ends)."""
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_bytes().decode(errors="replace")  # (a cut name)
                found[int(entry.name)] = name_and_ticks(stat)
    return found


def name_and_ticks(stat: str) -> tuple[str, int]:
    """A /proc/<pid>/stat line's command name and user + system ticks (pure): the name is
    between the first " (" and the last ")", whatever it holds; utime and stime are fields
    14 and 15 of proc(5). ValueError or IndexError on a line that is not one."""
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    fields = rest.split()
    return name, int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """Busy and total clock ticks so far of all the machine's CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - fields[3] - fields[4], total


@dataclass(frozen=True)
class CpuSample:
    groups: dict[str, int]
    busy: int
    total: int


def cores_used(before: CpuSample, after: CpuSample, cpus: int) -> dict[str, float]:
    """Cores each group used between two samples, and ``box``: the whole machine's busy cores
    (pure). Time is the machine's own tick count, so the figures add up."""
    elapsed = (after.total - before.total) / max(1, cpus)
    if elapsed <= 0:
        return {}
    used = {name: (after.groups[name] - before.groups[name]) / elapsed for name in after.groups}
    used["box"] = (after.busy - before.busy) / elapsed
    return {name: round(value, 3) for name, value in used.items()}


class CpuMeter:
    """CPU over a measurement window: named groups of processes (their ids looked up at each
    sample, so a restarted child is found) and the whole machine."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: CpuSample | None = None
        self.used: dict[str, float] = {}

    def sample(self) -> CpuSample:
        busy, total = machine_ticks()
        return CpuSample({n: process_ticks(pids()) for n, pids in self.groups.items()}, busy, total)

    def start(self) -> None:
        self.before = self.sample()

    def stop(self) -> dict[str, float]:
        if self.before is not None:
            self.used = cores_used(self.before, self.sample(), os.cpu_count() or 1)
        return self.used


# ---- processes ------------------------------------------------------------------------------
@dataclass
class Proc:
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU seconds so far of the process and the processes it started (the
        bridge's shipper), from /proc."""
        return process_ticks(family(self.pid)) / CLK_TCK

    def rss_bytes(self) -> int:
        """Resident memory of the process and the processes it started."""
        pages = 0
        for pid in family(self.pid):
            with contextlib.suppress(OSError):
                pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * PAGE

    async def stop(self) -> None:
        """SIGKILL: a benchmark run is over once measured; a bridge would otherwise first
        drain its backlog (its spool is thrown away with the run's directory)."""
        if self.process.returncode is None:
            self.process.kill()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def family(pid: int) -> list[int]:
    """``pid`` and its descendants, from the parent ids in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone, or odd
                stat = (entry / "stat").read_bytes().rpartition(b")")[2].split()
                parents[int(entry.name)] = int(stat[1])
    found = [pid]
    for member in found:
        found.extend(child for child, parent in parents.items() if parent == member)
    return found


@contextlib.asynccontextmanager
async def process(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> AsyncIterator[Proc]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    handle = Proc(proc, log)
    try:
        yield handle
    finally:
        await handle.stop()


@contextlib.asynccontextmanager
async def simulator(
    work: Path,
    *,
    instances: int,
    rate: float,
    prebuilt: int = 1000,
    media_bytes: int = 0,
    mix: dict[str, float] | None = None,
    media_base64: bool = False,
    stamp_sent: bool = False,
    id_tag: str = "",
) -> AsyncIterator[Source]:
    """The simulator as its own process: instances ``inst-000…`` with tokens ``tok-000…``,
    configs enabled, frames from a pre-built pool (the source outruns any client); with
    ``stamp_sent`` each frame carries the time it was written to the socket (bench.hops).
    Yields its URL and process id (to measure its CPU)."""
    config = work / f"sim{id_tag}.yaml"
    config.write_text(yaml.safe_dump({"mix": mix or {"message.exchange": 1}}), encoding="utf-8")
    args = [
        sys.executable,
        "-m",
        "bridge.simulator",
        "--port",
        "0",
        "--rate",
        str(rate),
        "--instances",
        str(instances),
        "--preconfigured",
        "--prebuilt",
        str(prebuilt),
        "--media-bytes",
        str(media_bytes),
        "--config",
        str(config),
        "--rate-limit",
        "100",
        "--ping-interval",
        "20",
        *(["--stamp-sent"] if stamp_sent else []),
        *(["--id-tag", id_tag] if id_tag else []),
    ]
    log = work / f"sim{id_tag}.log"
    async with process(args, log) as proc:
        url = await _listening(log, proc)
        if media_base64:
            async with httpx.AsyncClient(base_url=url) as http:
                for n in range(instances):
                    await http.post(
                        f"/api/events/websocket/inst-{n:03d}",
                        json={"enabled": True, "mediaBase64": True},
                        headers={"token": f"tok-{n:03d}"},
                    )
        yield Source(url, proc.pid)


async def _listening(log: Path, proc: Proc) -> str:
    deadline = time.monotonic() + 120  # thousands of instances on a busy machine: slow to start
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.process.returncode is not None:
            raise RuntimeError(f"simulator exited: {log.read_text()[-2000:]}")
        await asyncio.sleep(0.05)
    raise RuntimeError("simulator did not start")


async def sim_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        stats: dict[str, Any] = (await http.get("/_sim/stats")).json()
        return stats


def write_bridge_config(work: Path, config: dict[str, Any]) -> Path:
    path = work / "bridge.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Build:
    """Which bridge code runs: an interpreter whose environment has it installed, and the
    directory it starts in (``python -m`` puts that first on ``sys.path``). ``HEAD`` is this
    checkout; ``make bench-compare`` adds another commit's checkout as a second build."""

    label: str
    python: str
    cwd: Path | None = None


HEAD = Build("head", sys.executable)


def bridge_args(config: Path, build: Build = HEAD) -> list[str]:
    return [build.python, "-m", "bridge", "run", "--config", str(config)]


def bridge_config(
    url: str,
    work: Path,
    sink: dict[str, Any],
    *,
    instances: int,
    fsync: str = "interval",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A bridge config for the bench: instances inline (bench tokens), logs quiet."""
    return {
        "upstream": {"base_url": url},
        "instances": {
            f"inst-{n:03d}": {"token": f"tok-{n:03d}", "events": []} for n in range(instances)
        },
        "sink": sink,
        "spool": {"dir": str(work / "spool"), "fsync": fsync},
        "admin": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "warning", "format": "json"},
        "reload": {"watch": False},
        **(extra or {}),
    }


# ---- counting on the broker's side -----------------------------------------------------------
CREATED_TOPICS: set[str] = set()  # what this run made, deleted at its end


async def create_topics(
    bootstrap: str, topics: list[str], *, partitions: int = 3, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, partitions, 1, topic_configs=configs or {}) for t in topics]
        )
        CREATED_TOPICS.update(topics)
    finally:
        await admin.close()


async def delete_created_topics(bootstrap: str) -> None:
    """Delete the topics this run created (the records measured are of no further use)."""
    if not CREATED_TOPICS:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(sorted(CREATED_TOPICS))
        CREATED_TOPICS.clear()
    finally:
        await admin.close()


async def kafka_count(bootstrap: str, topics: list[str], partitions: int = 3) -> int:
    """Records in ``topics`` (sum of end offsets; the bench makes every topic with
    ``partitions`` partitions)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        ends = await consumer.end_offsets(wanted)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def delete_streams(url: str, prefix: str) -> None:
    """Delete the streams a run wrote (``prefix:*``): even trimmed to 1,000 entries, a stream
    of 4 MB frames holds 4 GB, and what Redis holds the page cache loses for the next runs."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


async def redis_count(url: str, streams: list[str]) -> int:
    """Entries ever added to ``streams`` (XINFO entries-added, immune to MAXLEN trimming)."""
    client = Redis.from_url(url)
    try:
        total = 0
        for stream in streams:
            with contextlib.suppress(Exception):
                info = await client.xinfo_stream(stream)
                total += int(info.get("entries-added", info.get("length", 0)))
        return total
    finally:
        await client.aclose()


def file_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


async def rate_over(
    count: Callable[[], Awaitable[int]],
    warmup: float,
    seconds: float,
    meter: CpuMeter | None = None,
) -> float:
    """Records per second added during ``seconds`` after ``warmup``; ``meter`` measures the
    CPU over the same window (asking the broker for its count stays outside it)."""
    await asyncio.sleep(warmup)
    first = await count()
    started = time.monotonic()
    if meter is not None:
        meter.start()
    await asyncio.sleep(seconds)
    if meter is not None:
        meter.stop()
    elapsed = time.monotonic() - started
    return (await count() - first) / elapsed


def unique(prefix: str) -> str:
    return f"{prefix}.{int(time.time() * 1000) % 10**10}"
