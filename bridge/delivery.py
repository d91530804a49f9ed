"""Delivery: one sink and its worker, started, supervised, stopped — and where it runs.

:class:`Delivery` is the protocol the rest of the process sees (compose, reconfigure,
supervisor); its only variation is where the sink worker runs:

- :class:`LocalDelivery`: in this process, on a tail of the spool fed by direct calls
  (:func:`bridge.spool.tail.follow`), attached at ``start`` and detached at ``close``;
- :class:`~bridge.shipper.parent.ShipperDelivery`: in the shipper process, on a tail fed over
  the link (:mod:`bridge.shipper`), which runs a :class:`WorkerDelivery` itself.

:func:`build_delivery` picks one from the settings. :class:`WorkerDelivery` supervises a sink
worker on a spool reader: starting retries while the broker is unreachable, and — slowly,
every ``retry_max`` — while the sink cannot work as configured (a rotated password, a missing
DLQ topic): frames wait in the spool meanwhile, and :attr:`WorkerDelivery.problem` says why
nothing is delivered (readiness shows it). Any error that ends the worker is logged
(``sink.worker_crashed``), counted (``sink_worker_restarts_total``), the reader's window is
rewound, and after a backoff a new worker starts on a renewed sink (closed and started again,
unless the spool was to blame). A sink swap (config reload) is a new delivery: the old one is
closed (what its worker held stays in the spool), the new one drains the spool from the
acknowledged position.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from bridge.errors import ConfigError, SinkConfigError, SinkUnavailableError, SpoolError
from bridge.logs import get_logger
from bridge.metrics import Metrics, init_sink
from bridge.pipeline import Record
from bridge.retry import RetryPolicy
from bridge.settings import Settings
from bridge.shipper.parent import ShipperDelivery
from bridge.sinks.base import Fencing, Sink
from bridge.sinks.kinds import sink_kind
from bridge.sinks.worker import SinkWorker
from bridge.spool import SpoolReader
from bridge.spool.disk import DiskSpool
from bridge.spool.tail import SpoolTail, follow
from bridge.wiring import build_sink

log = get_logger(__name__)
STOP_WORKER_SECONDS = 10.0
CLOSE_SINK_SECONDS = 10.0
HEALTHY_SECONDS = 60.0  # a worker that ran this long restarts without the backoff it had
PROBLEM_CHARS = 300
PROVEN_SECONDS = 2.0  # a restarted worker that ran this long is no longer "crashed"


def crash_problem(error: BaseException) -> str:
    """What readiness says while a crashed worker waits for its restart (pure)."""
    return f"the sink worker crashed ({error!r}); restarting"[:PROBLEM_CHARS]


@runtime_checkable
class Delivery(Protocol):
    """What the rest of the process needs of a delivery, wherever its worker runs."""

    @property
    def kind(self) -> str:
        """The sink's kind (kafka, redis, file)."""
        ...

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        ...

    @property
    def delivering(self) -> bool:
        """The sink is started, its worker runs and no destination is retrying."""
        ...

    @property
    def problem(self) -> str | None:
        """Why records are not being delivered right now (None: they are, or can be)."""
        ...

    @property
    def shares_loop_with_readers(self) -> bool:
        """The worker runs on the socket readers' event loop (then the pacer lets it keep
        up, :mod:`bridge.pacing`)."""
        ...

    def start(self) -> None: ...

    async def reachable(self) -> bool: ...

    async def stop_worker(self) -> None:
        """Stop the worker; what it held stays in the spool."""
        ...

    async def close(self, within: float) -> None:
        """Stop the worker and close the sink, within ``within`` seconds."""
        ...


class WorkerDelivery:
    """A sink worker on ``spool`` (a reader: the tail), supervised."""

    def __init__(
        self,
        settings: Settings,
        spool: SpoolReader,
        metrics: Metrics,
        *,
        sink: Sink | None = None,
        sink_factory: Callable[[], Sink] | None = None,
        environ: Mapping[str, str],
        fencing: Fencing | None = None,
        before_first_worker: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        # run once, the first time the sink has started, before any worker takes a record
        self.before_first_worker = before_first_worker
        self.spool = spool
        self.metrics = metrics
        self.environ = environ
        self.fencing = fencing
        if sink_factory is None and sink is None:
            sink_factory = self._build_sink
        self.sink_factory = sink_factory
        self.sink = sink if sink is not None else self._new_sink()
        self.started = False
        self.worker: SinkWorker | None = None
        self._problem: str | None = None
        self._crash: str | None = None  # the last crash, until a new worker ran PROVEN_SECONDS
        self._proving: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._renew = False  # the sink is to be closed and built again before it starts

    def _build_sink(self) -> Sink:
        return build_sink(self.settings, self.environ, self.fencing)

    def _new_sink(self) -> Sink:
        assert self.sink_factory is not None  # noqa: S101 - set whenever no sink was given
        return self.sink_factory()

    @property
    def kind(self) -> str:
        return self.sink.kind

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def shares_loop_with_readers(self) -> bool:
        """No socket reader runs beside a bare worker (the shipper's)."""
        return False

    @property
    def problem(self) -> str | None:
        """Why records are not being delivered right now (None: they are, or can be)."""
        if self._problem is not None or self._crash is not None:
            return self._problem or self._crash
        worker = self.worker
        return worker.problem if worker is not None else None

    @property
    def delivering(self) -> bool:
        """The sink is started, its worker runs (and, after a crash, has run a while) and no
        destination is retrying."""
        worker = self.worker
        return self.started and self._crash is None and worker is not None and worker.healthy

    def start(self) -> None:
        init_sink(self.metrics, self.sink.kind)
        self.metrics.sink_worker_restarts.inc(0)
        self._stopping = False
        self._spawn()

    def _spawn(self) -> None:
        task = self._task = asyncio.create_task(self._deliver(), name="sink-worker")
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The supervising task ended (done callback): only ``stop_worker`` may end it; any
        other end (an error escaping the supervision, a cancellation nobody asked for) is
        logged, counted and delivery starts again."""
        if self._stopping or task is not self._task:
            return
        error = "cancelled" if task.cancelled() else repr(task.exception())
        self.worker = None
        self.started = False
        self._renew = True
        self._crashed_now(RuntimeError(f"delivery ended: {error}"))
        self.metrics.sink_worker_restarts.inc()
        self.metrics.sink_up.labels(self.sink.kind).set(0)
        log.error("sink.delivery_ended", sink=self.sink.kind, error=error[:1000])
        self._spawn()

    # ---- the supervised life ------------------------------------------------------------
    async def _deliver(self) -> None:
        """Start the sink, run a worker; whatever ends it, start again after a backoff. A
        cancellation is the end only when asked for (``stop_worker``); any other is a crash."""
        sink_settings = self.settings.sink
        retry = RetryPolicy(
            sink_settings.retry_initial, sink_settings.retry_max, healthy_after=HEALTHY_SECONDS
        )
        restarts = retry.start()
        while not self._stopping:
            restarts.healthy(time.monotonic())
            try:
                await self._start_sink(retry)
                if self._stopping:  # a cancellation a library swallowed: stop all the same
                    return
                first, self.before_first_worker = self.before_first_worker, None
                if first is not None:
                    first()
                self.spool.rewind()  # a new worker: everything unacknowledged goes out again
                worker = self.worker = SinkWorker(
                    self.sink,
                    self.spool,
                    self.metrics,
                    dlq=sink_settings.dlq,
                    batch_max_records=sink_settings.batch_max_records,
                    batch_max_bytes=sink_settings.batch_max_bytes,
                    retry=retry,
                    max_in_flight_bytes=sink_settings.max_in_flight_bytes,
                    one_lane=self.sink.kind == "file",  # one file: its readers rely on its order
                    linger=sink_kind(sink_settings).linger(sink_settings),
                )
                self._prove(worker)
                await worker.run()
                error: BaseException = RuntimeError("the sink worker returned")
            except asyncio.CancelledError as exc:
                if self._stopping or _cancel_requested():
                    raise
                error = exc  # a publish call's or a library's own, not ours
            except Exception as exc:  # noqa: BLE001 - supervised: any death is a restart
                error = exc
            if self._stopping:
                return
            renew = not isinstance(error, SpoolError)
            await self._crashed(error, restarts.next_delay(time.monotonic()), renew=renew)

    async def _crashed(self, error: BaseException, delay: float, *, renew: bool) -> None:
        """A worker died: logged, counted, shown; after ``delay`` the next one starts, on a
        renewed sink (closed, built again, started) unless the spool was to blame (the
        started sink is kept: never started twice without a close between)."""
        self.worker = None
        self._crashed_now(error)
        self.metrics.sink_worker_restarts.inc()
        self.metrics.sink_up.labels(self.sink.kind).set(0)
        log.error("sink.worker_crashed", sink=self.sink.kind, error=repr(error)[:1000],
                  retry_in=round(delay, 3), renew_sink=renew)  # fmt: skip
        if renew or not self.started:
            self.started = False
            self._renew = True
        await asyncio.sleep(delay)

    def _crashed_now(self, error: BaseException) -> None:
        """Readiness says the worker crashed until a new one has settled a record or run
        ``PROVEN_SECONDS`` (one that dies again at once keeps it said, never ready between)."""
        self._crash = crash_problem(error)
        if self._proving is not None:
            self._proving.cancel()
            self._proving = None

    def _prove(self, worker: SinkWorker) -> None:
        """Clear the crash once ``worker``, still the running one, settles a record or has
        run ``PROVEN_SECONDS``."""
        if self._crash is None:
            return

        def proven() -> None:
            if self.worker is worker and self._proving is not None:
                self._proving.cancel()
                self._proving = None
                self._crash = None

        worker.on_progress = proven
        self._proving = asyncio.get_running_loop().call_later(PROVEN_SECONDS, proven)

    async def _renewed(self) -> None:
        """The sink closed and, with a factory, built again (its password read again); a
        factory that fails raises (ConfigError), the old sink kept closed for the next try."""
        await self._close_sink()
        if self.sink_factory is not None:
            self.sink = self._new_sink()
        self._renew = False

    async def _start_sink(self, retry: RetryPolicy) -> None:
        """Start the sink: retried with backoff while unreachable, every ``retry_max`` while
        it cannot work as configured or cannot be built (rebuilt each time: a password file
        may have changed). One log line per episode of the latter, one when it is over."""
        if self.started:
            return
        unreachable = retry.start()
        refused: str | None = None
        while True:
            try:
                if self._renew:
                    await self._renewed()
                await self.sink.start()
            except (SinkConfigError, ConfigError) as exc:
                if refused is None:
                    log.error("sink.cannot_start", sink=self.sink.kind, error=str(exc))
                refused = str(exc)
                self._sink_down(f"the sink cannot start: {exc}")
                await asyncio.sleep(retry.maximum)
                self._renew = True
                continue
            except SinkUnavailableError as exc:
                self._sink_down(f"the sink is unreachable: {exc}")
                log.warning("sink.unavailable", sink=self.sink.kind, error=str(exc))
                await asyncio.sleep(unreachable.next_delay(time.monotonic()))
                self._renew = True  # what a failed start left open is closed first
                continue
            break
        if refused is not None:
            log.info("sink.can_start", sink=self.sink.kind, after=refused[:PROBLEM_CHARS])
        self.started = True
        self._problem = None
        self.metrics.sink_up.labels(self.sink.kind).set(1)
        log.info("sink.started", sink=self.sink.kind)

    def _sink_down(self, problem: str) -> None:
        self._problem = problem[:PROBLEM_CHARS]
        self.metrics.sink_up.labels(self.sink.kind).set(0)

    async def _close_sink(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sink.close(), timeout=CLOSE_SINK_SECONDS)

    # ---- readiness and the end ------------------------------------------------------------
    async def reachable(self) -> bool:
        return self.started and await self.sink.reachable()

    async def stop_worker(self) -> None:
        """Cancel the worker; what it held stays in the spool. Bounded: a client library
        that holds on to the cancellation does not hold the shutdown with it."""
        self._stopping = True
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


def _cancel_requested() -> bool:
    """The running task was asked to stop (not merely handed a CancelledError from below)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class LocalDelivery(WorkerDelivery):
    """The worker in this process, on a tail of ``log`` that follows it by direct calls:
    attached at ``start`` (from the acknowledged position), detached at ``close``."""

    def __init__(
        self,
        settings: Settings,
        log: DiskSpool,
        metrics: Metrics,
        *,
        sink: Sink | None = None,
        environ: Mapping[str, str],
        fencing: Fencing | None = None,
    ) -> None:
        self.log = log
        self.tail: SpoolTail | None = None
        super().__init__(
            settings, _NOT_ATTACHED, metrics, sink=sink, environ=environ, fencing=fencing
        )

    @property
    def shares_loop_with_readers(self) -> bool:
        return True

    def start(self) -> None:
        if self.tail is None:
            self.tail = self.spool = follow(self.log)
        super().start()

    async def close(self, within: float) -> None:
        await super().close(within)
        if self.tail is not None:
            self.log.detach()
            self.tail.close()
            self.tail = None
            self.spool = _NOT_ATTACHED


class NotAttached:
    """The reader of a local delivery not started yet (or closed): reads nothing."""

    async def read(self, max_records: int, max_bytes: int = 0) -> list[Record]:
        raise SpoolError("spool: the delivery is not started")

    def ack(self, count: int) -> None:
        return None

    def rewind(self) -> None:
        return None


_NOT_ATTACHED = NotAttached()


def build_delivery(
    settings: Settings,
    spool: DiskSpool,
    metrics: Metrics,
    *,
    environ: Mapping[str, str],
    fencing: Fencing | None = None,
    sink: Sink | None = None,
) -> Delivery:
    """The delivery the settings ask for: the worker in a process of its own
    (``sink.separate_process``, no sink given, no fencing to share) or in this one. Raises
    ConfigError when the sink's password cannot be read."""
    if settings.sink.separate_process and sink is None and fencing is None:
        return ShipperDelivery(settings, spool, metrics, environ=environ)
    return LocalDelivery(settings, spool, metrics, sink=sink, environ=environ, fencing=fencing)
