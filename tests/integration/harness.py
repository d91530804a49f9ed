"""Running the bridge in-process against the simulator, and waiting for things (bounded)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession

from bridge.compose import assemble
from bridge.metrics import Metrics, create_metrics
from bridge.settings import Settings
from bridge.supervisor import Supervisor
from tests.tokengrep import keep_answer


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = 30.0, every: float = 0.05
) -> None:
    """Wait until ``predicate`` holds; fail with AssertionError after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


def settings_for(base_url: str, tmp_path: Path, **sections: Any) -> Settings:
    """Bridge settings for tests: fast backoff, admin on a free port, spool in tmp_path."""
    data: dict[str, Any] = {
        "upstream": {
            "base_url": base_url,
            "backoff_initial": 0.05,
            "backoff_max": 0.5,
            "failed_retry_seconds": 1.0,
            "healthy_after": 1.0,
        },
        "spool": {"dir": str(tmp_path / "spool"), "fsync": "never"},
        "admin": {"host": "127.0.0.1", "port": 0},
        "shutdown_timeout": 15,
        "sink": {"retry_initial": 0.05, "retry_max": 0.5, "gap_markers": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


def kafka_sink(bootstrap: str, topic: str, dlq: str) -> dict[str, Any]:
    """The ``sink`` section for the test Kafka."""
    return {"kind": "kafka", "dlq": dlq, "kafka": {"bootstrap_servers": bootstrap, "topic": topic}}


def redis_sink(url: str, prefix: str) -> dict[str, Any]:
    """The ``sink`` section for the test Redis: streams and DLQ under ``prefix``."""
    return {
        "kind": "redis",
        "dlq": f"{prefix}:dlq",
        "redis": {"url": url, "stream": prefix + ":{instance}:{event}"},
    }


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings, **kwargs: Any) -> AsyncIterator[Supervisor]:
    """A supervisor running in this loop; stopped (gracefully) on exit."""
    metrics = kwargs.pop("metrics", None) or create_metrics()
    supervisor = assemble(settings, metrics=metrics, handle_signals=False, **kwargs)
    task = asyncio.create_task(supervisor.run())
    try:
        await eventually(lambda: supervisor.admin.port != 0 or task.done(), within=10)
        yield supervisor
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, timeout=60)


def expected_value(frame: bytes, token: str) -> bytes:
    """The frame with exactly its token member cut out (independent of the bridge's code)."""
    member = b',"token":"' + token.encode() + b'"'
    assert frame.count(member) == 1
    return frame.replace(member, b"")


def event_of(frame: bytes) -> str:
    event: str = orjson.loads(frame)["event"]
    return event


async def scrape(port: int, path: str = "/metrics") -> str:
    """The admin server's answer to GET ``path``."""
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        text = await resp.text()
    keep_answer(path, text)  # for CI's token grep
    return text
