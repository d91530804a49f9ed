"""A routing template cannot fill two (instance, event) pairs to one name: ``{instance}`` and
``{event}`` must be separated by a character no instance name holds (``.``, or ``:`` in a
Redis stream; in a Kafka topic ``:`` becomes ``_``, so only ``.``), and check-config names the
template's key when they are not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.errors import ConfigError
from bridge.pipeline.route import Router
from bridge.settings import load_settings


def problems_of(tmp_path: Path, sink: dict[str, object]) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(orjson.dumps({"sink": sink}).decode(), encoding="utf-8")
    try:
        load_settings(config)
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_collision_the_rule_prevents() -> None:
    """Without a separator, instance ``a-b`` + ``message.status`` and instance ``a`` +
    ``b-message.status`` fill ``ryze-{instance}-{event}`` to the same topic."""
    router = Router("ryze-{instance}-{event}", kafka_names=True)
    assert router.destination("a-b", "message.status") == router.destination(
        "a", "b-message.status"
    )


@pytest.mark.parametrize(
    ("sink", "key"),
    [
        ({"kafka": {"topic": "ryze-{instance}-{event}"}}, "sink.kafka.topic"),
        ({"kafka": {"topic": "ryze.{instance}{event}"}}, "sink.kafka.topic"),
        ({"kafka": {"topic": "ryze:{instance}:{event}"}}, "sink.kafka.topic"),
        ({"kafka": {"topic": "{event}_{instance}"}}, "sink.kafka.topic"),
        ({"kind": "redis", "redis": {"stream": "ryze-{instance}_{event}"}}, "sink.redis.stream"),
    ],
)
def test_placeholders_without_a_separator_are_refused(
    tmp_path: Path, sink: dict[str, object], key: str
) -> None:
    """``{instance}`` next to ``{event}`` with only characters an instance name may hold
    between them (or, in Kafka, ``:`` that becomes ``_``) is refused, naming the key."""
    problems = problems_of(tmp_path, sink)
    assert any(p.startswith(f"{key}: ") and "separator" in p for p in problems), problems


@pytest.mark.parametrize(
    "sink",
    [
        {"kafka": {"topic": "ryze.{instance}.{event}"}},
        {"kafka": {"topic": "ryze.{event}.{instance}"}},
        {"kafka": {"topic": "ryze.{event}"}},
        {"kind": "redis", "redis": {"stream": "ryze:{instance}:{event}"}},
    ],
)
def test_separated_templates_are_accepted(tmp_path: Path, sink: dict[str, object]) -> None:
    """The documented layouts (``.`` in topics, ``:`` in streams) pass."""
    assert problems_of(tmp_path, sink) == []
