"""The outcomes of a publish call applied to the sink worker's window and lanes.

A record the broker accepted settles (counted as published, or as a DLQ record). A record
refused for good gets a DLQ copy that joins the DLQ's lane and goes out in its place; a DLQ
copy refused itself stays unsettled and is retried (cut to 64 KiB first when it was refused
as too large): nothing is dropped here. A record that failed goes back to its lane to be
retried. Rejections are logged one line a second at most, with counts per destination and
reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from bridge.logs import get_logger
from bridge.metrics import Children, Metrics, event_label, observe_all
from bridge.pipeline import Record
from bridge.sinks.base import DELIVERED, Delivered, Failed, Outcome, Rejected
from bridge.sinks.watch import LogLimit
from bridge.sinks.window import Lanes, Window

log = get_logger(__name__)
TOO_LARGE_KEEP = 64 * 1024

Failures = dict[str, list[Record]]  # lane: its window records to retry, in order
Errors = dict[str, tuple[str, str]]  # lane: (error class, text) of its latest failure


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


def truncated_letter(letter: Record) -> Record | None:
    """A DLQ record the DLQ refused as too large, cut to 64 KiB (None: already that short)."""
    if len(letter.value) <= TOO_LARGE_KEEP:
        return None
    error = f"{letter.dlq_error or ''}; value truncated from {len(letter.value)} bytes"
    return replace(letter, value=letter.value[:TOO_LARGE_KEEP], ident=letter.id,
                   dlq_error=error[:500])  # fmt: skip


class Rejections:
    """Records refused since the last ``sink.record_rejected`` line, per destination and
    reason."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.limit = LogLimit()

    def note(self, out: Record, outcome: Rejected, now: float) -> None:
        self.counts[(out.destination, outcome.reason)] += 1
        if self.limit.due(now):
            self.log(now, (out, outcome))

    def flush(self, now: float) -> None:
        """Log the pending counts if a line is allowed now."""
        if self.counts and self.limit.due(now):
            self.log(now, None)

    def next_at(self) -> float | None:
        """When the pending counts may be logged (None: none pend)."""
        return self.limit.next_at() if self.counts else None

    def log(self, now: float, example: tuple[Record, Rejected] | None) -> None:
        """One line for the records refused since the last one (one a second at most, however
        often a refused DLQ copy is retried): counts per destination and reason, and the
        details of the latest."""
        counts = {f"{d} {reason}": n for (d, reason), n in self.counts.most_common(20)}
        fields: dict[str, object] = {"rejected": counts, "destinations": len(self.counts)}
        if example is not None:
            out, outcome = example
            fields.update(instance=out.instance, destination=out.destination,
                          reason=outcome.reason, error=outcome.error, ryze_id=out.id)  # fmt: skip
        log.error("sink.record_rejected", **fields)
        self.counts.clear()
        self.limit.at = now


class Settlement:
    """Applies a call's outcomes to ``window`` and ``lanes``, and counts what was published."""

    def __init__(self, window: Window, lanes: Lanes, metrics: Metrics, kind: str) -> None:
        self.window = window
        self.lanes = lanes
        self.metrics = metrics
        self.kind = kind
        self.rejections = Rejections()
        self._published = Children(metrics.events_published)
        self._latency = metrics.publish_latency.labels(kind)

    def apply(self, records: list[Record], outcomes: list[Outcome]) -> tuple[Failures, Errors]:
        """Settle the delivered, queue DLQ copies of the refused; the failed, per lane (with
        their latest error), for the caller to put back."""
        letters = self.window.letters
        if not letters and outcomes.count(DELIVERED) == len(outcomes) == len(records):
            self.window.settled.update(map(id, records))  # the usual
            self.count(records)
            return {}, {}
        failed: Failures = {}
        errors: Errors = {}
        delivered: list[Record] = []
        lane_of = self.lanes.lane_of
        for record, outcome in zip(records, outcomes, strict=True):
            out = letters.get(id(record), record)
            if isinstance(outcome, Delivered):
                self.window.settled.add(id(record))
                if out is record:
                    delivered.append(record)
                else:
                    del letters[id(record)]
                    self.metrics.dlq_records.labels(out.dlq_reason or "unknown").inc()
            elif isinstance(outcome, Failed):
                lane = lane_of(out)
                failed.setdefault(lane, []).append(record)
                errors[lane] = (type(outcome.error).__name__, str(outcome.error))
            elif self._rejected(record, out, outcome, failed):
                errors[lane_of(out)] = ("DeadLetterRefused", f"{outcome.reason}: {outcome.error}")
        self.count(delivered)
        return failed, errors

    def _rejected(self, record: Record, out: Record, outcome: Rejected, failed: Failures) -> bool:
        """``out`` (``record`` or its DLQ copy) was refused for good: a DLQ copy of it joins
        the DLQ's lane. A DLQ copy refused itself stays unsettled (retried, in ``failed``;
        True) unless it can be cut shorter."""
        now, wall_ns = time.monotonic(), time.time_ns()
        self.rejections.note(out, outcome, now)
        letter = None
        if out.dlq_reason is None:
            letter = as_dead_letter(out, outcome.reason, outcome.error, self.lanes.dlq)
        elif outcome.reason == "too_large":
            letter = truncated_letter(out)
        if letter is None:
            failed.setdefault(self.lanes.lane_of(out), []).append(record)
            return True
        self.window.letters[id(record)] = letter
        self.lanes.queue(record, self.lanes.lane_of(letter), letter.size, now, wall_ns)
        return False

    def count(self, records: Sequence[Record]) -> None:
        """Published records counted per event (a documented name or ``other``, never a topic
        or stream name), their receipt→ack latency observed. A DLQ record the pipeline made
        counts in ``dlq_records`` only, never also in ``events_published``: each frame read
        is one of published, dead-lettered or dropped, never two."""
        now_ns = time.time_ns()
        per_event: dict[str, int] = {}
        latencies: list[float] = []
        for record in records:
            if record.dlq_reason is not None:
                self.metrics.dlq_records.labels(record.dlq_reason).inc()
            else:
                per_event[record.event] = per_event.get(record.event, 0) + 1
            latencies.append(max(0.0, (now_ns - record.received_ns) / 1e9))
        for event, count in per_event.items():  # one increment per event
            self._published(self.kind, event_label(event)).inc(count)
        observe_all(self._latency, latencies)
