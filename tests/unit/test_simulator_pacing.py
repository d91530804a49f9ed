"""The simulator's generators wake when a frame is due, not 50 times a second: thousands of
quiet instances (the fleet benchmarks) must not cost the simulator a core of its own."""

from __future__ import annotations

import pytest

from bridge.simulator.server import MAX_WAIT, next_wait, phased_start


def test_a_quiet_instance_sleeps_until_its_next_frame_at_most_the_max_wait() -> None:
    """At 0.05 events/s the next frame is 20 s away: the generator sleeps the longest wait
    (so a knob's new rate still applies within it); a second before it is due, a second."""
    assert next_wait(0.05, elapsed=0.0, sent=0) == MAX_WAIT
    assert next_wait(0.05, elapsed=19.0, sent=0) == pytest.approx(1.0)
    assert next_wait(0.05, elapsed=19.5, sent=0) == pytest.approx(0.5)


def test_a_due_or_late_frame_waits_only_the_batching_floor() -> None:
    """A frame already due (the loop was late) waits no longer than the old 20 ms floor, or a
    frame's spacing at high rates: frames then go in batches, the rate kept by the count."""
    assert next_wait(2.0, elapsed=5.0, sent=3) == pytest.approx(0.02)
    assert next_wait(1000.0, elapsed=1.0, sent=900) == pytest.approx(0.001)


def test_between_frames_it_sleeps_the_time_left() -> None:
    """At 10 events/s, 1 frame sent and 0.15 s gone, the second is due in 50 ms."""
    assert next_wait(10.0, elapsed=0.15, sent=1) == pytest.approx(0.05)


def test_as_fast_as_possible_only_yields() -> None:
    """Rate 0 (as fast as the client reads) and any rate below it never sleep here."""
    assert next_wait(0.0, elapsed=3.0, sent=10) == 0.0


def test_a_schedule_starts_within_one_spacing_of_now() -> None:
    """A new rate's schedule counts from ``now`` moved back by the draw's share of one frame's
    spacing: at 1/s a draw of 0.25 counts from 0.25 s ago, so the first frame is due 0.75 s
    from now (never at once: no frame is due yet), and each draw gives its own phase."""
    start = phased_start(10.0, 1.0, 0.25)
    assert start == pytest.approx(9.75)
    assert int((10.0 - start) * 1.0) == 0  # nothing due yet
    assert next_wait(1.0, elapsed=10.0 - start, sent=0) == pytest.approx(0.75)
    assert phased_start(10.0, 4.0, 0.5) == pytest.approx(9.875)
    assert phased_start(10.0, 0.0, 0.9) == 10.0  # as fast as possible: no phase
    assert phased_start(10.0, -1.0, 0.9) == 10.0  # no events
