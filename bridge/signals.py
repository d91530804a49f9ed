"""Process signals: SIGTERM/SIGINT stop gracefully, a second one exits at once, SIGHUP
reloads the config."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

from bridge.logs import get_logger

log = get_logger(__name__)
SIGNAL_DEBOUNCE = 0.5  # the same signal delivered twice at once (uv run, shells) is one


class SignalHandlers:
    def __init__(self, on_stop: Callable[[str], None], on_hangup: Callable[[], None]) -> None:
        self.on_stop = on_stop
        self.on_hangup = on_hangup
        self._first_at: float | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop_signal, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.on_hangup)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _stop_signal(self, sig: signal.Signals) -> None:
        """First signal: graceful stop. A second one, a moment later, exits at once."""
        now = time.monotonic()
        if self._first_at is None:
            self._first_at = now
            self.on_stop(sig.name)
        elif now - self._first_at > SIGNAL_DEBOUNCE:
            log.warning("bridge.forced_exit", signal=sig.name)
            os._exit(1)
