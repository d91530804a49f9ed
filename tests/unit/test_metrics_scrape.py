"""The ``/metrics`` scrape: rendered in a worker thread so the event loop (the socket
readers) keeps running during a slow scrape, gzipped when the client accepts it; the process
metrics of both processes, read from ``/proc``."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import time
from collections.abc import Iterable

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.admin import AdminServer, Readiness, accepts_gzip
from bridge.metrics import create_metrics
from bridge.processmetrics import parse_stat, read_process

SLOW_SCRAPE = 0.6
linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


class SlowCollector(Collector):
    """A collector that spends ``SLOW_SCRAPE`` seconds of CPU in pure Python, holding the GIL
    but for the interpreter's switch interval (as rendering a very large registry does; a
    sleep would release the GIL and prove nothing); ``took`` is how long it ran."""

    def __init__(self) -> None:
        self.took = 0.0

    def collect(self) -> Iterable[Metric]:
        start = time.monotonic()
        spins = 0
        while time.monotonic() - start < SLOW_SCRAPE:
            spins += sum(range(1000))  # bytecode: the GIL is only given up at the switch
        self.took = time.monotonic() - start
        yield GaugeMetricFamily("slow_gauge", "Collected slowly.", value=1.0 + 0 * spins)


async def ready() -> Readiness:
    return Readiness(True, ())


async def largest_loop_stall(until: asyncio.Task[httpx.Response]) -> float:
    """The longest gap between ticks of a 10 ms heartbeat on this loop while ``until`` runs."""
    worst, last = 0.0, time.monotonic()
    while not until.done():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_slow_scrape_does_not_stop_the_event_loop() -> None:
    """While a scrape spends 0.6 s of CPU rendering (in a thread, sharing the GIL), a
    heartbeat on the same loop keeps ticking: the GIL's switch interval lets the loop run,
    so its largest stall stays well below the render's duration (rendered on the loop, the
    stall would be the whole render): the readers never wait on a scrape."""
    metrics = create_metrics()
    slow = SlowCollector()
    metrics.registry.register(slow)
    admin = AdminServer(metrics, ready, host="127.0.0.1", port=0)
    await admin.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"http://127.0.0.1:{admin.port}/metrics"
            scrape = asyncio.create_task(client.get(url))
            stall = await asyncio.wait_for(largest_loop_stall(scrape), timeout=10)
            response = await scrape
    finally:
        await admin.close()
    assert response.status_code == 200
    assert "slow_gauge 1.0" in response.text
    assert slow.took >= SLOW_SCRAPE
    assert stall < slow.took / 3


async def test_the_scrape_is_gzipped_only_for_a_client_that_accepts_it() -> None:
    """``Accept-Encoding: gzip`` gets a gzip body (``Content-Encoding: gzip``) that inflates
    to the exposition; no header gets the plain text."""
    metrics = create_metrics()
    admin = AdminServer(metrics, ready, host="127.0.0.1", port=0)
    await admin.start()
    try:
        url = f"http://127.0.0.1:{admin.port}/metrics"
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
                raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
            plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    finally:
        await admin.close()
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert b"ryze_bridge_instances{" in gzip.decompress(raw)
    assert len(raw) < len(plain.content) / 2
    assert "Content-Encoding" not in plain.headers
    assert "ryze_bridge_build_info" in plain.text


def test_accept_encoding_is_read_as_http_says() -> None:
    """gzip named or ``*`` accepts it; ``q=0`` refuses it; other codings do not count."""
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip; q=0.000")
    assert not accepts_gzip("br, deflate")
    assert not accepts_gzip("")


@linux_only
def test_process_metrics_cover_the_bridge_and_a_running_shipper() -> None:
    """This process is ``process="bridge"``; a child named as the shipper shows as
    ``process="shipper"`` with its own CPU, memory and descriptors, and is gone once it
    exited."""
    metrics = create_metrics()
    child = subprocess.Popen(  # says when it runs: its memory is then a Python's, not exec's
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        metrics.processes.shipper_pid = lambda: child.pid
        get = metrics.registry.get_sample_value
        cpu = "ryze_bridge_process_cpu_seconds_total"
        assert (get(cpu, {"process": "bridge"}) or 0) > 0
        assert (get("ryze_bridge_process_resident_memory_bytes", {"process": "bridge"}) or 0) > 0
        assert (get("ryze_bridge_process_open_fds", {"process": "shipper"}) or 0) >= 3
        rss = get("ryze_bridge_process_resident_memory_bytes", {"process": "shipper"})
        assert rss is not None
        assert rss > 1_000_000
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert metrics.registry.get_sample_value(cpu, {"process": "shipper"}) is None


def test_a_command_name_with_spaces_and_parentheses_is_skipped() -> None:
    """The CPU fields are counted after the last ``)``, whatever the command name holds."""
    line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 1 0 99 1 1"
    assert parse_stat(line, ticks=100) == 4.0
    assert read_process(2**22 + 12345) is None  # no such process: no reading


def test_a_named_gzip_weight_wins_over_the_wildcard() -> None:
    """``*;q=1, gzip;q=0`` refuses gzip (the named coding's weight wins over ``*``, whatever
    the order); ``gzip;q=0.5, *;q=0`` takes it."""
    assert not accepts_gzip("*;q=1, gzip;q=0")
    assert not accepts_gzip("gzip;q=0, *")
    assert accepts_gzip("gzip;q=0.5, *;q=0")
    assert not accepts_gzip("*;q=0")
