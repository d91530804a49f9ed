"""The source's clock in the frames: a send time stamped when a frame is written to the socket.

With ``SimConfig.stamp_sent`` every generated frame carries its send time in a field the
upstream plausibly has: ``data.message.timestamp`` of a message (the catalog's ISO-8601 UTC
field), ``data.timestamp`` of any other event (where the live layout keeps it). The frame is
built once with a fixed-width placeholder there, and the placeholder is replaced by the clock
at the moment of sending (a frame from a pre-built pool gets a fresh stamp each time). The
stamp is ISO-8601 UTC with microseconds (``2026-12-01T21:15:57.123456Z``): the precision the
benchmark's latency part needs, in a form the bridge's upstream-lag estimate reads as any
upstream timestamp.
"""

from __future__ import annotations

import time
from typing import Any

PLACEHOLDER = "0000-00-00T00:00:00.000000Z"  # as wide as every stamp (years 1000-9999)
PLACEHOLDER_BYTES = PLACEHOLDER.encode()


def put_placeholder(doc: dict[str, Any]) -> None:
    """Give a frame document its send-time field, holding the placeholder for now."""
    data = doc.get("data")
    if not isinstance(data, dict):
        data = doc["data"] = {}
    message = data.get("message")
    holder = message if isinstance(message, dict) else data
    holder["timestamp"] = PLACEHOLDER


def iso_us(ns: int) -> bytes:
    """``ns`` since the epoch as ISO-8601 UTC with microseconds, as wide as the placeholder."""
    seconds, rest = divmod(ns, 1_000_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{head}.{rest // 1000:06d}Z".encode()


def stamped(frame: bytes, now_ns: int) -> bytes:
    """``frame`` with its placeholder replaced by ``now_ns`` (unchanged without one)."""
    return frame.replace(PLACEHOLDER_BYTES, iso_us(now_ns), 1)
