"""Small shared pieces of the simulator conformance tests (tests/simulator/).

Every helper is bounded in time: REST calls and upgrades time out after a few seconds and
frame reads run under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response

from bridge.simulator import SimConfig, Simulator

SHOP = "shop"
OTHER = "other"
TOKENS = {SHOP: "tok-shop-0001", OTHER: "tok-other-0002"}
ACCOUNT = "tok-account-9999"
EVENTS = (
    "message.exchange",
    "message.status",
    "call.update",
    "group.flow",
    "instance.state",
    "label.update",
)
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

MSG_MISSING_TOKEN = "Missing token in header, Authorization header, or query parameter"
MSG_INVALID_TOKEN = "Invalid token"
MSG_FORBIDDEN = "Instance token does not match this instance"
MSG_INSTANCE_NOT_FOUND = "Instance not found"
MSG_NOT_CONFIGURED = "WebSocket not configured for this instance"
MSG_INVALID_BODY = "Invalid request body"
MSG_RATE_LIMITED = "Rate limit exceeded. Try again later."


def not_enabled(instance: str) -> str:
    """The documented 400 message of an upgrade to a missing or disabled config."""
    return (
        "WebSocket is not enabled for this instance. Configure it first using "
        f"POST /api/events/websocket/{instance}"
    )


def sim_config(**overrides: Any) -> SimConfig:
    """Two instances, one account token, tiny keepalive intervals; ``overrides`` win."""
    values: dict[str, Any] = {
        "instances": dict(TOKENS),
        "account_tokens": [ACCOUNT],
        "ping_interval": 0.2,
        "pong_timeout": 0.6,
        "rate_window": 2.0,
        "rate_limit": 100,
        "rate": 20.0,
    }
    values.update(overrides)
    return SimConfig(**values)


def rest(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.base_url, timeout=5)


def config_path(instance: str) -> str:
    return f"/api/events/websocket/{instance}"


def read_path(instance: str) -> str:
    return f"/api/events/getWebsocket/{instance}"


async def configure(
    sim: Simulator, instance: str = SHOP, token: str | None = None, **body: Any
) -> httpx.Response:
    """POST the WebSocket config (``enabled`` defaults to true) and insist on a 200."""
    payload = {"enabled": True, **body}
    async with rest(sim) as client:
        response = await client.post(
            config_path(instance), json=payload, headers={"token": token or TOKENS[instance]}
        )
    assert response.status_code == 200, response.text
    return response


def ws_url(sim: Simulator, instance: str = SHOP, query: str = "") -> str:
    url = sim.base_url.replace("http://", "ws://", 1) + f"/ws/{instance}"
    return f"{url}?{query}" if query else url


async def open_ws(
    sim: Simulator,
    instance: str = SHOP,
    token: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    **kwargs: Any,
) -> ClientConnection:
    """Upgrade with the ``token`` header (the instance's token unless told otherwise)."""
    if headers is None:
        headers = {"token": token or TOKENS[instance]}
    kwargs.setdefault("ping_interval", None)
    return await connect(
        ws_url(sim, instance, query), additional_headers=dict(headers), open_timeout=5, **kwargs
    )


async def recv_frames(ws: ClientConnection, count: int, within: float = 5.0) -> list[Any]:
    """The next ``count`` frames, parsed as JSON."""
    out: list[Any] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            out.append(orjson.loads(await ws.recv(decode=False)))
    return out


async def recv_raw(ws: ClientConnection, count: int, within: float = 5.0) -> list[bytes]:
    """The next ``count`` frames, as the bytes received."""
    out: list[bytes] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            data = await ws.recv(decode=False)
            assert isinstance(data, bytes)
            out.append(data)
    return out


async def frames_for(ws: ClientConnection, seconds: float) -> list[bytes]:
    """Every frame received during ``seconds``."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                out.append(await ws.recv(decode=False))
        except TimeoutError:
            break
    return out


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def closed_by_server(ws: ClientConnection, within: float = 5.0) -> ConnectionClosed:
    """Read (and discard) frames until the connection closes; the closing exception."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed


def error_body(message: str) -> dict[str, Any]:
    """The upstream's error envelope."""
    return {"success": False, "error": {"message": message}}


def assert_rate_headers(
    headers: Mapping[str, str], *, limit: int | None = None, remaining: int | None = None
) -> int:
    """X-RateLimit-Limit/-Remaining/-Reset present, integral, Reset a Unix time in the
    future; returns Reset."""
    for name in RATE_HEADERS:
        assert name in headers, f"{name} missing from {dict(headers)}"
    reset = int(headers["X-RateLimit-Reset"])
    assert reset > time.time()
    assert reset < time.time() + 3600
    if limit is not None:
        assert int(headers["X-RateLimit-Limit"]) == limit
    if remaining is not None:
        assert int(headers["X-RateLimit-Remaining"]) == remaining
    return reset


async def refused(
    sim: Simulator,
    instance: str = SHOP,
    token: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    query: str = "",
) -> Response:
    """The HTTP answer of an upgrade that must be refused (fails the test if it opens)."""
    try:
        ws = await open_ws(sim, instance, token, headers=headers, query=query)
    except InvalidStatus as refusal:
        return refusal.response
    await ws.close()
    raise AssertionError(f"upgrade to {instance} was accepted")


def body_of(response: Response) -> Any:
    return orjson.loads(response.body or b"null")
