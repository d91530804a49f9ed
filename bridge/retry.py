"""The one retry policy of the bridge: every loop that waits before trying again uses it.

A :class:`RetryPolicy` is a value (frozen): exponential backoff with *full jitter*. Retry
``attempt`` (1-based) waits a delay drawn uniformly from ``[0, ceiling(attempt)]`` where
``ceiling(attempt) = min(maximum, initial * multiplier ** (attempt - 1))`` — so the first retry
waits at most ``initial``, and many loops failing together do not retry together.

A :class:`Backoff` is one loop's place in its policy: the attempt counter, and when the thing
it retries last became healthy (:meth:`Backoff.healthy`: a socket open, a worker started). A
failure after ``healthy_after`` seconds of health starts the count again from the first retry,
so a long-lived connection that drops once reconnects quickly.

Where a reason names its own wait (a 429's ``X-RateLimit-Reset``), the loop passes it as
``hint`` and the wait is ``max(hint, drawn backoff)``: the server's time is never undercut, and
loops blocked by the same reset do not all come back at the same instant once the backoff has
grown past it. The attempt still counts.

Pure: no clock is read (``now`` is an argument, any monotonic seconds) and the random source
is an argument (seed one for tests).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_RNG = random.Random()  # noqa: S311 - jitter, not crypto
_MAX_EXPONENT = 64  # past this the ceiling is ``maximum`` anyway; bounds the power


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: see the module docstring."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    healthy_after: float = math.inf  # seconds of health after which the attempt count resets

    def ceiling(self, attempt: int) -> float:
        """The longest wait of retry ``attempt`` (1-based; below 1 counts as 1)."""
        exponent = max(0, min(attempt, _MAX_EXPONENT) - 1)
        return float(min(self.maximum, self.initial * self.multiplier**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``attempt``: uniform in ``[0, ceiling(attempt)]``."""
        return (rng or _RNG).uniform(0.0, self.ceiling(attempt))

    def start(self, rng: random.Random | None = None) -> Backoff:
        """A fresh loop state on this policy."""
        return Backoff(self, rng)


class Backoff:
    """One retry loop's state: how many retries in a row, and since when it has been healthy."""

    __slots__ = ("_healthy_since", "attempt", "policy", "rng")

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng
        self.attempt = 0
        self._healthy_since: float | None = None

    def healthy(self, now: float) -> None:
        """What this loop retries works since ``now`` (connected, started)."""
        self._healthy_since = now

    def next_delay(self, now: float, hint: float | None = None) -> float:
        """It failed at ``now``: the seconds to wait before the next try. A health period of
        at least ``healthy_after`` before it resets the count; ``hint`` is a reason's own wait
        (the result is then never shorter than it)."""
        since, self._healthy_since = self._healthy_since, None
        if since is not None and now - since >= self.policy.healthy_after:
            self.attempt = 0
        self.attempt += 1
        drawn = self.policy.delay(self.attempt, self.rng)
        return drawn if hint is None else max(hint, drawn)

    def reset(self) -> None:
        """Start counting again from the first retry."""
        self.attempt = 0
        self._healthy_since = None
