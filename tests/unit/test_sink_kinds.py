"""The sink kinds: each ``sink.kind`` is one object in a registry that builds its sink, reads
its password, routes and bounds a value; an unknown kind is a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from bridge.errors import ConfigError
from bridge.logs import mask_registered
from bridge.settings import Settings, SinkSettings
from bridge.sinks.file import FileSink
from bridge.sinks.kafka import KafkaSink, producer_options
from bridge.sinks.kinds import SINK_KINDS, sink_kind
from bridge.sinks.redis import RedisSink
from bridge.wiring import build_router, build_sink, max_value_bytes, sink_password

MAX_FRAME = 8 * 1024 * 1024
SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_username": "bridge",
    "sasl_password_env": "KAFKA_PW",
}


def settings(kind: str, tmp_path: Path, **sink: Any) -> Settings:
    return Settings.model_validate(
        {
            "upstream": {"max_frame_bytes": MAX_FRAME},
            "spool": {"dir": str(tmp_path / "spool")},
            "sink": {"kind": kind, "file": {"path": str(tmp_path / "events.jsonl")}, **sink},
        }
    )


def test_the_registry_has_one_kind_for_each_kind_the_settings_accept() -> None:
    """Every value ``sink.kind`` validates has its kind object, named by that value, and
    there is no other."""
    accepted = set(get_args(SinkSettings.model_fields["kind"].annotation))
    assert set(SINK_KINDS) == accepted
    assert all(kind.name == name for name, kind in SINK_KINDS.items())


@pytest.mark.parametrize(
    ("kind", "sink_type"), [("kafka", KafkaSink), ("redis", RedisSink), ("file", FileSink)]
)
def test_each_kind_builds_its_own_sink(kind: str, sink_type: type, tmp_path: Path) -> None:
    """``build_sink`` gives the sink class of the configured kind (not started)."""
    sink = build_sink(settings(kind, tmp_path), {})
    assert isinstance(sink, sink_type)
    assert sink.kind == kind


def test_the_file_sink_writes_where_its_settings_say(tmp_path: Path) -> None:
    """The file kind's sink writes ``sink.file.path`` and its DLQ beside it, and fsyncs each
    write when the spool does (``fsync: always``)."""
    configured = settings("file", tmp_path, dlq="dead.jsonl")
    configured = configured.model_copy(
        update={"spool": configured.spool.model_copy(update={"fsync": "always"})}
    )
    sink = build_sink(configured, {})
    assert isinstance(sink, FileSink)
    assert sink.path == tmp_path / "events.jsonl"
    assert sink.dlq_path == tmp_path / "dead.jsonl"
    assert sink.fsync


def test_each_kind_reads_its_own_password(tmp_path: Path) -> None:
    """Kafka reads its SASL password, Redis its ACL password (each from its own key), the file
    none; a password read is masked in logs from then on."""
    environ = {"KAFKA_PW": "kafka-secret-4711", "REDIS_PW": "redis-secret-0815"}
    kafka = sink_password(settings("kafka", tmp_path, kafka=SASL), environ)
    redis = sink_password(settings("redis", tmp_path, redis={"password_env": "REDIS_PW"}), environ)
    assert kafka is not None
    assert kafka.get_secret_value() == "kafka-secret-4711"
    assert redis is not None
    assert redis.get_secret_value() == "redis-secret-0815"
    assert sink_password(settings("file", tmp_path), environ) is None
    assert "kafka-secret-4711" not in mask_registered("login kafka-secret-4711")
    assert "redis-secret-0815" not in mask_registered("login redis-secret-0815")


def test_a_missing_password_is_a_config_error_naming_the_kinds_key(tmp_path: Path) -> None:
    """A named password source that is unset fails with the key of that kind's setting."""
    with pytest.raises(ConfigError, match=r"sink\.kafka\.sasl_password_env"):
        sink_password(settings("kafka", tmp_path, kafka=SASL), {})
    with pytest.raises(ConfigError, match=r"sink\.redis\.password_env"):
        sink_password(settings("redis", tmp_path, redis={"password_env": "REDIS_PW"}), {})


def test_each_kind_routes_with_its_own_template(tmp_path: Path) -> None:
    """Kafka fills its topic template with legal topic names and its key setting; Redis fills
    its stream template, keyed by instance; the file names the Kafka destination and key
    as they are written (no Kafka legalisation: it writes no topic)."""
    per_instance = {"key": "none", "topic": "ryze.{instance}.{event}"}
    kafka = build_router(settings("kafka", tmp_path, kafka=per_instance))
    assert kafka.destination("loja centro", "message.exchange") == (
        "ryze.loja_centro.message.exchange"
    )
    assert kafka.key("loja centro", None) is None
    stream = {"stream": "ryze:{instance}:{event}"}
    redis = build_router(settings("redis", tmp_path, kafka={"key": "none"}, redis=stream))
    assert redis.destination("loja centro", "message.exchange") == (
        "ryze:loja centro:message.exchange"
    )
    assert redis.key("shop", None) == b"shop"
    file = build_router(settings("file", tmp_path, kafka={"topic": "t.{instance}.{event}"}))
    assert file.destination("loja centro", "call.update") == "t.loja centro.call.update"
    assert file.key("shop", None) == b"shop"


def test_the_default_layout_is_one_destination_per_event_keyed_by_instance(
    tmp_path: Path,
) -> None:
    """By default two instances fill the same Kafka topic and Redis stream per event, each
    record keyed by its instance (the key keeps per-instance order in one partition)."""
    kafka = build_router(settings("kafka", tmp_path))
    assert kafka.destination("shop", "message.exchange") == "ryze.message.exchange"
    assert kafka.destination("store-2", "message.exchange") == "ryze.message.exchange"
    assert (kafka.key("shop", None), kafka.key("store-2", None)) == (b"shop", b"store-2")
    redis = build_router(settings("redis", tmp_path))
    assert redis.destination("shop", "call.update") == "ryze:call.update"
    assert redis.destination("store-2", "call.update") == "ryze:call.update"


def test_each_kind_bounds_a_value_by_what_its_broker_takes(tmp_path: Path) -> None:
    """Kafka: its largest request less the record overhead; Redis: its largest entry; the
    file: nothing of its own; each at most ``upstream.max_frame_bytes``."""
    kafka = settings("kafka", tmp_path, kafka={"max_request_bytes": 1_000_000})
    assert max_value_bytes(kafka) == 1_000_000 - 1024
    redis = settings("redis", tmp_path, redis={"max_entry_bytes": 2_000_000})
    assert max_value_bytes(redis) == 2_000_000
    big_redis = settings("redis", tmp_path, redis={"max_entry_bytes": MAX_FRAME * 2})
    assert max_value_bytes(big_redis) == MAX_FRAME
    assert max_value_bytes(settings("file", tmp_path)) == MAX_FRAME


def test_kafka_lingers_in_the_lanes_and_its_producer_not_at_all(tmp_path: Path) -> None:
    """``sink.kafka.linger_ms`` is the lanes' linger (seconds); the producer gets 0, so a batch
    it is handed goes at once; Redis and the file do not linger."""
    kafka = settings("kafka", tmp_path, kafka={"linger_ms": 7}).sink
    assert sink_kind(kafka).linger(kafka) == pytest.approx(0.007)
    assert producer_options(kafka.kafka)["linger_ms"] == 0
    for kind in ("redis", "file"):
        other = settings(kind, tmp_path, kafka={"linger_ms": 7}).sink
        assert sink_kind(other).linger(other) == 0.0


def test_a_linger_past_a_second_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """A linger long enough to read as a stall or to outlast a drain is refused by name."""
    with pytest.raises(ValueError, match="linger_ms"):
        settings("kafka", tmp_path, kafka={"linger_ms": 1001})


def test_an_unknown_kind_is_a_config_error_naming_the_key() -> None:
    """A kind no object answers to (settings built without validation) is refused with
    ``sink.kind`` and the known kinds in the message, never a fall-through to some sink."""
    unknown = SinkSettings.model_construct(kind="nats")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sink\.kind: unknown sink kind 'nats'") as caught:
        sink_kind(unknown)
    assert "file, kafka, redis" in str(caught.value)
