"""The simulator's model of an account: instances, tokens, WebSocket configs (pure logic).

Faithful to ``upstream/ryzeapi.md`` §2 and §4: a TokenInstance owns its instance, a
TokenAccount owns every instance; a config row exists only once POSTed (404 "not
configured" before); ``enabled: false`` keeps the row but clears ``events`` and
``mediaBase64``; an omitted or empty ``events`` means all six.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bridge.settings import EVENT_NAMES as EVENTS

MSG_MISSING_TOKEN = "Missing token in header, Authorization header, or query parameter"  # noqa: S105
MSG_INVALID_TOKEN = "Invalid token"  # noqa: S105 - an error message, not a secret
MSG_FORBIDDEN = "Instance token does not match this instance"
MSG_INSTANCE_NOT_FOUND = "Instance not found"
MSG_NOT_CONFIGURED = "WebSocket not configured for this instance"
MSG_INVALID_BODY = "Invalid request body"
MSG_RATE_LIMITED = "Rate limit exceeded. Try again later."


def not_enabled_message(instance: str) -> str:
    return (
        "WebSocket is not enabled for this instance. Configure it first using "
        f"POST /api/events/websocket/{instance}"
    )


@dataclass
class WsConfig:
    enabled: bool
    events: list[str]
    media_base64: bool

    def as_json(self) -> dict[str, Any]:
        events = list(self.events)
        return {"enabled": self.enabled, "events": events, "mediaBase64": self.media_base64}

    def wants(self, event: str) -> bool:
        """The server-side filter: empty events means all six."""
        return self.enabled and (not self.events or event in self.events)


@dataclass
class Instance:
    name: str
    token: str
    config: WsConfig | None = None
    created_at: float = field(default_factory=time.time)


class ApiError(Exception):
    """An answer in the upstream's error envelope."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status} {message}")


@dataclass
class Account:
    instances: dict[str, Instance] = field(default_factory=dict)
    account_tokens: set[str] = field(default_factory=set)
    # instance tokens -> how many instances hold each: a request's token is looked up, not
    # searched for among every instance (5,000 instances made each upgrade scan 5,000)
    tokens: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, token: str, config: WsConfig | None = None) -> Instance:
        self.remove(name)
        instance = Instance(name, token, config)
        self.instances[name] = instance
        self.tokens[token] += 1
        return instance

    def remove(self, name: str) -> None:
        instance = self.instances.pop(name, None)
        if instance is not None:
            self.tokens[instance.token] -= 1
            if self.tokens[instance.token] <= 0:
                del self.tokens[instance.token]

    def known_token(self, token: str) -> bool:
        return token in self.account_tokens or token in self.tokens

    def authorize(self, token: str | None, name: str) -> Instance:
        """The instance ``token`` may act on, or the documented 401/403/404."""
        if not token:
            raise ApiError(401, MSG_MISSING_TOKEN)
        if not self.known_token(token):
            raise ApiError(401, MSG_INVALID_TOKEN)
        instance = self.instances.get(name)
        if token in self.account_tokens:
            if instance is None:
                raise ApiError(404, MSG_INSTANCE_NOT_FOUND)
            return instance
        if instance is None:
            raise ApiError(404, MSG_INSTANCE_NOT_FOUND)
        if instance.token != token:
            raise ApiError(403, MSG_FORBIDDEN)
        return instance


def parse_config_body(body: Any) -> WsConfig:
    """Validate a POST body; ``enabled: false`` clears events and mediaBase64."""
    if not isinstance(body, dict):
        raise ApiError(400, MSG_INVALID_BODY)
    enabled = body.get("enabled", True)
    events = body.get("events")
    media = body.get("mediaBase64", False)
    if not isinstance(enabled, bool) or not isinstance(media, bool):
        raise ApiError(400, MSG_INVALID_BODY)
    if events is None:
        events = []
    if not isinstance(events, list) or any(e not in EVENTS for e in events):
        raise ApiError(400, MSG_INVALID_BODY)
    if not enabled:
        return WsConfig(False, [], False)
    return WsConfig(True, list(dict.fromkeys(events)), media)


def token_from(headers: Any, query: Any) -> str | None:
    """The token from the ``token`` header, ``Authorization: Bearer``, or ``?token=``."""
    token = headers.get("token")
    if token:
        return str(token)
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():  # the scheme is case-insensitive
        return str(credentials.strip())
    value = query.get("token")
    return str(value) if value else None
