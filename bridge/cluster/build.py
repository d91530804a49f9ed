"""Building the membership that ``cluster.mode`` names."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.cluster import Membership, ShardOwner, StaticMembership, replica_name, static_owned
from bridge.cluster.kafka import KafkaMembership
from bridge.cluster.redis import RedisMembership
from bridge.logs import register_secret
from bridge.metrics import Metrics
from bridge.settings import Settings, read_secret


def build_membership(
    settings: Settings, owner: ShardOwner, metrics: Metrics, environ: Mapping[str, str]
) -> Membership | None:
    """The membership of this replica; None in mode ``none`` (this process owns all)."""
    cluster = settings.cluster
    replica = replica_name(cluster, environ)
    if cluster.mode == "kafka":
        kafka = settings.sink.kafka
        password = read_secret(
            "sink.kafka.sasl_password", kafka.sasl_password_env, kafka.sasl_password_file, environ
        )
        if password is not None:
            register_secret(password.get_secret_value())
        return KafkaMembership(settings, owner, metrics, replica, password)
    if cluster.mode == "redis":
        redis = settings.sink.redis
        password = read_secret(
            "sink.redis.password", redis.password_env, redis.password_file, environ
        )
        if password is not None:
            register_secret(password.get_secret_value())
        return RedisMembership(settings, owner, metrics, replica, password)
    if cluster.mode == "static":
        return StaticMembership("static", static_owned(cluster, environ), owner, metrics)
    return None
