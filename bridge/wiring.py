"""Building the pieces the settings name: the sink, the router, a runner's pipeline."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from pydantic import SecretStr

from bridge.logs import register_secret
from bridge.pipeline import Pipeline, Router
from bridge.pipeline.filter import EventFilter
from bridge.settings import InstanceSettings, Settings, read_secret
from bridge.sinks.base import Sink
from bridge.sinks.file import FileSink
from bridge.sinks.kafka import RECORD_OVERHEAD as KAFKA_RECORD_OVERHEAD
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.redis import Fencing, RedisSink


def build_sink(
    settings: Settings, environ: Mapping[str, str], fencing: Fencing | None = None
) -> Sink:
    """The configured sink, its password read now (ConfigError naming the key if missing)."""
    return sink_with(settings, sink_password(settings, environ), fencing)


def sink_with(
    settings: Settings, password: SecretStr | None, fencing: Fencing | None = None
) -> Sink:
    """The configured sink with its password already read."""
    sink = settings.sink
    if sink.kind == "kafka":
        return KafkaSink(sink.kafka, sink.dlq, password)
    if sink.kind == "redis":
        return RedisSink(sink.redis, password=password, fencing=fencing)
    return FileSink(sink.file.path, sink.dlq, fsync=settings.spool.fsync == "always")


def sink_password(settings: Settings, environ: Mapping[str, str]) -> SecretStr | None:
    """The Kafka SASL or Redis ACL password of the configured sink (masked in logs from now
    on); the cluster modes coordinate with the same credentials."""
    sink = settings.sink
    password = None
    if sink.kind == "kafka":
        kafka = sink.kafka
        password = read_secret(
            "sink.kafka.sasl_password", kafka.sasl_password_env, kafka.sasl_password_file, environ
        )
    elif sink.kind == "redis":
        redis = sink.redis
        password = read_secret(
            "sink.redis.password", redis.password_env, redis.password_file, environ
        )
    _remember(password)
    return password


def _remember(secret: SecretStr | None) -> None:
    if secret is not None:
        register_secret(secret.get_secret_value())


def build_router(settings: Settings) -> Router:
    sink = settings.sink
    if sink.kind == "kafka":
        return Router(sink.kafka.topic, sink.kafka.key, kafka_names=True)
    if sink.kind == "redis":
        return Router(sink.redis.stream, "instance")
    return Router(sink.kafka.topic, sink.kafka.key)


def max_value_bytes(settings: Settings) -> int:
    """The largest value published: what the configured sink takes and at most
    ``upstream.max_frame_bytes`` (bigger frames go to the DLQ, cut to fit)."""
    sink = settings.sink
    accepted = settings.upstream.max_frame_bytes
    if sink.kind == "kafka":
        return min(accepted, sink.kafka.max_request_bytes - KAFKA_RECORD_OVERHEAD)
    if sink.kind == "redis":
        return min(accepted, sink.redis.max_entry_bytes)
    return accepted


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


def admin_tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the admin server when a certificate and key are configured."""
    admin = settings.admin
    if admin.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(admin.tls_cert_file), str(admin.tls_key_file or ""))
    return context
