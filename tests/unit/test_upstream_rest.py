"""Ensure semantics and the request budget, against an httpx MockTransport upstream."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Close, CloseCode
from websockets.http11 import Response

from bridge.errors import InstanceNotFoundError, RateLimitedError, UpstreamAuthError
from bridge.settings import EVENT_NAMES
from bridge.upstream.ratelimit import (
    RESET_MAX_SECONDS,
    TokenBucket,
    parse_rate_headers,
    usable_reset,
)
from bridge.upstream.rest import RestClient, RetryBudget, WsConfig, desired_config, same_config
from bridge.upstream.ws import _close_reason, upgrade_error, ws_url

TOKEN = SecretStr("tok-secret-123456")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Upstream:
    """A scripted upstream: records every request, answers from ``answers`` in order."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def ok_config(enabled: bool, events: list[str], media: bool) -> httpx.Response:
    body = {
        "success": True,
        "websocket": {"enabled": enabled, "events": events, "mediaBase64": media},
    }
    return httpx.Response(200, json=body)


def error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"success": False, "error": {"message": message}}, headers=headers
    )


def client(upstream: Upstream, clock: FakeClock | None = None) -> RestClient:
    clock = clock or FakeClock()
    http = httpx.AsyncClient(base_url="http://up", transport=httpx.MockTransport(upstream))
    bucket = TokenBucket(90, clock=clock, sleep=clock.sleep)
    return RestClient(http, TOKEN, bucket, retry=RetryBudget(attempts=3, initial=0.001))


async def test_ensure_unchanged_makes_no_post() -> None:
    """When the upstream config already matches (as a set), only the GET is made."""
    upstream = Upstream(ok_config(True, ["message.status", "message.exchange"], False))
    rest = client(upstream)
    desired = desired_config(["message.exchange", "message.status"], False)
    assert await rest.ensure("shop", desired, manage=True) == "unchanged"
    assert [r.method for r in upstream.requests] == ["GET"]
    assert upstream.requests[0].url.path == "/api/events/getWebsocket/shop"
    assert upstream.requests[0].headers["token"] == TOKEN.get_secret_value()
    assert "token" not in str(upstream.requests[0].url)


async def test_ensure_creates_when_not_configured() -> None:
    """404 'not configured' leads to a POST with the full desired body, events explicit."""
    upstream = Upstream(
        error(404, "WebSocket not configured for this instance"),
        ok_config(True, list(EVENT_NAMES), True),
    )
    outcome = await client(upstream).ensure("shop", desired_config([], True), manage=True)
    assert outcome == "created"
    post = upstream.requests[1]
    assert post.method == "POST"
    assert post.url.path == "/api/events/websocket/shop"
    assert json.loads(post.content) == {
        "enabled": True,
        "events": sorted(EVENT_NAMES),
        "mediaBase64": True,
    }


async def test_ensure_updates_disabled_config() -> None:
    """A disabled config (200, enabled false, cleared) is different: POST the full body."""
    upstream = Upstream(ok_config(False, [], False), ok_config(True, ["call.update"], False))
    rest = client(upstream)
    assert await rest.ensure("shop", desired_config(["call.update"], False), manage=True) == (
        "updated"
    )


async def test_manage_config_false_never_posts() -> None:
    """With manage_config false a difference is reported as drift and nothing is written."""
    upstream = Upstream(ok_config(True, ["call.update"], False))
    rest = client(upstream)
    assert await rest.ensure("shop", desired_config([], False), manage=False) == "drift"
    assert len(upstream.requests) == 1


async def test_instance_not_found_and_auth_are_not_retried() -> None:
    """404 'Instance not found' and 401/403 raise at once (no retry), without the token."""
    for answer, kind in (
        (error(404, "Instance not found"), InstanceNotFoundError),
        (error(401, "Invalid token"), UpstreamAuthError),
        (error(403, "Instance token does not match"), UpstreamAuthError),
    ):
        upstream = Upstream(answer)
        with pytest.raises(kind) as caught:
            await client(upstream).ensure("shop", desired_config([], False), manage=True)
        assert len(upstream.requests) == 1
        assert TOKEN.get_secret_value() not in str(caught.value)


async def test_5xx_retried_within_budget() -> None:
    """A 500 is retried (bounded), then the answer that comes is used."""
    upstream = Upstream(error(500, "Failed to get instance"), ok_config(True, [], False))
    assert await client(upstream).ensure("shop", desired_config([], False), manage=True) == (
        "unchanged"
    )


async def test_429_blocks_the_bucket_until_reset() -> None:
    """A 429 blocks the token's bucket until X-RateLimit-Reset before the retry goes out."""
    clock = FakeClock()
    reset = str(int(clock.now + 30))
    upstream = Upstream(
        error(
            429,
            "Rate limit exceeded. Try again later.",
            **{
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            },
        ),
        ok_config(True, [], False),
    )
    rest = client(upstream, clock)
    assert await rest.ensure("shop", desired_config([], False), manage=True) == "unchanged"
    assert clock.now >= float(reset)


async def test_bucket_spreads_requests_at_the_rate() -> None:
    """After the burst, requests go out at per_minute; 100 requests take about a minute."""
    clock = FakeClock()
    bucket = TokenBucket(90, burst=10, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(100):
        await bucket.acquire()
    elapsed = clock.now - start
    assert 59.0 <= elapsed <= 61.0  # (100 - 10) requests at 1.5/s


async def test_bucket_obeys_server_remaining() -> None:
    """When the server says Remaining 0, nothing is spent until its Reset."""
    clock = FakeClock()
    bucket = TokenBucket(90, clock=clock, sleep=clock.sleep)
    bucket.observe(0, clock.now + 20)
    await bucket.acquire()
    assert clock.now >= 1_000_020.0


def test_rate_headers_and_same_config() -> None:
    """Rate headers parse case-insensitively; empty events equal all six."""
    assert parse_rate_headers({"x-ratelimit-remaining": "3", "X-RateLimit-Reset": "17"}) == (
        3,
        17.0,
    )
    assert parse_rate_headers({"X-RateLimit-Remaining": "x"}) == (None, None)
    all_six = WsConfig(True, frozenset(EVENT_NAMES), False)
    assert same_config(all_six, desired_config([], False))
    assert not same_config(None, desired_config([], False))
    assert not same_config(WsConfig(False, frozenset(), False), desired_config([], False))


def test_ws_url_and_upgrade_errors() -> None:
    """The WS URL follows the REST base's scheme; refused upgrades map to the error tree."""
    assert ws_url("https://ryzeapi.cloud/", "shop") == "wss://ryzeapi.cloud/ws/shop"
    assert ws_url("http://127.0.0.1:8080", "a") == "ws://127.0.0.1:8080/ws/a"

    def refused(status: int, headers: dict[str, str] | None = None) -> InvalidStatus:
        return InvalidStatus(Response(status, "x", Headers(headers or {}), b""))

    assert type(upgrade_error(refused(400), "a")).__name__ == "WebSocketNotEnabledError"
    assert isinstance(upgrade_error(refused(401), "a"), UpstreamAuthError)
    assert isinstance(upgrade_error(refused(404), "a"), InstanceNotFoundError)
    limited = upgrade_error(
        refused(429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "99"}), "a"
    )
    assert isinstance(limited, RateLimitedError)
    assert limited.reset_at == 99.0


def test_usable_reset_accepts_only_a_near_future_time() -> None:
    """X-RateLimit-Reset is honoured when it lies ahead by at most two minutes; missing,
    past or absurd values are not (the caller backs off instead)."""
    now = 1_000_000.0
    assert usable_reset(now + 30, now) == now + 30
    assert usable_reset(now + RESET_MAX_SECONDS, now) == now + RESET_MAX_SECONDS
    assert usable_reset(None, now) is None
    assert usable_reset(now, now) is None
    assert usable_reset(now - 5, now) is None
    assert usable_reset(now + RESET_MAX_SECONDS + 1, now) is None


def test_a_socket_we_closed_for_a_too_large_message_says_so() -> None:
    """Closed by us with 1009 (a message over max_frame_bytes): ``frame_too_large``, whatever
    the server answered; other closes keep their reasons."""
    too_big = Close(CloseCode.MESSAGE_TOO_BIG, "frame with 300000 bytes exceeds limit")
    assert _close_reason(ConnectionClosedError(None, too_big)) == "frame_too_large"
    assert _close_reason(ConnectionClosedError(too_big, too_big, False)) == "frame_too_large"
    assert _close_reason(ConnectionClosedError(None, None)) == "abnormal"
    going_away = Close(CloseCode.GOING_AWAY, "")
    assert _close_reason(ConnectionClosedError(going_away, None)) == "server_close"
    assert _close_reason(ConnectionClosedError(Close(4000, "x"), None)) == "close_4000"


def test_a_reset_header_alone_is_read() -> None:
    """A 429 carrying only ``X-RateLimit-Reset`` still says when to come back (the upstream
    docs leave open which headers an upgrade's 429 carries); malformed values are ignored
    one by one."""
    assert parse_rate_headers({"X-RateLimit-Reset": "17.5"}) == (None, 17.5)
    assert parse_rate_headers({"X-RateLimit-Remaining": "4"}) == (4, None)
    assert parse_rate_headers({"X-RateLimit-Remaining": "3.5", "X-RateLimit-Reset": "x"}) == (
        None,
        None,
    )
