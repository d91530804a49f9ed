"""What enters the pipeline (a Frame) and what leaves it (a Record, or a reason to drop)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

HEADER_EVENT = "ryze-event"
HEADER_INSTANCE = "ryze-instance"
HEADER_RECEIVED_AT = "ryze-received-at"
HEADER_ID = "ryze-id"
HEADER_DLQ_REASON = "ryze-dlq-reason"
HEADER_DLQ_ERROR = "ryze-dlq-error"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x per frame; never mutated
class Frame:
    """One WebSocket message as read off the socket, stamped at receipt."""

    instance: str
    raw: bytes
    received_ns: int


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x per frame; see ``ident``
class Record:
    """One entry for the sink: where it goes, its key, its value and its metadata.

    ``dlq_reason`` is set on dead-letter records (the destination is then the DLQ). The
    ``ryze-id`` (:attr:`id`) is worked out when first read, from the instance and the value:
    with the shipper that is in the process that publishes, not in the one reading sockets.
    ``ident`` is the one field written after construction (by :attr:`id`, and by the spool
    codec when it reads a record back); every other field keeps the value it was built with.
    """

    destination: str
    key: bytes | None
    value: bytes
    event: str
    instance: str
    received_ns: int
    ident: str = ""  # the id once known ("": not yet)
    dlq_reason: str | None = None
    dlq_error: str | None = None

    @property
    def id(self) -> str:
        """The stable ``ryze-id``: the same frame of the same instance always gets it."""
        if not self.ident:
            self.ident = record_id(self.instance, self.value)
        return self.ident

    @property
    def received_at(self) -> str:
        return rfc3339(self.received_ns)

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers (also the Redis fields) of this record."""
        headers = [
            (HEADER_EVENT, self.event.encode()),
            (HEADER_INSTANCE, self.instance.encode()),
            (HEADER_RECEIVED_AT, self.received_at.encode()),
            (HEADER_ID, self.id.encode()),
        ]
        if self.dlq_reason is not None:
            headers.append((HEADER_DLQ_REASON, self.dlq_reason.encode()))
            headers.append((HEADER_DLQ_ERROR, (self.dlq_error or "").encode()))
        return headers

    @property
    def size(self) -> int:
        """Bytes this record weighs in a bounded buffer (value, key and headers)."""
        return len(self.value) + len(self.key or b"") + 128


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x per frame; never mutated
class Publish:
    record: Record
    known_event: bool
    reserialized: bool


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x per frame; never mutated
class Drop:
    """The frame is dropped on purpose (local filter); ``event`` is counted by the caller."""

    reason: str
    event: str


# SHA-256 (truncated to 128 bits): a collision-resistant hash, so a crafted message cannot
# pass for another one to a consumer that de-duplicates; with the CPUs' SHA extensions it
# runs at ~1.4 GB/s, where BLAKE2b runs at ~0.5 (inline media frames weigh megabytes).
_ID_HASH = hashlib.sha256(b"ryze-id\x00")  # copied: cheaper than a new one


def record_id(instance: str, value: bytes) -> str:
    """A stable id of instance + token-free value: the same frame always gets the same id
    (32 hex characters)."""
    return _hex_digest(_ID_HASH, instance, value)[:32]


def _hex_digest(prefilled: Any, instance: str, value: bytes) -> str:
    digest = prefilled.copy()
    digest.update(value)
    digest.update(_id_suffix(instance))
    return str(digest.hexdigest())


@lru_cache(maxsize=4096)
def _id_suffix(instance: str) -> bytes:
    return b"\x00" + instance.encode()


@lru_cache(maxsize=64)  # the frames of one read share their receipt time
def rfc3339(ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-04-28T10:30:00.123456Z`` (pure)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{nanos // 1_000:06d}Z"


@lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """The date-and-second part; frames of the same second share it (hot path)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


CE_SPECVERSION = "1.0"


def cloudevents_headers(record: Record) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 attributes for the Kafka protocol binding, binary mode (pure):
    ``ce_id`` is the ryze-id, ``ce_source`` ``ryze://{instance}``, ``ce_type``
    ``ryze.{event}``, ``ce_time`` the receipt time; the value stays the data."""
    return [
        ("ce_specversion", CE_SPECVERSION.encode()),
        ("ce_id", record.id.encode()),
        ("ce_source", f"ryze://{record.instance}".encode()),
        ("ce_type", f"ryze.{record.event}".encode()),
        ("ce_time", record.received_at.encode()),
        ("content-type", b"application/json"),
    ]
