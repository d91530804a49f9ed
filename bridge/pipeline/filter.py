"""The local filter, applied after the upstream's server-side one (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.pipeline.events import EVENT_NAMES

KNOWN_EVENTS = frozenset(EVENT_NAMES)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Drops the events named in ``drop_events``; everything else passes."""

    drop_events: frozenset[str] = frozenset()

    def keeps(self, event: str) -> bool:
        return event not in self.drop_events


def is_known_event(event: str) -> bool:
    """Whether ``event`` is one of the six the upstream documents (unknown ones still flow)."""
    return event in KNOWN_EVENTS
