"""The Redis sink: pipelined ``XADD … MAXLEN ~ n`` with redis.asyncio.

Entry fields: ``event``, ``instance``, ``received_at``, ``id``, ``data`` (the JSON value), and
on DLQ entries ``reason`` and ``error``. In cluster mode ``redis`` every event is written by a
script that first checks the shard's fencing token: a replica that lost its lease (it froze
past the TTL, say) has its writes refused (``FENCED``), and those records go to the DLQ with
reason ``fenced`` instead of doubling what the shard's new owner writes.

Connection loss and ``OOM`` are transient (retried); any other per-command error
(``WRONGTYPE``, ``NOPERM``…) sends that record to the DLQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.pipeline import Record
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import RedisSinkSettings
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected

FENCED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED shard owned by a newer lease holder')
end
if ARGV[2] ~= '' then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
"""


class Fencing(Protocol):
    """Who tells the sink which fencing token guards an instance's writes."""

    def fence(self, instance: str) -> tuple[str, str] | None:
        """(key holding the shard's current token, the token this replica holds), or None
        when the instance's shard was never held here (nothing to check)."""


def entry_fields(record: Record, cloudevents: bool = False) -> dict[str, bytes]:
    """The stream entry of ``record`` (pure); with ``cloudevents`` also the ce_* fields."""
    fields = {
        "event": record.event.encode(),
        "instance": record.instance.encode(),
        "received_at": record.received_at.encode(),
        "id": record.id.encode(),
        "data": record.value,
    }
    if record.dlq_reason is not None:
        fields["reason"] = record.dlq_reason.encode()
        fields["error"] = (record.dlq_error or "").encode()
    elif cloudevents:
        fields.update(cloudevents_headers(record))
    return fields


def classify(result: Any) -> Outcome:
    """One pipelined XADD reply as an outcome (pure)."""
    if not isinstance(result, BaseException):
        return DELIVERED
    text = str(result)
    if isinstance(result, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return Failed(SinkUnavailableError(f"redis: {type(result).__name__}: {text}"))
    if text.startswith(("OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN")):
        return Failed(SinkUnavailableError(f"redis: {text}"))
    if text.startswith("FENCED"):
        return Rejected("fenced", f"redis: {text}")
    reason = "not_authorized" if text.startswith("NOPERM") else "rejected_by_broker"
    return Rejected(reason, f"redis: {text}")


class RedisSink:
    kind = "redis"

    def __init__(
        self,
        settings: RedisSinkSettings,
        *,
        password: SecretStr | None = None,
        client: Redis | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self._client = client
        self.fencing = fencing

    def _connect(self) -> Redis:
        return connect(self.settings, self._password)

    async def start(self) -> None:
        if self._client is None:
            self._client = self._connect()
        try:
            await self._client.ping()
            await self._check_xadd()
        except redis_errors.AuthenticationError as exc:
            raise SinkConfigError(f"redis: authentication failed: {exc}") from None
        except redis_errors.NoPermissionError as exc:
            raise SinkConfigError(
                f"redis: user {self.settings.username or 'default'} may not XADD to "
                f"{self.probe_key()} ({exc}); grant +xadd on the stream keys"
            ) from None
        except redis_errors.RedisError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text:
                raise SinkConfigError(
                    "redis: TLS certificate of the server not trusted (set sink.redis.ssl_ca_file)"
                ) from None
            raise SinkUnavailableError(f"redis: cannot reach the server: {exc}") from None

    def probe_key(self) -> str:
        return self.settings.stream.format(instance="__probe__", event="__probe__")

    async def _check_xadd(self) -> None:
        """XADD NOMKSTREAM to a key of the stream pattern: the ACL is checked, nothing is
        written (the key does not exist, NOMKSTREAM does not create it)."""
        if self._client is not None:
            await self._client.xadd(self.probe_key(), {"probe": "1"}, nomkstream=True)

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        if self._client is None:
            raise SinkUnavailableError("redis: not started")
        outcomes: list[Outcome | None] = [None] * len(records)
        pipe = self._client.pipeline(transaction=False)
        sent: list[int] = []
        for index, record in enumerate(records):
            if len(record.value) > self.settings.max_entry_bytes:
                outcomes[index] = Rejected("too_large", f"{len(record.value)} bytes")
                continue
            self._queue(pipe, record)
            sent.append(index)
        try:
            results = await pipe.execute(raise_on_error=False) if sent else []
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"redis: {type(exc).__name__}: {exc}") from None
        for index, result in zip(sent, results, strict=True):
            outcomes[index] = classify(result)
        return [o if o is not None else DELIVERED for o in outcomes]

    def _queue(self, pipe: Any, record: Record) -> None:
        """One XADD on the pipeline; fenced through the script when the shard has a token."""
        fields = entry_fields(record, self.settings.cloudevents == "binary")
        fence = None
        if self.fencing is not None and record.dlq_reason is None:
            fence = self.fencing.fence(record.instance)
        if fence is None:
            pipe.xadd(record.destination, fields, maxlen=self.settings.maxlen, approximate=True)
            return
        key, token = fence
        maxlen = "" if self.settings.maxlen is None else str(self.settings.maxlen)
        flat = [part for pair in fields.items() for part in pair]
        pipe.eval(FENCED_XADD, 2, record.destination, key, token, maxlen, *flat)

    async def reachable(self) -> bool:
        if self._client is None:
            return False
        try:
            await self._client.ping()
        except (redis_errors.RedisError, OSError):
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None


def connect(settings: RedisSinkSettings, password: SecretStr | None) -> Redis:
    """A client for the configured server (TLS files, ACL user and password applied)."""
    tls: dict[str, Any] = {}
    if str(settings.url).startswith("rediss://"):
        tls = {
            "ssl_ca_certs": _path(settings.ssl_ca_file),
            "ssl_certfile": _path(settings.ssl_certfile),
            "ssl_keyfile": _path(settings.ssl_keyfile),
        }
    return Redis.from_url(
        str(settings.url),
        username=settings.username,
        password=password.get_secret_value() if password else None,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        **tls,
    )


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)
