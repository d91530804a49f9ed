"""The Kafka sink: aiokafka's idempotent producer, ``acks=all`` by default.

Per-key order: records of a batch are handed to the producer in spool order and the producer
is idempotent (retries cannot reorder or duplicate within a session); the first record that
cannot even be queued stops the batch, so nothing behind it overtakes it. Topics are never
created behind the operator's back: a missing topic is a DLQ record with a message naming it,
unless ``sink.kafka.create_topics`` is on. The DLQ topic itself must exist at start.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.pipeline import Record
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import KafkaSinkSettings
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected

PERMANENT: dict[type[KafkaError], str] = {
    MessageSizeTooLargeError: "too_large",
    RecordTooLargeError: "too_large",
    RecordListTooLargeError: "too_large",
    InvalidTopicError: "invalid_topic",
    TopicAuthorizationFailedError: "not_authorized",
}


def classify(error: BaseException) -> Outcome:
    """A producer error as an outcome: refused for good (DLQ) or worth retrying (pure)."""
    for kind, reason in PERMANENT.items():
        if isinstance(error, kind):
            return Rejected(reason, f"{type(error).__name__}: {error}")
    if isinstance(error, KafkaError) and not error.retriable and not _transient(error):
        return Rejected("rejected_by_broker", f"{type(error).__name__}: {error}")
    return Failed(SinkUnavailableError(f"kafka: {type(error).__name__}: {error}"))


def _transient(error: KafkaError) -> bool:
    return isinstance(error, KafkaConnectionError) or type(error).__name__ in {
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "OutOfOrderSequenceNumberError",
        "ProducerClosed",
    }


def security_options(settings: KafkaSinkSettings, password: SecretStr | None) -> dict[str, Any]:
    """Connection security for aiokafka clients: TLS context, SASL mechanism and credentials."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
        context.check_hostname = settings.ssl_check_hostname
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def producer_options(settings: KafkaSinkSettings) -> dict[str, Any]:
    """aiokafka producer keyword arguments for ``settings``, security aside (pure)."""
    acks: int | str = "all" if settings.acks == "all" else int(settings.acks)
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "acks": acks,
        "enable_idempotence": acks == "all",
        "compression_type": None if settings.compression == "none" else settings.compression,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_bytes,
        "max_request_size": settings.max_request_bytes,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
    }


class KafkaSink:
    kind = "kafka"

    def __init__(
        self, settings: KafkaSinkSettings, dlq: str, password: SecretStr | None = None
    ) -> None:
        self.settings = settings
        self.dlq = dlq
        self._password = password
        self._producer: Any = None
        self._admin: Any = None
        self._topics: set[str] = set()

    async def start(self) -> None:
        try:
            security = security_options(self.settings, self._password)
        except (OSError, ssl.SSLError) as exc:
            raise SinkConfigError(f"kafka: TLS files unusable: {exc}") from None
        producer = AIOKafkaProducer(**producer_options(self.settings), **security)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"{self.settings.client_id}-admin",
            request_timeout_ms=15_000,
            **security,
        )
        try:
            await producer.start()
            await admin.start()
        except (KafkaError, ssl.SSLError, OSError) as exc:
            await producer.stop()
            await admin.close()
            cause = await diagnose(self.settings.bootstrap_servers, security) or exc
            raise start_error(self.settings.bootstrap_servers, cause) from None
        self._producer, self._admin = producer, admin
        missing = await self._missing_topics({self.dlq})
        if missing:
            await self.close()
            raise SinkConfigError(
                f"kafka: the DLQ topic {self.dlq!r} does not exist; create it "
                "or set sink.kafka.create_topics: true"
            )

    async def _missing_topics(self, wanted: set[str]) -> set[str]:
        """The topics of ``wanted`` that do not exist (creating them when allowed)."""
        unknown = wanted - self._topics
        if not unknown:
            return set()
        try:
            self._topics = set(await self._admin.list_topics())
        except KafkaError as exc:
            raise SinkUnavailableError(f"kafka: cannot list topics: {exc}") from None
        unknown -= self._topics
        if unknown and self.settings.create_topics:
            await self._create(unknown)
            return set()
        return unknown

    async def _create(self, topics: set[str]) -> None:
        new = [
            NewTopic(t, self.settings.topic_partitions, self.settings.topic_replication)
            for t in sorted(topics)
        ]
        try:
            await self._admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            raise SinkUnavailableError(f"kafka: cannot create topics: {exc}") from None
        self._topics |= topics

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        if self._producer is None:
            raise SinkUnavailableError("kafka: not started")
        missing = await self._missing_topics({r.destination for r in records})
        outcomes: list[Outcome | asyncio.Future[Any]] = []
        for index, record in enumerate(records):
            if record.destination in missing:
                outcomes.append(Rejected("missing_topic", _missing_message(record.destination)))
                continue
            try:
                outcomes.append(await self._send(record))
            except KafkaError as exc:
                outcome = classify(exc)
                outcomes.append(outcome)
                if isinstance(outcome, Failed):
                    outcomes.extend([outcome] * (len(records) - index - 1))
                    break
        return [await _settle(o) for o in outcomes]

    async def _send(self, record: Record) -> asyncio.Future[Any]:
        headers = record.headers()
        if self.settings.cloudevents == "binary" and record.dlq_reason is None:
            headers += cloudevents_headers(record)
        future: asyncio.Future[Any] = await self._producer.send(
            record.destination, record.value, key=record.key, headers=headers
        )
        return future

    async def reachable(self) -> bool:
        if self._admin is None:
            return False
        try:
            await asyncio.wait_for(self._admin.list_topics(), timeout=3)
        except (KafkaError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._producer = self._admin = None


async def diagnose(bootstrap: str, security: dict[str, Any]) -> BaseException | None:
    """Why the first bootstrap server refuses us (aiokafka only logs it): one direct
    connection with the same TLS and SASL settings, its error returned."""
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    try:
        connection = await asyncio.wait_for(
            create_conn(host or "localhost", int(port), request_timeout_ms=10_000, **security),
            timeout=15,
        )
    except (KafkaError, ssl.SSLError, OSError, TimeoutError, ValueError) as exc:
        return exc
    connection.close()
    return None


def start_error(bootstrap: str, exc: BaseException) -> SinkConfigError | SinkUnavailableError:
    """Why the producer could not start, named plainly: a refused login or an untrusted
    certificate will not fix itself (config error); anything else may (unavailable)."""
    text = f"{type(exc).__name__}: {exc}"
    if "Authentication" in text:
        return SinkConfigError(f"kafka: SASL authentication to {bootstrap} failed ({text})")
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, ssl.SSLCertVerificationError):
        return SinkConfigError(
            f"kafka: TLS certificate of {bootstrap} not trusted (set sink.kafka.ssl_cafile)"
        )
    return SinkUnavailableError(f"kafka: cannot reach {bootstrap}: {text}")


def _missing_message(topic: str) -> str:
    return f"topic {topic!r} does not exist; create it or set sink.kafka.create_topics: true"


async def _settle(outcome: Outcome | asyncio.Future[Any]) -> Outcome:
    if not isinstance(outcome, asyncio.Future):
        return outcome
    try:
        await outcome
    except KafkaError as exc:
        return classify(exc)
    return DELIVERED
