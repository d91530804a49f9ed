"""The fleet's heap: frozen once a large enough fleet has settled (or at the latest a while
after start), refrozen (frozen garbage reclaimed) once enough of the frozen sockets closed
and long enough went by, settled or not for good; small processes left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bridge import heap
from bridge.heap import (
    FORCE_SECONDS,
    FULL_PASS_EVERY,
    MIN_SOCKETS,
    REFREEZE_MIN_SECONDS,
    REFREEZE_SHARE,
    RESPACE_SHARE,
    SETTLE_SECONDS,
    YOUNG_DEFAULT,
    YOUNG_PER_SOCKET,
    HeapKeeper,
    HeapState,
    due,
    respace_due,
    young_threshold,
)
from bridge.upstream.keepalive import Keepalive
from tests.unit.test_keepalive import FakeSocket


@pytest.fixture(autouse=True)
def spacing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper's logic as where passes are spaced (Python up to 3.13), whatever runs the
    tests; the real collector's behaviour per version is the subprocess test's."""
    monkeypatch.setattr(heap, "SPACING", True)


class Fleet:
    """Running counts of sockets opened and closed, a clock, and what the keeper did."""

    def __init__(self) -> None:
        self.opened = self.closed = 0
        self.now = 0.0
        self.done: list[str] = []

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def keeper(self) -> HeapKeeper:
        return HeapKeeper(
            lambda: self.opened,
            lambda: self.closed,
            lambda: self.open,
            clock=lambda: self.now,
            actions={"freeze": lambda sockets: self.done.append(f"freeze {sockets}"),
                     "refreeze": lambda sockets: self.done.append(f"refreeze {sockets}"),
                     "respace": lambda sockets: self.done.append(f"respace {sockets}")},
        )  # fmt: skip

    def run(self, keeper: HeapKeeper, seconds: float, *, opened: int = 0, closed: int = 0) -> None:
        """``seconds`` of 5 s looks, ``opened``/``closed`` sockets in each."""
        for _ in range(int(seconds / 5)):
            self.opened += opened
            self.closed += closed
            self.now += 5
            keeper.check()


FROZEN = HeapState(frozen_closed=0, frozen_sockets=5000, frozen_at=0.0)


@pytest.mark.parametrize(
    ("state", "open_now", "now", "action"),
    [
        (HeapState(), 5000, SETTLE_SECONDS - 1, None),  # not settled
        (HeapState(), 5000, SETTLE_SECONDS, "freeze"),
        (HeapState(started_at=1e6, moved_at=1e6), 5000, 1e6 + 1, None),  # connecting
        (HeapState(moved_at=FORCE_SECONDS), 5000, FORCE_SECONDS, "freeze"),  # never settles
        (HeapState(), MIN_SOCKETS - 1, 1e6, None),  # a small process
        (HeapState(**{**vars(FROZEN), "closed": 2000}), 5000, REFREEZE_MIN_SECONDS - 1, None),
        (HeapState(**{**vars(FROZEN), "closed": 1000}), 5000, 1e6, None),  # too little churn
        (
            HeapState(**{**vars(FROZEN), "closed": int(REFREEZE_SHARE * 5000)}),
            5000, REFREEZE_MIN_SECONDS, "refreeze",
        ),
        (  # churned, never settled: forced once the wait is over
            HeapState(**{**vars(FROZEN), "closed": 2000, "moved_at": 1e6}),
            5000, REFREEZE_MIN_SECONDS + FORCE_SECONDS, "refreeze",
        ),
        (
            HeapState(**{**vars(FROZEN), "closed": 2000, "moved_at": 1e6}),
            5000, REFREEZE_MIN_SECONDS + FORCE_SECONDS - 1, None,
        ),
    ],
    ids=["unsettled", "settled", "connecting", "forced", "small", "too-soon", "little-churn",
         "refreeze", "refreeze-forced", "refreeze-not-yet"],
)  # fmt: skip
def test_when_the_heap_is_frozen(
    state: HeapState, open_now: int, now: float, action: str | None
) -> None:
    """Freeze once settled, or FORCE_SECONDS after start, with MIN_SOCKETS open; refreeze
    once REFREEZE_SHARE of the frozen sockets closed and REFREEZE_MIN_SECONDS passed, when
    settled or FORCE_SECONDS later."""
    assert due(state, open_now, now) == action


def test_a_fleet_that_reconnects_is_frozen_then_refrozen() -> None:
    """Connecting: nothing; settled (but for a reconnect now and then): frozen once; the whole
    fleet reconnecting (an outage): refrozen once settled again after REFREEZE_MIN_SECONDS."""
    fleet = Fleet()
    keeper = fleet.keeper()
    fleet.run(keeper, 50, opened=500)  # connecting
    assert fleet.done == []
    fleet.run(keeper, SETTLE_SECONDS, opened=2, closed=2)
    assert fleet.done == ["freeze 5000"]
    fleet.run(keeper, 10, opened=2500, closed=2500)  # every socket reconnects
    fleet.run(keeper, REFREEZE_MIN_SECONDS)
    assert fleet.done == ["freeze 5000", "refreeze 5000"]


def test_sockets_that_close_without_reopening_are_churn_too() -> None:
    """A reload or a shard move that stops most runners (sockets closed, none opened) leaves
    their frozen garbage: it is reclaimed by a refreeze all the same (young passes spaced for
    what is left at once)."""
    fleet = Fleet()
    keeper = fleet.keeper()
    fleet.run(keeper, 10, opened=2500)
    fleet.run(keeper, SETTLE_SECONDS)
    assert fleet.done == ["freeze 5000"]
    fleet.run(keeper, 5, closed=4000)  # down from 5,000 instances to 1,000
    fleet.run(keeper, REFREEZE_MIN_SECONDS)
    assert fleet.done == ["freeze 5000", "respace 1000", "refreeze 1000"]


def test_a_steady_trickle_of_reconnects_cannot_hold_the_keeper_off() -> None:
    """Reconnects every few seconds for good (a flapping share of the fleet): the first
    freeze comes FORCE_SECONDS after start, and the refreeze FORCE_SECONDS after it was due."""
    fleet = Fleet()
    keeper = fleet.keeper()
    fleet.run(keeper, 10, opened=2500)
    fleet.run(keeper, FORCE_SECONDS, opened=60, closed=60)
    assert fleet.done == ["freeze 5000"]
    fleet.run(keeper, REFREEZE_MIN_SECONDS + FORCE_SECONDS, opened=60, closed=60)
    assert fleet.done == ["freeze 5000", "refreeze 5000"]


async def test_the_keepalive_counts_the_sockets_opened_closed_and_open() -> None:
    """What the supervisor hands the keeper: a session watched counts as opened, forgotten
    (or closed by the watchdog) as closed, once each."""
    keepalive = Keepalive()
    entries = [keepalive.watch(FakeSocket(), 600.0, lambda: None) for _ in range(3)]
    keepalive.forget(entries[0])
    keepalive.forget(entries[0])  # twice: counted once
    assert (keepalive.watches, keepalive.unwatched, keepalive.watching) == (3, 1, 2)
    silent = entries[1].connection
    silent.last_activity = time.monotonic() - 1000  # past the watchdog
    keepalive.check(time.monotonic())
    assert (keepalive.watches, keepalive.unwatched, keepalive.watching) == (3, 2, 1)
    for entry in entries:
        keepalive.forget(entry)
    assert (keepalive.watches, keepalive.unwatched, keepalive.watching) == (3, 3, 0)


SCRIPT = """
import gc, json, weakref
from bridge.heap import HeapKeeper, freeze, refreeze
class Node:
    def __init__(self):
        self.me = self
node = Node()
ref = weakref.ref(node)
before = gc.get_threshold()
freeze(5000)
after = gc.get_threshold()
frozen = gc.get_freeze_count()
del node
gc.collect()
kept = ref() is not None
refreeze(50)
again = gc.get_threshold()
HeapKeeper(lambda: 0, lambda: 0, lambda: 0).actions["respace"](1000)
print(json.dumps({"frozen": frozen, "kept": kept, "reclaimed": ref() is None,
                  "refrozen": gc.get_freeze_count(), "before": before, "after": after,
                  "again": again, "respaced": gc.get_threshold()}))
"""


def test_frozen_garbage_waits_for_a_refreeze() -> None:
    """The real actions, in a process of their own: after a freeze, a cycle that becomes
    garbage is not reclaimed by the collector's passes (frozen objects are not walked); a
    refreeze reclaims it and freezes what lives again. Frozen, young passes are spaced by
    the sockets open (5,000: every 20,000 allocations; 50: Python's 700 again at the
    refreeze; the keeper's own respace for 1,000: 4,000), full passes ``FULL_PASS_EVERY``
    generation-1 passes apart; generation 1's own threshold stays."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout)
    assert found["frozen"] > 1000
    assert found["kept"]
    assert found["reclaimed"]
    assert found["refrozen"] > 1000
    young, middle, full = found["before"]
    assert full != FULL_PASS_EVERY
    if sys.version_info >= (3, 14):  # its incremental collector: left alone
        assert found["after"] == found["again"] == found["respaced"] == found["before"]
    else:
        assert found["after"] == [YOUNG_PER_SOCKET * 5000, middle, FULL_PASS_EVERY]
        assert found["again"] == [young, middle, FULL_PASS_EVERY]
        assert found["respaced"] == [YOUNG_PER_SOCKET * 1000, middle, FULL_PASS_EVERY]


def test_young_passes_are_spaced_by_the_sockets_a_pass_cannot_avoid_walking() -> None:
    """Each open socket's renewed objects are walked by every young pass: the threshold is
    ``YOUNG_PER_SOCKET`` allocations a socket, never below Python's own."""
    assert young_threshold(5000) == 20_000
    assert young_threshold(1000) == 4 * 1000
    assert young_threshold(MIN_SOCKETS) == young_threshold(0) == YOUNG_DEFAULT


@pytest.mark.parametrize(
    ("spaced", "open_now", "again"),
    [
        (1000, 1000, False),
        (1000, int(1000 * (1 + RESPACE_SHARE)), False),  # within the share
        (1000, int(1000 * (1 + RESPACE_SHARE)) + 1, True),
        (5000, int(5000 * (1 - RESPACE_SHARE)) - 1, True),
        (5000, 4000, False),
        (MIN_SOCKETS, 150, False),  # both at Python's 700: nothing to change
        (0, 5000, True),  # last spaced with none open (a refreeze after every socket closed)
    ],
)
def test_young_passes_are_spaced_again_when_the_fleet_moved_by_a_share(
    spaced: int, open_now: int, again: bool
) -> None:
    """The young threshold is set again once the sockets open differ from those it was set
    for by more than ``RESPACE_SHARE``, and only if that changes it."""
    assert respace_due(spaced, open_now) is again


def test_a_fleet_that_grows_or_shrinks_after_its_freeze_has_its_young_passes_respaced() -> None:
    """Frozen at 1,000 sockets, the fleet grows to 3,000 (instances added by a reload): the
    young passes are spaced for 3,000 at the next look, without a refreeze; a few more do
    nothing; most closing (a shard moved away) spaces them for what is left at once, and the
    refreeze still comes when due."""
    fleet = Fleet()
    keeper = fleet.keeper()
    fleet.run(keeper, 5, opened=1000)
    fleet.run(keeper, SETTLE_SECONDS)
    fleet.run(keeper, 5, opened=2000)
    fleet.run(keeper, 5, opened=100)
    assert fleet.done == ["freeze 1000", "respace 3000"]
    fleet.run(keeper, 5, closed=2500)
    assert fleet.done[-1] == "respace 600"
    fleet.run(keeper, REFREEZE_MIN_SECONDS)
    assert fleet.done == ["freeze 1000", "respace 3000", "respace 600", "refreeze 600"]


def test_nothing_is_respaced_where_passes_are_not_spaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.14's incremental collector is left alone: no respace is ever due there."""
    monkeypatch.setattr(heap, "SPACING", False)
    assert not respace_due(0, 5000)
    assert not respace_due(1000, 3000)
