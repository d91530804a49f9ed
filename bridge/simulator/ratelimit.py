"""The upstream's rate limit: one fixed window per token (pure, injectable clock).

Every REST call and every upgrade attempt counts. Every answer carries
``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (Unix seconds of the window's end).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass
class FixedWindowLimiter:
    limit: int = 100
    window: float = 60.0
    clock: Callable[[], float] = time.time
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def hit(self, token: str) -> Verdict:
        """Count one request of ``token``; say whether it may go through."""
        now = self.clock()
        start, used = self._windows.get(token, (now, 0))
        if now >= start + self.window:
            start, used = now, 0
        allowed = used < self.limit
        if allowed:
            used += 1
        self._windows[token] = (start, used)
        reset = math.ceil(start + self.window)
        return Verdict(allowed, self.limit, max(0, self.limit - used), reset)
