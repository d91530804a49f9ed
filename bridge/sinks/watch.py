"""What the sink worker watches to report: a stalled delivery, and how often it may log.

Nothing settled for ``stall_seconds`` while records wait means delivery has stopped (a client
that retries on its own, e.g. an idempotent Kafka producer while partitions lack replicas, may
hold a call for ever without a failure to report): readiness says so. Idle time, with no
record waiting, is no stall.
"""

from __future__ import annotations

import time

STALL_SECONDS = 30.0
LOG_EVERY_SECONDS = 1.0  # publish failures, recoveries, rejections: one line a second at most


def stall_message(stalled: float, waiting: int, calls: int, oldest: float) -> str:
    """What readiness says of a stalled delivery (pure)."""
    return (
        f"nothing delivered for {stalled:.0f} s with {waiting} records waiting "
        f"({calls} publish calls pending, the oldest for {oldest:.0f} s)"
    )


class StallWatch:
    """When a record last settled (or records began to wait), and whether that is a stall."""

    __slots__ = ("progress_at", "seconds", "stalled")

    def __init__(self, seconds: float = STALL_SECONDS) -> None:
        self.seconds = seconds
        self.progress_at = time.monotonic()
        self.stalled = False

    def waiting_from(self, now: float) -> None:
        """Records begin to wait in an empty window: the stall clock starts now."""
        self.progress_at = now

    def stalled_for(self, now: float, *, waiting: bool) -> float:
        """Seconds without a record settled while records wait (0: none wait)."""
        return now - self.progress_at if waiting else 0.0

    def begins(self, now: float, *, waiting: bool) -> bool:
        """Whether a stall begins now (True once per stall)."""
        if self.stalled or self.stalled_for(now, waiting=waiting) < self.seconds:
            return False
        self.stalled = True
        return True

    def progress(self, now: float) -> bool:
        """A record settled; whether that ended a stall."""
        self.progress_at = now
        ended, self.stalled = self.stalled, False
        return ended

    def deadline(self, *, waiting: bool) -> float | None:
        """When delivery will count as stalled (None: it is, or nothing waits)."""
        return self.progress_at + self.seconds if waiting and not self.stalled else None


class LogLimit:
    """One line each ``every`` seconds at most (thousands of destinations may fail together;
    every failure is counted in the metrics all the same)."""

    __slots__ = ("at", "every")

    def __init__(self, every: float = LOG_EVERY_SECONDS) -> None:
        self.every = every
        self.at = -every

    def allows(self, now: float) -> bool:
        """Whether a line may be logged now (and if so, it counts as logged)."""
        if now - self.at < self.every:
            return False
        self.at = now
        return True

    def due(self, now: float) -> bool:
        return now - self.at >= self.every

    def next_at(self) -> float:
        return self.at + self.every
