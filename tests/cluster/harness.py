"""Bridge replicas as real processes, for the scale-out tests: start, signal, scrape."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import ClientError, ClientSession

from bridge.simulator import Simulator

SETTLE_SECONDS = 20  # how long a counter may keep moving before settled_metric gives up


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Replica:
    """One ``ryze-bridge run`` process with its own config, spool and admin port."""

    name: str
    directory: Path
    config: dict[str, Any]
    env: dict[str, str]
    admin_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            **self.config,
            "admin": {"host": "127.0.0.1", "port": self.admin_port},
            "spool": {"dir": str(self.directory / "spool"), "fsync": "never"},
            "log": {"format": "json"},
        }
        config["cluster"] = {**config.get("cluster", {}), "replica_id": self.name}
        path = self.directory / "bridge.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "run", "--config", str(path),
                env={**self.env, "PATH": "/usr/bin:/bin"},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    def send(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, within: float) -> int:
        if self.process is None:
            return 0
        return await asyncio.wait_for(self.process.wait(), timeout=within)

    async def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it is frozen), then SIGKILL if it lingers."""
        if self.process is None or self.process.returncode is not None:
            return
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        try:
            await self.wait(30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sum of a metric's samples (None when the process does not answer)."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        try:
            async with ClientSession() as http, http.get(url) as response:
                text = await response.text()
        except (ClientError, OSError):
            return None
        return metric_value(text, name, labels)

    async def settled_metric(self, name: str, **labels: str) -> float | None:
        """A counter once it has stopped moving: the same value a second apart with the
        spool empty (what was read before is delivered or dead-lettered by then)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        last = await self.metric(name, **labels)
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            value = await self.metric(name, **labels)
            if value == last and await self.metric("ryze_bridge_spool_events") == 0:
                return value
            last = value
        return last

    async def instances(self) -> set[str]:
        url = f"http://127.0.0.1:{self.admin_port}/instances"
        async with ClientSession() as http, http.get(url) as response:
            body = orjson.loads(await response.read())
        return {n for n, entry in body["instances"].items() if entry.get("state") != "paused"}

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def events_after_stopping(log_text: str, event: str) -> int:
    """How many log lines of ``event`` a replica wrote after its shutdown began."""
    events = [line.get("event") for line in _json_lines(log_text)]
    if "bridge.stopping" not in events:
        return 0
    return events[events.index("bridge.stopping") :].count(event)


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(line)
            if isinstance(value, dict):
                lines.append(value)
    return lines


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


@contextlib.asynccontextmanager
async def replicas(*members: Replica) -> AsyncIterator[list[Replica]]:
    """Processes stopped (and killed if they must) whatever the test did."""
    try:
        yield list(members)
    finally:
        await asyncio.gather(*(m.stop() for m in members))


def every_instance_once(sim: Simulator, names: list[str]) -> bool:
    """Each instance has exactly one open socket."""
    return all(sim.stats(n)["open_sockets"] == 1 for n in names)


def most_sockets(sim: Simulator, names: list[str]) -> int:
    return max(int(sim.stats(n)["max_sockets"]) for n in names)


def reconnected(sim: Simulator, names: set[str]) -> Callable[[], bool]:
    """A predicate: every one of ``names`` has been upgraded again since now."""
    before = {n: sim.stats(n)["upgrades"] for n in names}
    return lambda: all(sim.stats(n)["upgrades"] > before[n] for n in names)


def unheard(sim: Simulator, names: list[str]) -> int:
    return sum(int(sim.stats(n)["unheard"]) for n in names)


async def timed(predicate: Callable[[], bool], within: float) -> float:
    """Seconds until ``predicate`` holds; AssertionError after ``within``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def owned(members: list[Replica]) -> dict[str, int]:
    """Shards each live replica says it owns."""
    values = await asyncio.gather(*(m.metric("ryze_bridge_cluster_shards_owned") for m in members))
    return {m.name: int(v) for m, v in zip(members, values, strict=True) if v is not None}


async def sum_is(owned_now: Awaitable[dict[str, int]], total: int) -> bool:
    return sum((await owned_now).values()) == total


async def owns_at_least(member: Replica, count: int) -> bool:
    value = await member.metric("ryze_bridge_cluster_shards_owned")
    return value is not None and value >= count
