"""The one exception tree of ryze-bridge.

Library errors (websockets, httpx, aiokafka, redis, OS) are translated into these once, at
the edge that calls the library; everything above that edge only sees this tree::

    BridgeError
    ├── ConfigError                  bad config file or value; names the key (exit 2)
    ├── UpstreamError                anything RyzeAPI answered or failed to answer
    │   ├── UpstreamAuthError        401 / 403: the instance's token is wrong
    │   ├── InstanceNotFoundError    404 "Instance not found"
    │   ├── WebSocketNotEnabledError 400 on upgrade: the config is missing or disabled
    │   ├── RateLimitedError         429, carries when the bucket resets
    │   ├── UpstreamProtocolError    an answer we could not understand
    │   └── UpstreamUnavailableError 5xx, timeouts, connection refused (transient)
    ├── SinkError                    the broker side
    │   ├── SinkUnavailableError     broker unreachable or timing out (transient, retry)
    │   ├── RecordRejectedError      the broker refused one record for good (DLQ)
    │   └── SinkConfigError          the sink cannot work as configured (missing topic…)
    ├── SpoolError                   the local spool cannot be used (lock held, disk)
    └── LinkError                    a malformed message between the main process and the
                                     shipper (ends the link; the shipper is restarted)

No exception message ever carries a secret: tokens are held as ``SecretStr`` and the
messages built here only name instances, hosts and keys.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error ryze-bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid; the message names the offending key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class UpstreamError(BridgeError):
    """RyzeAPI refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class UpstreamAuthError(UpstreamError):
    """401 or 403: the token is missing, invalid, or does not own the instance."""


class InstanceNotFoundError(UpstreamError):
    """404 Instance not found: the upstream does not know this instance."""


class WebSocketNotEnabledError(UpstreamError):
    """400 on upgrade: the instance's WebSocket config is missing or disabled."""


class RateLimitedError(UpstreamError):
    """429: the token's bucket is empty until ``reset_at`` (Unix seconds), if known."""

    def __init__(self, message: str, *, reset_at: float | None = None) -> None:
        self.reset_at = reset_at
        super().__init__(message, status=429)


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something we could not understand."""


class UpstreamUnavailableError(UpstreamError):
    """5xx, timeouts, refused connections: transient, retried with backoff."""


class SinkError(BridgeError):
    """Publishing to the configured sink failed."""


class SinkUnavailableError(SinkError):
    """The broker cannot be reached right now; retried with backoff."""


class ProducerStateError(SinkUnavailableError):
    """The producer's session cannot go on (after an outage the broker no longer follows its
    sequence numbers); a new producer is started before the next attempt."""


class RecordRejectedError(SinkError):
    """The broker refused one record for good; it goes to the DLQ with ``reason``."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class SinkConfigError(SinkError):
    """The sink cannot work as configured (for example a topic that does not exist)."""


class SpoolError(BridgeError):
    """The local spool cannot be used (another process holds it, the disk failed)."""


class ClusterError(BridgeError):
    """The shard coordination cannot work as configured (coordination topic, Redis ACL)."""


class LinkError(BridgeError):
    """A message between the main process and the shipper is not one (malformed, unknown
    kind, a field of the wrong type, too large): the link ends, the shipper is restarted."""
