"""The supervisor: wires the spool, the sink worker, the admin server and one runner per
instance, and runs the named lifecycle.

start sink worker → start admin → start runners (one at a time) → run → on SIGTERM/SIGINT
stop intake (close every socket, keep what was read) → drain the spool to the sink within
``shutdown_timeout`` → leave the cluster → close. A second signal exits at once. Runners come
and go while the process runs (:meth:`add_instance` / :meth:`remove_instance`); one failing
never stops another.

In a cluster mode the supervisor is the membership's :class:`~bridge.cluster.ShardOwner`: of
the instances it wants (config, discovery) it runs those whose shard it owns, starting them
when a shard is taken and stopping and draining them before a shard is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from pydantic import SecretStr

from bridge import __version__
from bridge.admin import AdminServer, Liveness, Readiness, readiness
from bridge.cluster import Membership, replica_name
from bridge.cluster.balance import shard_of
from bridge.cluster.build import build_membership
from bridge.cluster.redis import RedisMembership
from bridge.delivery import Delivery, build_delivery
from bridge.discovery import Discovery
from bridge.errors import ClusterError, ConfigError
from bridge.lastseen import LastSeen
from bridge.logs import get_logger, mask_registered, register_secret
from bridge.metrics import Metrics, create_metrics, forget_instance, init_cluster
from bridge.pacing import Pacer
from bridge.reload import ConfigWatcher
from bridge.runner import Runner, RunnerContext
from bridge.settings import InstanceSettings, Settings, read_secret
from bridge.signals import SignalHandlers
from bridge.sinks.base import Sink
from bridge.spool import wait_settled
from bridge.spool.disk import DiskSpool
from bridge.spool.trouble import OPS as SPOOL_OPS
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import REST_IN_FLIGHT, RestClient, WsConfig
from bridge.wiring import admin_tls, build_pipeline, upstream_ssl

log = get_logger(__name__)
STOP_READ_TIMEOUT = 5.0
LAST_SEEN_SAVE_SECONDS = 1.0
RESTART_SECTIONS = ("spool", "admin", "log", "reload", "cluster")
TAKEOVER_WATCH_SECONDS = 120.0


def admin_token(settings: Settings, environ: Mapping[str, str]) -> SecretStr | None:
    """The admin API's bearer token, if configured (masked in logs like every secret)."""
    admin = settings.admin
    token = read_secret("admin.token", admin.token_env, admin.token_file, environ)
    if token is not None:
        register_secret(token.get_secret_value())
    return token


def sink_problem(problem: str | None) -> str | None:
    """A delivery problem as readiness names it (pure)."""
    return None if problem is None else f"sink: {problem}"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        spool: DiskSpool | None = None,
        sink: Sink | None = None,
        environ: Mapping[str, str] | None = None,
        handle_signals: bool = True,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.paused: set[str] = set()
        self._apply_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        self.discovery: Discovery | None = None
        self.watcher: ConfigWatcher | None = None
        self.metrics = metrics or create_metrics()
        self.spool = spool or DiskSpool(
            settings.spool.dir,
            settings.spool.max_bytes,
            settings.spool.when_full,
            settings.spool.fsync,
            settings.spool.fsync_interval_ms,
        )
        self.environ = environ if environ is not None else os.environ
        self.wanted: dict[str, InstanceSettings] = {}
        self.owned: frozenset[int] | None = None  # None: every shard (no cluster)
        self.membership: Membership | None = build_membership(
            settings, self, self.metrics, self.environ
        )
        if self.membership is not None:
            self.owned = frozenset()
        self._took_shards = False
        self._takeovers: dict[int, float] = {}
        self._membership_task: asyncio.Task[None] | None = None
        self.delivery = self._delivery(settings, sink)
        self.last_seen = LastSeen(
            settings.spool.dir / "last-seen.json" if isinstance(self.spool, DiskSpool) else None
        )
        self.pacer = Pacer(
            self.spool.stats,
            lambda: self.delivery.shares_loop_with_readers and self.delivery.delivering,
            on_pause=self.metrics.reader_paused.inc,
        )
        self.handle_signals = handle_signals
        self.runners: dict[str, Runner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self.buckets = BucketRegistry(settings.upstream.rate_limit_per_minute)
        self.rest_slots = asyncio.Semaphore(REST_IN_FLIGHT)
        self.ctx, self.http = self._upstream(settings)
        self.admin = AdminServer(
            self.metrics,
            self.check_ready,
            host=settings.admin.host,
            port=settings.admin.port,
            control=self,
            token=admin_token(settings, self.environ),
            tls=admin_tls(settings),
        )
        self._fsync_task: asyncio.Task[None] | None = None
        self._discovery_task: asyncio.Task[None] | None = None

    def _delivery(self, settings: Settings, sink: Sink | None = None) -> Delivery:
        """The sink worker in a process of its own or in this one (:func:`build_delivery`)."""
        fencing = self.membership if isinstance(self.membership, RedisMembership) else None
        return build_delivery(
            settings, self.spool, self.metrics, environ=self.environ, fencing=fencing, sink=sink
        )

    async def _swap_delivery(self, replacement: Delivery) -> None:
        """Replace the delivery by ``replacement`` (built beforehand, so that a sink that
        cannot even be built leaves the old one running), the spool in between: the old
        worker stops (what it held stays in the spool), the new one drains the spool from
        the acknowledged position."""
        await self.delivery.close(10.0)
        self.delivery = replacement
        self.delivery.start()
        log.info("sink.restarted", sink=self.delivery.kind)

    def _upstream(self, settings: Settings) -> tuple[RunnerContext, httpx.AsyncClient]:
        """What runners share to reach the upstream: one TLS context (the CA file read once)
        for both the WebSocket upgrades and the REST client, which is built here too."""
        context = upstream_ssl(settings)
        http = httpx.AsyncClient(
            base_url=str(settings.upstream.base_url).rstrip("/"),
            timeout=settings.upstream.request_timeout,
            verify=context or True,
            headers={"User-Agent": f"ryze-bridge/{__version__}"},
            trust_env=False,
            limits=httpx.Limits(
                max_connections=REST_IN_FLIGHT, max_keepalive_connections=REST_IN_FLIGHT
            ),
        )
        runner_context = RunnerContext(
            upstream=settings.upstream,
            spool=self.spool,
            metrics=self.metrics,
            buckets=self.buckets,
            rest_factory=self._rest_client,
            environ=self.environ,
            ssl=context,
            last_seen=self.last_seen,
            gap_markers=settings.sink.gap_markers,
            pace=self.pacer,
            held=self.pacer.held,
        )
        return runner_context, http

    def _rest_client(self, token: SecretStr, bucket: TokenBucket) -> RestClient:
        return RestClient(self.http, token, bucket, slots=self.rest_slots)

    async def run(self) -> int:
        """The whole life of the process; returns the exit code."""
        signals = SignalHandlers(self._on_stop_signal, self._on_hangup)
        if self.handle_signals:
            signals.install()
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if self.handle_signals:
                signals.remove()
        if self._fatal is not None:
            log.error("bridge.fatal", error=self._fatal)
            return 1
        return 0

    async def start(self) -> None:
        self.metrics.spool_max_bytes.set(self.settings.spool.max_bytes)
        init_cluster(self.metrics)
        self.metrics.spool_events.set_function(lambda: self.spool.stats().events)
        self.metrics.spool_bytes.set_function(lambda: self.spool.stats().bytes)
        self._open_spool()
        self.delivery.start()
        await self.admin.start()
        log.info("admin.listening", host=self.settings.admin.host, port=self.admin.port)
        await self.apply_instances(self.settings.instances)
        self._start_discovery()
        self._start_membership()
        if self.config_path is not None:
            reload = self.settings.reload
            self.watcher = ConfigWatcher(
                self.config_path, self.apply, self.metrics, reload.poll_seconds, watch=reload.watch
            )
            self._background.append(asyncio.create_task(self.watcher.run()))
        log.info("bridge.started", instances=len(self.runners), sink=self.delivery.kind)

    def _start_membership(self) -> None:
        if self.membership is not None:
            self._membership_task = asyncio.create_task(self._follow_membership())

    async def _follow_membership(self) -> None:
        """Run the membership; a coordination error that will not fix itself is fatal,
        anything else is retried (the replica owns nothing meanwhile)."""
        membership = self.membership
        if membership is None:
            return
        watcher = asyncio.create_task(self._watch_takeovers())
        delay = 1.0
        try:
            while True:
                try:
                    await membership.run()
                    return
                except ClusterError as exc:
                    self._fail(str(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - keep coordinating whatever broke
                    log.warning("cluster.error", mode=membership.mode, error=repr(exc))
                    await self.release(self.owned or frozenset(), lost=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            watcher.cancel()

    async def _watch_takeovers(self) -> None:
        """Time each shard taken over until all of its instances are connected."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for shard, since in list(self._takeovers.items()):
                runners = [r for n, r in self.runners.items() if self._shard(n) == shard]
                if all(r.status.connected for r in runners):
                    self.metrics.cluster_handover.labels("takeover").observe(now - since)
                    del self._takeovers[shard]
                elif now - since > TAKEOVER_WATCH_SECONDS:
                    del self._takeovers[shard]

    def _shard(self, name: str) -> int:
        return shard_of(name, self.settings.cluster.shards)

    def _mine(self, name: str) -> bool:
        return self.owned is None or self._shard(name) in self.owned

    async def take(self, shards: frozenset[int]) -> None:
        """ShardOwner: start the wanted instances of ``shards``."""
        async with self._apply_lock:
            takeover = self._took_shards
            self._took_shards = True
            self.owned = (self.owned or frozenset()) | shards
            now = time.monotonic()
            for shard in shards:
                self._takeovers[shard] = now
            for name, instance in self.wanted.items():
                if self._shard(name) in shards and name not in self.paused:
                    self.add_instance(name, instance, takeover=takeover)
        log.info("cluster.took", shards=len(shards), instances=len(self.runners))

    async def release(self, shards: frozenset[int], *, lost: bool) -> None:
        """ShardOwner: stop reading the instances of ``shards``; unless ``lost``, wait until
        what they read is delivered (bounded by the membership's drain timeout)."""
        async with self._apply_lock:
            if self.owned is not None:
                self.owned -= shards
            for shard in shards:
                self._takeovers.pop(shard, None)
            names = [n for n in self.runners if self._shard(n) in shards]
            await asyncio.gather(*(self.remove_instance(n) for n in names))
        if lost or self.membership is None:
            return
        mark = self.spool.appended_total()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                wait_settled(self.spool, mark), timeout=self.membership.drain_timeout()
            )
        log.info("cluster.drained", shards=len(shards), instances=len(names))

    def _start_discovery(self) -> None:
        settings = self.settings.discovery
        if settings is None:
            self.discovery = None
            return
        self.discovery = Discovery(
            settings,
            explicit=self.settings.instances,
            rest_factory=self._rest_client,
            buckets=self.buckets,
            metrics=self.metrics,
            environ=self.environ,
            apply=self.apply_instances,
        )
        self._discovery_task = asyncio.create_task(self.discovery.run())

    async def apply_instances(
        self,
        desired: Mapping[str, InstanceSettings],
        known: Mapping[str, WsConfig | None] | None = None,
    ) -> int:
        """Make the running set equal ``desired``: start new runners, stop (draining) gone
        ones, restart changed ones, leave the rest untouched. Returns how many changed."""
        async with self._apply_lock:
            self.wanted = dict(desired)
            desired = {n: s for n, s in desired.items() if self._mine(n)}
            changes = 0
            for name in [n for n in self.runners if n not in desired]:
                await self.remove_instance(name)
                changes += 1
            for name, instance in desired.items():
                runner = self.runners.get(name)
                if name in self.paused or (runner is not None and runner.settings == instance):
                    continue
                if runner is not None:
                    await self.remove_instance(name)
                self.add_instance(name, instance, (known or {}).get(name))
                changes += 1
            return changes

    async def apply(self, new: Settings) -> str:
        """A reloaded config: apply what changed; a few sections need a restart."""
        old = self.settings
        if new == old:
            return "unchanged"
        frozen = {
            k: getattr(old, k) for k in RESTART_SECTIONS if getattr(new, k) != getattr(old, k)
        }
        if frozen:
            log.warning("config.needs_restart", sections=sorted(frozen))
        new = new.model_copy(update=frozen)
        everything = (new.upstream, new.filter, new.sink) != (old.upstream, old.filter, old.sink)
        replacement = None
        if new.sink != old.sink:
            try:  # e.g. a password file empty mid-rotation: keep delivering with the old sink
                replacement = self._delivery(new)
            except ConfigError as exc:
                log.error("config.reload_refused", problems=[str(exc)], kept="the running sink")
                return "invalid"
        self.settings = new
        if replacement is not None:
            await self._swap_delivery(replacement)
        if everything:
            for name in list(self.runners):
                await self.remove_instance(name)
            old_http = self.http
            self.ctx, self.http = self._upstream(new)  # a new base URL or CA reaches REST too
            await old_http.aclose()
        if new.discovery != old.discovery or new.instances != old.instances:
            if self._discovery_task is not None:
                self._discovery_task.cancel()
            self._start_discovery()
        if self.discovery is None:
            await self.apply_instances(new.instances)
        elif everything:
            await self.discovery.refresh()  # bring the stopped runners back now
        return "applied"

    # ---- operator controls (admin API) --------------------------------------------------
    def instances_status(self) -> dict[str, dict[str, object]]:
        status = {name: runner.describe() for name, runner in self.runners.items()}
        for name in self.paused:
            status[name] = {"state": "paused"}
        if self.membership is not None:
            for name, entry in status.items():
                entry["shard"] = self._shard(name)
        return status

    def cluster_status(self) -> dict[str, object]:
        cluster = self.settings.cluster
        if self.membership is None:
            return {"mode": cluster.mode}
        return {
            "mode": cluster.mode,
            "replica": replica_name(cluster, self.environ),
            "shards": cluster.shards,
            "owned": sorted(self.owned or ()),
        }

    async def control(self, name: str, action: str) -> bool:
        """reconnect, pause or resume one instance; False when it is not known."""
        if action == "reconnect" and name in self.runners:
            await self.runners[name].reconnect()
            return True
        if action == "pause" and name in self.runners:
            self.paused.add(name)
            await self.remove_instance(name)
            return True
        if action == "resume" and name in self.paused:
            self.paused.discard(name)
            wanted = self.settings.instances.get(name)
            if wanted is None and self.settings.discovery is not None:
                wanted = self.settings.discovery.instance()
            if wanted is not None and self._mine(name):
                self.add_instance(name, wanted)
            return True
        return False

    def _open_spool(self) -> None:
        """Open (lock, recover) a disk spool; report what start-up found in it."""
        if not isinstance(self.spool, DiskSpool):
            return
        for op in SPOOL_OPS:
            self.metrics.spool_errors.labels(op)
        self.spool.troubles.on_error = lambda op: self.metrics.spool_errors.labels(op).inc()
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
                spool.sync_soon()
            tick += 1
            if tick % ticks_per_save == 0:
                self.last_seen.save()

    def request_stop(self) -> None:
        self._stop.set()

    def add_instance(
        self,
        name: str,
        instance: InstanceSettings,
        known: WsConfig | None = None,
        *,
        takeover: bool = False,
    ) -> None:
        """Start the runner of one instance (no-op when it runs already)."""
        if name in self.runners:
            return
        pipeline = build_pipeline(self.settings, instance)
        runner = Runner(name, instance, pipeline, self.ctx, known, takeover=takeover)
        self.runners[name] = runner
        self._tasks[name] = asyncio.create_task(self._supervise(runner), name=f"runner:{name}")
        self.metrics.instances_configured.set(len(self.runners))

    async def remove_instance(self, name: str) -> None:
        """Stop one runner: close its socket, keep every frame it read, then forget it."""
        runner = self.runners.pop(name, None)
        task = self._tasks.pop(name, None)
        if runner is None or task is None:
            return
        # a runner with a socket finishes reading what arrived; one without (connecting,
        # waiting for the budget, backing off) has read nothing and is simply cancelled
        wait = STOP_READ_TIMEOUT if runner.status.connected else 0.0
        await runner.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except TimeoutError:  # stuck before a socket was open (ensure, budget): nothing read
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        forget_instance(self.metrics, name)
        self.metrics.instances_configured.set(len(self.runners))

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

    def _fail(self, error: str) -> None:
        """Something that will not fix itself (the cluster's coordination): stop the process
        (exit 1). A sink that cannot start is not such a thing: it is retried, readiness
        false meanwhile."""
        self._fatal = error
        self._stop.set()

    async def check_ready(self) -> Readiness:
        sink_ok = await self.delivery.reachable()
        now = time.time()
        instances = [
            Liveness(r.name, r.status.connected, now - (r.status.last_frame_at or now))
            for r in self.runners.values()
        ]
        admin = self.settings.admin
        ready = readiness(
            sink_ok, instances, admin.ready_min_connected_ratio, admin.ready_max_silence_seconds
        )
        problems = (self.spool.problem, sink_problem(self.delivery.problem))
        if any(problems):  # masked: /readyz answers anyone
            masked = (mask_registered(p) for p in problems if p)
            ready = Readiness(False, (*ready.reasons, *masked))
        if self.settings.cluster.ready_requires_shards and not self.owned:
            return Readiness(False, (*ready.reasons, "this replica owns no shards"))
        return ready

    async def shutdown(self) -> None:
        """Stop intake, drain within ``shutdown_timeout``, close everything."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info("bridge.stopping", instances=len(self.runners))
        await asyncio.gather(*(self.remove_instance(n) for n in list(self.runners)))
        drained = await self._drain(deadline)
        await self._leave()
        await self.delivery.stop_worker()
        for task in (
            self._fsync_task,
            self._discovery_task,
            *self._background,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = self.spool.stats()
        if not drained:
            log.error("bridge.undelivered", events=left.events, bytes=left.bytes)
        await self.delivery.close(deadline - time.monotonic())
        await self.admin.close()
        await self.http.aclose()
        self.last_seen.save()
        self.spool.close()
        log.info("bridge.stopped", drained=drained, undelivered=left.events)

    async def _leave(self) -> None:
        """Hand the shards over: every socket is closed and drained by now."""
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.leave(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - the others take over after the timeout then
            log.warning("cluster.leave_failed", error=repr(exc))
        if self._membership_task is not None:
            self._membership_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._membership_task
        log.info("cluster.left", mode=self.membership.mode)

    async def _drain(self, deadline: float) -> bool:
        if self._fatal is not None or not self.delivery.running:
            return self.spool.stats().events == 0
        try:
            await asyncio.wait_for(self.spool.wait_empty(), timeout=deadline - time.monotonic())
        except TimeoutError:
            return False
        return True

    def _on_hangup(self) -> None:
        if self.watcher is not None:
            log.info("bridge.signal", signal="SIGHUP")
            self.watcher.request()

    def _on_stop_signal(self, name: str) -> None:
        log.info("bridge.signal", signal=name)
        self._stop.set()
