"""When each instance last delivered a frame, kept across restarts (in the spool directory).

A gap marker after a restart needs the time of the last frame the previous process read; the
spool keeper (:mod:`bridge.spoolkeeper`) saves this small map every second and at shutdown
(write, rename). A save that fails (disk full) is logged once, keeps the map to save, and is
tried again next time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bridge.logs import get_logger
from bridge.spool.files import replace_file

log = get_logger(__name__)


@dataclass
class LastSeen:
    path: Path | None = None
    _seen: dict[str, int] = field(default_factory=dict)
    _previous: dict[str, int] = field(default_factory=dict)
    _dirty: bool = False
    _failing: bool = False

    def load(self) -> None:
        """Read what the previous process saved (a missing or broken file is an empty map)."""
        if self.path is None:
            return
        with contextlib.suppress(OSError, orjson.JSONDecodeError, TypeError):
            data = orjson.loads(self.path.read_bytes())
            self._previous = {str(k): int(v) for k, v in data.items()}
            self._seen = dict(self._previous)

    def previous(self, instance: str) -> int | None:
        """The last frame time (ns) the previous process saw for ``instance``."""
        return self._previous.get(instance)

    def get(self, instance: str) -> int | None:
        return self._seen.get(instance)

    def set(self, instance: str, ns: int) -> None:
        self._seen[instance] = ns
        self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            replace_file(self.path, orjson.dumps(self._seen), fsync=False)
        except OSError as exc:
            if not self._failing:
                log.warning("lastseen.save_failed", error=exc.strerror or str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("lastseen.saved_again")
        self._failing = False
        self._dirty = False
