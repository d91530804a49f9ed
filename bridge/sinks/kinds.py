"""The sink kinds: one object per ``sink.kind``, looked up once by name from ``SINK_KINDS``.

A kind says everything that differs between Kafka, Redis and the file: how its sink is built,
which password it reads, how a record is routed (the destination template and the key) and
the largest value it takes. Nothing else in the bridge asks which kind is configured. A kind's
client library (aiokafka, redis-py) is imported only when that kind builds its sink: a
process loads the one it uses (redis-py alone is several MB a process).

The file sink has no destination of its own: it writes every record into one file, and each
line names the destination the record would have in Kafka (``sink.kafka.topic`` and
``sink.kafka.key``, the characters Kafka refuses kept), so a file can be replayed into the
topics. Its values are bounded only by ``upstream.max_frame_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr

from bridge.errors import ConfigError
from bridge.pipeline import Router
from bridge.settings import Settings, SinkSettings, read_secret
from bridge.sinks.base import Fencing, Sink
from bridge.sinks.file import FileSink

RECORD_OVERHEAD = 1024  # a Kafka record's headers and framing, taken off its value bound


class SinkKind(Protocol):
    """What one ``sink.kind`` brings: its sink, its password, its routing, its bound."""

    @property
    def name(self) -> str:
        """The ``sink.kind`` value it answers to."""
        ...

    def password(self, sink: SinkSettings, environ: Mapping[str, str]) -> SecretStr | None:
        """Its broker password (ConfigError naming the key when a named source is unusable)."""
        ...

    def build(
        self, settings: Settings, password: SecretStr | None, fencing: Fencing | None
    ) -> Sink:
        """Its sink, not started."""
        ...

    def router(self, sink: SinkSettings) -> Router:
        """Where a record goes (destination template) and its key."""
        ...

    def value_bound(self, sink: SinkSettings) -> int | None:
        """The largest value its broker takes (None: no bound of its own)."""
        ...

    def linger(self, sink: SinkSettings) -> float:
        """Seconds a destination's oldest record may wait for company before it goes."""
        ...


@dataclass(frozen=True, slots=True)
class KafkaKind:
    """Kafka topics from ``sink.kafka.topic``, made legal names; SASL password."""

    name: str = "kafka"

    def password(self, sink: SinkSettings, environ: Mapping[str, str]) -> SecretStr | None:
        kafka = sink.kafka
        return read_secret(
            "sink.kafka.sasl_password", kafka.sasl_password_env, kafka.sasl_password_file, environ
        )

    def build(
        self, settings: Settings, password: SecretStr | None, fencing: Fencing | None
    ) -> Sink:
        from bridge.sinks.kafka import KafkaSink  # noqa: PLC0415 - loaded for this kind only

        return KafkaSink(settings.sink.kafka, settings.sink.dlq, password)

    def router(self, sink: SinkSettings) -> Router:
        return Router(sink.kafka.topic, sink.kafka.key, kafka_names=True)

    def value_bound(self, sink: SinkSettings) -> int | None:
        return sink.kafka.max_request_bytes - RECORD_OVERHEAD

    def linger(self, sink: SinkSettings) -> float:
        return sink.kafka.linger_ms / 1000


@dataclass(frozen=True, slots=True)
class RedisKind:
    """Redis streams from ``sink.redis.stream``, keyed by instance; ACL password; the cluster
    mode's fencing checked on each write."""

    name: str = "redis"

    def password(self, sink: SinkSettings, environ: Mapping[str, str]) -> SecretStr | None:
        redis = sink.redis
        return read_secret("sink.redis.password", redis.password_env, redis.password_file, environ)

    def build(
        self, settings: Settings, password: SecretStr | None, fencing: Fencing | None
    ) -> Sink:
        from bridge.sinks.redis import RedisSink  # noqa: PLC0415 - loaded for this kind only

        return RedisSink(settings.sink.redis, password=password, fencing=fencing)

    def router(self, sink: SinkSettings) -> Router:
        return Router(sink.redis.stream, "instance")

    def value_bound(self, sink: SinkSettings) -> int | None:
        return sink.redis.max_entry_bytes

    def linger(self, sink: SinkSettings) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class FileKind:
    """One JSON-lines file (``sink.file.path``) and a DLQ file beside it; no password; each
    line names the Kafka destination and key (see the module's docstring)."""

    name: str = "file"

    def password(self, sink: SinkSettings, environ: Mapping[str, str]) -> SecretStr | None:
        return None

    def build(
        self, settings: Settings, password: SecretStr | None, fencing: Fencing | None
    ) -> Sink:
        fsync = settings.spool.fsync == "always"
        return FileSink(settings.sink.file.path, settings.sink.dlq, fsync=fsync)

    def router(self, sink: SinkSettings) -> Router:
        return Router(sink.kafka.topic, sink.kafka.key)

    def value_bound(self, sink: SinkSettings) -> int | None:
        return None

    def linger(self, sink: SinkSettings) -> float:
        return 0.0


SINK_KINDS: Mapping[str, SinkKind] = {
    kind.name: kind for kind in (KafkaKind(), RedisKind(), FileKind())
}


def sink_kind(sink: SinkSettings) -> SinkKind:
    """The kind ``sink.kind`` names; an unknown one is a ConfigError naming the key."""
    kind = SINK_KINDS.get(sink.kind)
    if kind is None:
        known = ", ".join(sorted(SINK_KINDS))
        raise ConfigError([f"sink.kind: unknown sink kind {sink.kind!r}; one of {known}"])
    return kind
