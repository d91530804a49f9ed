"""The Redis sink: pipelined ``XADD … MAXLEN ~ n`` with redis.asyncio.

Entry fields: ``event``, ``instance``, ``received_at``, ``id``, ``data`` (the JSON value), and
on DLQ entries ``reason`` and ``error``. Connection loss and ``OOM`` are transient (retried);
any other per-command error (``WRONGTYPE``, ``NOPERM``…) sends that record to the DLQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.pipeline import Record
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import RedisSinkSettings
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected


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
    ) -> None:
        self.settings = settings
        self._password = password
        self._client = client

    def _connect(self) -> Redis:
        tls: dict[str, Any] = {}
        if str(self.settings.url).startswith("rediss://"):
            tls = {
                "ssl_ca_certs": _path(self.settings.ssl_ca_file),
                "ssl_certfile": _path(self.settings.ssl_certfile),
                "ssl_keyfile": _path(self.settings.ssl_keyfile),
            }
        return Redis.from_url(
            str(self.settings.url),
            username=self.settings.username,
            password=self._password.get_secret_value() if self._password else None,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
            **tls,
        )

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
            pipe.xadd(
                record.destination,
                entry_fields(record, self.settings.cloudevents == "binary"),  # type: ignore[arg-type]
                maxlen=self.settings.maxlen,
                approximate=True,
            )
            sent.append(index)
        try:
            results = await pipe.execute(raise_on_error=False) if sent else []
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"redis: {type(exc).__name__}: {exc}") from None
        for index, result in zip(sent, results, strict=True):
            outcomes[index] = classify(result)
        return [o if o is not None else DELIVERED for o in outcomes]

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


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)
