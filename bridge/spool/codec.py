"""On-disk framing of spool records (pure).

Each entry is a 20-byte header and a payload::

    magic "RZ" (2) | version (1) | reserved (1) | payload length u32 | crc32 u32 | seq u64
    version 3 payload: a msgpack array of the record's fields in order: destination, key,
        value, event, instance, received_ns, id (empty when not worked out yet: the reader
        derives it from the instance and the value), dlq_reason, dlq_error. Encoded and
        decoded in C, 4-5x cheaper than version 1 (a replay, and the shipper, decode every
        record)
    version 2 payload: the same array; an empty id is derived the way the bridges that
        wrote it did (BLAKE2b, :func:`legacy_record_id`), so a replayed record keeps the id
        it may already have been published with
    version 1 payload: received_ns u64, then 8 length-prefixed fields (u32 length,
        0xFFFFFFFF = None): destination, key, value, event, instance, id, dlq_reason,
        dlq_error (still read: a spool left by an older bridge replays)

The CRC covers the sequence number and the payload, so a flipped byte anywhere in an entry
is detected; the magic lets a reader find the next entry after a damaged one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO

import msgspec

from bridge.pipeline import Record
from bridge.pipeline.records import legacy_record_id

MAGIC = b"RZ"
VERSION = 3  # what is written
VERSIONS = (1, 2, 3)  # what is read
HEADER = struct.Struct("<2sBxIIQ")
HEADER_SIZE = HEADER.size
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NONE = 0xFFFFFFFF
MAX_PAYLOAD = 1 << 30
_FIELDS = tuple[str, bytes | None, bytes, str, str, int, str, str | None, str | None]
_encode_fields = msgspec.msgpack.Encoder().encode
_decode_fields = msgspec.msgpack.Decoder(_FIELDS).decode


def encode_payload(record: Record) -> bytes:
    """A version 3 payload."""
    r = record
    return _encode_fields((r.destination, r.key, r.value, r.event, r.instance, r.received_ns,
                           r.ident, r.dlq_reason, r.dlq_error))  # fmt: skip


def decode_payload(payload: bytes, version: int = VERSION) -> Record:
    """The record of a payload; ValueError when it is not one."""
    if version == 1:
        record = decode_payload_v1(payload)
    else:
        try:
            record = Record(*_decode_fields(payload))
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a spool record: {exc}") from None
    if version < 3 and not record.ident:
        record.ident = legacy_record_id(record.instance, record.value)
    return record


def decode_payload_v1(payload: bytes) -> Record:
    """A version 1 payload (only read when a spool left by an older bridge replays)."""
    (received_ns,) = _U64.unpack_from(payload, 0)
    offset = _U64.size
    values: list[bytes | None] = []
    for _ in range(8):
        (length,) = _U32.unpack_from(payload, offset)
        offset += _U32.size
        if length == _NONE:
            values.append(None)
            continue
        values.append(payload[offset : offset + length])
        offset += length
    if offset != len(payload):
        raise ValueError("payload length does not match its fields")
    destination, key, value, event, instance, ident, reason, error = values

    def text(v: bytes | None) -> str:
        return (v or b"").decode()

    return Record(
        destination=text(destination),
        key=key,
        value=value or b"",
        event=text(event),
        instance=text(instance),
        received_ns=received_ns,
        ident=text(ident),
        dlq_reason=None if reason is None else reason.decode(),
        dlq_error=None if error is None else error.decode(),
    )


def checksum(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_U64.pack(seq)))


def encode_entry_parts(seq: int, record: Record) -> tuple[bytes, bytes]:
    """An entry as its header and its payload, to be written one after the other (a big
    payload is not copied once more to be joined to its 20-byte header)."""
    payload = encode_payload(record)
    return HEADER.pack(MAGIC, VERSION, len(payload), checksum(seq, payload), seq), payload


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    crc: int
    seq: int
    version: int = VERSION


def read_entry(handle: IO[bytes]) -> tuple[int, Record, int] | None:
    """The entry at a file's position: (seq, record, size on disk); None at its end (or at
    anything that is not a whole entry). The CRC is checked at start-up recovery, not here."""
    data = handle.read(HEADER_SIZE)
    if len(data) < HEADER_SIZE:
        return None
    magic, version, length, _, seq = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version not in VERSIONS or length > MAX_PAYLOAD:
        return None
    payload = handle.read(length)
    if len(payload) < length:
        return None
    return seq, decode_payload(payload, version), HEADER_SIZE + length


def decode_header(data: bytes) -> Header | None:
    """The header at the start of ``data``, or None when it is not one."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, length, crc, seq = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version not in VERSIONS or length > MAX_PAYLOAD:
        return None
    return Header(length, crc, seq, version)
