"""Discovery retries a failed listing with the retry policy's backoff (capped at the refresh
period) instead of waiting a whole refresh period, and counts each failed and good run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from aiohttp import web
from pydantic import SecretStr

from bridge.discovery import Discovery, relist_policy
from bridge.metrics import create_metrics
from bridge.settings import DiscoverySettings, InstanceSettings
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import RestClient, RetryBudget, WsConfig


@asynccontextmanager
async def failing_then_listing(failures: int) -> AsyncIterator[tuple[str, list[float]]]:
    """A real HTTP upstream on a free port: the first ``failures`` listings answer 503, the
    next ones list one instance. Yields its base URL and the times of the calls."""
    calls: list[float] = []

    async def listing(_request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            return web.json_response({"success": False}, status=503)
        return web.json_response({"data": [{"name": "shop-a"}]})

    app = web.Application()
    app.router.add_get("/api/instance/list", listing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", calls
    finally:
        await runner.cleanup()


def test_the_relist_backoff_starts_at_a_second_and_stops_at_the_refresh_period() -> None:
    """Failed listings wait from up to a second, doubling, never more than a period."""
    policy = relist_policy(60.0)
    assert (policy.ceiling(1), policy.ceiling(3), policy.ceiling(20)) == (1.0, 4.0, 60.0)
    assert relist_policy(0.5).ceiling(1) == 0.5


async def test_a_failed_listing_is_retried_before_the_next_refresh() -> None:
    """With a 60 s refresh period, five 503s in a row (two REST attempts per run) still get
    the instances applied within a few seconds: three runs, the first two counted as errors."""
    applied = asyncio.Event()
    wanted: list[dict[str, InstanceSettings]] = []

    async def apply(
        desired: dict[str, InstanceSettings], _known: dict[str, WsConfig | None]
    ) -> int:
        wanted.append(desired)
        applied.set()
        return len(desired)

    async with (
        failing_then_listing(5) as (base_url, calls),
        httpx.AsyncClient(base_url=base_url) as http,
    ):

        def rest_factory(token: SecretStr, bucket: TokenBucket) -> RestClient:
            return RestClient(http, token, bucket, retry=RetryBudget(attempts=2, initial=0.01))

        metrics = create_metrics()
        discovery = Discovery(
            DiscoverySettings(token_env="ACCOUNT", refresh_seconds=60.0),
            explicit={},
            rest_factory=rest_factory,
            buckets=BucketRegistry(per_minute=6000),
            metrics=metrics,
            environ={"ACCOUNT": "tok-account-retry-1"},
            apply=apply,
        )
        started = time.monotonic()
        task = asyncio.create_task(discovery.run())
        try:
            await asyncio.wait_for(applied.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - started < 10
    assert len(calls) == 6
    assert list(wanted[0]) == ["shop-a"]
    runs = "ryze_bridge_discovery_runs_total"
    assert metrics.registry.get_sample_value(runs, {"outcome": "error"}) == 2.0
    assert metrics.registry.get_sample_value(runs, {"outcome": "ok"}) == 1.0
