"""What every runner (and discovery) shares to reach the upstream: one TLS context for all
WebSocket upgrades and one for the REST client, both of the same trust (``upstream.ca_file``
or the system's, read when built), the REST client with its in-flight slots, the per-token
request budgets, the buffered-frames budget, and the :class:`~bridge.runner.RunnerContext`
built on them. A reload that changes ``upstream`` (a new base URL or CA) builds them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import httpx
from pydantic import SecretStr

from bridge import __version__
from bridge.intake import SpoolIntake
from bridge.lastseen import LastSeen
from bridge.metrics import Children, Metrics
from bridge.metrics_budget import register_budget, register_slots
from bridge.runner import RunnerContext
from bridge.settings import Settings
from bridge.spool import Spool
from bridge.upstream.budget import BufferBudget
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import REST_IN_FLIGHT, RestClient
from bridge.upstream.shared import SocketsShared
from bridge.wiring import socket_tls, upstream_ssl

Built = tuple[RunnerContext, httpx.AsyncClient]  # what the upstream's runners share


class UpstreamAccess:
    def __init__(
        self,
        settings: Settings,
        *,
        spool: Spool,
        metrics: Metrics,
        environ: Mapping[str, str],
        last_seen: LastSeen,
        pace: Callable[[], Awaitable[None]],
        held: Callable[[], bool],
    ) -> None:
        self.spool = spool
        self.metrics = metrics
        self.environ = environ
        self.last_seen = last_seen
        self.pace = pace
        self.held = held
        self.buckets = BucketRegistry(settings.upstream.rate_limit_per_minute)
        self.rest_slots = asyncio.Semaphore(REST_IN_FLIGHT)
        # one for the process, kept across reloads (a reload sets its limit)
        self.budget = BufferBudget(settings.upstream.budget_bytes)
        register_budget(metrics.registry, self.budget.state, self.budget.clock)
        self.sockets = SocketsShared(self.budget)  # and one keepalive ticker, one re-check pace
        register_slots(metrics.registry, self.sockets.slots.state)
        series = metrics.series
        dropped = Children(metrics.events_dropped, series)
        self.intake = SpoolIntake(
            spool, lambda r, why: dropped(series.label(r.instance), why).inc()
        )
        self.ctx, self.http = self.build(settings)

    def build(self, settings: Settings) -> Built:
        """New TLS contexts, REST client and runner context from ``settings``, not yet in use:
        raises (OSError, ssl.SSLError) when the CA file cannot be read or loaded. Changes
        nothing running (a reload may still be refused after it)."""
        http = httpx.AsyncClient(
            base_url=str(settings.upstream.base_url).rstrip("/"),
            timeout=settings.upstream.request_timeout,
            verify=upstream_ssl(settings),  # the sockets' trust, in a context of its own
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
            rest_factory=self.rest_client,
            environ=self.environ,
            ssl=socket_tls(settings),
            last_seen=self.last_seen,
            gap_markers=settings.sink.gap_markers,
            pace=self.pace,
            held=self.held,
            sockets=self.sockets,
            intake=self.intake,
        )
        return runner_context, http

    def rest_client(self, token: SecretStr, bucket: TokenBucket) -> RestClient:
        return RestClient(self.http, token, bucket, slots=self.rest_slots)

    async def rebuild(self, settings: Settings, built: Built) -> None:
        """Put ``built`` (:meth:`build` of ``settings``) and the buffered-frames budget of
        ``settings`` in use (stop the runners first: they hold the old ones)."""
        self.budget.state.limit = settings.upstream.budget_bytes
        old = self.http
        self.ctx, self.http = built
        await old.aclose()

    async def close(self) -> None:
        await self.http.aclose()
