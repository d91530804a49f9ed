"""A 429 on the upgrade without a usable ``X-RateLimit-Reset`` backs off like any failure; with
a usable one, the source waits at least until that reset."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import SecretStr

from bridge.errors import UpstreamError
from bridge.pipeline import Frame
from bridge.settings import UpstreamSettings
from bridge.upstream.ratelimit import TokenBucket
from bridge.upstream.shared import SocketsShared
from bridge.upstream.ws import InstanceSource


class Recorder:
    """A session observer that notes every wait the source decides on."""

    def __init__(self) -> None:
        self.waits: list[tuple[str, float]] = []

    def connected(self) -> None:
        raise AssertionError("no upgrade is ever accepted here")

    def disconnected(self, reason: str) -> None:
        del reason

    def failed(self, error: UpstreamError) -> None:
        raise AssertionError(f"a 429 is not a failed instance: {error}")

    def retrying(self, reason: str, delay: float) -> None:
        self.waits.append((reason, delay))

    def activity(self, ping: bool) -> None:
        del ping

    def discarded(self, count: int) -> None:
        raise AssertionError(f"no message is ever read here: {count}")


@contextlib.asynccontextmanager
async def always_429(reset: str | None) -> AsyncIterator[tuple[str, list[float]]]:
    """A server on a free port answering every upgrade with 429 (``reset`` as its
    X-RateLimit-Reset header, or none); yields its base URL and the upgrade times."""
    hits: list[float] = []

    async def upgrade(_request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        headers = {} if reset is None else {"X-RateLimit-Reset": reset}
        return web.json_response({"success": False}, status=429, headers=headers)

    app = web.Application()
    app.router.add_get("/ws/{name}", upgrade)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", hits
    finally:
        await runner.cleanup()


async def upgrades_within(base_url: str, seconds: float) -> Recorder:
    """Run a source against ``base_url`` for ``seconds`` (a generous token bucket, so only
    the source's own waits space the attempts)."""
    settings = UpstreamSettings.model_validate(
        {"base_url": base_url, "backoff_initial": 0.2, "backoff_max": 5.0}
    )
    observer = Recorder()

    async def ensure() -> None:
        return None

    source = InstanceSource(
        "shop-a",
        SecretStr("tok-429-test-5555"),
        settings,
        TokenBucket(per_minute=60_000, burst=1000),
        ensure=ensure,
        observer=observer,
        shared=SocketsShared(),
    )

    def unexpected(_frames: list[Frame]) -> None:
        raise AssertionError("no frame can arrive")

    task = asyncio.create_task(source.run(unexpected))
    await asyncio.sleep(seconds)
    await source.stop()
    await asyncio.wait_for(task, 5)
    return observer


async def test_a_429_without_reset_header_backs_off() -> None:
    """Every upgrade is refused with 429 and no X-RateLimit-Reset: the source waits with its
    exponential backoff between tries (a handful in 3 s), instead of retrying at once."""
    async with always_429(None) as (base_url, hits):
        observer = await upgrades_within(base_url, 3.0)
    assert 2 <= len(hits) <= 12, hits
    delays = [delay for reason, delay in observer.waits if reason == "rate_limited"]
    assert delays
    assert all(delay >= 0 for delay in delays)
    assert sum(delays) > 1.0


async def test_a_429_with_a_reset_in_the_past_or_far_future_backs_off() -> None:
    """A reset header that is in the past (would mean: no wait) or absurdly far away (would
    block the token for hours) is not believed: the backoff applies."""
    for reset in (str(int(time.time()) - 30), str(int(time.time()) + 86_400), "soon"):
        async with always_429(reset) as (base_url, hits):
            observer = await upgrades_within(base_url, 2.0)
        assert 2 <= len(hits) <= 10, (reset, hits)
        assert all(delay <= 5.0 for _, delay in observer.waits), reset


async def test_a_429_with_a_usable_reset_waits_at_least_until_it() -> None:
    """Every upgrade is refused with 429 and a reset 1.5 s ahead: the next upgrade goes out
    no earlier than that reset (the retry policy takes it as the floor of its wait)."""
    reset_at = time.time() + 1.5
    async with always_429(f"{reset_at:.3f}") as (base_url, hits):
        observer = await upgrades_within(base_url, 2.5)
    limited = [delay for reason, delay in observer.waits if reason == "rate_limited"]
    assert limited
    assert limited[0] >= 1.3, limited
    assert len(hits) >= 2, hits
    assert hits[1] - hits[0] >= 1.3, hits
