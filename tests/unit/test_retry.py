"""The one retry policy: exponential ceilings within bounds, full jitter over [0, ceiling],
the count reset after a healthy period, and a reason's own wait (a 429's reset) as a floor."""

from __future__ import annotations

import math
import random

import pytest

from bridge.retry import RetryPolicy


def test_ceilings_grow_by_the_multiplier_up_to_the_maximum() -> None:
    """The first retry waits at most ``initial``; each next one ``multiplier`` times more,
    never past ``maximum``, however many attempts (no overflow at huge counts)."""
    policy = RetryPolicy(0.5, 10.0, multiplier=3.0)
    assert [policy.ceiling(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert policy.ceiling(0) == 0.5
    assert policy.ceiling(10**9) == 10.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_full_jitter_spans_zero_to_the_ceiling(seed: int) -> None:
    """Full jitter: uniform over [0, ceiling] — the draws stay inside it and fill both its
    lower and upper quarters (a draw of uniform(c/2, c) would leave the lower half empty)."""
    policy = RetryPolicy(1.0, 8.0)
    rng = random.Random(seed)
    delays = [policy.delay(4, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 2.0
    assert max(delays) > 6.0
    assert 3.5 < sum(delays) / len(delays) < 4.5


def test_a_seeded_loop_is_reproducible() -> None:
    """Two loops on the same policy and seed wait exactly the same (tests can pin waits)."""
    policy = RetryPolicy(0.1, 5.0)
    one, two = policy.start(random.Random(7)), policy.start(random.Random(7))
    assert [one.next_delay(0.0) for _ in range(8)] == [two.next_delay(0.0) for _ in range(8)]


def test_attempts_grow_until_a_healthy_period_resets_them() -> None:
    """Failures in a row raise the count; health shorter than ``healthy_after`` keeps it;
    health at least that long starts again from the first retry."""
    policy = RetryPolicy(1.0, 60.0, healthy_after=30.0)
    loop = policy.start(random.Random(1))
    for now in (0.0, 1.0, 2.0):
        loop.next_delay(now)
    assert loop.attempt == 3
    loop.healthy(10.0)
    loop.next_delay(39.9)  # healthy for 29.9 s: not long enough
    assert loop.attempt == 4
    loop.healthy(100.0)
    delay = loop.next_delay(130.0)  # healthy for 30 s: the count starts again
    assert loop.attempt == 1
    assert 0.0 <= delay <= 1.0


def test_health_is_forgotten_after_the_failure_that_ends_it() -> None:
    """A failure ends the healthy period: later failures without a new ``healthy`` keep
    counting up, however much time passes between them."""
    loop = RetryPolicy(1.0, 60.0, healthy_after=30.0).start(random.Random(1))
    loop.healthy(0.0)
    loop.next_delay(100.0)
    loop.next_delay(1000.0)
    assert loop.attempt == 2


def test_without_healthy_after_the_count_never_resets_by_itself() -> None:
    """The default healthy period is endless: only :meth:`reset` starts the count again."""
    loop = RetryPolicy(1.0, 60.0).start(random.Random(1))
    assert loop.policy.healthy_after == math.inf
    loop.healthy(0.0)
    loop.next_delay(1e9)
    loop.healthy(1e9)
    loop.next_delay(2e9)
    assert loop.attempt == 2
    loop.reset()
    assert loop.attempt == 0


def test_a_hint_is_a_floor_and_the_attempt_still_counts() -> None:
    """A reason's own wait (a 429's reset in 30 s) is never undercut; once the backoff has
    grown past it the longer backoff is the wait; the attempt counts either way."""
    policy = RetryPolicy(1.0, 1000.0)
    loop = policy.start(random.Random(3))
    assert loop.next_delay(0.0, hint=30.0) == 30.0  # a draw in [0, 1]
    assert loop.attempt == 1
    rng = random.Random(5)
    late = policy.start(rng)
    late.attempt = 20  # ceiling 1000
    drawn = [late.next_delay(0.0, hint=30.0) for _ in range(200)]
    assert all(d >= 30.0 for d in drawn)
    assert max(drawn) > 500.0
    assert late.attempt == 220
