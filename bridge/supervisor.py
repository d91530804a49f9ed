"""The supervisor: wires the spool, the sink worker, the admin server and one runner per
instance, and runs the named lifecycle.

start sink worker → start admin → start runners (one at a time) → run → on SIGTERM/SIGINT
stop intake (close every socket, keep what was read) → drain the spool to the sink within
``shutdown_timeout`` → close. A second signal exits at once. Runners come and go while the
process runs (:meth:`add_instance` / :meth:`remove_instance`); one failing never stops another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from bridge import __version__
from bridge.admin import AdminServer, Liveness, Readiness, readiness
from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.lastseen import LastSeen
from bridge.logs import get_logger
from bridge.metrics import Metrics, create_metrics, forget_instance, init_sink
from bridge.pipeline import Pipeline, Router
from bridge.pipeline.filter import EventFilter
from bridge.runner import Runner, RunnerContext
from bridge.settings import InstanceSettings, Settings
from bridge.sinks.base import Sink
from bridge.sinks.file import FileSink
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.redis import RedisSink
from bridge.sinks.worker import RetryPolicy, SinkWorker
from bridge.spool import Spool
from bridge.spool.disk import DiskSpool
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import RestClient

log = get_logger(__name__)
KAFKA_RECORD_OVERHEAD = 1024
STOP_READ_TIMEOUT = 5.0
SIGNAL_DEBOUNCE = 0.5
LAST_SEEN_SAVE_SECONDS = 1.0


def build_sink(settings: Settings) -> Sink:
    sink = settings.sink
    if sink.kind == "kafka":
        return KafkaSink(sink.kafka, sink.dlq)
    if sink.kind == "redis":
        return RedisSink(sink.redis)
    return FileSink(sink.file.path, sink.dlq, fsync=settings.spool.fsync == "always")


def build_router(settings: Settings) -> Router:
    sink = settings.sink
    if sink.kind == "kafka":
        return Router(sink.kafka.topic, sink.kafka.key, kafka_names=True)
    if sink.kind == "redis":
        return Router(sink.redis.stream, "instance")
    return Router(sink.kafka.topic, sink.kafka.key)


def max_value_bytes(settings: Settings) -> int:
    """The largest value the configured sink takes (bigger frames go to the DLQ)."""
    sink = settings.sink
    if sink.kind == "kafka":
        return sink.kafka.max_request_bytes - KAFKA_RECORD_OVERHEAD
    if sink.kind == "redis":
        return sink.redis.max_entry_bytes
    return settings.upstream.max_frame_bytes


def upstream_ssl(settings: Settings) -> ssl.SSLContext | None:
    ca_file = settings.upstream.ca_file
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        spool: Spool | None = None,
        sink: Sink | None = None,
        environ: Mapping[str, str] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or create_metrics()
        self.spool = spool or DiskSpool(
            settings.spool.dir,
            settings.spool.max_bytes,
            settings.spool.when_full,
            settings.spool.fsync,
            settings.spool.fsync_interval_ms,
        )
        self.sink = sink or build_sink(settings)
        self.environ = environ if environ is not None else os.environ
        self.last_seen = LastSeen(
            settings.spool.dir / "last-seen.json" if isinstance(self.spool, DiskSpool) else None
        )
        self.handle_signals = handle_signals
        self.runners: dict[str, Runner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self._sink_started = False
        self._first_signal_at: float | None = None
        verify: ssl.SSLContext | bool = upstream_ssl(settings) or True
        self.http = httpx.AsyncClient(
            base_url=str(settings.upstream.base_url).rstrip("/"),
            timeout=settings.upstream.request_timeout,
            verify=verify,
            headers={"User-Agent": f"ryze-bridge/{__version__}"},
            trust_env=False,
        )
        self.ctx = RunnerContext(
            upstream=settings.upstream,
            spool=self.spool,
            metrics=self.metrics,
            buckets=BucketRegistry(settings.upstream.rate_limit_per_minute),
            rest_factory=self._rest_client,
            environ=self.environ,
            ssl=upstream_ssl(settings),
            last_seen=self.last_seen,
            gap_markers=settings.sink.gap_markers,
        )
        self.worker = SinkWorker(
            self.sink,
            self.spool,
            self.metrics,
            dlq=settings.sink.dlq,
            batch_max_records=settings.sink.batch_max_records,
            retry=RetryPolicy(settings.sink.retry_initial, settings.sink.retry_max),
        )
        self.admin = AdminServer(
            self.metrics, self.check_ready, host=settings.admin.host, port=settings.admin.port
        )
        self._worker_task: asyncio.Task[None] | None = None
        self._fsync_task: asyncio.Task[None] | None = None

    def _rest_client(self, token: SecretStr, bucket: TokenBucket) -> RestClient:
        return RestClient(self.http, token, bucket)

    async def run(self) -> int:
        """The whole life of the process; returns the exit code."""
        if self.handle_signals:
            self._install_signal_handlers()
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if self.handle_signals:
                self._remove_signal_handlers()
        if self._fatal is not None:
            log.error("bridge.fatal", error=self._fatal)
            return 1
        return 0

    async def start(self) -> None:
        self.metrics.spool_max_bytes.set(self.settings.spool.max_bytes)
        init_sink(self.metrics, self.sink.kind)
        self.metrics.spool_events.set_function(lambda: self.spool.stats().events)
        self.metrics.spool_bytes.set_function(lambda: self.spool.stats().bytes)
        self._open_spool()
        self._worker_task = asyncio.create_task(self._deliver(), name="sink-worker")
        await self.admin.start()
        log.info("admin.listening", host=self.settings.admin.host, port=self.admin.port)
        for name, instance in self.settings.instances.items():
            self.add_instance(name, instance)
        log.info("bridge.started", instances=len(self.runners), sink=self.sink.kind)

    def _open_spool(self) -> None:
        """Open (lock, recover) a disk spool; report what start-up found in it."""
        if not isinstance(self.spool, DiskSpool):
            return
        report = self.spool.open()
        self.last_seen.load()
        for outcome, count in (
            ("replayed", report.replay),
            ("damaged", report.damaged),
            ("torn", report.torn),
        ):
            if count:
                self.metrics.spool_recovered.labels(outcome).inc(count)
        level = log.warning if report.damaged or report.torn else log.info
        level(
            "spool.opened",
            dir=str(self.spool.directory),
            replay=report.replay,
            damaged=report.damaged,
            torn=report.torn,
            torn_bytes=report.torn_bytes,
        )
        self._fsync_task = asyncio.create_task(self._housekeeping(self.spool))

    async def _housekeeping(self, spool: DiskSpool) -> None:
        """fsync on the interval policy's timer; save last-seen times every few seconds."""
        interval = self.settings.spool.fsync_interval_ms / 1000
        ticks_per_save = max(1, int(LAST_SEEN_SAVE_SECONDS / interval))
        tick = 0
        while True:
            await asyncio.sleep(interval)
            if self.settings.spool.fsync == "interval":
                spool.sync()
            tick += 1
            if tick % ticks_per_save == 0:
                self.last_seen.save()

    def request_stop(self) -> None:
        self._stop.set()

    def add_instance(self, name: str, instance: InstanceSettings) -> None:
        """Start the runner of one instance (no-op when it runs already)."""
        if name in self.runners:
            return
        runner = Runner(name, instance, self._pipeline(instance), self.ctx)
        self.runners[name] = runner
        self._tasks[name] = asyncio.create_task(self._supervise(runner), name=f"runner:{name}")
        self.metrics.instances_configured.set(len(self.runners))

    async def remove_instance(self, name: str) -> None:
        """Stop one runner: close its socket, keep every frame it read, then forget it."""
        runner = self.runners.pop(name, None)
        task = self._tasks.pop(name, None)
        if runner is None or task is None:
            return
        await runner.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=STOP_READ_TIMEOUT)
        except TimeoutError:  # stuck before a socket was open (ensure, budget): nothing read
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        forget_instance(self.metrics, name)
        self.metrics.instances_configured.set(len(self.runners))

    def _pipeline(self, instance: InstanceSettings) -> Pipeline:
        token = instance.token.get_secret_value().encode() if instance.token else None
        return Pipeline(
            router=build_router(self.settings),
            dlq=self.settings.sink.dlq,
            max_value_bytes=max_value_bytes(self.settings),
            event_filter=EventFilter(frozenset(self.settings.filter.drop_events)),
            token=token,
        )

    async def _supervise(self, runner: Runner) -> None:
        """Run a runner; a crash is logged and the runner restarted, never propagated."""
        delay = 1.0
        while runner.name in self.runners and not runner.stopping:
            try:
                await runner.run()
            except Exception:
                log.exception("runner.crashed", instance=runner.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                return

    async def _deliver(self) -> None:
        """Start the sink (retrying while it is unreachable), then run the worker."""
        retry = RetryPolicy(self.settings.sink.retry_initial, self.settings.sink.retry_max)
        attempt = 0
        while True:
            try:
                await self.sink.start()
                break
            except SinkConfigError as exc:
                self._fatal = str(exc)
                self._stop.set()
                return
            except SinkUnavailableError as exc:
                attempt += 1
                self.metrics.sink_up.labels(self.sink.kind).set(0)
                log.warning("sink.unavailable", sink=self.sink.kind, error=str(exc))
                await asyncio.sleep(retry.delay(attempt))
        self._sink_started = True
        self.metrics.sink_up.labels(self.sink.kind).set(1)
        log.info("sink.started", sink=self.sink.kind)
        await self.worker.run()

    async def check_ready(self) -> Readiness:
        sink_ok = self._sink_started and await self.sink.reachable()
        now = time.time()
        instances = [
            Liveness(r.name, r.status.connected, now - (r.status.last_frame_at or now))
            for r in self.runners.values()
        ]
        admin = self.settings.admin
        return readiness(
            sink_ok, instances, admin.ready_min_connected_ratio, admin.ready_max_silence_seconds
        )

    async def shutdown(self) -> None:
        """Stop intake, drain within ``shutdown_timeout``, close everything."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("bridge.stopping", instances=len(self.runners))
        await asyncio.gather(*(self.remove_instance(n) for n in list(self.runners)))
        drained = await self._drain(deadline)
        for task in (self._worker_task, self._fsync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = self.spool.stats()
        if not drained:
            log.error("bridge.undelivered", events=left.events, bytes=left.bytes)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sink.close(), timeout=max(1.0, deadline - time.monotonic()))
        await self.admin.close()
        await self.http.aclose()
        self.last_seen.save()
        self.spool.close()
        log.info("bridge.stopped", drained=drained, undelivered=left.events)

    async def _drain(self, deadline: float) -> bool:
        if self._fatal is not None or self._worker_task is None:
            return self.spool.stats().events == 0
        try:
            await asyncio.wait_for(self.spool.wait_empty(), timeout=deadline - time.monotonic())
        except TimeoutError:
            return False
        return True

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        """First signal: graceful stop. A second one, a moment later, exits at once (the same
        signal delivered twice at once, as wrappers like ``uv run`` can do, is one signal)."""
        now = time.monotonic()
        if self._first_signal_at is None:
            self._first_signal_at = now
        elif now - self._first_signal_at > SIGNAL_DEBOUNCE:
            log.warning("bridge.forced_exit", signal=sig.name)
            os._exit(1)
        else:
            return
        log.info("bridge.signal", signal=sig.name)
        self._stop.set()
