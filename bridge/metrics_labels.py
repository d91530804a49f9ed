"""Label values built from what the upstream sends, folded to a bounded set of the code's
own names (pure): an upstream that invents event names or close codes adds no series."""

from __future__ import annotations

from bridge.pipeline.filter import is_known_event
from bridge.pipeline.gap import GAP_EVENT

BRIDGE_EVENTS = frozenset({GAP_EVENT})  # the bridge's own documented events


def event_label(event: str) -> str:
    """The event as a label value: one of the six documented names, the bridge's own
    (``bridge.gap``), or ``other`` (never a name the upstream made up)."""
    return event if is_known_event(event) or event in BRIDGE_EVENTS else "other"


STANDARD_CLOSE = range(1000, 1016)  # the WebSocket protocol's own close codes
HTTP_NAMED = frozenset({400, 401, 403, 404, 429})


def reason_label(reason: str) -> str:
    """A reconnect reason as a label value (pure): the code's own names as they are; a close
    code the upstream chose outside the protocol's range as ``close_other``; an HTTP status
    other than the ones with a meaning of their own as its class (``http_5xx``)."""
    kind, _, number = reason.partition("_")
    if not number.isdigit():
        return reason
    code = int(number)
    if kind == "close":
        return reason if code in STANDARD_CLOSE else "close_other"
    if kind == "http":
        return reason if code in HTTP_NAMED else f"http_{min(code // 100, 9)}xx"
    return reason
