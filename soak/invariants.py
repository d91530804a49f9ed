"""The invariants over what the soak collected (pure): every frame the simulator sent to a
live socket is published, dead-lettered with a reason, in a counted drop, or in the reported
tail of a bridge SIGKILL; duplicates are bounded and share a ``ryze-id``; first occurrences
keep send order per key; one instance's failure leaves the others fast and out of the DLQ;
delivery resumes within 60 s of each fault; the counters add up."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FRAME_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9._-]+-\d{9})"')
LIVENESS_SECONDS = 60.0
ISOLATION_P99_SECONDS = 5.0
ISOLATION_KINDS = frozenset({"topic_recreate", "redis_acl"})
NO_FAULT = "(no fault)"


def frame_id_of(value: bytes) -> str | None:
    """The simulator's frame id inside a record's value (also in truncated or binary
    frames), or None."""
    found = FRAME_ID.search(value)
    return found.group(1).decode() if found else None


def seq_of(frame_id: str) -> int:
    """The send sequence number at the end of a simulator frame id."""
    return int(frame_id.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Sent:
    instance: str
    frame_id: str
    at: float  # Unix time the simulator sent it to a live socket


@dataclass(frozen=True)
class Seen:
    """One record consumed at the end from a sink or a DLQ."""

    instance: str
    frame_id: str | None
    ryze_id: str
    where: str  # topic or stream
    position: tuple[int, int, int]  # (generation, partition, offset or entry ms*1e4+seq)
    received_at: float  # the bridge's ryze-received-at, Unix seconds
    acked_at: float  # the broker's time (LogAppendTime, entry id ms), Unix seconds
    dlq_reason: str | None = None


@dataclass(frozen=True)
class FaultRun:
    """A fault as it happened: when it began and ended, when the bridge had recovered
    (None: not within the liveness bound), whether the bridge had to be restarted."""

    index: int
    kind: str
    bridge: str
    target: str
    started: float
    ended: float
    recovered_at: float | None
    restarted: bool = False
    note: str = ""


@dataclass(frozen=True)
class KillWindow:
    """A bridge SIGKILL: frames sent in [since, until] to its instances and found nowhere
    are its tail (read, maybe, but not yet spooled: no counter survives the kill)."""

    bridge: str
    since: float
    until: float


@dataclass
class Counts:
    """One instance's counters, summed over the lives of its bridge (last scrape each);
    ``published`` stays 0 from a scrape (the bridge's total is ``Collected.published``)."""

    received: float = 0.0
    filtered: float = 0.0
    published: float = 0.0
    drops: dict[str, float] = field(default_factory=dict)


@dataclass
class Collected:
    sent: list[Sent]
    seen: list[Seen]
    faults: list[FaultRun]
    kills: list[KillWindow]
    counts: dict[str, Counts]
    bridge_of: dict[str, str]  # instance -> bridge
    batch_max_records: int
    leaks: list[str] = field(default_factory=list)  # where a token was found
    published: dict[str, float] = field(default_factory=dict)  # bridge -> records published


@dataclass
class Row:
    """One line of the table: a fault kind and what happened to the frames sent under it."""

    kind: str
    injected: int = 0
    sent: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicated: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    longest_recovery: float | None = None
    not_recovered: int = 0

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    rows: list[Row]
    checks: list[Check]
    losses: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def fault_at(t: float, faults: Sequence[FaultRun]) -> FaultRun | None:
    """The fault a frame sent at ``t`` happened under: the last one begun by then."""
    current = None
    for fault in faults:
        if fault.started <= t:
            current = fault
    return current


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def explain_losses(data: Collected) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Each sent frame found nowhere, with its explanation: ``counted_drop:<reason>`` (as
    many as the instance's counters say), ``tail_at_bridge_kill``, else ``unexplained``."""
    found = {s.frame_id for s in data.seen if s.frame_id is not None}
    missing: dict[str, list[Sent]] = defaultdict(list)
    for sent in unique_sent(data.sent):
        if sent.frame_id not in found:
            missing[sent.instance].append(sent)
    why: dict[str, str] = {}
    for instance, frames in missing.items():
        drops = Counter(
            {r: int(n) for r, n in data.counts.get(instance, Counts()).drops.items() if n > 0}
        )
        windows = [k for k in data.kills if k.bridge == data.bridge_of.get(instance)]
        for sent in frames:
            if any(k.since <= sent.at <= k.until for k in windows):
                why[sent.frame_id] = "tail_at_bridge_kill"
            elif drops:
                reason = next(iter(sorted(drops)))
                drops[reason] -= 1
                if drops[reason] <= 0:
                    del drops[reason]
                why[sent.frame_id] = f"counted_drop:{reason}"
            else:
                why[sent.frame_id] = "unexplained"
    listing = [
        {"instance": s.instance, "id": s.frame_id, "sent_at": s.at, "why": why[s.frame_id]}
        for frames in missing.values()
        for s in frames
    ]
    return why, listing


def unique_sent(sent: Iterable[Sent]) -> list[Sent]:
    """The first send of each id (a byte-identical copy has the same id)."""
    first: dict[str, Sent] = {}
    for s in sent:
        first.setdefault(s.frame_id, s)
    return list(first.values())


def duplicates(data: Collected) -> tuple[list[tuple[str, float]], list[str]]:
    """Each copy of a frame beyond the times it was sent, as (frame id, broker time of that
    copy: the later copies are the extra ones); ids whose copies carry different ``ryze-id``
    values (not identifiable)."""
    sent_times = Counter(s.frame_id for s in data.sent)
    copies: dict[str, list[float]] = defaultdict(list)
    ryze_ids: dict[str, set[str]] = defaultdict(set)
    for s in data.seen:
        if s.frame_id is not None:
            copies[s.frame_id].append(s.acked_at)
            ryze_ids[s.frame_id].add(s.ryze_id)
    extra = [
        (frame_id, at)
        for frame_id, times in copies.items()
        if len(times) > sent_times[frame_id] > 0
        for at in sorted(times)[sent_times[frame_id] :]
    ]
    unidentifiable = sorted({f for f, _ in extra if len(ryze_ids[f]) > 1})
    return extra, unidentifiable


def order_violations(seen: Iterable[Seen]) -> list[dict[str, Any]]:
    """Per key (instance) in each topic/stream partition: first occurrences whose send
    sequence is lower than one before them."""
    groups: dict[tuple[str, str, int, int], list[Seen]] = defaultdict(list)
    for s in seen:
        if s.dlq_reason is None and s.frame_id is not None:
            groups[(s.where, s.instance, s.position[0], s.position[1])].append(s)
    violations = []
    for key, records in groups.items():
        highest, first = -1, set()
        for record in sorted(records, key=lambda r: r.position):
            if record.frame_id in first:
                continue
            first.add(record.frame_id)
            seq = seq_of(record.frame_id or "x-0")
            if seq < highest:
                violations.append({"where": key[0], "instance": key[1], "id": record.frame_id})
            highest = max(highest, seq)
    return violations


def isolation(data: Collected) -> list[dict[str, Any]]:
    """For each fault on one instance: the other instances of its bridge, their p99
    receipt→ack over the fault and their DLQ records received during it."""
    out = []
    for fault in data.faults:
        if fault.kind not in ISOLATION_KINDS:
            continue
        others = [
            s
            for s in data.seen
            if data.bridge_of.get(s.instance) == fault.bridge
            and s.instance != fault.target
            and fault.started <= s.received_at <= fault.ended
        ]
        lags = [s.acked_at - s.received_at for s in others if s.dlq_reason is None]
        dlq = sum(1 for s in others if s.dlq_reason is not None)
        p99 = percentile(lags, 0.99)
        ok = p99 < ISOLATION_P99_SECONDS and dlq == 0
        out.append(
            {
                "fault": fault.index,
                "kind": fault.kind,
                "p99": p99,
                "records": len(lags),
                "dlq": dlq,
                "ok": ok,
            }
        )
    return out


def accounting(
    data: Collected, extra: list[tuple[str, float]], why: dict[str, str]
) -> dict[str, Any]:
    """Per bridge (``events_published_total`` counts by event, not by instance), from its
    instances' counters: received - filtered against published + DLQ + counted drops. The
    published counter counts a re-publish again, and misses what a SIGKILLed process
    published after its last scrape: the difference may be as large as the instances'
    duplicates plus their kill tails."""
    dlq = Counter(s.instance for s in data.seen if s.dlq_reason is not None)
    dup = Counter(frame_id.rsplit("-", 1)[0] for frame_id, _ in extra)
    tails = Counter(f.rsplit("-", 1)[0] for f, w in why.items() if w == "tail_at_bridge_kill")
    books: dict[str, dict[str, float]] = {}
    for instance, c in sorted(data.counts.items()):
        bridge = data.bridge_of.get(instance, instance)
        row = books.setdefault(
            bridge,
            {"received_minus_filtered": 0.0, "published": data.published.get(bridge, 0.0),
             "dlq": 0.0, "drops": 0.0, "allowed": 0.0},
        )  # fmt: skip
        row["received_minus_filtered"] += c.received - c.filtered
        row["published"] += c.published
        row["dlq"] += dlq[instance]
        row["drops"] += sum(c.drops.values())
        row["allowed"] += dup[instance] + tails[instance]
    out: dict[str, Any] = {}
    for bridge, row in sorted(books.items()):
        difference = row["received_minus_filtered"] - row["published"] - row["dlq"] - row["drops"]
        out[bridge] = {**row, "difference": difference, "ok": abs(difference) <= row["allowed"]}
    return out


def verdict(data: Collected) -> Verdict:
    """Rows per fault kind and the checks, from everything collected."""
    why, losses = explain_losses(data)
    extra, unidentifiable = duplicates(data)
    rows = table_rows(data, why, extra)
    unexplained = [x for x in losses if x["why"] == "unexplained"]
    dup_bound = data.batch_max_records
    per_fault_dups: Counter[int] = Counter()
    for _, at in extra:
        fault = fault_at(at, data.faults)
        per_fault_dups[fault.index if fault else -1] += 1
    over = {k: v for k, v in per_fault_dups.items() if v > dup_bound}
    violations = order_violations(data.seen)
    iso = isolation(data)
    late = [f for f in data.faults if not recovered(f)]
    books = accounting(data, extra, why)
    dlq_rejected = {
        i: int(c.drops.get("dlq_rejected", 0))
        for i, c in data.counts.items()
        if c.drops.get("dlq_rejected", 0)
    }
    rejected = sum(dlq_rejected.values())
    checks = [
        Check(
            "no_loss",
            not unexplained,
            f"{len(unexplained)} frames lost, unexplained",
            {"by_reason": dict(Counter(x["why"] for x in losses))},
        ),
        Check(
            "duplicates_bounded",
            not over and not unidentifiable,
            f"{len(extra)} duplicates; bound {dup_bound} per fault; "
            f"{len(over)} faults over it; {len(unidentifiable)} ids with differing ryze-id",
            {"per_fault": dict(per_fault_dups), "over": over},
        ),
        Check(
            "order",
            not violations,
            f"{len(violations)} first occurrences out of order",
            {"first": violations[:20]},
        ),
        Check(
            "isolation",
            all(x["ok"] for x in iso),
            f"{sum(not x['ok'] for x in iso)} of {len(iso)} single-instance faults slowed "
            f"or dead-lettered the others",
            {"faults": iso},
        ),
        Check(
            "liveness",
            not late,
            f"{len(late)} of {len(data.faults)} faults not recovered "
            f"within {LIVENESS_SECONDS:.0f} s without a restart",
            {"faults": [f.index for f in late]},
        ),
        Check(
            "accounting",
            all(v["ok"] for v in books.values()),
            f"{sum(not v['ok'] for v in books.values())} bridges whose counters do not add up",
            {"bridges": books},
        ),
        Check(
            "dlq_writes_kept",
            not rejected,
            f"{rejected} records dropped because the DLQ refused them (the contract keeps "
            "them in the spool)",
            {"by_instance": dlq_rejected},
        ),
        Check(
            "no_token_leak",
            not data.leaks,
            f"{len(data.leaks)} places hold a token",
            {"where": data.leaks[:20]},
        ),
    ]
    return Verdict(rows, checks, losses)


def recovered(fault: FaultRun) -> bool:
    """Delivery resumed within the bound after the fault ended, with no restart."""
    if fault.recovered_at is None or fault.restarted:
        return False
    return fault.recovered_at - fault.ended <= LIVENESS_SECONDS


def table_rows(data: Collected, why: dict[str, str], extra: list[tuple[str, float]]) -> list[Row]:
    """One row per fault kind (and one for frames sent before the first fault)."""
    rows: dict[str, Row] = {}
    for fault in data.faults:
        row = rows.setdefault(fault.kind, Row(fault.kind))
        row.injected += 1
        if recovered(fault) and fault.recovered_at is not None:
            took = fault.recovered_at - fault.ended
            row.longest_recovery = max(row.longest_recovery or 0.0, took)
        else:
            row.not_recovered += 1
    delivered = {s.frame_id for s in data.seen if s.dlq_reason is None and s.frame_id}
    dead = {s.frame_id for s in data.seen if s.dlq_reason is not None and s.frame_id}
    for sent in unique_sent(data.sent):
        under = fault_at(sent.at, data.faults)
        kind = under.kind if under else NO_FAULT
        row = rows.setdefault(kind, Row(kind))
        row.sent += 1
        if sent.frame_id in delivered:
            row.delivered += 1
        elif sent.frame_id in dead:
            row.dead_lettered += 1
        else:
            reason = why.get(sent.frame_id, "unexplained")
            row.lost[reason] = row.lost.get(reason, 0) + 1
    for _, at in extra:  # a duplicate belongs to the fault under which it was published
        under = fault_at(at, data.faults)
        kind = under.kind if under else NO_FAULT
        rows.setdefault(kind, Row(kind)).duplicated += 1
    return sorted(rows.values(), key=lambda r: (r.kind != NO_FAULT, r.kind))
