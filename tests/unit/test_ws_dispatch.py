"""Messages reach a waiting consumer from the process's dispatch, one callback a loop turn,
while its task stays parked: in order, each message once, every socket's in the same turn,
their bytes out of the budget once handed on. The task is woken for what a callback cannot do:
the consumer's pacing (awaited there; the batches behind it wait for it, their bytes and the
paced batch's in the budget until then), an error the consumer raised (raised there, a
StopIteration or another BaseException as a RuntimeError), messages held for the budget, the
connection's end (raised after the last message). A drain that raises does not stop the others
queued behind it; behind a KeyboardInterrupt they are drained at the next run."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Coroutine
from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from bridge.upstream.budget import BufferBudget
from bridge.upstream.dispatch import Dispatch
from bridge.upstream.ws import BATCH_FRAMES, Handle, MessageReader, drop_handed


def wired(dispatch: Dispatch, handle: Handle, budget: int = 1 << 30) -> MessageReader:
    """A reader attached to a budget, handing its batches to ``handle`` from ``dispatch``."""
    reader = MessageReader(lambda: None, lambda: None).attach(BufferBudget(budget))
    reader.handle, reader.dispatch = handle, dispatch
    return reader


def text(data: bytes) -> Frame:
    return Frame(Opcode.TEXT, data)


def used(reader: MessageReader) -> int:
    assert reader.budget is not None
    return reader.budget.state.used


async def turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_messages_reach_a_parked_consumer_without_waking_its_task() -> None:
    """Two sockets' messages, read while their consumers wait, are handed over in order by the
    dispatch and leave the budget; neither consumer's wait resolves."""
    dispatch = Dispatch()
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    first, second = wired(dispatch, got["a"].extend), wired(dispatch, got["b"].extend)
    waits = [asyncio.ensure_future(reader.wait()) for reader in (first, second)]
    await turns()
    first.frame(text(b"a1"))
    second.frame(text(b"b1"))
    first.frame(text(b"a2"))
    await turns()
    assert got == {"a": [b"a1", b"a2"], "b": [b"b1"]}
    assert not any(wait.done() for wait in waits)
    assert used(first) == used(second) == 0
    first.frame(text(b"a3"))
    await turns()
    assert got["a"] == [b"a1", b"a2", b"a3"]
    assert not waits[0].done()
    for wait in waits:
        wait.cancel()


async def test_pacing_wakes_the_task_and_the_batches_behind_it_wait() -> None:
    """Three batches ready at once, the consumer asking to be paced after the first: only the
    first is handed on; the wait resolves with that pacing; the paced batch stays in the budget
    until done(), the others are the task's to take, in order."""
    dispatch = Dispatch()
    got: list[list[bytes]] = []
    pace = asyncio.get_running_loop().create_future()

    def handle(batch: list[bytes]) -> Awaitable[None] | None:
        got.append(batch)
        return pace

    reader = wired(dispatch, handle)
    wait = asyncio.ensure_future(reader.wait())
    await turns()
    for n in range(2 * BATCH_FRAMES + 5):
        reader.frame(text(b"%03d" % n))
    await turns()
    assert await asyncio.wait_for(wait, 1) is pace
    assert [len(batch) for batch in got] == [BATCH_FRAMES]
    assert used(reader) == 3 * (2 * BATCH_FRAMES + 5)  # the paced batch's bytes too
    reader.done()
    assert used(reader) == 3 * (BATCH_FRAMES + 5)
    rest = [reader.take(), reader.take()]
    assert [message for batch in got + rest if batch for message in batch] == [
        b"%03d" % n for n in range(2 * BATCH_FRAMES + 5)
    ]


async def test_what_the_consumer_raises_is_raised_in_its_task() -> None:
    """A consumer that fails in the drain fails the task's wait with the same error; one that
    raises StopIteration or a BaseException fails it with a RuntimeError (a future holds
    neither), never leaving the wait pending."""
    for raised, expected in (
        (LookupError("boom"), LookupError),
        (StopIteration("stop"), RuntimeError),
        (asyncio.CancelledError(), RuntimeError),
    ):

        def handle(batch: list[bytes], raised: BaseException = raised) -> None:
            del batch
            raise raised

        reader = wired(Dispatch(), handle)
        wait = asyncio.ensure_future(reader.wait())
        await turns()
        reader.frame(text(b"boom"))
        with pytest.raises(expected):
            await asyncio.wait_for(wait, 1)


async def test_the_connections_end_is_raised_after_the_last_message() -> None:
    """Messages read just before the end are the task's; the end wakes it, and its wait
    raises the end once they are taken."""
    dispatch = Dispatch()
    got: list[bytes] = []
    reader = wired(dispatch, got.extend)
    wait = asyncio.ensure_future(reader.wait())
    await turns()
    reader.frame(text(b"last"))
    reader.end(ConnectionResetError("gone"))
    assert await asyncio.wait_for(wait, 1) is None  # woken by the end, before the drain ran
    await turns()
    assert reader.take() == [b"last"]
    with pytest.raises(ConnectionResetError):
        reader.wait()
    assert got == []


async def test_a_message_held_for_the_budget_wakes_the_task_then_drains_resume() -> None:
    """A message that does not fit the buffered-frames budget is not drained: the task is woken
    to wait for room; once it took the message, the next ones reach the parked consumer from
    the dispatch again."""
    dispatch = Dispatch()
    got: list[bytes] = []
    reader = wired(dispatch, got.extend, budget=16)
    assert reader.budget is not None
    assert reader.budget.take_now(10)  # another socket's messages
    wait = asyncio.ensure_future(reader.wait())
    await turns()
    reader.frame(text(b"ok"))  # fits: a drain is queued
    reader.frame(text(b"does not fit"))  # held: the task is woken before the drain runs
    assert await asyncio.wait_for(wait, 1) is None
    assert got == []
    assert reader.take() == [b"ok"]
    reader.done()
    admitted = asyncio.ensure_future(reader.wait())  # the task waits for room
    await turns()
    reader.budget.release(10)
    await asyncio.wait_for(admitted, 1)
    assert reader.take() == [b"does not fit"]
    reader.done()
    again = asyncio.ensure_future(reader.wait())
    await turns()
    reader.frame(text(b"next"))
    await turns()
    assert got == [b"next"]
    assert not again.done()
    again.cancel()


async def test_a_drain_that_raises_does_not_stop_the_others() -> None:
    """The dispatch drains every reader queued behind one that raised, and reports the error to
    the loop's exception handler."""
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    dispatch = Dispatch()
    ran: list[str] = []

    class Broken:
        def drain(self) -> None:
            ran.append("broken")
            raise RuntimeError("drain bug")

    class Fine:
        def drain(self) -> None:
            ran.append("after")

    try:
        dispatch.ready(Broken())
        dispatch.ready(Fine())
        await turns()
    finally:
        loop.set_exception_handler(None)
    assert ran == ["broken", "after"]
    assert [str(error) for error in reported] == ["drain bug"]


def test_readers_behind_an_interrupt_are_drained_at_the_next_run() -> None:
    """A KeyboardInterrupt out of one drain leaves the run; that reader and the ones behind it
    are queued again, ahead of later ones, and drained by the next run."""
    ran: list[str] = []

    class Step:
        def __init__(self, name: str, interrupt: bool = False) -> None:
            self.name, self.interrupt = name, interrupt

        def drain(self) -> None:
            ran.append(self.name)
            if self.interrupt:
                self.interrupt = False  # once
                raise KeyboardInterrupt

    async def scenario() -> None:
        dispatch = Dispatch()
        for step in (Step("a"), Step("b", interrupt=True), Step("c")):
            dispatch.ready(step)
        with pytest.raises(KeyboardInterrupt):
            dispatch.run()
        dispatch.ready(Step("d"))
        dispatch.run()

    asyncio.run(scenario())
    assert ran == ["a", "b", "b", "c", "d"]


async def test_a_cancelled_wait_leaves_the_messages_for_the_task() -> None:
    """A consumer whose wait was cancelled (its task stopped) is not handed anything: the
    messages stay for close() to count."""
    dispatch = Dispatch()
    got: list[bytes] = []
    reader = wired(dispatch, got.extend)
    wait = asyncio.ensure_future(reader.wait())
    await turns()
    reader.frame(text(b"queued"))
    wait.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await wait
    await turns()
    assert got == []
    assert reader.close() == 1


async def test_a_task_cancelled_after_its_drain_handed_pacing_lets_it_go_cleanly() -> None:
    """The drain resolved the wait with pacing (a coroutine) and the task was cancelled before
    awaiting it: the pacing is closed, not left to warn that it was never awaited; an error
    handed the same way is retrieved."""
    loop = asyncio.get_running_loop()

    async def pace() -> None:
        await asyncio.sleep(0)

    handed = pace()
    resolved: asyncio.Future[Awaitable[None] | None] = loop.create_future()
    resolved.set_result(handed)
    drop_handed(resolved)
    assert inspect.getcoroutinestate(handed) == inspect.CORO_CLOSED
    failed: asyncio.Future[Awaitable[None] | None] = loop.create_future()
    failed.set_exception(LookupError("spool gone"))
    drop_handed(failed)
    assert not failed._log_traceback  # retrieved: no "exception was never retrieved"


async def test_a_drain_runs_in_an_empty_context() -> None:
    """A context variable set where a reader became ready is not seen by its drain: no
    socket's context reaches another socket's consumer."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker")
    seen: list[str | None] = []

    class Looking:
        def drain(self) -> None:
            seen.append(marker.get(None))

    marker.set("a socket's")
    dispatch = Dispatch()
    dispatch.ready(Looking())
    await turns()
    assert seen == [None]


async def test_a_step_that_stops_its_own_task_hands_nothing_more() -> None:
    """A consumer step that cancels its session's task: the batches behind it are not handed
    on (they stay for close() to count), its pacing is closed, nothing raises."""
    dispatch = Dispatch()
    got: list[list[bytes]] = []
    paces: list[Coroutine[Any, Any, None]] = []

    async def pace() -> None:
        await asyncio.sleep(0)

    def handle(batch: list[bytes]) -> Awaitable[None] | None:
        got.append(batch)
        wait.cancel()
        paces.append(pace())
        return paces[-1]

    reader = wired(dispatch, handle)
    wait = asyncio.ensure_future(reader.wait())
    await turns()
    for n in range(BATCH_FRAMES + 3):
        reader.frame(text(b"%03d" % n))
    await turns()
    assert [len(batch) for batch in got] == [BATCH_FRAMES]
    assert inspect.getcoroutinestate(paces[0]) == inspect.CORO_CLOSED
    assert wait.cancelled()
    assert reader.close() == 3
