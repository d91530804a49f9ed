"""The sink worker: moves batches from the spool to the sink, oldest first, at least once.

A batch leaves the spool only as far as the broker settled it: delivered records and
rejected ones (written to the DLQ instead) are acknowledged; from the first transient failure
on, the batch is rewound and retried after a backoff, so records of one key never overtake
each other. Nothing here ever blocks a socket reader.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bridge.errors import SinkError
from bridge.logs import get_logger
from bridge.metrics import Children, Metrics, observe_all
from bridge.pipeline import Record
from bridge.sinks.base import Delivered, Failed, Outcome, Rejected, Sink, first_failure
from bridge.spool import READ_MAX_BYTES, SpoolReader

log = get_logger(__name__)
TOO_LARGE_KEEP = 64 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 0.2
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry ``attempt`` (1-based)."""
        ceiling = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto


def as_dead_letter(record: Record, reason: str, error: str, dlq: str) -> Record:
    """The DLQ copy of a record the broker refused for good (pure).

    A record refused as too large keeps only its first 64 KiB, so its DLQ copy fits.
    """
    error = f"{error} (destination {record.destination})"
    value = record.value
    if reason == "too_large" and len(value) > TOO_LARGE_KEEP:
        value = value[:TOO_LARGE_KEEP]
        error += f"; value truncated from {len(record.value)} to {TOO_LARGE_KEEP} bytes"
    return replace(record, destination=dlq, value=value, ident=record.id,  # the original's id
                   dlq_reason=reason, dlq_error=error[:500])  # fmt: skip


class SinkWorker:
    """Drains ``spool`` into ``sink``; one per process, so order is the spool's order."""

    def __init__(
        self,
        sink: Sink,
        spool: SpoolReader,
        metrics: Metrics,
        *,
        dlq: str,
        batch_max_records: int = 1000,
        batch_max_bytes: int = READ_MAX_BYTES,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.metrics = metrics
        self.dlq = dlq
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.retry = retry or RetryPolicy()
        self._attempt = 0
        self._published = Children(metrics.events_published)
        self._latency = metrics.publish_latency.labels(sink.kind)

    @property
    def healthy(self) -> bool:
        """The last publish settled its whole batch (the worker is not retrying)."""
        return self._attempt == 0

    async def run(self) -> None:
        """Publish forever; cancel to stop (the batch in flight stays in the spool)."""
        while True:
            batch = await self.spool.read(self.batch_max_records, self.batch_max_bytes)
            settled = await self.publish_once(batch)
            self.spool.ack(settled)
            if settled < len(batch):
                self.spool.rewind()
                self._attempt += 1
                await asyncio.sleep(self.retry.delay(self._attempt))
            else:
                self._attempt = 0

    async def publish_once(self, batch: Sequence[Record]) -> int:
        """Publish ``batch``; return how many leading records are settled for good."""
        outcomes = await self._publish(batch)
        stop = first_failure(outcomes)
        settled = len(batch) if stop is None else stop
        rejected = [
            (i, batch[i], o) for i, o in enumerate(outcomes[:settled]) if isinstance(o, Rejected)
        ]
        cut = await self._dead_letter(rejected) if rejected else None
        if cut is not None:
            settled = cut
        self._count(batch[:settled], outcomes[:settled])
        if stop is not None:
            failure = outcomes[stop]
            if isinstance(failure, Failed):
                self._failed(failure.error, len(batch) - stop)
        return settled

    async def _publish(self, batch: Sequence[Record]) -> list[Outcome]:
        try:
            outcomes = await self.sink.publish(batch)
        except SinkError as exc:
            return [Failed(exc)] * len(batch)
        self.metrics.sink_up.labels(self.sink.kind).set(1)
        return outcomes

    async def _dead_letter(self, rejected: list[tuple[int, Record, Rejected]]) -> int | None:
        """Write refused records to the DLQ; the index of the first one that must be retried
        (its DLQ write failed for now), or None when all of them are settled."""
        letters = []
        for index, record, outcome in rejected:
            log.error(
                "sink.record_rejected",
                instance=record.instance,
                destination=record.destination,
                reason=outcome.reason,
                error=outcome.error,
                ryze_id=record.id,
            )
            if record.dlq_reason is not None:  # a DLQ record refused itself: nowhere left
                self.metrics.events_dropped.labels(record.instance, "dlq_rejected").inc()
                continue
            letters.append((index, as_dead_letter(record, outcome.reason, outcome.error, self.dlq)))
        if not letters:
            return None
        outcomes = await self._publish([letter for _, letter in letters])
        for (index, letter), result in zip(letters, outcomes, strict=True):
            if isinstance(result, Failed):
                return index
            if isinstance(result, Rejected):
                self.metrics.events_dropped.labels(letter.instance, "dlq_rejected").inc()
            else:
                self.metrics.dlq_records.labels(letter.dlq_reason or "unknown").inc()
        return None

    def _count(self, records: Sequence[Record], outcomes: Sequence[Outcome]) -> None:
        now_ns = time.time_ns()
        kind = self.sink.kind
        per_destination: dict[str, int] = {}
        latencies: list[float] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if not isinstance(outcome, Delivered):
                continue
            if record.dlq_reason is not None:
                self.metrics.dlq_records.labels(record.dlq_reason).inc()
            destination = record.destination
            per_destination[destination] = per_destination.get(destination, 0) + 1
            latencies.append(max(0.0, (now_ns - record.received_ns) / 1e9))
        for destination, count in per_destination.items():  # one increment per destination
            self._published(kind, destination).inc(count)
        observe_all(self._latency, latencies)

    def _failed(self, error: SinkError, pending: int) -> None:
        self.metrics.publish_errors.labels(self.sink.kind, type(error).__name__).inc()
        self.metrics.sink_up.labels(self.sink.kind).set(0)
        log.warning(
            "sink.publish_failed",
            sink=self.sink.kind,
            error=str(error),
            pending=pending,
            attempt=self._attempt + 1,
        )
