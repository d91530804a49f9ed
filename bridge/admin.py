"""The admin HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, ``/instances``.

Small and async on aiohttp, on the same event loop as the relay; every handler is cheap so it
keeps answering under full load, and ``/metrics`` is rendered in a worker thread (gzipped when
the client accepts it). ``/readyz`` says why in its body when not ready. The
connections go through :mod:`bridge.adminguard` (a cap, a header deadline, one request per
connection); ``/instances`` is masked with every registered secret (upstream error texts may
quote one).
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

from bridge.adminguard import (
    HEADER_TIMEOUT,
    OVER_LIMIT,
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
)
from bridge.logs import get_logger, mask_registered
from bridge.metrics import Metrics
from bridge.settings import is_loopback
from bridge.status import parse_query, select

GZIP_LEVEL = 1  # a scrape every few seconds: speed over the last few percent of size
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Liveness:
    """One instance as readiness sees it: connected, and seconds since it last heard anything."""

    name: str
    connected: bool
    silent_for: float


def readiness(
    sink_ok: bool, instances: list[Liveness], min_ratio: float, max_silence: float
) -> Readiness:
    """Ready when the sink answers and at least ``min_ratio`` of instances are connected and
    heard from within ``max_silence`` seconds (pure). The reasons name what is missing."""
    reasons = []
    if not sink_ok:
        reasons.append("sink unreachable")
    silent = sorted(i.name for i in instances if i.connected and i.silent_for > max_silence)
    live = sum(1 for i in instances if i.connected and i.silent_for <= max_silence)
    needed = min_ratio * len(instances)
    if instances and live < needed:
        reasons.append(f"{live} of {len(instances)} instances live, {needed:g} needed")
        if silent:
            reasons.append(f"connected but silent: {', '.join(silent[:10])}")
    return Readiness(not reasons, tuple(reasons))


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (named, or else ``*``, without
    ``q=0``) (pure)."""
    weights = {}
    for part in header.lower().split(","):
        coding, *params = (item.strip() for item in part.split(";"))
        if coding in ("gzip", "*") and coding not in weights:
            given = [p.removeprefix("q=") for p in params if p.startswith("q=")]
            weights[coding] = weight(given[0]) if given else 1.0
    # gzip named wins over ``*`` (RFC 9110 12.5.3): "*;q=1, gzip;q=0" refuses gzip
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def render_metrics(registry: CollectorRegistry, gzipped: bool) -> bytes:
    """The text exposition of ``registry``, gzipped (fast level) when asked."""
    body = generate_latest(registry)
    return gzip.compress(body, compresslevel=GZIP_LEVEL) if gzipped else body


class Control(Protocol):
    """What the admin API may ask of the process (:class:`bridge.controls.OperatorControls`)."""

    def instances_status(self) -> dict[str, dict[str, object]]: ...

    def cluster_status(self) -> dict[str, object]: ...

    async def control(self, name: str, action: str) -> bool: ...


ACTIONS = ("reconnect", "pause", "resume")
DROP_REASONS = (OVER_LIMIT, HEADER_TIMEOUT)
DEFAULT_LIMITS = ConnectionLimits()


SEPARATOR = "\x00"  # in no secret (an environment value or a stripped file cannot hold it)


def masked_strings(value: Any, mask: Callable[[str], str] = mask_registered) -> Any:
    """``value`` (JSON-like) with every string value masked, in one call of ``mask`` over all
    of them joined (a call's cost is per text, and /instances has thousands of rows)."""
    texts: list[str] = []

    def collect(item: Any) -> None:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            for child in item.values():
                collect(child)
        elif isinstance(item, list | tuple):
            for child in item:
                collect(child)

    collect(value)
    if not texts:
        return value
    out = iter(mask(SEPARATOR.join(texts)).split(SEPARATOR))

    def rebuild(item: Any) -> Any:
        if isinstance(item, str):
            return next(out)
        if isinstance(item, dict):
            return {key: rebuild(child) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [rebuild(child) for child in item]
        return item

    return rebuild(value)


def exposed_unauthenticated(host: str, token: SecretStr | None) -> bool:
    """Whether the admin API would answer anyone on the network: bound beyond loopback with
    no token (pure)."""
    return token is None and not is_loopback(host)


def authorized(header: str | None, token: SecretStr | None) -> bool:
    """Bearer check in constant time; everything is allowed when no token is configured."""
    if token is None:
        return True
    expected = f"Bearer {token.get_secret_value()}".encode()
    return hmac.compare_digest((header or "").encode(), expected)


class AdminServer:
    def __init__(
        self,
        metrics: Metrics,
        check_ready: Callable[[], Awaitable[Readiness]],
        *,
        host: str,
        port: int,
        control: Control | None = None,
        token: SecretStr | None = None,
        tls: ssl.SSLContext | None = None,
        limits: ConnectionLimits = DEFAULT_LIMITS,
    ) -> None:
        self.tls = tls
        self.limits = limits
        for reason in DROP_REASONS:  # present from the start, at zero
            metrics.admin_connections_dropped.labels(reason)
        self.metrics = metrics
        self.check_ready = check_ready
        self.host = host
        self.port = port
        self.control = control
        self._token = token
        self.app = web.Application(middlewares=[self.guard])
        self.app.router.add_get("/metrics", self.handle_metrics)
        self.app.router.add_get("/healthz", self.handle_healthz)
        self.app.router.add_get("/readyz", self.handle_readyz)
        if control is not None:
            self.app.router.add_get("/instances", self.handle_instances)
            if token is not None:  # mutating endpoints exist only behind a token
                self.app.router.add_post("/instances/{name}/{action}", self.handle_action)
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """One request per connection (the header deadline covers a connection's only
        request; no idle keep-alive holds a slot)."""
        try:
            response = await self.authorize(request, handler)
        except web.HTTPException as exc:
            exc.force_close()
            raise
        response.force_close()
        return response

    async def authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Probes are open; everything else needs the bearer token when one is set."""
        if request.path in ("/healthz", "/readyz"):
            return await handler(request)
        if not authorized(request.headers.get("Authorization"), self._token):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    async def handle_instances(self, request: web.Request) -> web.Response:
        """Filtered on this side (``?state=failed,connecting&name=loja-*&limit=10``), with a
        summary over every instance (:mod:`bridge.status`)."""
        if self.control is None:
            raise web.HTTPNotFound
        query = parse_query(request.query)
        if isinstance(query, str):
            return web.json_response({"error": query}, status=400)
        body = {
            **select(self.control.instances_status(), query),
            "cluster": self.control.cluster_status(),
        }
        text = json.dumps(masked_strings(body), ensure_ascii=False)
        return web.Response(text=text, content_type="application/json")

    async def handle_action(self, request: web.Request) -> web.Response:
        if self.control is None:
            raise web.HTTPNotFound
        name, action = request.match_info["name"], request.match_info["action"]
        if action not in ACTIONS:
            return web.json_response({"error": f"unknown action {action}"}, status=404)
        if not await self.control.control(name, action):
            return web.json_response({"error": f"no instance {name} to {action}"}, status=404)
        return web.json_response({"ok": True, "instance": name, "action": action})

    def dropped(self, reason: str) -> None:
        self.metrics.admin_connections_dropped.labels(reason).inc()

    async def start(self) -> None:
        if exposed_unauthenticated(self.host, self._token):
            log.warning(
                "admin.unauthenticated",
                host=self.host,
                port=self.port,
                hint="/metrics and /instances answer anyone who reaches this address: "
                "set admin.token_env or admin.token_file, or bind admin.host to loopback",
            )
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        guard = ConnectionGuard(self.limits, self.dropped)
        site = GuardedSite(self._runner, self.host, self.port, guard=guard, ssl_context=self.tls)
        await site.start()
        if self.port == 0:  # the port the system chose (the one site's listening socket)
            self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """The exposition, rendered (and gzipped when the client accepts it) in a worker
        thread: the socket readers on this loop never wait on a scrape."""
        gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        body = await asyncio.to_thread(render_metrics, self.metrics.registry, gzipped)
        headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle_readyz(self, _request: web.Request) -> web.Response:
        state = await self.check_ready()
        if state.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: " + "; ".join(state.reasons) + "\n")
