"""Keeping a fleet's long-lived objects out of the garbage collector's full passes.

Start-up's objects are frozen before the loop runs (:func:`bridge.eventloop.settle_heap`); the
sockets' are built after it. At 5,000 instances they are ~480,000 objects (connections, their
tasks and coroutines, the runners' metric children), and each full (generation 2) pass walked
them all with the socket readers' loop held: 284-514 ms a pass on the development machine (the
bench probe's ``gc_walked``), one every few seconds while a fleet connects and again whenever
enough objects had aged into that generation. Frozen, they are no longer walked.

So once the fleet has settled (for ``SETTLE_SECONDS`` no more sockets opened than the few a
large fleet always reopens: ``NOISE_SHARE`` of those open, at least ``NOISE_MIN``), or at the
latest ``FORCE_SECONDS`` after start, the keeper freezes the heap; what is young is collected
first (a pass over the young generations only).

The price: a frozen object that later becomes cyclic garbage (a closed socket's, ~36 KB an
instance: a reconnect, a reload or a shard move that stops runners, discovery removing an
instance) is reclaimed only when the heap is unfrozen. Every socket that closed since the
freeze counts; once they are ``REFREEZE_SHARE`` of the sockets frozen (at least
``MIN_SOCKETS``) and ``REFREEZE_MIN_SECONDS`` went by, the keeper unfreezes, collects everything
once and freezes again, when the fleet has settled or at the latest ``FORCE_SECONDS`` later.
That refreeze is one full pass with the loop held (0.3-0.5 s at 5,000 instances on the
development machine: what the collector paid at each of its full passes before), logged as
``heap.refreeze`` with its length. Frozen garbage stays under about ``REFREEZE_SHARE`` of the
fleet's objects, plus what closes during the waits. A process with fewer than
``MIN_SOCKETS`` sockets has short passes and is left to the collector.

Young passes are spaced too, by the fleet's size. A quiet socket renews a few collected
objects at every message (websockets' parser step waiting for the next frame, the last frame
it parsed, the protocol's lists of events and of data to send: ``YOUNG_PER_SOCKET``) and frees
the previous ones, so the young generation's count (allocations less deallocations) barely
moves while its list grows to every socket's set: at 5,000 instances at 1 event/s a young pass
walked ~20,900 live objects, 10-15 ms of CPU with the loop held, every few seconds, and every
tenth pass moved them on to generation 1 for a 15-24 ms pass (bench probe, development
machine). A young pass cannot walk fewer than the sockets' sets, so once frozen the young
threshold is ``YOUNG_PER_SOCKET`` times the sockets open (never below Python's 700): the same
passes, that many times rarer (how long the rarer passes are over hours is not yet measured:
they walk the sockets' sets plus what was allocated since). The threshold is set at each
freeze and refreeze for the sockets open then, and set again in between (``heap.respace``)
whenever the sockets open differ by more than ``RESPACE_SHARE`` from those it was last set
for and that changes it (a fleet still growing after a forced freeze, or shrunk by a
reload). Young garbage in cycles waits for that many net allocations more.

Once frozen, full passes are spaced at least ``FULL_PASS_EVERY`` generation-1 passes apart
instead of Python's 10 (the spacing stays for the process's life; Python up to 3.13). What they
walk is what the fleet made since the freeze, mostly each quiet socket's wait for its next
frame (a parser step, the last frame and, before messages reached a parked consumer from the
dispatch, a future: ~8 objects a socket, renewed at every frame): at 5,000 instances at 1
event/s ~77,000 objects, 70-110 ms with the loop held (measured with the future), every ~3.5 s at
Python's spacing (bench probe, development machine) — the fleet's largest stalls, for garbage
that is almost all freed by reference counts first. Spaced, none came in 25 s measured there;
cyclic garbage that outlives a young pass waits for it, or for a refreeze: with the young
spacing above, about 286 times as many net allocations as at Python's defaults, roughly daily
at 5,000 quiet sockets (a process that allocates little makes little garbage to wait)."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.logs import get_logger

log = get_logger(__name__)

SETTLE_SECONDS = 30.0
FORCE_SECONDS = 300.0
CHECK_SECONDS = 5.0
REFREEZE_SHARE = 0.25
RESPACE_SHARE = 0.25
REFREEZE_MIN_SECONDS = 600.0
MIN_SOCKETS = 100
FULL_PASS_EVERY = 100  # generation-1 passes between full ones once frozen (Python's default: 10)
NOISE_SHARE = 0.01
NOISE_MIN = 10
YOUNG_PER_SOCKET = 4  # collected objects a quiet socket renews at every message (websockets)
YOUNG_DEFAULT = gc.get_threshold()[0]  # Python's (700), before any spacing
SPACING = sys.version_info < (3, 14)  # 3.14's incremental collector is left alone


@dataclass
class HeapState:
    """What the keeper knows: sockets closed so far (a running count), the count of those
    opened when it last moved by more than the noise and when, when the keeper started, at
    the last freeze the closed count and the sockets open (None: never frozen), and the
    sockets open when young passes were last spaced."""

    started_at: float = 0.0
    closed: int = 0
    noted: int = 0
    moved_at: float = 0.0
    frozen_closed: int | None = None
    frozen_sockets: int = 0
    frozen_at: float = 0.0
    spaced_sockets: int = 0


def due(state: HeapState, open_now: int, now: float) -> str | None:
    """Whether to act now (pure): ``freeze`` the first time a large enough fleet has settled
    (or ``FORCE_SECONDS`` after start), ``refreeze`` once enough of the frozen sockets closed
    and long enough went by, when settled (or ``FORCE_SECONDS`` after it was due)."""
    settled = now - state.moved_at >= SETTLE_SECONDS
    if state.frozen_closed is None:
        forced = now - state.started_at >= FORCE_SECONDS
        return "freeze" if open_now >= MIN_SOCKETS and (settled or forced) else None
    churn = state.closed - state.frozen_closed
    if churn < max(MIN_SOCKETS, REFREEZE_SHARE * state.frozen_sockets):
        return None
    waited = now - state.frozen_at
    if waited < REFREEZE_MIN_SECONDS:
        return None
    return "refreeze" if settled or waited >= REFREEZE_MIN_SECONDS + FORCE_SECONDS else None


def respace_due(spaced: int, open_now: int) -> bool:
    """Whether young passes spaced for ``spaced`` sockets are to be spaced again for the
    ``open_now`` (pure): off by more than ``RESPACE_SHARE`` of them and a threshold changed
    (never where passes are not spaced: Python 3.14 on)."""
    if not SPACING or young_threshold(open_now) == young_threshold(spaced):
        return False
    return abs(open_now - spaced) > RESPACE_SHARE * max(spaced, MIN_SOCKETS)


def freeze(sockets: int) -> None:
    """The young generations collected, then everything frozen (no full pass); passes spaced
    for ``sockets`` open (:func:`space_passes`)."""
    gc.collect(1)
    gc.freeze()
    space_passes(sockets)


def refreeze(sockets: int) -> None:
    """Everything unfrozen and collected once (frozen garbage reclaimed), then frozen again;
    passes spaced for the ``sockets`` open now."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    space_passes(sockets)


def young_threshold(sockets: int) -> int:
    """Allocations between young passes with ``sockets`` open (pure; the module says why)."""
    return max(YOUNG_DEFAULT, YOUNG_PER_SOCKET * sockets)


def space_passes(sockets: int) -> None:
    """A young pass every :func:`young_threshold` allocations, a full pass at most once every
    ``FULL_PASS_EVERY`` passes of generation 1 instead of 10 (generation 1's own threshold
    kept). Python 3.14's incremental collector has no full-pass threshold and collects its
    young generation its own way: left alone there."""
    if not SPACING:
        return
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(young_threshold(sockets), middle, FULL_PASS_EVERY)


class HeapKeeper:
    """Watches the process's sockets (``opened``, ``closed``: running counts of sockets
    opened and closed; ``open_now``: those open) and freezes the heap as the module says."""

    def __init__(
        self,
        opened: Callable[[], int],
        closed: Callable[[], int],
        open_now: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        actions: dict[str, Callable[[int], None]] | None = None,
    ) -> None:
        self.opened = opened
        self.closed = closed
        self.open_now = open_now
        self.clock = clock
        self.actions = actions or {
            "freeze": freeze,
            "refreeze": refreeze,
            "respace": space_passes,
        }
        now = clock()
        self.state = HeapState(started_at=now, moved_at=now)

    def check(self) -> str | None:
        """One look: note the sockets opened and closed, act when due; what was done."""
        now = self.clock()
        state = self.state
        opened, open_now = self.opened(), self.open_now()
        state.closed = self.closed()
        if opened - state.noted > max(NOISE_MIN, NOISE_SHARE * open_now):
            state.noted, state.moved_at = opened, now
        action = due(state, open_now, now)
        if action is None and state.frozen_closed is not None:
            action = "respace" if respace_due(state.spaced_sockets, open_now) else None
        if action is None:
            return None
        started = time.perf_counter()
        self.actions[action](open_now)
        spaced_for, state.spaced_sockets = state.spaced_sockets, open_now
        if action != "respace":
            state.frozen_closed, state.frozen_sockets = state.closed, open_now
            state.frozen_at = self.clock()
        log.info(
            f"heap.{action}",
            sockets=open_now,
            spaced_for=spaced_for,
            frozen_objects=gc.get_freeze_count(),
            thresholds=list(gc.get_threshold()),
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return action

    async def run(self) -> None:
        """Look every ``CHECK_SECONDS``; a look that fails is logged, the next one goes on."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                self.check()
            except Exception:
                log.exception("heap.check_failed")
