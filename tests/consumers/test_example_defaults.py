"""The Python examples' default subscriptions take the bridge's event and gap-marker topics
(or streams) and leave its default DLQ out, as the consumers of other languages do."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from bridge.settings import EVENT_NAMES, SinkSettings
from examples.kafka_consumer import DEFAULT_PATTERN
from examples.redis_consumer import DEFAULT_MATCH

INSTANCES = ("loja-centro", "Shop_2", "a")
EVENTS = (*EVENT_NAMES, "bridge.gap", "some.new_event")


def test_the_kafka_example_pattern_takes_every_event_and_gap_topic_and_not_the_dlq() -> None:
    """aiokafka matches the pattern at a topic's start (re.match): every topic of the default
    ryze.{event} and of the per-instance ryze.{instance}.{event}, gap markers included,
    matches; the default DLQ topic does not."""
    pattern = re.compile(DEFAULT_PATTERN)
    assert SinkSettings().kafka.topic == "ryze.{event}"
    for event in EVENTS:
        assert pattern.match(f"ryze.{event}"), event
        for instance in INSTANCES:
            assert pattern.match(f"ryze.{instance}.{event}"), (instance, event)
    assert pattern.match(SinkSettings().dlq) is None
    assert SinkSettings().dlq == "ryze.dlq"


def test_the_redis_example_match_takes_every_event_and_gap_stream_and_not_the_dlq() -> None:
    """The SCAN pattern takes every stream of the default ryze:{event} and of the per-instance
    ryze:{instance}:{event}, and neither the default DLQ stream nor one named in the streams'
    own style."""
    assert SinkSettings().redis.stream == "ryze:{event}"
    for event in EVENTS:
        assert fnmatchcase(f"ryze:{event}", DEFAULT_MATCH), event
        for instance in INSTANCES:
            assert fnmatchcase(f"ryze:{instance}:{event}", DEFAULT_MATCH), (instance, event)
    assert not fnmatchcase(SinkSettings().dlq, DEFAULT_MATCH)
    assert not fnmatchcase("ryze:dlq", DEFAULT_MATCH)
