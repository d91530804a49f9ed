"""The soak's fault schedule is a pure function of its seed."""

from __future__ import annotations

from soak.schedule import MENU, build_schedule

INSTANCES = {"kafka": ["k00", "k01", "k02"], "redis": ["r00", "r01", "r02"]}


def test_the_same_seed_gives_the_same_schedule() -> None:
    """Two schedules from one seed are equal fault for fault (kind, target, duration, gap,
    params), so ``make soak SEED=…`` replays a run."""
    assert build_schedule(42, 60, INSTANCES) == build_schedule(42, 60, INSTANCES)


def test_different_seeds_give_different_schedules() -> None:
    """Another seed gives another schedule."""
    assert build_schedule(1, 30, INSTANCES) != build_schedule(2, 30, INSTANCES)


def test_every_kind_comes_once_before_any_comes_twice() -> None:
    """The menu is dealt like a shuffled deck: the first len(MENU) faults are each kind once
    (a short soak meets many kinds), and the deck is dealt again after."""
    schedule = build_schedule(7, 2 * len(MENU), INSTANCES)
    assert sorted(f.kind for f in schedule[: len(MENU)]) == sorted(MENU)
    assert sorted(f.kind for f in schedule[len(MENU) :]) == sorted(MENU)


def test_faults_stay_within_their_menu_bounds() -> None:
    """Each fault lasts within its kind's bounds, concerns the bridge its kind needs, and
    targets one of that bridge's instances."""
    for fault in build_schedule(3, 200, INSTANCES):
        which, low, high = MENU[fault.kind]
        assert low <= fault.duration <= high
        assert which in ("any", fault.bridge)
        assert fault.target in INSTANCES[fault.bridge]
        assert 3 <= fault.gap <= 10
