"""The spool's life in the main process: opened at start (locked, recovered, what recovery
found counted and logged), kept (fsynced on the ``interval`` policy's timer, the last-seen times
saved every second beside it) and closed last.
"""

from __future__ import annotations

import asyncio

from bridge.lastseen import LastSeen
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.settings import SpoolSettings
from bridge.spool.disk import DiskSpool
from bridge.spool.segments import RecoveryReport
from bridge.spool.trouble import OPS as SPOOL_OPS

log = get_logger(__name__)
LAST_SEEN_SAVE_SECONDS = 1.0


def recovered_counts(report: RecoveryReport) -> dict[str, int]:
    """What start-up found in the spool, by outcome label, the zeros left out (pure)."""
    found = {"replayed": report.replay, "damaged": report.damaged, "torn": report.torn}
    return {outcome: count for outcome, count in found.items() if count}


class SpoolKeeper:
    def __init__(
        self, spool: DiskSpool, last_seen: LastSeen, settings: SpoolSettings, metrics: Metrics
    ) -> None:
        self.spool = spool
        self.last_seen = last_seen
        self.settings = settings
        self.metrics = metrics

    def open(self) -> None:
        """Export the spool's gauges, open (lock, recover) it, report what start-up found in
        it, and load the last-seen times."""
        metrics, spool = self.metrics, self.spool
        metrics.spool_max_bytes.set(self.settings.max_bytes)
        metrics.spool_events.set_function(lambda: spool.stats().events)
        metrics.spool_bytes.set_function(lambda: spool.stats().bytes)
        for op in SPOOL_OPS:
            metrics.spool_errors.labels(op)
        spool.troubles.on_error = lambda op: metrics.spool_errors.labels(op).inc()
        report = spool.open()
        self.last_seen.load()
        for outcome, count in recovered_counts(report).items():
            metrics.spool_recovered.labels(outcome).inc(count)
        level = log.warning if report.damaged or report.torn else log.info
        level(
            "spool.opened",
            dir=str(spool.directory),
            replay=report.replay,
            damaged=report.damaged,
            torn=report.torn,
            torn_bytes=report.torn_bytes,
        )

    async def run(self) -> None:
        """fsync on the interval policy's timer; save last-seen times every second."""
        interval = self.settings.fsync_interval_ms / 1000
        ticks_per_save = max(1, int(LAST_SEEN_SAVE_SECONDS / interval))
        tick = 0
        while True:
            await asyncio.sleep(interval)
            if self.settings.fsync == "interval":
                self.spool.sync_soon()
            tick += 1
            if tick % ticks_per_save == 0:
                self.last_seen.save()

    def close(self) -> None:
        """Save the last-seen times, close the spool."""
        self.last_seen.save()
        self.spool.close()
