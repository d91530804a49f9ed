"""Gap markers: the record the bridge writes when an instance's stream had a hole (pure).

The upstream replays nothing, so whenever a socket comes back (after a drop, a restart of the
bridge, a shard moving) the events emitted meanwhile are lost upstream. The marker says so,
routed like that instance's events (keyed by it), with the window: the last frame before and
the first moment connected after. Its envelope mirrors the upstream's:
``{event, data, instanceData}``.
"""

from __future__ import annotations

import orjson

from bridge.pipeline.records import rfc3339

GAP_EVENT = "bridge.gap"
GAP_REASONS = ("reconnect", "bridge_start", "bridge_restart", "shard_takeover")


def gap_value(
    instance: str,
    *,
    reason: str,
    detail: str | None,
    last_frame_ns: int | None,
    connected_ns: int,
    replica: str,
) -> bytes:
    """The JSON value of a gap marker (keys in a fixed order, times in RFC 3339 UTC)."""
    gap = None if last_frame_ns is None else round((connected_ns - last_frame_ns) / 1e9, 6)
    return orjson.dumps(
        {
            "event": GAP_EVENT,
            "data": {
                "instance": instance,
                "reason": reason,
                "detail": detail,
                "last_frame_at": None if last_frame_ns is None else rfc3339(last_frame_ns),
                "connected_at": rfc3339(connected_ns),
                "gap_seconds": gap,
                "replica": replica,
            },
            "instanceData": {"instance": instance},
        }
    )
