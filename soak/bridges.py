"""The bridges under test: real ``ryze-bridge run`` processes (default delivery mode: a
shipper process beside each), their configs, and their counters summed over their lives."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from soak.invariants import Counts
from soak.procs import Proc, children_of, free_port

BATCH_MAX_RECORDS = 500
MAX_FRAME_BYTES = 256 * 1024
PREFIX = "ryze_bridge_"


def token_env(instance: str) -> str:
    return "SOAK_TOKEN_" + instance.upper().replace("-", "_")


def bridge_config(
    kind: str,
    base_url: str,
    *,
    instances: list[str],
    spool: Path,
    admin_port: int,
    sink: dict[str, Any],
) -> dict[str, Any]:
    """The YAML of one bridge: fast reconnects, a small spool on its tmpfs, the sink."""
    return {
        "upstream": {
            "base_url": base_url,
            "max_frame_bytes": MAX_FRAME_BYTES,
            "backoff_initial": 0.2,
            "backoff_max": 3,
            "healthy_after": 5,
            "watchdog_seconds": 10,
            "failed_retry_seconds": 5,
        },
        "instances": {name: {"token_env": token_env(name)} for name in instances},
        "sink": {
            "kind": kind,
            "batch_max_records": BATCH_MAX_RECORDS,
            "retry_initial": 0.2,
            "retry_max": 3,
            **sink,
        },
        "spool": {"dir": str(spool), "max_bytes": 24 * 1024 * 1024, "fsync": "interval"},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "metrics": {"per_instance": "all"},  # the accounting reads each instance's counters
        "shutdown_timeout": 5,
        "log": {"format": "json", "level": "info"},
    }


@dataclass
class Life:
    """One process of a bridge: its pid, when it began, its last scrape (and when)."""

    pid: int
    started: float
    last: dict[str, float] = field(default_factory=dict)
    scraped_at: float = 0.0
    exit_code: int | None = None


@dataclass
class Bridge:
    name: str  # "kafka" or "redis"
    instances: list[str]
    config: dict[str, Any]
    root: Path
    env: dict[str, str]
    admin_port: int = field(default_factory=free_port)
    proc: Proc | None = None
    lives: list[Life] = field(default_factory=list)
    expect_down: bool = False  # the soak stopped it on purpose
    unplanned_exits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / f"bridge-{self.name}.yaml"

    def write_config(self) -> None:
        self.config["admin"]["port"] = self.admin_port
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> None:
        argv = [sys.executable, "-m", "bridge", "run", "--config", str(self.config_path)]
        self.proc = Proc(
            f"bridge-{self.name}", argv, self.root / f"bridge-{self.name}.log", self.env
        )
        self.proc.start()
        self.lives.append(Life(self.proc.pid or 0, time.time()))
        self.expect_down = False

    def shippers(self) -> list[int]:
        """The shipper process(es) of the current life."""
        if self.proc is None or self.proc.pid is None or not self.proc.alive():
            return []
        return children_of(self.proc.pid)

    async def scrape(self, http: httpx.AsyncClient) -> dict[str, float] | None:
        """Scrape /metrics into the current life; the flat samples, or None."""
        if self.proc is None or not self.proc.alive():
            return None
        try:
            answer = await http.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=3)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        samples = flatten(answer.text)
        life = self.lives[-1]
        life.last, life.scraped_at = samples, time.time()
        return samples

    def published(self) -> float:
        """Records published, summed over every life (its last scrape each)."""
        return sum(published_of(life.last) for life in self.lives)

    def counts(self) -> dict[str, Counts]:
        """Per instance, the counters summed over every life (its last scrape each)."""
        out = {name: Counts() for name in self.instances}
        for life in self.lives:
            for key, value in life.last.items():
                add_sample(out, key, value)
        return out


def flatten(text: str) -> dict[str, float]:
    """Prometheus text as ``name{k="v",…}`` → value (labels sorted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    labels = {}
    for part in rest.rstrip("}").split('",'):
        if "=" in part:
            k, _, v = part.partition("=")
            labels[k] = v.strip('"')
    return name, labels


def instance_label(labels: dict[str, str]) -> str | None:
    return labels.get("ryze_instance")


def published_of(samples: dict[str, float]) -> float:
    """Records published (``events_published_total`` summed over its events), the gap
    markers left out (they are no frame read off a socket); DLQ records are not in it (the
    accounting reads them from the DLQ topic)."""
    total = 0.0
    for key, value in samples.items():
        name, labels = parse_key(key)
        if name == f"{PREFIX}events_published_total" and labels.get("event") != "bridge.gap":
            total += value
    return total


def add_sample(out: dict[str, Counts], key: str, value: float) -> None:
    """Fold one sample into the per-instance counts it concerns."""
    name, labels = parse_key(key)
    if name == f"{PREFIX}events_received_total":
        instance = instance_label(labels)
        if instance in out:
            out[instance].received += value
    elif name == f"{PREFIX}events_dropped_total":
        instance, reason = instance_label(labels), labels.get("reason", "")
        if instance in out:
            if reason == "filtered":
                out[instance].filtered += value
            else:
                out[instance].drops[reason] = out[instance].drops.get(reason, 0.0) + value


def total(samples: dict[str, float] | None, name: str) -> float:
    """Sum of one metric's samples (any labels)."""
    if not samples:
        return 0.0
    return sum(v for k, v in samples.items() if k.startswith(f"{PREFIX}{name}{{"))
