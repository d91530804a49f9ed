"""The fleet's heap: frozen once a large enough fleet has settled, refrozen (frozen garbage
reclaimed) only after a large churn of sockets and long enough; small processes left alone."""

from __future__ import annotations

import gc
import weakref

import pytest

from bridge.heap import (
    MIN_SOCKETS,
    REFREEZE_MIN_SECONDS,
    REFREEZE_SHARE,
    SETTLE_SECONDS,
    HeapKeeper,
    HeapState,
    due,
    freeze,
    refreeze,
)


class Fleet:
    def __init__(self) -> None:
        self.opened = 0
        self.open = 0
        self.now = 0.0
        self.done: list[str] = []

    def keeper(self) -> HeapKeeper:
        return HeapKeeper(
            lambda: self.opened,
            lambda: self.open,
            clock=lambda: self.now,
            actions={"freeze": lambda: self.done.append("freeze"),
                     "refreeze": lambda: self.done.append("refreeze")},
        )  # fmt: skip

    def connect(self, count: int) -> None:
        self.opened += count
        self.open += count


@pytest.mark.parametrize(
    ("state", "open_now", "now", "action"),
    [
        (HeapState(opened=5000, moved_at=0.0), 5000, SETTLE_SECONDS - 1, None),  # not settled
        (HeapState(opened=5000, moved_at=0.0), 5000, SETTLE_SECONDS, "freeze"),
        (HeapState(opened=50, moved_at=0.0), MIN_SOCKETS - 1, 1e6, None),  # a small process
        (  # churn enough, but too soon after the last freeze
            HeapState(opened=7000, frozen_opened=5000, frozen_sockets=5000, frozen_at=0.0),
            5000, REFREEZE_MIN_SECONDS - 1, None,
        ),
        (  # long enough, but too little churn
            HeapState(opened=5100, frozen_opened=5000, frozen_sockets=5000, frozen_at=0.0),
            5000, REFREEZE_MIN_SECONDS, None,
        ),
        (
            HeapState(opened=5000 + int(REFREEZE_SHARE * 5000), frozen_opened=5000,
                      frozen_sockets=5000, frozen_at=0.0),
            5000, REFREEZE_MIN_SECONDS, "refreeze",
        ),
    ],
    ids=["unsettled", "settled", "small", "too-soon", "little-churn", "refreeze"],
)  # fmt: skip
def test_when_the_heap_is_frozen(
    state: HeapState, open_now: int, now: float, action: str | None
) -> None:
    """Freeze once settled (no socket opened for SETTLE_SECONDS) with MIN_SOCKETS open;
    refreeze only after REFREEZE_SHARE of the frozen fleet was opened again and
    REFREEZE_MIN_SECONDS passed."""
    assert due(state, open_now, now) == action


def test_a_connecting_fleet_is_frozen_once_settled_then_refrozen_after_a_storm() -> None:
    """While sockets keep opening nothing happens; SETTLE_SECONDS after the last batch the
    heap is frozen once (the few sockets a large fleet always reopens do not hold it off); a
    reconnect storm of the whole fleet later refreezes it once it settled again, and not
    before REFREEZE_MIN_SECONDS."""
    fleet = Fleet()
    keeper = fleet.keeper()
    for _ in range(10):  # connecting: 500 sockets opened every 5 s
        fleet.connect(500)
        fleet.now += 5
        assert keeper.check() is None
    done = []
    for _ in range(int(SETTLE_SECONDS / 5)):  # settled but for a reconnect now and then
        fleet.opened += 2
        fleet.now += 5
        done.append(keeper.check())
    assert done == [None] * (len(done) - 1) + ["freeze"]
    assert keeper.check() is None
    fleet.opened += fleet.open  # every socket reconnected (an upstream outage)
    assert keeper.check() is None  # not settled yet
    fleet.now += SETTLE_SECONDS
    assert keeper.check() is None  # too soon after the freeze
    fleet.now += REFREEZE_MIN_SECONDS
    assert keeper.check() == "refreeze"
    assert fleet.done == ["freeze", "refreeze"]


class Node:
    """An object in a reference cycle (only the collector frees it)."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_garbage_waits_for_a_refreeze() -> None:
    """The real actions: after a freeze, a cycle that becomes garbage is not reclaimed by the
    collector's passes (frozen objects are not walked); a refreeze reclaims it and freezes
    what lives again."""
    gc.unfreeze()
    try:
        node = Node()
        ref = weakref.ref(node)
        freeze()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: out of the collector's way, garbage included
        refreeze()
        assert ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
