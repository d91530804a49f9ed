"""One instance, wired: its token, its ensure, its socket, its pipeline, into the spool
(through the process's :class:`~bridge.intake.SpoolIntake`: one append per loop turn).

The runner reads frames and appends the pipeline's records to the spool; it never awaits a
broker. It reports everything it sees to logs (bound with ``instance=``) and metrics. A
token that cannot be resolved fails this instance only, and is retried slowly.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from pydantic import SecretStr

from bridge.errors import ConfigError, SpoolError, UpstreamError
from bridge.intake import SpoolIntake
from bridge.lastseen import LastSeen
from bridge.logs import get_logger, register_secret
from bridge.metrics import Children, Metrics, event_label, reason_label
from bridge.pipeline import Drop, Frame, Pipeline, Publish, Record
from bridge.pipeline.gap import gap_value
from bridge.pipeline.records import rfc3339
from bridge.pipeline.sourcetime import upstream_lag as frame_lag
from bridge.settings import InstanceSettings, UpstreamSettings, resolve_token
from bridge.spool import Spool
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import RestClient, WsConfig, desired_config
from bridge.upstream.shared import SocketsShared
from bridge.upstream.ws import BATCH_BYTES, BATCH_FRAMES, InstanceSource


def rfc3339_or_none(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(int(seconds * 1e9))


@dataclass
class InstanceStatus:
    """What the admin server shows about one instance (never a secret)."""

    state: str = "starting"
    connected_since: float | None = None
    last_frame_at: float | None = None
    frames: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_ensure: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.state == "connected"


async def _yield() -> None:
    await asyncio.sleep(0)


LAG_MAX_FRAME_BYTES = 64 * 1024  # a larger frame gives no lag estimate (its decoding costs)


@dataclass(frozen=True)
class RunnerContext:
    """What every runner of a process shares."""

    upstream: UpstreamSettings
    spool: Spool
    metrics: Metrics
    buckets: BucketRegistry
    rest_factory: Callable[[SecretStr, TokenBucket], RestClient]
    environ: Mapping[str, str]
    ssl: ssl.SSLContext | None = None
    last_seen: LastSeen = field(default_factory=LastSeen)
    gap_markers: bool = True
    replica: str = field(default_factory=socket.gethostname)
    pace: Callable[[], Awaitable[None]] = field(default=_yield)
    held: Callable[[], bool] = field(default=lambda: False)
    sockets: SocketsShared = field(default_factory=SocketsShared)
    intake: SpoolIntake | None = None


class Runner:
    def __init__(
        self,
        name: str,
        settings: InstanceSettings,
        pipeline: Pipeline,
        ctx: RunnerContext,
        known_config: WsConfig | None = None,
        *,
        takeover: bool = False,
    ) -> None:
        self.name = name
        self.takeover = takeover  # taken over from another replica: the first gap says so
        self.settings = settings
        self.pipeline = pipeline
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.status = InstanceStatus()
        self.log = get_logger("bridge.runner", instance=name)
        series = ctx.metrics.series
        self._received = Children(ctx.metrics.events_received, series)
        self._dropped = Children(ctx.metrics.events_dropped, series)
        self._label_of = series.label  # own name or ``_other`` (the fleet's init_instance)
        self._upstream_lag = ctx.metrics.upstream_lag.labels()
        # the process's intake when it has one (appends gathered across sockets per turn)
        self.intake = ctx.intake or SpoolIntake(ctx.spool, self.count_spool_drop)
        self._source: InstanceSource | None = None
        self._stopping = asyncio.Event()
        self._connected_before = False
        self._known_config = known_config
        self._last_disconnect: str | None = None
        self._handled = self._read = 0  # frames and bytes read since the last pace

    async def run(self) -> None:
        """Read until :meth:`stop`; every frame received is in the spool when this returns."""
        token = await self._token()
        if token is None:
            return
        self.pipeline = replace(self.pipeline, token=token.get_secret_value().encode())
        bucket = self.ctx.buckets.for_token(token)
        rest = self.ctx.rest_factory(token, bucket)
        rest.on_wait = lambda s: self.metrics.rate_limit_wait.labels(self.label).inc(s)
        desired = desired_config(list(self.settings.events), self.settings.media_base64)

        async def ensure() -> None:
            known, self._known_config = self._known_config, None  # from a list: first time only
            try:
                outcome = await rest.ensure(
                    self.name, desired, manage=self.settings.manage_config, known=known
                )
            except UpstreamError as exc:
                self.metrics.ensure.labels(self.label, "error").inc()
                self.status.last_ensure = f"error: {exc}"
                raise
            self.metrics.ensure.labels(self.label, outcome).inc()
            self.status.last_ensure = outcome
            level = self.log.warning if outcome == "drift" else self.log.info
            level(f"ensure.{outcome}", desired=sorted(desired.events) or "all")

        self._source = InstanceSource(
            self.name,
            token,
            self.ctx.upstream,
            bucket,
            ensure=ensure,
            observer=self,
            shared=self.ctx.sockets,
            ssl=self.ctx.ssl,
            check_first=self._known_config is not None,  # else the socket opens first
        )
        # a crash in consume closes the socket before the restart (the session's own cleanup)
        await self._source.run(self.consume)

    def consume(self, frames: list[Frame]) -> Awaitable[None] | None:
        """One batch read into the spool; every ``BATCH_FRAMES`` frames or ``BATCH_BYTES``
        bytes (or while the sink worker is held), the pace to await before reading on: a
        flooded socket must not starve the sink worker."""
        self._read += self.handle_all(frames)
        self._handled += len(frames)
        if self._handled >= BATCH_FRAMES or self._read >= BATCH_BYTES or self.ctx.held():
            self._handled = self._read = 0
            return self.ctx.pace()
        return None

    async def _token(self) -> SecretStr | None:
        """Resolve the token; while it cannot be, the instance is failed and retried slowly."""
        while not self._stopping.is_set():
            try:
                token = resolve_token(self.name, self.settings, self.ctx.environ)
            except ConfigError as exc:
                self.failed_message(str(exc))
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.ctx.upstream.backoff_max)
                except TimeoutError:
                    continue
            else:
                register_secret(token.get_secret_value())
                return token
        return None

    def handle_all(self, frames: list[Frame]) -> int:
        """Run a batch of frames through the pipeline into the spool, in order, counting what
        happens (one increment per label in the batch); returns the bytes read. A batch the
        bridge itself fails on is counted as dropped (``internal_error``) and the socket stays
        open, so a frame that trips a bug cannot take the frames queued behind it, uncounted,
        down with the runner (nor crash-loop it); only a spool that is gone (SpoolError) ends
        the runner, after counting the batch (the fleet restarts it with its backoff)."""
        counted_as = self.label  # the ryze_instance label, once per batch
        failed: Exception | None = None
        try:
            records, received, dropped = self._records_of(frames)
            if records:  # counted received once appended: a drop the spool makes shows with it
                then = received
                self.intake.add(records, lambda: self.count_received(counted_as, then))
                received = {}
        except Exception as exc:  # counted, logged with its trace
            self.log.exception("runner.internal_error", frames=len(frames))
            received, dropped = {"other": len(frames)}, {"internal_error": len(frames)}
            failed = exc
        for reason, count in dropped.items():
            self._dropped(counted_as, reason).inc(count)
        self.count_received(counted_as, received)
        self.status.frames += len(frames)
        self.ctx.last_seen.set(self.name, frames[-1].received_ns)
        self._observe_lag(frames[0])
        if isinstance(failed, SpoolError):
            raise failed
        return sum(len(frame.raw) for frame in frames)

    def _observe_lag(self, oldest: Frame) -> None:
        """One lag estimate per batch read, from its oldest frame (the one that waited longest
        behind the others, not the newest that waited least); a frame over 64 KiB is skipped
        (decoding megabytes again on the reader's loop costs more than one sample is worth)."""
        if len(oldest.raw) > LAG_MAX_FRAME_BYTES:
            return
        lag = frame_lag(oldest.raw, oldest.received_ns)
        if lag is not None:
            self._upstream_lag.observe(lag)

    def _records_of(
        self, frames: list[Frame]
    ) -> tuple[list[Record], dict[str, int], dict[str, int]]:
        """The batch's records to spool, its frames per event label and its drops per reason."""
        process = self.pipeline.process
        records: list[Record] = []
        received: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for frame in frames:
            result = process(frame)
            if isinstance(result, Drop):
                label = event_label(result.event)
                dropped[result.reason] = dropped.get(result.reason, 0) + 1
            else:
                label = self.received_label(result)
                records.append(result.record)
            received[label] = received.get(label, 0) + 1
        return records, received, dropped

    def count_received(self, counted_as: str, received: dict[str, int]) -> None:
        for label, count in received.items():
            self._received(counted_as, label).inc(count)

    def spool(self, record: Record) -> None:
        """Append to the spool (this loop turn, after the frames before it); whatever it drops
        (full, or its disk failing) is counted."""
        self.intake.add((record,))

    def count_spool_drop(self, record: Record, reason: str) -> None:
        """Count a record the spool dropped, with its reason (spool_full, disk_full,
        disk_error)."""
        self._dropped(self._label_of(record.instance), reason).inc()

    def received_label(self, result: Publish) -> str:
        """The event label a published frame is counted under; a dead letter and an unknown
        event are also logged or counted as such."""
        record = result.record
        if record.dlq_reason is not None:
            self.log.warning("pipeline.dead_letter", reason=record.dlq_reason, ryze_id=record.id)
            return "other"
        if not result.known_event:
            self.metrics.events_unknown.labels(self.label).inc()
        return event_label(record.event)

    def describe(self) -> dict[str, object]:
        """The instance's state for the admin API (never a secret)."""
        status = self.status
        now = time.time()
        return {
            "state": status.state,
            "connected_since": rfc3339_or_none(status.connected_since),
            "seconds_since_last_frame": (
                None if status.last_frame_at is None else round(now - status.last_frame_at, 3)
            ),
            "frames": status.frames,
            "reconnects": status.reconnects,
            "last_error": status.last_error,
            "last_ensure": status.last_ensure,
        }

    @property
    def label(self) -> str:
        """The ``ryze_instance`` label this instance counts under now (its name or
        ``_other``; a reload of ``metrics.per_instance`` may change it)."""
        return self._label_of(self.name)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def reading(self) -> bool:
        """Connected, or upgrading (frames may come with the upgrade's answer): a stop lets it
        read what came instead of cancelling it."""
        return self.status.connected or (self._source is not None and self._source.upgrading)

    async def reconnect(self) -> None:
        """Close the socket now; the source opens a new one (an operator's request)."""
        if self._source is not None:
            await self._source.reconnect()

    async def stop(self) -> None:
        """Stop intake: close the socket; :meth:`run` returns once the buffer is drained."""
        self._stopping.set()
        if self._source is not None:
            await self._source.stop()

    # SessionObserver: what the source reports
    def connected(self) -> None:
        self.status.state = "connected"
        self.status.connected_since = time.time()
        self.activity(ping=False)  # the handshake is news from the upstream too
        self.status.last_error = None
        self.log.info("ws.connected")
        if self.ctx.gap_markers:
            self.mark_gap(time.time_ns())

    def mark_gap(self, connected_ns: int) -> None:
        """Write the ``bridge.gap`` marker for the hole this connection closes."""
        if self._connected_before:
            reason, last = "reconnect", self.ctx.last_seen.get(self.name)
        elif self.takeover:
            reason, last = "shard_takeover", self.ctx.last_seen.get(self.name)
        else:
            last = self.ctx.last_seen.previous(self.name)
            reason = "bridge_start" if last is None else "bridge_restart"
        value = gap_value(
            self.name,
            reason=reason,
            detail=self._last_disconnect if reason == "reconnect" else None,
            last_frame_ns=last,
            connected_ns=connected_ns,
            replica=self.ctx.replica,
        )
        self.spool(self.pipeline.gap_record(self.name, value, connected_ns))
        self._connected_before = True  # (after: a marker the spool refused is written again)
        self.log.info("gap.marked", reason=reason)

    def discarded(self, count: int) -> None:
        """Messages read off the socket but never handed over (the runner ended under them):
        received, dropped as ``internal_error``."""
        self._received(self.label, "other").inc(count)
        self._dropped(self.label, "internal_error").inc(count)
        self.log.warning("ws.frames_discarded", frames=count)

    def disconnected(self, reason: str) -> None:
        self._last_disconnect = reason
        self.status.state = "stopped" if reason == "stopping" else "disconnected"
        self.status.connected_since = None
        if reason != "stopping":
            self.status.reconnects += 1
            self.metrics.ws_reconnects.labels(self.label, reason_label(reason)).inc()
        if reason == "frame_too_large":  # read in part, never handed over: received, dropped
            self._received(self.label, "other").inc()
            self._dropped(self.label, "frame_too_large").inc()
            self.log.warning(
                "ws.frame_too_large", limit=self.ctx.upstream.max_frame_bytes, action="reconnect"
            )
        self.log.info("ws.disconnected", reason=reason)

    def failed(self, error: UpstreamError) -> None:
        self.failed_message(str(error))

    def failed_message(self, message: str) -> None:
        self.status.state = "failed"
        self.status.last_error = message
        self.log.error("instance.failed", error=message)

    def retrying(self, reason: str, delay: float) -> None:
        if reason == "rate_limited":
            self.metrics.rate_limited.labels(self.label).inc()
            self.metrics.rate_limit_wait.labels(self.label).inc(delay)
        if self.status.state != "failed":
            self.status.state = "reconnecting"
        self.log.info("ws.reconnecting", reason=reason, delay=round(delay, 3))

    def activity(self, ping: bool) -> None:
        # the last-frame gauge is read off this status at scrape time (bridge.metrics_fold)
        self.status.last_frame_at = time.time()
        if ping:
            self.metrics.ws_pings.labels(self.label).inc()
