"""Names that come from the upstream are data, never structure (pure).

An event name and an instance name end up inside topic and stream names, Redis keys and
metric labels; a name that could steer where data goes is refused before it gets there:

- an **event name** must match ``EVENT_NAME_PATTERN`` (lower-case letters, digits, ``.`` and ``-``,
  at most 64 characters) and must not be in the bridge's own ``bridge.`` namespace (an upstream
  frame named ``bridge.gap`` would pass for a gap marker); a frame whose event fails either test
  goes to the DLQ with the reason ``invalid_event``;
- an **instance name** (configured or discovered) must match ``INSTANCE_NAME_PATTERN``: no
  ``.`` or ``:``, the separators of the routing templates, so two instances can never fill a
  template to the same topic or stream.

Both patterns are matched against the whole string (``fullmatch``: ``$`` would let a trailing
newline through).
"""

from __future__ import annotations

import re
import string

from bridge.pipeline.events import EVENT_NAMES

EVENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"
INSTANCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
BRIDGE_NAMESPACE = "bridge."
INSTANCE_CHARS = frozenset(string.ascii_letters + string.digits + "_-")  # all it may hold
INVALID_EVENT = "invalid_event"  # the DLQ reason

_EVENT = re.compile(EVENT_NAME_PATTERN.strip("^$"))
_INSTANCE = re.compile(INSTANCE_NAME_PATTERN.strip("^$"))
_DOCUMENTED = frozenset(EVENT_NAMES)


def is_safe_event(event: str) -> bool:
    """Whether an upstream event name may name a topic, a stream or a label: the safe pattern
    and outside the ``bridge.`` namespace (the six documented names answer at once)."""
    if event in _DOCUMENTED:
        return True
    return _EVENT.fullmatch(event) is not None and not event.startswith(BRIDGE_NAMESPACE)


def is_valid_instance(name: str) -> bool:
    """Whether ``name`` may name an instance (and so fill ``{instance}`` in a template)."""
    return _INSTANCE.fullmatch(name) is not None


def invalid_event_error(event: str) -> str:
    """The DLQ error of a refused event name: why, never the name itself (it is in the value,
    masked like the rest of it)."""
    if event.startswith(BRIDGE_NAMESPACE):
        return "event name in the bridge's own 'bridge.' namespace"
    return f"event name of {len(event)} characters outside {EVENT_NAME_PATTERN}"
