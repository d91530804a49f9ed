"""The admin HTTP server: ``/metrics``, ``/healthz``, ``/readyz``.

Small and async on aiohttp, on the same event loop as the relay; every handler is cheap so it
keeps answering under full load. ``/readyz`` says why in its body when not ready.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.metrics import Metrics


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


class AdminServer:
    def __init__(
        self,
        metrics: Metrics,
        check_ready: Callable[[], Awaitable[Readiness]],
        *,
        host: str,
        port: int,
    ) -> None:
        self.metrics = metrics
        self.check_ready = check_ready
        self.host = host
        self.port = port
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.handle_metrics)
        self.app.router.add_get("/healthz", self.handle_healthz)
        self.app.router.add_get("/readyz", self.handle_readyz)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle_readyz(self, _request: web.Request) -> web.Response:
        state = await self.check_ready()
        if state.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: " + "; ".join(state.reasons) + "\n")
