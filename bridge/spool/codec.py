"""On-disk framing of spool records (pure).

Each entry is a 20-byte header and a payload::

    magic "RZ" (2) | version (1) | reserved (1) | payload length u32 | crc32 u32 | seq u64
    payload: received_ns u64, then 8 length-prefixed fields (u32 length, 0xFFFFFFFF = None):
             destination, key, value, event, instance, id, dlq_reason, dlq_error

The CRC covers the sequence number and the payload, so a flipped byte anywhere in an entry
is detected; the magic lets a reader find the next entry after a damaged one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from bridge.pipeline import Record

MAGIC = b"RZ\x01"
HEADER = struct.Struct("<3sxIIQ")
HEADER_SIZE = HEADER.size
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NONE = 0xFFFFFFFF
_NONE_BYTES = _U32.pack(_NONE)
MAX_PAYLOAD = 1 << 30


def _field(value: bytes | None) -> bytes:
    """A length-prefixed field (``0xFFFFFFFF`` and nothing for None)."""
    return _NONE_BYTES if value is None else _U32.pack(len(value)) + value


def encode_payload(record: Record) -> bytes:
    # Written out rather than looped: this runs once per record on the hot path.
    destination = record.destination.encode()
    value = record.value
    event = record.event.encode()
    instance = record.instance.encode()
    ident = record.id.encode()
    pack = _U32.pack
    reason, error = record.dlq_reason, record.dlq_error
    return b"".join(
        (
            _U64.pack(record.received_ns),
            pack(len(destination)),
            destination,
            _field(record.key),
            pack(len(value)),
            value,
            pack(len(event)),
            event,
            pack(len(instance)),
            instance,
            pack(len(ident)),
            ident,
            _NONE_BYTES if reason is None else _field(reason.encode()),
            _NONE_BYTES if error is None else _field(error.encode()),
        )
    )


def decode_payload(payload: bytes) -> Record:
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
        id=text(ident),
        dlq_reason=None if reason is None else reason.decode(),
        dlq_error=None if error is None else error.decode(),
    )


def checksum(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_U64.pack(seq)))


def encode_entry(seq: int, record: Record) -> bytes:
    payload = encode_payload(record)
    return HEADER.pack(MAGIC, len(payload), checksum(seq, payload), seq) + payload


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    crc: int
    seq: int


def decode_header(data: bytes) -> Header | None:
    """The header at the start of ``data``, or None when it is not one."""
    if len(data) < HEADER_SIZE:
        return None
    magic, length, crc, seq = HEADER.unpack_from(data, 0)
    if magic != MAGIC or length > MAX_PAYLOAD:
        return None
    return Header(length, crc, seq)
