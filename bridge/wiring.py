"""Building the pieces the settings name: the sink, the router, a runner's pipeline."""

from __future__ import annotations

import ssl

from bridge.pipeline import Pipeline, Router
from bridge.pipeline.filter import EventFilter
from bridge.settings import InstanceSettings, Settings
from bridge.sinks.base import Sink
from bridge.sinks.file import FileSink
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.redis import RedisSink

KAFKA_RECORD_OVERHEAD = 1024


def build_sink(settings: Settings) -> Sink:
    sink = settings.sink
    if sink.kind == "kafka":
        return KafkaSink(sink.kafka, sink.dlq)
    if sink.kind == "redis":
        return RedisSink(sink.redis)
    return FileSink(sink.file.path, sink.dlq, fsync=settings.spool.fsync == "always")


def build_router(settings: Settings) -> Router:
    sink = settings.sink
    if sink.kind == "kafka":
        return Router(sink.kafka.topic, sink.kafka.key, kafka_names=True)
    if sink.kind == "redis":
        return Router(sink.redis.stream, "instance")
    return Router(sink.kafka.topic, sink.kafka.key)


def max_value_bytes(settings: Settings) -> int:
    """The largest value the configured sink takes (bigger frames go to the DLQ)."""
    sink = settings.sink
    if sink.kind == "kafka":
        return sink.kafka.max_request_bytes - KAFKA_RECORD_OVERHEAD
    if sink.kind == "redis":
        return sink.redis.max_entry_bytes
    return settings.upstream.max_frame_bytes


def upstream_ssl(settings: Settings) -> ssl.SSLContext | None:
    ca_file = settings.upstream.ca_file
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


def build_pipeline(settings: Settings, instance: InstanceSettings) -> Pipeline:
    """A runner's pipeline; an inline token is known at once (others once resolved)."""
    token = instance.token.get_secret_value().encode() if instance.token else None
    return Pipeline(
        router=build_router(settings),
        dlq=settings.sink.dlq,
        max_value_bytes=max_value_bytes(settings),
        event_filter=EventFilter(frozenset(settings.filter.drop_events)),
        token=token,
    )
