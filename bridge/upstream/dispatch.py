"""Messages handed to their consumers from one callback per loop turn, not a task wake-up each.

At fleet scale (thousands of quiet sockets, a message now and then on each) every message
woke its socket's session task: the reader's future resolved, the task stepped, took the one
message, handed it on and made a new future to wait on. Here a reader whose consumer waits
queues itself instead (:meth:`Dispatch.ready`); the first one of a loop turn schedules
:meth:`Dispatch.run`, which drains every queued reader in the order they became ready: each
hands its messages to its consumer's step directly, while the session task stays parked. The
task wakes only for what a callback cannot do: await the consumer's pacing, raise what the
consumer raised, wait for room in the buffered-frames budget, raise what ended the connection
(:meth:`bridge.upstream.ws.MessageReader.drain`).

A drain never raises but SystemExit and KeyboardInterrupt; should one raise anything else, the
readers queued behind it are drained all the same and the error goes to the loop's exception
handler (logged); from one of those two on, they are queued again for the next run. A reader
queued and never drained would never wake its task again. Each run has a context of its own,
empty: no socket's context variables reach another's consumer.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Protocol


class Drainable(Protocol):
    def drain(self) -> None: ...


class Dispatch:
    """The readers ready this loop turn, drained by one callback."""

    def __init__(self) -> None:
        self._ready: list[Drainable] = []

    def ready(self, reader: Drainable) -> None:
        """Queue ``reader`` for this turn's run (the first of a turn schedules it)."""
        if not self._ready:
            asyncio.get_running_loop().call_soon(self.run, context=contextvars.Context())
        self._ready.append(reader)

    def run(self) -> None:
        """Drain every reader queued so far, in order; what one raises does not stop the
        others."""
        ready, self._ready = self._ready, []
        for index, reader in enumerate(ready):
            try:
                reader.drain()
            except Exception as exc:  # noqa: BLE001 - reported, the others still drained
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "a reader's drain failed", "exception": exc}
                )
            except BaseException:  # SystemExit, KeyboardInterrupt: this one and the rest
                self._again(ready[index:])  # again (what it took, it handed on or raised)
                raise

    def _again(self, readers: list[Drainable]) -> None:
        """Queue ``readers`` ahead of any queued since, for the next run."""
        if readers:
            if not self._ready:
                asyncio.get_running_loop().call_soon(self.run, context=contextvars.Context())
            self._ready[:0] = readers
