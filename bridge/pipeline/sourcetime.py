"""When the upstream says a frame happened, where the frame says it (pure, lenient).

The upstream documents no server timestamp in the envelope, but its messages carry one
(``data.message.timestamp``, ISO-8601 UTC in the catalog; ``data.timestamp`` in the live
layout), and other events may. :func:`upstream_lag` turns that into an estimate of how long
the frame took to reach the bridge: only those members are read (every other value is
skipped unparsed), an ISO-8601 text or a Unix time in s, ms, µs or ns is accepted, and
anything odd (another type, a text that is no time, a value beyond the bounds) gives None,
never an exception. A time without a zone is taken as UTC, as the upstream's are.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

MAX_LAG_SECONDS = 86_400.0  # older than a day: a replayed or mis-stamped frame, not lag
MAX_AHEAD_SECONDS = 5.0  # ahead of the bridge's clock by more: not this frame's send time
MAX_TEXT = 40  # longer than any time format


class _Holder(msgspec.Struct):
    """``data`` or ``data.message``: the members that may hold the time, the rest skipped."""

    timestamp: Any = None
    moment: Any = None
    message: msgspec.Raw = msgspec.Raw()  # kept unparsed: it may be anything


class _Envelope(msgspec.Struct):
    data: msgspec.Raw = msgspec.Raw()  # empty when absent


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_HOLDER = msgspec.json.Decoder(_Holder)


def source_time(raw: bytes) -> Any:
    """The raw time member of a frame (``data.message`` first, then ``data``), or None."""
    try:
        data = _ENVELOPE.decode(raw).data
        holder = _HOLDER.decode(data) if len(data) else _Holder()
    except msgspec.DecodeError:  # not JSON, or not an object where one is expected
        return None
    found = _time_of(holder.message) if len(holder.message) else None
    if found is not None:
        return found
    return holder.timestamp if holder.timestamp is not None else holder.moment


def _time_of(message: msgspec.Raw) -> Any:
    try:
        inner = _HOLDER.decode(message)
    except msgspec.DecodeError:  # a message that is no object has no time of its own
        return None
    return inner.timestamp if inner.timestamp is not None else inner.moment


def epoch_seconds(value: Any) -> float | None:
    """A time member as Unix seconds: ISO-8601 text, or a number (or digits) in s, ms, µs or
    ns told apart by magnitude; None for anything else."""
    if isinstance(value, str):
        return _text_seconds(value) if len(value) <= MAX_TEXT else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # a 400-digit integer overflows a float
    except OverflowError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    for bound, unit in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if number >= bound:
            return number / unit
    return number


def _text_seconds(text: str) -> float | None:
    digits = text.replace(".", "", 1)
    if digits.isascii() and digits.isdigit():  # a Unix time written as digits ("²" is no digit)
        return epoch_seconds(float(text))
    return _iso_seconds(text)


def _iso_seconds(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def upstream_lag(raw: bytes, received_ns: int) -> float | None:
    """Seconds from the frame's own time to its receipt (a time slightly ahead, within the
    clocks' skew, is 0), or None where the frame carries no usable time; never raises."""
    try:
        return _lag(raw, received_ns)
    except (ValueError, OverflowError, TypeError, RecursionError):
        # total: an estimate is not worth a runner (the frame is already spooled)
        return None


def _lag(raw: bytes, received_ns: int) -> float | None:
    sent = epoch_seconds(source_time(raw))
    if sent is None:
        return None
    lag = received_ns / 1e9 - sent
    if lag > MAX_LAG_SECONDS or lag < -MAX_AHEAD_SECONDS:
        return None
    return max(0.0, lag)
