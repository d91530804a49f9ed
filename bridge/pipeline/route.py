"""Routing: destination from a template, the record key (pure)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.pipeline.events import chat_id
from bridge.pipeline.names import INSTANCE_CHARS, INSTANCE_NAME_PATTERN

KeyMode = Literal["instance", "chat", "none"]
_KAFKA_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")
KAFKA_TOPIC_MAX = 249
NAMES_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Router:
    """Fills ``template`` with ``{instance}`` and ``{event}``; Kafka names are made legal."""

    template: str
    key_mode: KeyMode = "instance"
    kafka_names: bool = False
    _names: dict[tuple[str, str], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    by_event: bool = field(default=False, init=False)  # True when ``{event}`` is in the template

    def __post_init__(self) -> None:
        parts = string.Formatter().parse(self.template)
        object.__setattr__(self, "by_event", any(name == "event" for _, name, _, _ in parts))

    def destination(self, instance: str, event: str) -> str:
        """The filled template (remembered: the same few pairs come back every frame)."""
        name = self._names.get((instance, event))
        if name is None:
            name = self.template.format(instance=instance, event=event)
            if self.kafka_names:
                name = kafka_topic_name(name)
            if len(self._names) < NAMES_CACHED:
                self._names[instance, event] = name
        return name

    @property
    def needs_document(self) -> bool:
        """Only the chat key reads the parsed frame."""
        return self.key_mode == "chat"

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


def can_fill_to(template: str, target: str, event: str, *, kafka_names: bool) -> bool:
    """Whether some instance name fills ``template`` with ``event`` to exactly ``target``
    (Kafka names made legal first when ``kafka_names``) (pure)."""
    instance = f"(?:{INSTANCE_NAME_PATTERN.strip('^$')})"
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        pattern += re.escape(kafka_topic_name(literal) if kafka_names else literal)
        if name is not None:
            pattern += instance if name == "instance" else re.escape(event)
    return re.fullmatch(pattern, target) is not None


def unseparated(template: str, *, kafka_names: bool) -> bool:
    """Whether ``{instance}`` and ``{event}`` meet in ``template`` with nothing between them
    that an instance name cannot hold (``.``, ``:``; in Kafka names only ``.``: the others
    become ``_``), so two pairs could fill it alike: ``a-b`` + ``x`` and ``a`` + ``b-x`` (pure)."""
    previous = None
    for literal, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        between = kafka_topic_name(literal) if kafka_names else literal
        if previous not in (None, name) and set(between) <= INSTANCE_CHARS:
            return True
        previous = name
    return False
