"""Frames built from the protocol fixtures: the documented envelope, a unique id per frame.

Every frame is ``{event, data, instanceData: {baseUrl, instance, token}}`` with the
instance's real token (the bridge must cut it out) and ``data.id`` unique per frame
(``data.message.id`` too for messages). Compact JSON, as a Go server writes it.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

from bridge.simulator.stamp import put_placeholder

FIXTURES = {
    "message.exchange": ("message.exchange.text.json", "message.exchange.image.json"),
    "message.status": ("message.status.json",),
    "call.update": ("call.update.json",),
    "group.flow": ("group.flow.json",),
    "instance.state": ("instance.state.json",),
    "label.update": ("label.update.json",),
}
DEFAULT_MIX: dict[str, float] = {
    "message.exchange": 50,
    "message.status": 25,
    "call.update": 5,
    "group.flow": 8,
    "instance.state": 4,
    "label.update": 8,
}


def load_templates() -> dict[str, list[dict[str, Any]]]:
    """The fixture documents per event, ``_fixture`` stripped."""
    package = resources.files("bridge.simulator") / "fixtures"
    templates: dict[str, list[dict[str, Any]]] = {}
    for event, names in FIXTURES.items():
        docs = []
        for name in names:
            doc = json.loads((package / name).read_text(encoding="utf-8"))
            doc.pop("_fixture", None)
            docs.append(doc)
        templates[event] = docs
    return templates


@dataclass
class FrameFactory:
    """Builds the frames of one instance."""

    instance: str
    token: str
    base_url: str
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int | None = None
    templates: dict[str, list[dict[str, Any]]] = field(default_factory=load_templates)
    seq: int = 0
    stamp: bool = False  # a send-time placeholder in every frame (see stamp.py)
    id_tag: str = ""  # in every frame id, after the instance: one simulator's ids among several

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def next_event(self) -> str:
        events = [e for e in self.mix if self.mix[e] > 0]
        return self._random.choices(events, weights=[self.mix[e] for e in events])[0]

    def build(self, event: str | None = None, *, media_base64: bool = True) -> tuple[str, bytes]:
        """The next frame: (its unique id, its bytes)."""
        event = event or self.next_event()
        self.seq += 1
        frame_id = f"{self.instance}-{self.id_tag}{self.seq:09d}"
        choices = self.templates.get(event) or [{"event": event, "data": {}}]
        doc = copy.deepcopy(choices[self.seq % len(choices)])
        doc["event"] = event
        data = doc.setdefault("data", {})
        data["id"] = frame_id
        message = data.get("message")
        if isinstance(message, dict):
            message["id"] = frame_id
            media = message.get("media")
            if isinstance(media, dict) and not media_base64:
                media.pop("base64", None)
        if self.stamp:
            put_placeholder(doc)
        doc["instanceData"] = {
            "baseUrl": self.base_url,
            "instance": self.instance,
            "token": self.token,
        }
        return frame_id, orjson.dumps(doc)

    def huge(self, size: int) -> tuple[str, bytes]:
        """A message.exchange frame whose inline media makes it about ``size`` bytes."""
        frame_id, frame = self.build("message.exchange")
        doc = orjson.loads(frame)
        doc["data"]["message"]["media"] = {"base64": "A" * max(0, size - len(frame) - 20)}
        return frame_id, orjson.dumps(doc)
