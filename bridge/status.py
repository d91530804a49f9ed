"""The status of a fleet, pure: each instance's state, the filters of ``/instances`` and of
``ryze-bridge status``, the summary, and the merge of several replicas' answers.

States are exclusive (the same as ``ryze_bridge_instances{state}``, plus ``paused``):
``connected``; ``silent`` (the socket is open but nothing, not even a ping, was heard for
longer than ``admin.ready_max_silence_seconds``); ``connecting`` (starting, reconnecting,
disconnected); ``failed`` (the upstream refused the token or the instance); ``paused`` (by an
operator). A row keeps the runner's own word for where it is as ``phase``.

Rows are ordered trouble first (failed, connecting, silent, paused, connected), then by
name, so ``limit`` keeps the rows an operator wants to see; a replica applies the filters and
the limit itself, so 5,000 rows are not shipped to print ten.
"""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

STATES = ("failed", "connecting", "silent", "paused", "connected")
QUERY_KEYS = ("state", "name", "limit")
LIMIT_DIGITS = 9  # a limit is a row count: more digits are no use, and int() of 5,000 is slow

Row = dict[str, object]


def fleet_state(row: Row, max_silence: float) -> str:
    """The exclusive state of one ``/instances`` row (pure)."""
    phase = row.get("state")
    if phase in ("failed", "paused"):
        return str(phase)
    if phase == "connected":
        silent_for = row.get("seconds_since_last_frame")
        if isinstance(silent_for, int | float) and silent_for > max_silence:
            return "silent"
        return "connected"
    return "connecting"


def with_states(rows: dict[str, Row], max_silence: float) -> dict[str, Row]:
    """Each row with its exclusive ``state``; the runner's own word moves to ``phase``."""
    out = {}
    for name, row in rows.items():
        state = fleet_state(row, max_silence)
        out[name] = {**row, "state": state}
        if row.get("state") != state:
            out[name]["phase"] = row.get("state")
    return out


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """Which rows to send: states (empty: all), a name glob, at most ``limit`` (0: all)."""

    states: frozenset[str] = frozenset()
    name: str = "*"
    limit: int = 0

    def params(self) -> dict[str, str]:
        """The query as ``/instances`` parameters (what :func:`parse_query` reads back)."""
        params = {"name": self.name, "limit": str(self.limit)}
        if self.states:
            params["state"] = ",".join(s for s in STATES if s in self.states)
        return params

    def matches(self, name: str, row: Row) -> bool:
        if self.states and row.get("state") not in self.states:
            return False
        return self.name == "*" or fnmatch.fnmatchcase(name, self.name)


def parse_states(text: str) -> frozenset[str] | str:
    """``failed,connecting`` as a set of states, or why not (pure)."""
    states = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(states - set(STATES))
    if unknown:
        return f"unknown state {', '.join(unknown)} (one of {', '.join(STATES)})"
    return states


def parse_query(params: Mapping[str, str]) -> StatusQuery | str:
    """``/instances`` query parameters as a :class:`StatusQuery`, or why they are refused."""
    unknown = sorted(set(params) - set(QUERY_KEYS))
    if unknown:
        return f"unknown parameter {', '.join(unknown)} (known: {', '.join(QUERY_KEYS)})"
    states = parse_states(params.get("state", ""))
    if isinstance(states, str):
        return states
    limit = params.get("limit", "0")
    if not (limit.isascii() and limit.isdigit()) or len(limit) > LIMIT_DIGITS:
        shown = limit[:20]
        return f"limit: {shown!r} is no whole number of at most {LIMIT_DIGITS} digits (0: all)"
    return StatusQuery(states, params.get("name", "*") or "*", int(limit))


def order(item: tuple[str, Row]) -> tuple[int, str]:
    """Trouble first, then by name."""
    name, row = item
    state = row.get("state")
    return (STATES.index(state) if state in STATES else len(STATES), name)


def summary(states: Iterable[object]) -> dict[str, int]:
    """How many instances are in each state, and ``total``."""
    counts = dict.fromkeys(STATES, 0)
    for state in states:
        if isinstance(state, str) and state in counts:
            counts[state] += 1
    return {**counts, "total": sum(counts.values())}


def select(rows: dict[str, Row], query: StatusQuery) -> dict[str, object]:
    """The ``/instances`` answer: ``summary`` over every row, ``matched`` (rows the filters
    keep), ``instances`` (those rows, trouble first, at most ``limit``)."""
    kept = [(n, r) for n, r in rows.items() if query.matches(n, r)]
    if query.limit:
        shown = heapq.nsmallest(query.limit, kept, key=order)
    else:
        shown = sorted(kept, key=order)
    return {
        "summary": summary(r.get("state") for r in rows.values()),
        "matched": len(kept),
        "instances": dict(shown),
    }
