"""Building the pieces the settings name: the sink (through its kind, ``bridge.sinks.kinds``),
the router, a runner's pipeline, the TLS contexts."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from pydantic import SecretStr

from bridge.logs import get_logger, register_secret
from bridge.masking import SecretIndex
from bridge.pipeline import KnownTokens, Pipeline, Router
from bridge.pipeline.filter import EventFilter
from bridge.settings import InstanceSettings, Settings
from bridge.sinks.base import Fencing, Sink
from bridge.sinks.kinds import sink_kind

# Every token any instance of this process uses or was sent, masked in every instance's frames.
FLEET_TOKENS: SecretIndex[bytes] = SecretIndex(b"***")
log = get_logger(__name__)


def learned_cap_reached(refused: int) -> None:
    """Log the process's cap on learned tokens being hit (the 1st, 2nd, 4th, 8th… refusal)."""
    if refused & (refused - 1) == 0:
        log.warning("tokens.learned_cap", refused=refused, cap=FLEET_TOKENS.learned_cap)


def build_sink(
    settings: Settings, environ: Mapping[str, str], fencing: Fencing | None = None
) -> Sink:
    """The configured sink, its password read now (ConfigError naming the key if missing)."""
    return sink_with(settings, sink_password(settings, environ), fencing)


def sink_with(
    settings: Settings, password: SecretStr | None, fencing: Fencing | None = None
) -> Sink:
    """The configured sink with its password already read."""
    return sink_kind(settings.sink).build(settings, password, fencing)


def sink_password(settings: Settings, environ: Mapping[str, str]) -> SecretStr | None:
    """The Kafka SASL or Redis ACL password of the configured sink (masked in logs from now
    on); the cluster modes coordinate with the same credentials."""
    password = sink_kind(settings.sink).password(settings.sink, environ)
    if password is not None:
        register_secret(password.get_secret_value())
    return password


def build_router(settings: Settings) -> Router:
    """The configured sink's routing: destination template and key."""
    return sink_kind(settings.sink).router(settings.sink)


def max_value_bytes(settings: Settings) -> int:
    """The largest value published: what the configured sink takes and at most
    ``upstream.max_frame_bytes`` (bigger frames go to the DLQ, cut to fit)."""
    accepted = settings.upstream.max_frame_bytes
    bound = sink_kind(settings.sink).value_bound(settings.sink)
    return accepted if bound is None else min(accepted, bound)


def upstream_ssl(settings: Settings) -> ssl.SSLContext:
    """A TLS context of the upstream's trust: ``upstream.ca_file``'s if one is configured,
    else the system's (its CA store, ``SSL_CERT_FILE``/``SSL_CERT_DIR``). Read when built."""
    ca_file = settings.upstream.ca_file
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def socket_tls(settings: Settings) -> ssl.SSLContext | None:
    """The one TLS context every upstream socket shares, of the upstream's trust; None for an
    ``http://`` upstream, whose sockets are ``ws://`` (the library refuses a context there).
    Left to the libraries, each ``wss://`` socket built its own from the system's CA store
    (the context alone ~0.9 MB and 21 to 29 ms of CPU; 1.8 MB and 62 ms a socket as measured in
    the process at 1,000), at every reconnect. Its own object, not the REST client's (httpx
    sets ALPN on the context it is given)."""
    if settings.upstream.base_url.scheme != "https":
        return None
    return upstream_ssl(settings)


def build_pipeline(
    settings: Settings, instance: InstanceSettings, fleet: SecretIndex[bytes] = FLEET_TOKENS
) -> Pipeline:
    """A runner's pipeline; an inline token is known at once (others once resolved), and every
    token its frames carry is masked in the logs, and in every instance's frames, from the
    first frame that carries it."""
    token = instance.token.get_secret_value().encode() if instance.token else None
    return Pipeline(
        router=build_router(settings),
        dlq=settings.sink.dlq,
        max_value_bytes=max_value_bytes(settings),
        event_filter=EventFilter(frozenset(settings.filter.drop_events)),
        token=token,
        reserved=reserved_destinations(settings),
        known=KnownTokens(on_new=register_secret, fleet=fleet, on_cap=learned_cap_reached),
    )


def reserved_destinations(settings: Settings) -> frozenset[str]:
    """What no upstream event may fill besides the DLQ and the gap markers (the pipeline knows
    those): the coordination topic when the replicas coordinate through the Kafka sink."""
    cluster = settings.cluster
    return frozenset({cluster.topic}) if cluster.mode == "kafka" else frozenset()


def admin_tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the admin server when a certificate and key are configured."""
    admin = settings.admin
    if admin.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(admin.tls_cert_file), str(admin.tls_key_file or ""))
    return context
