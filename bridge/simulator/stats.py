"""What the simulator counts, for tests and benchmarks to assert on."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_IDS = 2_000_000


@dataclass
class InstanceStats:
    upgrades: int = 0
    rejected: Counter[int] = field(default_factory=Counter)
    closed: int = 0
    max_sockets: int = 0
    frames_sent: int = 0
    pong_timeouts: int = 0
    unheard: int = 0  # events emitted while the instance had no socket (always_emit)
    config_posts: int = 0
    ids: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # Unix time each id went out
    frames: list[bytes] = field(default_factory=list)

    def record(self, frame_id: str | None, frame: bytes | None) -> None:
        self.frames_sent += 1
        if frame_id is not None and len(self.ids) < MAX_IDS:
            self.ids.append(frame_id)
            self.sent_at.append(time.time())
        if frame is not None:
            self.frames.append(frame)

    def summary(self, open_sockets: int) -> dict[str, Any]:
        return {
            "upgrades": self.upgrades,
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "open_sockets": open_sockets,
            "max_sockets": self.max_sockets,
            "frames_sent": self.frames_sent,
            "pong_timeouts": self.pong_timeouts,
            "unheard": self.unheard,
            "config_posts": self.config_posts,
        }
