"""Client-side request budget per token, shared by REST calls and WebSocket upgrades.

The upstream allows 100 requests per minute per token, counted in a fixed window that resets
at ``X-RateLimit-Reset``. The bucket here refills continuously at ``per_minute`` with a small
burst, so a thousand instances restarting spread their requests instead of tripping the
limit; it also obeys what the server says: ``Remaining`` caps what may be spent before
``Reset``, and a 429 blocks the token until ``Reset``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

Clock = Callable[[], float]
_EPSILON = 1e-6
_MIN_WAIT = 0.001
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class TokenBucket:
    """Continuous refill of ``per_minute`` with at most ``burst`` saved up."""

    per_minute: float
    burst: float = 10.0
    clock: Clock = time.time
    sleep: Sleep = asyncio.sleep
    _tokens: float = field(init=False)
    _updated: float = field(init=False)
    _blocked_until: float = 0.0
    _server_remaining: int | None = None
    _server_reset: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._tokens = self.burst
        self._updated = self.clock()

    def wait_time(self) -> float:
        """Seconds until one request may be spent (0 when one may go now)."""
        now = self.clock()
        self._refill(now)
        waits = [self._blocked_until - now]
        if self._server_remaining is not None and self._server_remaining <= 0:
            waits.append(self._server_reset - now)
        if self._tokens < 1 - _EPSILON:
            waits.append(max(_MIN_WAIT, (1 - self._tokens) * 60.0 / self.per_minute))
        return max(0.0, *waits)

    async def acquire(self) -> float:
        """Wait for and spend one request; return the seconds waited."""
        waited = 0.0
        async with self._lock:
            while (delay := self.wait_time()) > 0:
                await self.sleep(delay)
                waited += delay
            self._tokens = max(0.0, self._tokens - 1)
            if self._server_remaining is not None:
                self._server_remaining -= 1
        return waited

    def observe(self, remaining: int | None, reset_at: float | None) -> None:
        """Take in the server's ``X-RateLimit-Remaining`` / ``-Reset`` of a response."""
        if remaining is None or reset_at is None:
            return
        if reset_at > self._server_reset:
            self._server_reset = reset_at
            self._server_remaining = remaining
        elif self._server_remaining is not None:
            self._server_remaining = min(self._server_remaining, remaining)

    def block_until(self, reset_at: float) -> None:
        """A 429 was answered: spend nothing until ``reset_at`` (Unix seconds)."""
        self._blocked_until = max(self._blocked_until, reset_at)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.per_minute / 60.0)
        self._updated = now
        if self._server_remaining is not None and now >= self._server_reset:
            self._server_remaining = None


@dataclass
class BucketRegistry:
    """One bucket per token, found by a digest of the token (never by the token itself)."""

    per_minute: float
    burst: float = 10.0
    clock: Clock = time.time
    sleep: Sleep = asyncio.sleep
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def for_token(self, token: SecretStr) -> TokenBucket:
        digest = hashlib.sha256(token.get_secret_value().encode()).hexdigest()
        bucket = self._buckets.get(digest)
        if bucket is None:
            bucket = TokenBucket(self.per_minute, self.burst, self.clock, self.sleep)
            self._buckets[digest] = bucket
        return bucket


RESET_MAX_SECONDS = 120.0  # the limit is per minute: a reset further out than this is not believed


def usable_reset(reset_at: float | None, now: float) -> float | None:
    """``reset_at`` when it is a usable wait from ``now`` (in the future, at most
    ``RESET_MAX_SECONDS`` away); None otherwise — missing, past, or absurd (pure)."""
    if reset_at is None or not now < reset_at <= now + RESET_MAX_SECONDS:
        return None
    return reset_at


def parse_rate_headers(headers: dict[str, str]) -> tuple[int | None, float | None]:
    """``X-RateLimit-Remaining`` and ``-Reset`` from response headers, each when present and
    well formed (a 429 with a reset and no remaining still says when to come back) (pure)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    remaining = _number(lowered.get("x-ratelimit-remaining"), int)
    reset_at = _number(lowered.get("x-ratelimit-reset"), float)
    return (None if remaining is None else int(remaining)), reset_at


def _number(text: str | None, kind: Callable[[str], float]) -> float | None:
    """``kind(text)``, or None when there is no text or it does not parse (pure)."""
    try:
        return None if text is None else kind(text)
    except ValueError:
        return None
