"""What the cluster-scale part is made of: replicas as processes, a sampler of the simulator's
counters (connections, upgrades, 429s, frames sent) and counting by id what reached Kafka.

The simulator is the judge: an instance is connected when the simulator holds its socket, a
connect is an upgrade it answered, a 429 is one it sent, and a frame is sent when it wrote it
to a socket. Nothing here asks the bridge what it thinks it did, except which instances a
replica runs (``/instances``) and whether it is ready (``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import Proc, kafka_count, sim_stats


@dataclass
class Member:
    """One ``ryze-bridge run`` replica: its own directory (config, spool, log) and admin port.
    Started again on the same directory, it finds its spool as a restarted pod finds its
    volume."""

    name: str
    directory: Path
    config: dict[str, Any]
    admin_port: int
    proc: Proc | None = None

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "bridge.yaml"
        path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        path.chmod(0o600)
        log = self.directory / f"{self.name}.log"
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "run", "--config", str(path),
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self.proc = Proc(process, log)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.process.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.running:
            self.proc.process.send_signal(sig)

    async def exited(self, within: float) -> int:
        """The exit code, waiting at most ``within`` seconds (then SIGKILL, code -9)."""
        if self.proc is None:
            return 0
        try:
            return await asyncio.wait_for(self.proc.process.wait(), within)
        except TimeoutError:
            await self.proc.stop()
            return -9

    async def get(self, path: str) -> httpx.Response | None:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                return await http.get(url)
        except httpx.HTTPError:
            return None

    async def ready(self) -> bool:
        answer = await self.get("/readyz")
        return answer is not None and answer.status_code == 200

    async def owned(self) -> int:
        """Shards this replica says it runs (0 when it does not answer)."""
        answer = await self.get("/instances")
        if answer is None or answer.status_code != 200:
            return 0
        return len(answer.json()["cluster"].get("owned", []))

    async def instances(self) -> set[str]:
        answer = await self.get("/instances")
        if answer is None or answer.status_code != 200:
            return set()
        rows = answer.json()["instances"]
        return {name for name, row in rows.items() if row.get("state") != "paused"}


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the sampler started
    upgrades: int  # upgrades the simulator answered, all instances, ever
    connected: int  # instances with at least one open socket
    doubled: int  # instances with more than one open socket
    rate_limited: int  # 429s the simulator sent, ever
    sent: int  # frames written to a socket, ever
    unheard: int  # events emitted while the instance had no socket


COUNTED = ("upgrades", "open_sockets", "frames_sent", "unheard")


def merged_stats(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Several simulators' ``/_sim/stats`` as one upstream's (pure): each instance's counters
    summed over the simulators (two sockets on two of them are two sockets), the 429s too."""
    if len(answers) == 1:
        return answers[0]
    rows: dict[str, dict[str, int]] = {}
    for answer in answers:
        for name, row in answer["instances"].items():
            into = rows.setdefault(name, dict.fromkeys(COUNTED, 0))
            for key in COUNTED:
                into[key] += int(row[key])
    return {"instances": rows, "rate_limited": sum(int(a["rate_limited"]) for a in answers)}


def sample_of(at: float, stats: dict[str, Any]) -> Sample:
    """One sample from the simulator's ``/_sim/stats`` answer (pure)."""
    rows = stats["instances"].values()
    return Sample(
        at=at,
        upgrades=sum(r["upgrades"] for r in rows),
        connected=sum(1 for r in rows if r["open_sockets"] >= 1),
        doubled=sum(1 for r in rows if r["open_sockets"] > 1),
        rate_limited=int(stats["rate_limited"]),
        sent=sum(r["frames_sent"] for r in rows),
        unheard=sum(r["unheard"] for r in rows),
    )


def peak_rate(samples: list[Sample], since: float, until: float) -> float:
    """The highest upgrade rate over any window of at least a second between ``since`` and
    ``until`` (pure): the peak connects per second the upstream saw."""
    inside = [s for s in samples if since <= s.at <= until]
    peak = 0.0
    for i, first in enumerate(inside):
        later = next((s for s in inside[i + 1 :] if s.at - first.at >= 1.0), None)
        if later is not None:
            peak = max(peak, (later.upgrades - first.upgrades) / (later.at - first.at))
    return round(peak, 1)


def delta(samples: list[Sample], since: float, until: float, name: str) -> int:
    """How much counter ``name`` grew between ``since`` and ``until`` (pure)."""
    inside = [s for s in samples if since <= s.at <= until]
    if len(inside) < 2:
        return 0
    return int(getattr(inside[-1], name) - getattr(inside[0], name))


@dataclass
class Sampler:
    """Polls the simulators every ``every`` seconds while running; keeps the last full answer
    (per-instance counters, summed over the simulators) for the predicates that need it."""

    urls: list[str]
    every: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def poll(self) -> Sample:
        stats = merged_stats(list(await asyncio.gather(*map(sim_stats, self.urls))))
        self.last = stats
        found = sample_of(self.now(), stats)
        self.samples.append(found)
        return found

    async def run(self) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self.poll()
            await asyncio.sleep(self.every)

    def upgrades_of(self, names: set[str]) -> dict[str, int]:
        rows = self.last["instances"]
        return {n: rows[n]["upgrades"] for n in names}

    def moved(self, before: dict[str, int]) -> bool:
        """Every instance of ``before`` upgraded again since and holds one socket."""
        rows = self.last["instances"]
        return all(
            rows[n]["upgrades"] > b and rows[n]["open_sockets"] == 1 for n, b in before.items()
        )


async def until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Seconds until ``predicate`` holds, checked every half second; RuntimeError (naming
    ``what``) after ``within``."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            raise RuntimeError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 2)


async def sent_ids(urls: list[str], names: list[str]) -> dict[str, list[tuple[str, float]]]:
    """For each instance, (frame id, Unix time sent) of every frame a simulator wrote."""
    found: dict[str, list[tuple[str, float]]] = {name: [] for name in names}
    gate = asyncio.Semaphore(16)
    for url in urls:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:

            async def one(name: str, http: httpx.AsyncClient = http) -> None:
                async with gate:
                    answer = await http.get(f"/_sim/ids/{name}", params={"times": 1})
                    found[name] += [(str(i), float(t)) for i, t in answer.json()]

            await asyncio.gather(*(one(n) for n in names))
    return found


async def delivered_ids(
    bootstrap: str, topics: list[str], partitions: int = 3, within: float = 300
) -> Counter[str]:
    """How many times each frame id is in ``topics`` (read from the start to the end
    offsets they have now; the bench makes every topic with ``partitions`` partitions).
    Values are the frames as published: the id is ``data.id``. A read that comes back with
    fewer records than the end offsets count is done again with a new consumer."""
    expected = await kafka_count(bootstrap, topics, partitions)
    seen: Counter[str] = Counter()
    for _ in range(READ_ATTEMPTS):
        seen = await read_ids(bootstrap, topics, partitions, within)
        if sum(seen.values()) >= expected:
            break
    return seen


READ_ATTEMPTS = 3


async def read_ids(
    bootstrap: str, topics: list[str], partitions: int, within: float
) -> Counter[str]:
    """One read of ``topics`` from the start to their end offsets: each frame id's count."""
    # earliest: a reset to the end that the assignment started can land after a
    # seek_to_beginning and win (seen here: positions at the end offsets right after the seek)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + within
        while [p for p in parts if await consumer.position(p) < ends[p]]:
            if time.monotonic() > deadline:
                raise RuntimeError("reading the delivered records took too long")
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    seen[frame_id(record.value)] += 1  # a gap marker has no id: ""
    finally:
        await consumer.stop()
    return seen


def frame_id(value: bytes | None) -> str:
    """The simulator's id of a published frame (``data.id``); '' when it has none (pure)."""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        data = orjson.loads(value or b"{}").get("data") or {}
        return str(data.get("id", ""))
    return ""
