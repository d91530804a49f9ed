"""Building the membership that ``cluster.mode`` names (its module, and the client library
it needs, imported only for that mode)."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.cluster import Membership, ShardOwner, StaticMembership, replica_name, static_owned
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.wiring import sink_password


def build_membership(
    settings: Settings, owner: ShardOwner, metrics: Metrics, environ: Mapping[str, str]
) -> Membership | None:
    """The membership of this replica; None in mode ``none`` (this process owns all)."""
    cluster = settings.cluster
    replica = replica_name(cluster, environ)
    if cluster.mode == "kafka":
        from bridge.cluster.kafka import KafkaMembership  # noqa: PLC0415 - this mode only

        password = sink_password(settings, environ)
        return KafkaMembership(settings, owner, metrics, replica, password)
    if cluster.mode == "redis":
        from bridge.cluster.redis import RedisMembership  # noqa: PLC0415 - this mode only

        password = sink_password(settings, environ)
        return RedisMembership(settings, owner, metrics, replica, password)
    if cluster.mode == "static":
        return StaticMembership("static", static_owned(cluster, environ), owner, metrics)
    return None
