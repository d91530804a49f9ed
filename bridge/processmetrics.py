"""CPU, memory and file descriptors of both processes, read from ``/proc`` at scrape time.

``ryze_bridge_process_cpu_seconds_total{process}``,
``ryze_bridge_process_resident_memory_bytes{process}`` and
``ryze_bridge_process_open_fds{process}``, with ``process="bridge"`` (this process) and
``process="shipper"`` (the sink worker's process, while one runs). The parent reads the
shipper's ``/proc/<pid>`` itself: nothing travels over the link, and a shipper that hangs
still shows. Where ``/proc`` does not exist (not Linux) the series are absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessReading:
    cpu_seconds: float
    resident_bytes: int
    open_fds: int


def parse_stat(text: str, ticks: int) -> float:
    """User + system CPU seconds from a ``/proc/<pid>/stat`` line (pure); the command name
    (field 2, in parentheses) may hold spaces, so fields are counted after its ``)``."""
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14, 15


def parse_statm(text: str, page_size: int) -> int:
    """Resident bytes from ``/proc/<pid>/statm`` (pure): its second field, in pages."""
    return int(text.split()[1]) * page_size


def read_process(pid: int, proc: Path = PROC) -> ProcessReading | None:
    """One process's reading, or None when it is gone (or ``/proc`` is not there)."""
    base = proc / str(pid)
    try:
        cpu = parse_stat((base / "stat").read_text(), os.sysconf("SC_CLK_TCK"))
        rss = parse_statm((base / "statm").read_text(), os.sysconf("SC_PAGE_SIZE"))
        fds = sum(1 for _ in (base / "fd").iterdir())
    except (OSError, ValueError, IndexError):
        return None
    return ProcessReading(cpu, rss, fds)


class ProcessCollector(Collector):
    """The three process metrics for this process and, when ``shipper_pid()`` names one, the
    shipper (set by the composition root)."""

    def __init__(self, prefix: str, proc: Path = PROC) -> None:
        self.prefix = prefix
        self.proc = proc
        self.shipper_pid: Callable[[], int | None] = lambda: None

    def readings(self) -> list[tuple[str, ProcessReading]]:
        found = []
        for process, pid in (("bridge", os.getpid()), ("shipper", self.shipper_pid())):
            reading = None if pid is None else read_process(pid, self.proc)
            if reading is not None:
                found.append((process, reading))
        return found

    def collect(self) -> Iterable[Metric]:
        p = self.prefix
        cpu = CounterMetricFamily(
            f"{p}_process_cpu_seconds", "User and system CPU time spent.", labels=("process",)
        )
        rss = GaugeMetricFamily(
            f"{p}_process_resident_memory_bytes", "Resident memory size.", labels=("process",)
        )
        fds = GaugeMetricFamily(
            f"{p}_process_open_fds", "Open file descriptors.", labels=("process",)
        )
        for process, reading in self.readings():
            cpu.add_metric([process], reading.cpu_seconds)
            rss.add_metric([process], float(reading.resident_bytes))
            fds.add_metric([process], float(reading.open_fds))
        yield from (cpu, rss, fds)
