"""Shared pieces of the simulator conformance tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

TOKENS = {"shop": "tok-shop-0001", "other": "tok-other-0002"}
ACCOUNT = "tok-account-9999"


def rest(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=5)


async def configure(base_url: str, instance: str, token: str, **body: Any) -> httpx.Response:
    payload = {"enabled": True, **body}
    async with rest(base_url) as client:
        return await client.post(
            f"/api/events/websocket/{instance}", json=payload, headers={"token": token}
        )


def ws_url(base_url: str, instance: str) -> str:
    return base_url.replace("http://", "ws://") + f"/ws/{instance}"


async def open_ws(base_url: str, instance: str, token: str, **kwargs: Any) -> ClientConnection:
    return await connect(
        ws_url(base_url, instance), additional_headers={"token": token}, open_timeout=5, **kwargs
    )


async def frames(ws: ClientConnection, count: int, within: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` frames, parsed."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            out.append(orjson.loads(await ws.recv()))
    return out


def error_message(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message
