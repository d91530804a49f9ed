"""How producer errors are judged: refused for good (DLQ) only when the broker will never
take the record; everything an outage causes is retried, and a broken producer session is
renewed rather than its records dead-lettered."""

from __future__ import annotations

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    RequestTimedOutError,
)

from bridge.errors import ProducerStateError, SinkUnavailableError
from bridge.sinks.base import Failed, Rejected
from bridge.sinks.kafka import classify


def test_outage_errors_are_retried() -> None:
    """Connection loss, timeouts and a closed producer are transient, not DLQ material."""
    for error in (KafkaConnectionError(), KafkaTimeoutError(), RequestTimedOutError(),
                  ProducerClosed()):  # fmt: skip
        outcome = classify(error)
        assert isinstance(outcome, Failed), error
        assert isinstance(outcome.error, SinkUnavailableError)


def test_a_lost_sequence_renews_the_producer_instead_of_dead_lettering() -> None:
    """OutOfOrderSequenceNumber (the broker lost the idempotent session's sequence during an
    outage) stops aiokafka's sender: the records are retried on a new producer."""
    outcome = classify(OutOfOrderSequenceNumber())
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, ProducerStateError)


def test_what_the_broker_never_takes_goes_to_the_dlq() -> None:
    """Too large, an invalid topic, and unknown non-retriable broker errors are refused."""
    assert classify(MessageSizeTooLargeError()) == Rejected(
        "too_large", "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError"
    )
    assert isinstance(classify(InvalidTopicError()), Rejected)
    assert isinstance(classify(CorruptRecordException()), Rejected)
