"""Hot reload: the config file is re-read on SIGHUP and when it changes.

A Kubernetes ConfigMap volume changes by swapping a symlink (``..data``), so the watcher
looks at what the path resolves to, its inode, size and modification time, not only at the
path. A new file that does not validate is refused (logged with the reason, counted) and the
running config stays.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.errors import ConfigError
from bridge.logs import get_logger
from bridge.metrics import Metrics
from bridge.settings import Settings, load_settings

log = get_logger(__name__)
Fingerprint = tuple[str, int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """What identifies the file's current content: its target, inode, size and mtime."""
    try:
        target = os.path.realpath(path)
        stat = os.stat(target)
    except OSError:
        return None
    return target, stat.st_ino, stat.st_size, stat.st_mtime_ns


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        apply: Callable[[Settings], Awaitable[str]],
        metrics: Metrics,
        poll_seconds: float,
        *,
        watch: bool = True,
    ) -> None:
        self.path = path
        self.apply = apply
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.watch = watch
        self.requested = asyncio.Event()
        self._seen = fingerprint(path)

    def request(self) -> None:
        """SIGHUP: reload at the next turn."""
        self.requested.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.requested.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                if not self.watch:
                    continue
            current = fingerprint(self.path)
            if self.requested.is_set() or current != self._seen:
                self.requested.clear()
                self._seen = current
                await self.reload()

    async def reload(self) -> str:
        """Load and apply the file; an invalid one changes nothing."""
        try:
            settings = load_settings(self.path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("invalid").inc()
            log.error("config.reload_refused", path=str(self.path), problems=exc.problems)
            return "invalid"
        try:
            outcome = await self.apply(settings)
        except Exception as exc:  # noqa: BLE001 - the watcher must outlive a failed apply
            self.metrics.config_reloads.labels("error").inc()
            log.error("config.reload_failed", path=str(self.path), error=repr(exc)[:500])
            return "error"
        self.metrics.config_reloads.labels(outcome).inc()
        log.info("config.reloaded", outcome=outcome)
        return outcome
