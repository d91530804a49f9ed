"""The Kafka sink: aiokafka's idempotent producer, ``acks=all`` by default.

Per-key order: records of a batch are handed to the producer in spool order and the producer
is idempotent (retries cannot reorder or duplicate within a session); the first record that
cannot even be queued stops the batch, so nothing behind it overtakes it. Topics are never
created behind the operator's back: a missing topic is a DLQ record with a message naming it,
unless ``sink.kafka.create_topics`` is on. The DLQ topic itself must exist at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    RecordListTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from pydantic import SecretStr

from bridge.errors import ProducerStateError, SinkConfigError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import KafkaSinkSettings
from bridge.sinks.base import DELIVERED, Failed, Outcome, Rejected

log = get_logger(__name__)

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
    if isinstance(error, OutOfOrderSequenceNumber):  # the producer's sender stops on it
        return Failed(ProducerStateError(f"kafka: {type(error).__name__}: {error}"))
    if isinstance(error, KafkaError) and not error.retriable and not isinstance(error, TRANSIENT):
        return Rejected("rejected_by_broker", f"{type(error).__name__}: {error}")
    return Failed(SinkUnavailableError(f"kafka: {type(error).__name__}: {error}"))


# Not marked retriable by the client, yet gone once the broker is back.
TRANSIENT = (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, ProducerClosed)


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


RECORD_OVERHEAD = 1024  # headers and record framing, as in wiring.max_value_bytes
PARTITIONS_TTL = 30.0
KEYS_CACHED = 100_000


class _Batches:
    """The producer batches of one publish: one open batch per topic-partition."""

    def __init__(self, producer: Any, cloudevents: bool) -> None:
        self.producer = producer
        self.cloudevents = cloudevents
        self.open: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        self.queued: list[tuple[asyncio.Future[Any], list[int]]] = []
        self.done: set[int] = set()

    def headers(self, record: Record) -> list[tuple[str, bytes]]:
        headers = record.headers()
        if self.cloudevents and record.dlq_reason is None:
            headers += cloudevents_headers(record)
        return headers

    def add(self, index: int, record: Record, partition: int) -> bool:
        """Append to the open batch of the record's topic-partition; False when that batch
        is full (nothing appended: :meth:`add_to_next` sends it and starts the next)."""
        where = (record.destination, partition)
        entry = self.open.get(where)
        if entry is None:
            entry = self.open[where] = (self.producer.create_batch(), [])
        builder, members = entry
        headers = self.headers(record)
        if builder.append(timestamp=None, key=record.key, value=record.value, headers=headers):
            members.append(index)
            return True
        return False

    async def add_to_next(self, index: int, record: Record, partition: int) -> None:
        await self._send((record.destination, partition))
        self.add(index, record, partition)  # a new batch takes its first record, however large

    async def _send(self, where: tuple[str, int]) -> None:
        builder, members = self.open.pop(where)
        if not members:
            return
        future = await self.producer.send_batch(builder, where[0], partition=where[1])
        self.queued.append((future, members))
        self.done.update(members)

    async def flush(self) -> None:
        for where in list(self.open):
            await self._send(where)

    def unsent(self, total: int) -> list[int]:
        return [i for i in range(total) if i not in self.done]

    async def settle(self) -> list[tuple[int, Outcome]]:
        settled: list[tuple[int, Outcome]] = []
        for future, members in self.queued:
            outcome = await _settle(future)
            settled.extend((index, outcome) for index in members)
        return settled


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
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._partitions_until = 0.0
        self._key_partitions: dict[tuple[str, bytes], int] = {}
        self._stale = False  # the producer's session broke: a new one before the next publish

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
        """Records grouped into one producer batch per topic-partition, in spool order (the
        partition is the producer's own choice for the key, so keys land where ``send`` would
        put them); each batch settles its records. A record the broker could never take is
        refused alone, before batching."""
        if self._producer is None:
            raise SinkUnavailableError("kafka: not started")
        if self._stale:
            await self._renew_producer()
        missing = await self._missing_topics({r.destination for r in records})
        outcomes: list[Outcome | None] = [None] * len(records)
        batches = _Batches(self._producer, self.settings.cloudevents == "binary")
        limit = self.settings.max_request_bytes - RECORD_OVERHEAD
        try:
            await self._learn_partitions({r.destination for r in records} - missing)
            for index, record in enumerate(records):
                if record.destination in missing:
                    outcomes[index] = Rejected(
                        "missing_topic", _missing_message(record.destination)
                    )
                elif len(record.value) + len(record.key or b"") > limit:
                    outcomes[index] = Rejected("too_large", f"{len(record.value)} bytes")
                else:
                    partition = self._partition(record)
                    if not batches.add(index, record, partition):
                        await batches.add_to_next(index, record, partition)
            await batches.flush()
        except KafkaError as exc:  # could not even queue: the rest waits in the spool
            failed = classify(exc)
            for index in batches.unsent(len(records)):
                if outcomes[index] is None:
                    outcomes[index] = failed
        for index, outcome in await batches.settle():
            outcomes[index] = outcome
            if isinstance(outcome, Failed) and isinstance(outcome.error, ProducerStateError):
                self._stale = True
        return [o if o is not None else DELIVERED for o in outcomes]

    async def _renew_producer(self) -> None:
        """A new producer (a new idempotent session) in place of one whose session broke;
        SinkUnavailableError while the broker cannot be reached (tried again next publish)."""
        old, self._producer = self._producer, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), timeout=5)
        producer = AIOKafkaProducer(
            **producer_options(self.settings), **security_options(self.settings, self._password)
        )
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            self._producer = old  # stopped: sends fail fast until renewed
            raise SinkUnavailableError(f"kafka: cannot start a new producer: {exc}") from None
        self._producer = producer
        self._stale = False
        log.warning("sink.producer_renewed", sink=self.kind)

    async def _learn_partitions(self, topics: set[str]) -> None:
        """The partitions of every topic of a publish, asked once per topic until they are
        ``PARTITIONS_TTL`` old (a topic may grow)."""
        if time.monotonic() > self._partitions_until:
            self._partitions.clear()
            self._partitions_until = time.monotonic() + PARTITIONS_TTL
        for topic in topics - self._partitions.keys():
            self._partitions[topic] = sorted(await self._producer.partitions_for(topic))

    def _partition(self, record: Record) -> int:
        """The partition the producer's default partitioner picks for the record's key."""
        topic = record.destination
        partitions = self._partitions[topic]
        if record.key is None:
            return int(self._partitioner(None, partitions, partitions))
        cached = self._key_partitions.get((topic, record.key))
        if cached is None or cached not in partitions:
            cached = int(self._partitioner(record.key, partitions, partitions))
            if len(self._key_partitions) < KEYS_CACHED:
                self._key_partitions[topic, record.key] = cached
        return cached

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
