"""Latency from the source's clock, hop by hop (pure): what one record's four times say.

A record carries its source's send time in its value (the simulator's ``--stamp-sent``:
``data.message.timestamp`` or ``data.timestamp``, ISO-8601 UTC with microseconds), the bridge's
receipt in its ``ryze-received-at`` header, the broker's append time as its timestamp (the
bench topics keep ``LogAppendTime``; milliseconds), and the consumer notes when its poll
returned it. Four hops follow: ``source`` (sent → received by the bridge: the socket and the
bridge's reader), ``bridge`` (received → appended by the broker: spool, shipper, producer,
broker), ``consumer`` (appended → in the consumer's hands) and ``total`` (sent → consumer). A
peer that stamps no receipt has ``source`` and ``bridge`` folded into ``to_broker``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

HOPS = ("source", "bridge", "consumer", "total")
PEER_HOPS = ("to_broker", "consumer", "total")
QUANTILES = {"p50": 0.5, "p99": 0.99, "p999": 0.999}


@dataclass(frozen=True, slots=True)
class Times:
    """One record's times, in ns since the epoch (``received`` None for a peer)."""

    sent: int
    received: int | None
    appended: int
    seen: int

    def hops(self) -> dict[str, float]:
        """Each hop's duration in ms."""
        found = {
            "consumer": (self.seen - self.appended) / 1e6,
            "total": (self.seen - self.sent) / 1e6,
        }
        if self.received is None:
            found["to_broker"] = (self.appended - self.sent) / 1e6
        else:
            found["source"] = (self.received - self.sent) / 1e6
            found["bridge"] = (self.appended - self.received) / 1e6
        return found


def iso_ns(text: str) -> int | None:
    """An ISO-8601 time as ns since the epoch, or None for anything else."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


def sent_ns(value: bytes) -> int | None:
    """The source's send time stamped in a record's value, or None."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        return None
    message = data.get("message")
    holder: Any = message if isinstance(message, dict) else data
    stamp = holder.get("timestamp")
    return iso_ns(stamp) if isinstance(stamp, str) else None


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def percentiles(values: list[float]) -> dict[str, float | int]:
    """count, p50/p99/p999 and max of ``values`` (ms), nearest-rank."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    found: dict[str, float | int] = {"count": len(ordered)}
    for name, q in QUANTILES.items():
        found[name] = round(nearest_rank(ordered, q), 3)
    found["max"] = round(ordered[-1], 3)
    return found


def band(q: float) -> tuple[float, float]:
    """The ranks around quantile ``q`` whose records show what a record at ``q`` is made of:
    half the distance to the end on either side (p50: 25-75 %, p99: 98.5-99.5 %)."""
    half = (1 - q) / 2
    return q - half, q + half


def shares(records: list[dict[str, float]], hops: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per quantile, each hop's mean share (%) of the total in the records of its band (the
    hops ordered by total); where the tail comes from, not a guess."""
    ordered = sorted(records, key=lambda r: r["total"])
    found: dict[str, dict[str, float]] = {}
    for name, q in QUANTILES.items():
        low, high = band(q)
        chosen = ordered[int(low * len(ordered)) : max(1, int(high * len(ordered)))]
        whole = sum(r["total"] for r in chosen)
        if not chosen or whole <= 0:
            continue
        found[name] = {
            hop: round(100 * sum(r[hop] for r in chosen) / whole, 1)
            for hop in hops
            if hop != "total"
        }
        found[name]["total_ms"] = round(whole / len(chosen), 3)
    return found


def summary(records: list[dict[str, float]], hops: tuple[str, ...]) -> dict[str, Any]:
    """Each hop's own percentiles and the hops' shares at each quantile of the total."""
    return {
        "hops_ms": {hop: percentiles([r[hop] for r in records]) for hop in hops},
        "share_pct": shares(records, hops),
    }
