"""Which asyncio event loop runs the daemon: uvloop where it is installed (``auto``), else the
standard one. uvloop runs the same code with cheaper sockets, timers and callbacks."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from bridge.errors import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], choice: LoopChoice = "auto") -> T:
    if choice != "asyncio":
        try:
            import uvloop  # noqa: PLC0415 - optional at run time
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise ConfigError(["event_loop: uvloop is not installed"]) from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def loop_name() -> str:
    """The running loop's kind, for the start-up log line."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def settle_heap() -> None:
    """Take what start-up built (modules, settings, the composed parts: ~80,000 objects) out of
    the garbage collector's way, once, before the loop runs: collected, then frozen, so the
    collector's older generations no longer walk them. Each pass over them ran on the event
    loop for tens of ms (a full one 24-229 ms on the loaded development machine), the loop's
    largest stalls and the source of the latency tail (docs/benchmark.md)."""
    gc.collect()
    gc.freeze()
