"""The spool intake: the records of one loop turn, from every runner, go to the spool in one
append, in the order they came; what the spool drops is counted before the callers' own
follow-ups run; without a running loop a record is appended at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bridge.intake import SpoolIntake
from bridge.pipeline import Record
from bridge.spool import AppendResult


def record(instance: str, n: int) -> Record:
    return Record(
        destination=f"ryze.{instance}",
        key=instance.encode(),
        value=b"{}",
        event="message.status",
        instance=instance,
        received_ns=n,
        ident=f"{instance}-{n}",
    )


class Appends:
    """A spool that keeps every append and refuses those named in ``full``."""

    def __init__(self, full: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.full = full

    def append_all(self, records: Sequence[Record]) -> AppendResult:
        self.calls.append([r.id for r in records])
        refused = tuple(r for r in records if r.id in self.full)
        # as the disk spool answers a full spool (drop_newest): refused, dropped as spool_full
        return AppendResult(accepted=False, dropped=refused) if refused else AppendResult(True)


async def test_one_append_per_turn_in_arrival_order() -> None:
    """Three runners adding in one turn make one append, their records in the order added."""
    spool = Appends()
    intake = SpoolIntake(spool, lambda r, why: None)
    intake.add([record("a", 1), record("a", 2)])
    intake.add([record("b", 1)])
    intake.add([record("a", 3)])
    assert spool.calls == []  # nothing before the turn ends
    await asyncio.sleep(0)
    assert spool.calls == [["a-1", "a-2", "b-1", "a-3"]]


async def test_drops_are_counted_before_the_follow_ups() -> None:
    """A record the spool refuses is counted with its reason before ``then`` runs."""
    spool = Appends(full=frozenset({"b-1"}))
    seen: list[str] = []
    intake = SpoolIntake(spool, lambda r, why: seen.append(f"{r.id}:{why}"))
    intake.add([record("b", 1)], lambda: seen.append("then"))
    await asyncio.sleep(0)
    assert seen == ["b-1:spool_full", "then"]


def test_without_a_loop_a_record_is_appended_at_once() -> None:
    """Outside an event loop (tools) the append happens in ``add``."""
    spool = Appends()
    SpoolIntake(spool, lambda r, why: None).add([record("c", 1)])
    assert spool.calls == [["c-1"]]
