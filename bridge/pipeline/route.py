"""Routing: destination from a template, the record key, the stable ``ryze-id`` (pure)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from bridge.pipeline.events import chat_id

KeyMode = Literal["instance", "chat", "none"]
_KAFKA_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")
KAFKA_TOPIC_MAX = 249


@dataclass(frozen=True, slots=True)
class Router:
    """Fills ``template`` with ``{instance}`` and ``{event}``; Kafka names are made legal."""

    template: str
    key_mode: KeyMode = "instance"
    kafka_names: bool = False

    def destination(self, instance: str, event: str) -> str:
        name = self.template.format(instance=instance, event=event)
        return kafka_topic_name(name) if self.kafka_names else name

    def key(self, instance: str, document: dict[str, Any] | None) -> bytes | None:
        if self.key_mode == "none":
            return None
        if self.key_mode == "chat" and document is not None:
            chat = chat_id(document)
            if chat is not None:
                return f"{instance}/{chat}".encode()
        return instance.encode()


def kafka_topic_name(name: str) -> str:
    """``name`` with characters Kafka refuses replaced by ``_``, cut to Kafka's 249 (pure)."""
    return _KAFKA_ILLEGAL.sub("_", name)[:KAFKA_TOPIC_MAX]


def record_id(instance: str, value: bytes) -> str:
    """A stable id of instance + token-free value: the same frame always gets the same id."""
    digest = hashlib.blake2b(value, digest_size=16, person=b"ryze-id")
    digest.update(b"\x00" + instance.encode())
    return digest.hexdigest()
