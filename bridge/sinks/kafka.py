"""The Kafka sink: aiokafka's idempotent producer, ``acks=all`` by default.

Per-key order: records of a batch are handed to the producer in spool order and the producer
is idempotent (retries cannot reorder or duplicate within a session); in each topic-partition
the first batch that cannot even be queued settles itself and every batch behind it, so
nothing of that partition overtakes it, while the other topic-partitions go on. Topics are
never created behind the operator's back: a missing topic is a DLQ record with a message
naming it, unless ``sink.kafka.create_topics`` is on and it is the topic of a documented event,
of the gap markers or the DLQ (an unknown event from the upstream never creates a topic: its
missing topic is a ``missing_topic`` dead letter like without the option); a topic this sink
has delivered a record to that disappears at runtime is transient instead, for
``sink.kafka.vanished_topic_grace_seconds`` (its records are retried in case it is being
recreated), then ``missing_topic`` like any unknown topic. The DLQ topic itself must exist at
start. aiokafka's metadata requests ask the broker to create the topics they name, and it
offers no option against it: brokers must run with ``auto.create.topics.enable=false`` or a
deleted topic comes back with the broker's default partitions.

``publish`` never raises once started: whatever goes wrong with a record (TLS files unreadable
while the producer is renewed, an error of ours) becomes its outcome, Failed by default.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from pydantic import SecretStr

from bridge.errors import ProducerStateError, SinkConfigError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.pipeline.events import EVENT_NAMES
from bridge.pipeline.gap import GAP_EVENT
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import KafkaSinkSettings
from bridge.sinks.base import DELIVERED, Delivered, Failed, Outcome, Rejected
from bridge.sinks.kinds import RECORD_OVERHEAD

log = get_logger(__name__)

CREATABLE_EVENTS = frozenset({*EVENT_NAMES, GAP_EVENT})  # whose topics create_topics makes

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
        "linger_ms": 0,  # the sink worker's lanes linger (sinks/window.py): a batch goes at once
        "max_batch_size": settings.max_batch_bytes,
        "max_request_size": settings.max_request_bytes,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
    }


PARTITIONS_TTL = 30.0
KEYS_CACHED = 100_000
METADATA_WAIT = 5.0  # seconds a publish waits for a topic's partitions before failing it
PRODUCER_STOP = 5.0  # seconds an old producer gets to stop before it is logged as leaked
PARTITION_WATCH = 1.0  # seconds between checks that a pending batch's partition exists
TOPIC_ALREADY_EXISTS = 36
UNSETTLED = Failed(SinkUnavailableError("kafka: record left without an outcome"))

Where = tuple[str, int]  # a topic-partition


@dataclass(slots=True)
class _Route:
    """What the sink knows of one topic: its partitions (until ``until``) and the partition
    the default partitioner picked for each key seen."""

    partitions: list[int]
    until: float
    keys: dict[bytes, int] = field(default_factory=dict)


class _Batches:
    """The producer batches of one publish: a chain of batches per topic-partition, each
    chain in spool order."""

    def __init__(self, producer: Any, cloudevents: bool) -> None:
        self.producer = producer
        self.cloudevents = cloudevents
        self.chains: dict[Where, list[tuple[Any, list[int]]]] = {}

    def headers(self, record: Record) -> list[tuple[str, bytes]]:
        headers = record.headers()
        if self.cloudevents and record.dlq_reason is None:
            headers += cloudevents_headers(record)
        return headers

    def add(self, index: int, record: Record, partition: int) -> bool:
        """Append to the last batch of the record's topic-partition, or start the next one
        when it is full; False (nothing queued) when not even an empty batch takes it."""
        chain = self.chains.setdefault((record.destination, partition), [])
        headers = self.headers(record)
        if chain and chain[-1][0].append(
            timestamp=None, key=record.key, value=record.value, headers=headers
        ):
            chain[-1][1].append(index)
            return True
        builder = self.producer.create_batch()
        if builder.append(timestamp=None, key=record.key, value=record.value, headers=headers):
            chain.append((builder, [index]))
            return True
        return False


class _Topics:
    """What the sink knows of topics: those that exist now, those it delivered a record to
    while it ran, and those of these found gone since (with when); missing topics are created
    when ``sink.kafka.create_topics`` is on and they are ``creatable``: the DLQ and the
    topics of documented events and gap markers (never one an unknown event names)."""

    def __init__(self, settings: KafkaSinkSettings, dlq: str) -> None:
        self.settings = settings
        self.creatable: set[str] = {dlq}  # grows by the topics of CREATABLE_EVENTS' records
        self.admin: Any = None  # the admin client, once started
        self.known: set[str] = set()  # known to exist now
        self.delivered: set[str] = set()  # a record was delivered to it while this sink ran
        self.vanished: dict[str, float] = {}  # delivered-to topic -> when first found gone

    async def unusable(self, wanted: set[str]) -> dict[str, Outcome]:
        """The topics of ``wanted`` that cannot be written now, each with the outcome of its
        records: never seen (``missing_topic``, unless created), gone since it was seen
        (transient: it is being recreated, or the operator must recreate it), or not listed
        because the broker did not answer (transient)."""
        unknown = wanted - self.known
        if not unknown:
            return {}
        try:
            listed = set(await self.admin.list_topics())
        except KafkaError as exc:
            failed = Failed(SinkUnavailableError(f"kafka: cannot list topics: {exc}"))
            return dict.fromkeys(unknown, failed)
        self.known |= listed
        for topic in listed & self.vanished.keys():
            del self.vanished[topic]
        unknown -= listed
        if not unknown:
            return {}
        made = unknown & self.creatable if self.settings.create_topics else set()
        refused = await self.create(made) if made else {}
        return {topic: self.absent(topic) for topic in unknown - made} | refused

    def absent(self, topic: str) -> Outcome:
        """A missing topic's outcome: transient while a topic this sink delivered to has been
        gone for less than the grace period (it may be being recreated), else ``missing_topic``."""
        if topic not in self.delivered:
            return Rejected("missing_topic", _missing_message(topic))
        now = time.monotonic()
        gone = now - self.vanished.setdefault(topic, now)
        return absent_outcome(topic, gone, self.settings.vanished_topic_grace_seconds)

    async def create(self, topics: set[str]) -> dict[str, Outcome]:
        """Create ``topics``; the outcome for the records of each one that could not be."""
        new = [
            NewTopic(t, self.settings.topic_partitions, self.settings.topic_replication)
            for t in sorted(topics)
        ]
        try:
            response = await self.admin.create_topics(new)
        except KafkaError as exc:
            failed = Failed(SinkUnavailableError(f"kafka: cannot create topics: {exc}"))
            return dict.fromkeys(topics, failed)
        refused: dict[str, Outcome] = {}
        for topic, code, *_ in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                refused[topic] = classify(for_code(code)(f"cannot create topic {topic!r}"))
        self.known |= topics - refused.keys()
        return refused


class _Partitions:
    """The partitions of each topic the sink publishes to (asked again once
    ``PARTITIONS_TTL`` old) and the partition the producer's default partitioner picks for
    each key seen (at most ``KEYS_CACHED`` remembered)."""

    def __init__(self) -> None:
        self.routes: dict[str, _Route] = {}
        self.keys_cached = 0
        self.partitioner = DefaultPartitioner()

    def fresh(self, topic: str, now: float) -> _Route | None:
        """The route of ``topic`` while it is fresh, else None (its partitions are asked)."""
        route = self.routes.get(topic)
        return route if route is not None and route.until > now else None

    def learned(self, topic: str, partitions: list[int], now: float) -> _Route:
        """``topic`` has ``partitions`` (asked at ``now``): its key routes kept while they
        are the same, forgotten when they changed."""
        route = self.routes.get(topic)  # another publish may have learned it meanwhile
        if route is not None and route.partitions == partitions:
            route.until = now + PARTITIONS_TTL
            return route
        self.forget(topic)
        route = self.routes[topic] = _Route(partitions, now + PARTITIONS_TTL)
        return route

    def forget(self, topic: str) -> None:
        route = self.routes.pop(topic, None)
        if route is not None:
            self.keys_cached -= len(route.keys)

    def partition(self, route: _Route, key: bytes | None) -> int:
        """The partition the producer's default partitioner picks for ``key``."""
        partitions = route.partitions
        if key is None:
            return int(self.partitioner(None, partitions, partitions))
        cached = route.keys.get(key)
        if cached is None:
            cached = int(self.partitioner(key, partitions, partitions))
            if self.keys_cached < KEYS_CACHED:
                route.keys[key] = cached
                self.keys_cached += 1
        return cached


Settled = list[tuple[list[int], Outcome]]
Queued = tuple[Where, list[int], "asyncio.Future[Any]"]


class KafkaSink:
    """Every outcome is per topic-partition: an error learning one topic's partitions or
    queuing one topic-partition's batch settles only the records of that batch (and the ones
    behind them in the same topic-partition, which must not overtake them); a batch the
    broker acknowledged is Delivered whatever happened to the others. ``publish`` may run
    concurrently with disjoint topic sets."""

    kind = "kafka"

    def __init__(
        self, settings: KafkaSinkSettings, dlq: str, password: SecretStr | None = None
    ) -> None:
        self.settings = settings
        self.dlq = dlq
        self._password = password
        self._producer: Any = None
        self._topics = _Topics(settings, dlq)
        self._partitions = _Partitions()
        self._broken: Any = None  # the producer whose session broke: renewed before next use
        self._renewing = asyncio.Lock()

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
        self._producer, self._topics.admin = producer, admin
        blocked = await self._topics.unusable({self.dlq})
        if blocked:
            await self.close()
            failure = blocked[self.dlq]
            if isinstance(failure, Failed):
                raise failure.error
            raise SinkConfigError(
                f"kafka: the DLQ topic {self.dlq!r} does not exist; create it "
                "or set sink.kafka.create_topics: true"
            )

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        """One outcome per record; never an exception once started (an unexpected error fails
        every record of the call, logged, rather than ending the worker)."""
        if self._producer is None:
            raise SinkUnavailableError("kafka: not started")
        try:
            return await self._publish(records)
        except Exception as exc:  # turned into outcomes, logged with its trace
            log.exception("sink.publish_crashed", sink=self.kind, error=type(exc).__name__)
            error = SinkUnavailableError(f"kafka: unexpected {type(exc).__name__}: {exc}")
            return [Failed(error)] * len(records)

    async def _publish(self, records: Sequence[Record]) -> list[Outcome]:
        """Records grouped into producer batches per topic-partition, in spool order (the
        partition is the producer's own choice for the key, so keys land where ``send`` would
        put them); the topic-partitions are sent and settled side by side. A record the
        broker could never take is refused alone, before batching."""
        try:
            producer = await self._current_producer()
        except SinkUnavailableError as exc:
            return [Failed(exc)] * len(records)
        topics = {r.destination for r in records}
        self._topics.creatable.update(
            r.destination for r in records if r.event in CREATABLE_EVENTS and r.dlq_reason is None
        )
        blocked = await self._topics.unusable(topics)
        usable = sorted(topics - blocked.keys())
        found = await asyncio.gather(*(self._route(producer, t) for t in usable))
        routes: dict[str, _Route] = {}
        for topic, route in zip(usable, found, strict=True):
            if isinstance(route, _Route):
                routes[topic] = route
            else:
                blocked[topic] = route
        outcomes: list[Outcome | None] = [None] * len(records)
        batches = _Batches(producer, self.settings.cloudevents == "binary")
        limit = self.settings.max_request_bytes - RECORD_OVERHEAD
        for index, record in enumerate(records):
            failure = blocked.get(record.destination)
            if failure is not None:
                outcomes[index] = failure
            elif len(record.value) + len(record.key or b"") > limit:
                outcomes[index] = Rejected("too_large", f"{len(record.value)} bytes")
            else:
                partition = self._partitions.partition(routes[record.destination], record.key)
                if not batches.add(index, record, partition):
                    outcomes[index] = Rejected("too_large", f"{len(record.value)} bytes: no batch")
        chains = await asyncio.gather(
            *(self._send_chain(producer, where, chain) for where, chain in batches.chains.items())
        )
        refused = [pair for settled, _ in chains for pair in settled]
        queued = [entry for _, waiting in chains for entry in waiting]
        for members, outcome in refused + await _answers(producer, queued):
            for index in members:
                outcomes[index] = outcome
        self._after(producer, records, outcomes)
        return self._settle(records, outcomes)

    def _settle(
        self, records: Sequence[Record], outcomes: Sequence[Outcome | None]
    ) -> list[Outcome]:
        """The outcomes, a record left without one Failed (and logged: a bug of ours); the
        topics delivered to are remembered (a deleted one is transient for a while)."""
        settled: list[Outcome] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome is None:
                log.error("sink.outcome_missing", sink=self.kind)
            elif isinstance(outcome, Delivered):
                self._topics.delivered.add(record.destination)
            settled.append(UNSETTLED if outcome is None else outcome)
        return settled

    def _after(
        self, producer: Any, records: Sequence[Record], outcomes: Sequence[Outcome | None]
    ) -> None:
        """Learn from failures: a broken session renews the producer; a topic whose records
        failed loses its cached partitions and key routes, and the producer's metadata is
        refreshed, so the retry goes to partitions that exist."""
        failed: set[str] = set()
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, Failed):
                failed.add(record.destination)
                if isinstance(outcome.error, ProducerStateError):
                    self._broken = producer
        for topic in failed:
            self._partitions.forget(topic)
        if failed and producer is self._producer:
            producer.client.force_metadata_update()

    async def _send_chain(
        self, producer: Any, where: Where, chain: list[Any]
    ) -> tuple[Settled, list[Queued]]:
        """Queue one topic-partition's batches in order: the batches queued, and the first
        that could not be, settled with every batch behind it."""
        queued: list[Queued] = []
        for position, (builder, members) in enumerate(chain):
            future = await self._queue(producer, where, builder)
            if not isinstance(future, asyncio.Future):
                return [(later, future) for _, later in chain[position:]], queued
            queued.append((where, members, future))
        return [], queued

    async def _queue(
        self, producer: Any, where: Where, builder: Any
    ) -> asyncio.Future[Any] | Outcome:
        """Hand one batch to the producer: its delivery future, or why it could not be."""
        try:
            refused = await self._check_partition(producer, where)
            if refused is not None:
                return refused
            future: asyncio.Future[Any] = await producer.send_batch(
                builder, where[0], partition=where[1]
            )
        except KafkaError as exc:
            return classify(exc)
        return future

    async def _check_partition(self, producer: Any, where: Where) -> Outcome | None:
        """Why ``where`` cannot be sent to right now, or None. ``send_batch`` asserts that the
        partition is in the producer's metadata: a topic recreated with fewer partitions
        must fail its records (transient; retried on fresh partitions), not raise."""
        topic, partition = where
        known: set[int] | Outcome | None = producer.client.cluster.partitions_for_topic(topic)
        if known is None:
            known = await self._partitions_of(producer, topic)
        if not isinstance(known, set):
            return known
        if partition not in known:
            message = f"kafka: partition {partition} of topic {topic!r} no longer exists"
            return Failed(SinkUnavailableError(message))
        return None

    async def _partitions_of(self, producer: Any, topic: str) -> set[int] | Outcome:
        """The producer's partitions of ``topic``, waiting at most ``METADATA_WAIT`` (aiokafka
        itself waits a whole request timeout for a topic that vanished)."""
        try:
            found = await asyncio.wait_for(producer.partitions_for(topic), METADATA_WAIT)
        except TimeoutError:
            self._topics.known.discard(topic)  # listed again by the next publish
            return Failed(SinkUnavailableError(f"kafka: no metadata for topic {topic!r}"))
        except KafkaError as exc:
            if isinstance(exc, UnknownTopicOrPartitionError):
                self._topics.known.discard(topic)
            return classify(exc)
        return set(found)

    async def _route(self, producer: Any, topic: str) -> _Route | Outcome:
        """The partitions of ``topic``, asked again once ``PARTITIONS_TTL`` old (a topic may
        grow) or after its records failed; a topic without metadata that is no longer listed
        gets the outcome of a missing topic in the same call (``missing_topic`` unless it
        was delivered to less than the grace period ago)."""
        now = time.monotonic()
        route = self._partitions.fresh(topic, now)
        if route is not None:
            return route
        known = await self._partitions_of(producer, topic)
        if not isinstance(known, set):
            if topic not in self._topics.known:  # no metadata for it: listed again at once
                return (await self._topics.unusable({topic})).get(topic, known)
            return known
        return self._partitions.learned(topic, sorted(known), now)

    async def _current_producer(self) -> Any:
        """The producer to publish with; a new one first if this one's session broke (once,
        however many publish calls found it broken)."""
        if self._broken is not None and self._broken is self._producer:
            async with self._renewing:
                if self._broken is self._producer:
                    await self._renew_producer()
        return self._producer

    async def _renew_producer(self) -> None:
        """A new producer (a new idempotent session) in place of one whose session broke;
        SinkUnavailableError while the broker cannot be reached (tried again next publish).
        The old one serves concurrent calls until the new one has started."""
        try:
            security = security_options(self.settings, self._password)
        except (OSError, ssl.SSLError) as exc:
            raise SinkUnavailableError(f"kafka: TLS files unusable: {exc}") from None
        producer = AIOKafkaProducer(**producer_options(self.settings), **security)
        try:
            await producer.start()
        except (KafkaError, OSError, ssl.SSLError) as exc:
            await _stop(producer)
            raise SinkUnavailableError(f"kafka: cannot start a new producer: {exc}") from None
        except BaseException:  # cancelled while starting: the new producer is not leaked
            await asyncio.shield(_stop(producer))
            raise
        old, self._producer = self._producer, producer
        self._broken = None
        await _stop(old)
        log.warning("sink.producer_renewed", sink=self.kind)

    async def reachable(self) -> bool:
        if self._topics.admin is None:
            return False
        try:
            await asyncio.wait_for(self._topics.admin.list_topics(), timeout=3)
        except (KafkaError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._topics.admin is not None:
            await self._topics.admin.close()
        self._producer = self._topics.admin = None


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


def absent_outcome(topic: str, gone: float, grace: float) -> Outcome:
    """The outcome of a record for a topic this sink delivered to, ``gone`` seconds after it
    was first found missing: retried within ``grace``, dead-lettered after it (pure)."""
    if gone < grace:
        return Failed(
            SinkUnavailableError(
                f"kafka: topic {topic!r} no longer exists; its records are retried for "
                f"{grace:g} s in case it is recreated"
            )
        )
    return Rejected(
        "missing_topic", f"{_missing_message(topic)} (deleted at runtime {gone:.0f} s ago)"
    )


async def _stop(producer: Any) -> None:
    """Stop ``producer`` within ``PRODUCER_STOP`` seconds; one that does not (its sender task or
    connections may be left alive) is logged as ``sink.producer_leaked``, never silently."""
    try:
        await asyncio.wait_for(asyncio.shield(producer.stop()), PRODUCER_STOP)
    except Exception as exc:  # a producer we give up on, logged
        log.exception("sink.producer_leaked", sink="kafka", error=type(exc).__name__)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take a late answer nobody waits for (so asyncio does not log it as unretrieved)."""
    if not future.cancelled():
        future.exception()


async def _answers(producer: Any, queued: list[Queued]) -> Settled:
    """The broker's answers for the queued batches of one publish. aiokafka keeps a batch
    whose partition vanished (topic deleted, or recreated with fewer partitions) until its
    delivery timeout; once the producer's metadata no longer has the partition, its batches
    are Failed at once (they may still be written: at least once)."""
    where_of = {future: where for where, _, future in queued}
    pending = set(where_of)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=PARTITION_WATCH)
        pending = {f for f in pending if _partition_known(producer, where_of[f])}
    return [(members, _answer(where, future)) for where, members, future in queued]


def _answer(where: Where, future: asyncio.Future[Any]) -> Outcome:
    """One batch's outcome from its delivery future, done or given up on."""
    if not future.done():
        future.add_done_callback(_retrieve)  # answered later, by nobody
        message = f"kafka: partition {where[1]} of {where[0]!r} vanished"
        return Failed(SinkUnavailableError(message))
    if future.cancelled():
        return Failed(SinkUnavailableError("kafka: batch cancelled"))
    error = future.exception()
    if error is None:
        return DELIVERED
    if not isinstance(error, KafkaError):  # not a broker's answer: a bug of ours, logged
        log.error("sink.unexpected_answer", sink="kafka", error=f"{type(error).__name__}: {error}")
    return classify(error)


def _partition_known(producer: Any, where: Where) -> bool:
    known = producer.client.cluster.partitions_for_topic(where[0])
    return known is not None and where[1] in known
