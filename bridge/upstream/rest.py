"""RyzeAPI REST: read and, when it differs, write an instance's WebSocket config ("ensure").

Errors are translated here, once, into the tree of ``bridge.errors``. Calls are retried within
a bound (attempts and total time) with the bridge's retry policy (``bridge.retry``: exponential,
full jitter; a 429's usable ``X-RateLimit-Reset`` is the policy's hint, so the retry waits at
least until then). Every call first spends one request from the token's bucket, shared with
the WebSocket upgrades; the client waits on the bucket's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from bridge.errors import (
    InstanceNotFoundError,
    RateLimitedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
)
from bridge.retry import RetryPolicy
from bridge.settings import EVENT_NAMES
from bridge.upstream.ratelimit import TokenBucket, parse_rate_headers, usable_reset

EnsureOutcome = Literal["unchanged", "created", "updated", "drift"]
NOT_CONFIGURED = "not configured"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WsConfig:
    """An instance's WebSocket config as the upstream stores it."""

    enabled: bool
    events: frozenset[str]
    media_base64: bool

    def body(self) -> dict[str, Any]:
        """The POST body: the full desired config, events listed explicitly."""
        return {
            "enabled": self.enabled,
            "events": sorted(self.events or EVENT_NAMES),
            "mediaBase64": self.media_base64,
        }


def desired_config(events: list[str], media_base64: bool) -> WsConfig:
    return WsConfig(True, frozenset(events), media_base64)


def same_config(current: WsConfig | None, desired: WsConfig) -> bool:
    """Whether the upstream already has what we want; no events means all six (pure)."""
    if current is None:
        return False

    def all_if_empty(events: frozenset[str]) -> frozenset[str]:
        return events or frozenset(EVENT_NAMES)

    return (
        current.enabled == desired.enabled
        and all_if_empty(current.events) == all_if_empty(desired.events)
        and current.media_base64 == desired.media_base64
    )


def parse_config(body: Any) -> WsConfig:
    """The ``websocket`` object of a GET/POST answer, leniently (pure)."""
    ws = body.get("websocket") if isinstance(body, dict) else None
    if not isinstance(ws, dict):
        raise UpstreamProtocolError("answer has no 'websocket' object")
    events = ws.get("events") or []
    if not isinstance(events, list):
        raise UpstreamProtocolError("'websocket.events' is not a list")
    enabled, media = bool(ws.get("enabled")), bool(ws.get("mediaBase64"))
    return WsConfig(enabled, frozenset(map(str, events)), media)


@dataclass(frozen=True, slots=True)
class ListedInstance:
    name: str
    websocket: WsConfig | None


def parse_instance_list(body: Any) -> list[ListedInstance]:
    """The items of a list answer, leniently: under ``data`` or ``instances`` (or the body
    itself), named by ``name``, ``instanceName`` or ``instance`` (pure)."""
    items = body
    if isinstance(body, dict):
        items = body.get("data", body.get("instances", []))
    if not isinstance(items, list):
        raise UpstreamProtocolError("instance list answer has no list of instances")
    listed = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = item.get("name") or item.get("instanceName") or item.get("instance")
        if not isinstance(name, str) or not name:
            continue
        websocket = None
        if isinstance(item.get("websocket"), dict):
            websocket = parse_config({"websocket": item["websocket"]})
        listed.append(ListedInstance(name, websocket))
    return listed


def error_message(response: httpx.Response) -> str:
    """``error.message`` of the upstream's error envelope, or the status line."""
    try:
        body = response.json()
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
    return str(message)


def translate(response: httpx.Response, instance: str) -> UpstreamError:
    """The error a non-2xx answer stands for (pure; the token is never in the message)."""
    status = response.status_code
    text = f"{instance}: HTTP {status} {error_message(response)}"
    if status in (401, 403):
        return UpstreamAuthError(text, status=status)
    if status == 404:
        return InstanceNotFoundError(text, status=status)
    if status == 429:
        _, reset_at = parse_rate_headers(dict(response.headers))
        return RateLimitedError(text, reset_at=reset_at)
    if status >= 500:
        return UpstreamUnavailableError(text, status=status)
    return UpstreamProtocolError(text, status=status)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Bounded retries for request/response calls: at most ``attempts`` calls and
    ``total_seconds``, waiting as the retry policy of ``initial`` and ``maximum`` says."""

    attempts: int = 4
    total_seconds: float = 30.0
    initial: float = 0.5
    maximum: float = 8.0

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.initial, self.maximum)


def reset_wait(error: RateLimitedError, now: float) -> float | None:
    """Seconds from ``now`` to a 429's usable reset (the retry policy's hint), if any (pure)."""
    reset_at = usable_reset(error.reset_at, now)
    return None if reset_at is None else reset_at - now


REST_IN_FLIGHT = 16


class RestClient:
    """REST calls for one token; ``client`` is injectable (httpx.MockTransport in tests)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        token: SecretStr,
        bucket: TokenBucket,
        *,
        retry: RetryBudget | None = None,
        on_wait: Callable[[float], None] | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.client = client
        self._token = token
        self.bucket = bucket
        self.retry = retry or RetryBudget()
        self.on_wait = on_wait
        # calls in flight across all instances: httpx's pool scans every waiting request for
        # every connection, which costs a whole core once a thousand instances start at once
        self.slots = slots or asyncio.Semaphore(REST_IN_FLIGHT)

    async def request(self, method: str, path: str, instance: str, **kw: Any) -> httpx.Response:
        """One call after one request of budget; the answer's rate headers feed the bucket."""
        waited = await self.bucket.acquire()
        if waited and self.on_wait:
            self.on_wait(waited)
        headers = {"token": self._token.get_secret_value()}
        try:
            async with self.slots:
                response = await self.client.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"{instance}: {type(exc).__name__}") from None
        self.bucket.observe(*parse_rate_headers(dict(response.headers)))
        if response.status_code == 429:
            error = translate(response, instance)
            limited = error.reset_at if isinstance(error, RateLimitedError) else None
            reset_at = usable_reset(limited, self.bucket.clock())
            if reset_at is not None:  # the others sharing the token hold off until then too
                self.bucket.block_until(reset_at)
            raise error
        return response

    async def read_config(self, instance: str) -> WsConfig | None:
        """GET getWebsocket: the config, or None when it was never configured (404)."""
        path = f"/api/events/getWebsocket/{quote(instance, safe='')}"
        response = await self.request("GET", path, instance)
        if response.status_code == 404 and NOT_CONFIGURED in error_message(response).lower():
            return None
        if response.status_code != 200:
            raise translate(response, instance)
        return parse_config(_json(response, instance))

    async def write_config(self, instance: str, config: WsConfig) -> WsConfig:
        """POST websocket with the full config; returns what the upstream persisted."""
        path = f"/api/events/websocket/{quote(instance, safe='')}"
        response = await self.request("POST", path, instance, json=config.body())
        if response.status_code not in (200, 201):
            raise translate(response, instance)
        return parse_config(_json(response, instance))

    async def list_instances(self) -> list[ListedInstance]:
        """GET /api/instance/list: the instances the token may see, with their WS config."""
        response = await self.request("GET", "/api/instance/list", "account")
        if response.status_code != 200:
            raise translate(response, "account")
        return parse_instance_list(_json(response, "account"))

    async def ensure(
        self,
        instance: str,
        desired: WsConfig,
        *,
        manage: bool,
        known: WsConfig | None = None,
    ) -> EnsureOutcome:
        """Make the upstream config equal ``desired`` (POST only when it differs). ``known``
        is a config already read (from the instance list): then no GET is spent."""
        current = known or await self.with_retries(lambda: self.read_config(instance))
        if same_config(current, desired):
            return "unchanged"
        if not manage:
            return "drift"
        await self.with_retries(lambda: self.write_config(instance, desired))
        return "created" if current is None else "updated"

    async def with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry transient failures (5xx, network, 429) within the retry budget; after a 429
        with a usable reset the wait lasts at least until that reset."""
        clock = self.bucket.clock
        deadline = clock() + self.retry.total_seconds
        backoff = self.retry.policy.start()
        while True:
            try:
                return await call()
            except (UpstreamUnavailableError, RateLimitedError) as error:
                now = clock()
                if backoff.attempt + 1 >= self.retry.attempts or now >= deadline:
                    raise
                hint = reset_wait(error, now) if isinstance(error, RateLimitedError) else None
                delay = backoff.next_delay(now, hint)
            if hint is not None and self.on_wait:
                self.on_wait(delay)
            await self.bucket.sleep(delay)


def _json(response: httpx.Response, instance: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UpstreamProtocolError(f"{instance}: answer is not JSON") from None
