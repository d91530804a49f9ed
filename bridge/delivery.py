"""The delivery side of a process: one sink, its worker, started, swapped and stopped.

Starting retries while the broker is unreachable (frames wait in the spool meanwhile); a
sink that cannot work as configured is fatal and reported to the supervisor. A swap (config
reload) cancels the worker, leaves the batch in flight in the spool, closes the old sink and
starts the new one, which drains the spool from where the old one stopped. The same worker
runs in the shipper process when the sink has a process of its own (:mod:`bridge.shipper`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.metrics import Metrics, init_sink
from bridge.settings import Settings
from bridge.sinks.base import Sink
from bridge.sinks.redis import Fencing
from bridge.sinks.worker import RetryPolicy, SinkWorker
from bridge.spool import SpoolReader
from bridge.wiring import build_sink

log = get_logger(__name__)
STOP_WORKER_SECONDS = 10.0


class Delivery:
    in_process = True  # the worker shares this process's event loop with the readers

    def __init__(
        self,
        settings: Settings,
        spool: SpoolReader,
        metrics: Metrics,
        *,
        sink: Sink | None = None,
        environ: Mapping[str, str],
        on_fatal: Callable[[str], None],
        fencing: Fencing | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.environ = environ
        self.fencing = fencing
        self.sink = sink or build_sink(settings, environ, fencing)
        self.on_fatal = on_fatal
        self.started = False
        self.worker: SinkWorker | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def kind(self) -> str:
        return self.sink.kind

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        init_sink(self.metrics, self.sink.kind)
        self._task = asyncio.create_task(self._deliver(), name="sink-worker")

    async def _deliver(self) -> None:
        """Start the sink (retrying while it is unreachable), then run the worker."""
        sink_settings = self.settings.sink
        retry = RetryPolicy(sink_settings.retry_initial, sink_settings.retry_max)
        attempt = 0
        while True:
            try:
                await self.sink.start()
                break
            except SinkConfigError as exc:
                self.on_fatal(str(exc))
                return
            except SinkUnavailableError as exc:
                attempt += 1
                self.metrics.sink_up.labels(self.sink.kind).set(0)
                log.warning("sink.unavailable", sink=self.sink.kind, error=str(exc))
                await asyncio.sleep(retry.delay(attempt))
        self.started = True
        self.metrics.sink_up.labels(self.sink.kind).set(1)
        log.info("sink.started", sink=self.sink.kind)
        worker = self.worker = SinkWorker(
            self.sink,
            self.spool,
            self.metrics,
            dlq=sink_settings.dlq,
            batch_max_records=sink_settings.batch_max_records,
            batch_max_bytes=sink_settings.batch_max_bytes,
            retry=retry,
        )
        await worker.run()

    @property
    def delivering(self) -> bool:
        """The sink is started and its last publish went through (not retrying)."""
        return self.started and self.worker is not None and self.worker.healthy

    async def reachable(self) -> bool:
        return self.started and await self.sink.reachable()

    async def stop_worker(self) -> None:
        """Cancel the worker; the batch in flight stays in the spool. Bounded: a client
        library that holds on to the cancellation does not hold the shutdown with it."""
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_WORKER_SECONDS)
            if not done:
                log.warning("sink.worker_stuck", sink=self.sink.kind)
            for task in done:
                with contextlib.suppress(asyncio.CancelledError):
                    task.result()
            self._task = None

    async def close(self, within: float) -> None:
        await self.stop_worker()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sink.close(), timeout=max(1.0, within))
