"""The disk spool's troubles with its disk: full, failing writes, failing fsyncs, an
acknowledged position that cannot be saved.

None of them stops the spool (design §2: a full or failing disk is a full spool). Each
failure is counted (``on_error(op)``, the ``spool_errors_total{op}`` metric, op = write,
fsync, ack, delete, truncate, recover or read; ``count`` alone: ack_refused, and damaged,
one per entry damaged past reading that left the books unread); each episode
(from the first failure of an operation until ``QUIET_SECONDS`` after its last one, once it
has worked since: a nearly full disk that takes a small write now and then is one episode)
is logged twice, when it starts, with the error, and when it ends, with how long it lasted
and how many records it cost; while one lasts, :attr:`Troubles.problem` says it, for
readiness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.logs import get_logger
from bridge.spool.files import describe

log = get_logger(__name__)

WHAT = {
    "write": "spool: {}",
    "fsync": "spool: fsync failed: {}",
    "ack": "spool: acknowledged position not saved: {}",
    "delete": "spool: acknowledged segment not deleted: {}",
    "truncate": "spool: a failed write could not be cut back: {}",
    "recover": "spool: a damaged segment could not be repaired: {}",
    "read": "spool: a segment could not be read: {}",
    "ack_refused": "spool: an acknowledgement past what was written was ignored{}",
    "damaged": "spool: an entry damaged past reading was dropped{}",
}
OPS = tuple(WHAT)
QUIET_SECONDS = 1.0


@dataclass
class Episode:
    problem: str
    started: float
    last_failure: float
    failures: int = 1
    dropped: int = 0
    worked: bool = False  # a success since the last failure


@dataclass
class Troubles:
    on_error: Callable[[str], None] | None = None
    _now: dict[str, Episode] = field(default_factory=dict)

    @property
    def problem(self) -> str | None:
        """What is wrong with the disk now, oldest first (None: nothing)."""
        if not self._now:
            return None
        for op in [op for op, episode in self._now.items() if episode.worked]:
            self._settle(op)
        if not self._now:
            return None
        return "; ".join(episode.problem for episode in self._now.values())

    def count(self, op: str) -> None:
        """Count ``op`` without an episode (not the disk's fault: nothing for readiness)."""
        if self.on_error is not None:
            self.on_error(op)

    def failed(self, op: str, error: OSError, dropped: int = 0) -> None:
        """``op`` (write, fsync, ack, …) failed with ``error``, costing ``dropped`` records."""
        if self.on_error is not None:
            self.on_error(op)
        now = time.monotonic()
        episode = self._now.get(op)
        if episode is None:
            problem = WHAT[op].format(describe(error))
            episode = self._now[op] = Episode(problem, now, now)
            log.error("spool.disk_failed", op=op, problem=problem, dropped=dropped)
        else:
            episode.failures += 1
            episode.last_failure = now
            episode.worked = False
        episode.dropped += dropped

    def succeeded(self, op: str) -> None:
        """``op`` worked: the episode it was in, if any, is over once its last failure is
        ``QUIET_SECONDS`` old (now, or when ``problem`` is asked later)."""
        if not self._now:  # the usual case, on every append: one check
            return
        episode = self._now.get(op)
        if episode is not None:
            episode.worked = True
            self._settle(op)

    def _settle(self, op: str) -> None:
        """End ``op``'s episode if it worked since its last failure, long enough ago."""
        episode = self._now[op]
        if time.monotonic() - episode.last_failure >= QUIET_SECONDS:
            del self._now[op]
            log.warning(
                "spool.disk_recovered",
                op=op,
                problem=episode.problem,
                failures=episode.failures,
                dropped=episode.dropped,
                seconds=round(time.monotonic() - episode.started, 3),
            )
