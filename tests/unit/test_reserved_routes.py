"""An upstream event name never writes where the bridge writes itself: a safe name whose
filled template is the DLQ, the instance's gap-marker destination or the cluster's
coordination topic is dead-lettered as ``invalid_event``, and check-config refuses a template
that would fill a documented event into the DLQ. Built with the real settings and wiring."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from bridge.errors import ConfigError
from bridge.pipeline import Frame, Publish
from bridge.settings import InstanceSettings, Settings, load_settings
from bridge.wiring import build_pipeline

TOKEN = "00000000-0000-4000-8000-0000000000cc"
INSTANCE = InstanceSettings(token=SecretStr(TOKEN))
KAFKA = "sink.kafka.topic"


def frame(event: str) -> bytes:
    return orjson.dumps({"event": event, "data": {}, "instanceData": {"token": TOKEN}})


def dead_letter_of(settings: Settings, event: str) -> tuple[str, str | None]:
    """Where the pipeline the bridge builds for ``settings`` sends a frame of ``event``,
    and its DLQ reason."""
    result = build_pipeline(settings, INSTANCE).process(Frame("shop", frame(event), 1))
    assert isinstance(result, Publish)
    return result.record.destination, result.record.dlq_reason


def test_an_event_named_dlq_is_dead_lettered_not_published_into_the_dlq() -> None:
    """Default settings (``ryze.{event}``, DLQ ``ryze.dlq``): an event ``dlq`` is a dead
    letter with the event-name reason, not a record published into the DLQ topic."""
    assert dead_letter_of(Settings(), "dlq") == ("ryze.dlq", "invalid_event")
    assert dead_letter_of(Settings(), "poll.vote") == ("ryze.poll.vote", None)


def test_an_event_named_dlq_is_dead_lettered_on_the_redis_layout() -> None:
    """The chart's Redis values (``ryze:{event}``, DLQ ``ryze:dlq``): the same."""
    settings = Settings.model_validate(
        {"sink": {"kind": "redis", "redis": {"stream": "ryze:{event}"}, "dlq": "ryze:dlq"}}
    )
    assert dead_letter_of(settings, "dlq") == ("ryze:dlq", "invalid_event")


def test_a_template_without_event_still_publishes_every_event() -> None:
    """``ryze.{instance}`` puts every event of an instance, gap markers included, in one
    topic by design: sharing the gap markers' topic is no reason to dead-letter."""
    settings = Settings.model_validate(
        {"sink": {"kafka": {"topic": "ryze.{instance}"}, "dlq": "d"}}
    )
    assert dead_letter_of(settings, "message.status") == ("ryze.shop", None)
    assert dead_letter_of(settings, "poll.vote") == ("ryze.shop", None)


def test_an_event_cannot_fill_the_cluster_coordination_topic() -> None:
    """With replicas coordinating through Kafka, an event whose filled template is
    ``cluster.topic`` is dead-lettered."""
    settings = Settings.model_validate(
        {"sink": {"kafka": {"topic": "{event}"}}, "cluster": {"mode": "kafka"}}
    )
    assert dead_letter_of(settings, "ryze-bridge.cluster") == ("ryze.dlq", "invalid_event")


@pytest.mark.parametrize(
    ("sink", "key"),
    [
        ({"dlq": "ryze.message.status"}, KAFKA),
        ({"kafka": {"topic": "{instance}.call.{event}"}, "dlq": "x.call.call.update"}, KAFKA),
        ({"kind": "redis", "dlq": "ryze:bridge.gap"}, "sink.redis.stream"),
    ],
)
def test_check_config_refuses_a_template_that_fills_the_dlq(
    tmp_path: Path, sink: dict[str, object], key: str
) -> None:
    """A template that fills a documented event (or the gap markers) into the DLQ, for some
    valid instance name, is refused at load, naming the template's key."""
    config = tmp_path / "config.yaml"
    config.write_text(orjson.dumps({"sink": sink}).decode(), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert any(problem.startswith(f"{key}: ") for problem in raised.value.problems)
