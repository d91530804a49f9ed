"""A bounded window of recently seen ``ryze-id``s, for dropping the bridge's re-deliveries."""

from __future__ import annotations

from collections import OrderedDict


class SeenWindow:
    """Remembers the last ``size`` ids; ``first_time(id)`` is True once per id in the window."""

    def __init__(self, size: int = 10_000) -> None:
        if size < 1:
            raise ValueError(f"the window must hold at least one id, not {size}")
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, record_id: str) -> bool:
        if record_id in self._ids:
            self._ids.move_to_end(record_id)
            return False
        self._ids[record_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
