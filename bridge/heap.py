"""Keeping a fleet's long-lived objects out of the garbage collector's full passes.

Start-up's objects are frozen before the loop runs (:func:`bridge.eventloop.settle_heap`); the
sockets' are built after it. At 5,000 instances they are ~480,000 objects (connections, their
tasks and coroutines, the runners' metric children), and each full (generation 2) pass walked
them all with the socket readers' loop held: 284-514 ms a pass on the development machine (the
bench probe's ``gc_walked``), one every few seconds while a fleet connects and again whenever
enough objects had aged into that generation. Frozen, they are no longer walked.

So once the fleet has settled (for ``SETTLE_SECONDS`` no more sockets opened than the few a
large fleet always reopens: ``NOISE_SHARE`` of those open, at least ``NOISE_MIN``) the keeper
freezes the heap; what is young is collected first (a pass over the young generations only). The
price of freezing is that a frozen object that later becomes cyclic garbage (a closed
socket's) is reclaimed only when the heap is unfrozen: after a churn of sockets as large as
``REFREEZE_SHARE`` of those frozen (reconnects after an outage, say), and no sooner than
``REFREEZE_MIN_SECONDS`` after the last freeze, the keeper unfreezes, collects everything once
(one full pass, the cost the collector paid repeatedly before) and freezes again. Memory held
by frozen garbage stays under about ``REFREEZE_SHARE`` of the fleet's. A process with fewer
than ``MIN_SOCKETS`` sockets has short passes and is left to the collector.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.logs import get_logger

log = get_logger(__name__)

SETTLE_SECONDS = 30.0
CHECK_SECONDS = 5.0
REFREEZE_SHARE = 0.25
REFREEZE_MIN_SECONDS = 600.0
MIN_SOCKETS = 100
NOISE_SHARE = 0.01
NOISE_MIN = 10


@dataclass
class HeapState:
    """What the keeper knows: sockets opened so far (a running count), the count when it last
    moved by more than the noise and when, and the count and open sockets at the last freeze
    (None: never frozen)."""

    opened: int = 0
    noted: int = 0
    moved_at: float = 0.0
    frozen_opened: int | None = None
    frozen_sockets: int = 0
    frozen_at: float = 0.0


def due(state: HeapState, open_now: int, now: float) -> str | None:
    """Whether to act now (pure): ``freeze`` the first time a large enough fleet has settled,
    ``refreeze`` once enough sockets were opened since and long enough went by, else None."""
    settled = now - state.moved_at >= SETTLE_SECONDS
    if not settled:
        return None
    if state.frozen_opened is None:
        return "freeze" if open_now >= MIN_SOCKETS else None
    churn = state.opened - state.frozen_opened
    enough = churn >= max(MIN_SOCKETS, REFREEZE_SHARE * state.frozen_sockets)
    waited = now - state.frozen_at >= REFREEZE_MIN_SECONDS
    return "refreeze" if enough and waited else None


def freeze() -> None:
    """The young generations collected, then everything frozen (no full pass)."""
    gc.collect(1)
    gc.freeze()


def refreeze() -> None:
    """Everything unfrozen and collected once (frozen garbage reclaimed), then frozen again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class HeapKeeper:
    """Watches the process's sockets (``opened``: a running count of sockets opened;
    ``open_now``: those open) and freezes the heap as the module says."""

    def __init__(
        self,
        opened: Callable[[], int],
        open_now: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        actions: dict[str, Callable[[], None]] | None = None,
    ) -> None:
        self.opened = opened
        self.open_now = open_now
        self.clock = clock
        self.actions = actions or {"freeze": freeze, "refreeze": refreeze}
        self.state = HeapState(moved_at=clock())

    def check(self) -> str | None:
        """One look: note whether sockets were opened, act when due; what was done."""
        now = self.clock()
        state = self.state
        opened, open_now = self.opened(), self.open_now()
        state.opened = opened
        if opened - state.noted > max(NOISE_MIN, NOISE_SHARE * open_now):
            state.noted, state.moved_at = opened, now
        action = due(state, open_now, now)
        if action is None:
            return None
        started = time.perf_counter()
        self.actions[action]()
        state.frozen_opened, state.frozen_sockets = opened, self.open_now()
        state.frozen_at = self.clock()
        log.info(
            f"heap.{action}",
            sockets=state.frozen_sockets,
            frozen_objects=gc.get_freeze_count(),
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return action

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            self.check()
