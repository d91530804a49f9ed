"""The sink contract: publish a batch, say what happened to each record.

A sink never raises for one bad record: ``publish`` returns one outcome per record, in order.
``Delivered`` means the broker acknowledged it (Kafka acks, Redis XADD reply, file written);
``Rejected`` means the broker refused it for good (it goes to the DLQ); ``Failed`` means it may
succeed later (the worker retries it and everything after it, keeping per-key order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.errors import SinkError
from bridge.pipeline import Record


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class Failed:
    error: SinkError


Outcome = Delivered | Rejected | Failed
DELIVERED = Delivered()


class Sink(Protocol):
    """A broker the bridge writes to: Kafka, Redis or a file."""

    kind: str

    async def start(self) -> None:
        """Connect; raise SinkUnavailableError (retry) or SinkConfigError (give up)."""

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        """Write ``records`` in order and return one outcome per record."""

    async def reachable(self) -> bool:
        """Whether the broker answers right now (for /readyz)."""

    async def close(self) -> None:
        """Flush what is buffered and disconnect."""


def first_failure(outcomes: Sequence[Outcome]) -> int | None:
    """Index of the first transient failure, or None when every record is settled (pure)."""
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Failed):
            return index
    return None


class Fencing(Protocol):
    """Who tells the sink which fencing token guards an instance's writes."""

    def fence(self, instance: str) -> tuple[str, str] | None:
        """(key holding the shard's current token, the token this replica holds), or None
        when the instance's shard was never held here (nothing to check)."""
