"""On-disk framing of spool records (pure).

Each entry is a 20-byte header and a payload::

    magic "RZ" (2) | format (1) | reserved (1) | payload length u32 | crc32 u32 | seq u64
    payload: a msgpack array of the record's fields in order: destination, key, value,
        event, instance, received_ns, id (empty when not worked out yet: the reader derives
        it from the instance and the value), dlq_reason, dlq_error. Encoded and decoded in C
        (a replay, and the tail, decode every record).

There is one format (the byte says ``FORMAT``); an entry with another is not an entry (read
as damage). The format is not yet stable: until a 1.0 release a new version may change it,
and a spool left by an older bridge is then not replayed.

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

MAGIC = b"RZ"
FORMAT = 3  # the one payload format, written and read
HEADER = struct.Struct("<2sBxIIQ")
HEADER_SIZE = HEADER.size
_U64 = struct.Struct("<Q")
MAX_PAYLOAD = 1 << 30
_FIELDS = tuple[str, bytes | None, bytes, str, str, int, str, str | None, str | None]
_encode_fields = msgspec.msgpack.Encoder().encode
_decode_fields = msgspec.msgpack.Decoder(_FIELDS).decode


def encode_payload(record: Record) -> bytes:
    """A record's payload."""
    r = record
    return _encode_fields((r.destination, r.key, r.value, r.event, r.instance, r.received_ns,
                           r.ident, r.dlq_reason, r.dlq_error))  # fmt: skip


def decode_payload(payload: bytes) -> Record:
    """The record of a payload; ValueError when it is not one."""
    try:
        return Record(*_decode_fields(payload))
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a spool record: {exc}") from None


def checksum(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_U64.pack(seq)))


def encode_entry_parts(seq: int, record: Record) -> tuple[bytes, bytes]:
    """An entry as its header and its payload, to be written one after the other (a big
    payload is not copied once more to be joined to its 20-byte header)."""
    payload = encode_payload(record)
    return HEADER.pack(MAGIC, FORMAT, len(payload), checksum(seq, payload), seq), payload


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    crc: int
    seq: int


def read_entry(handle: IO[bytes]) -> tuple[int, Record, int] | None:
    """The entry at a file's position: (seq, record, size on disk); None at its end (or at
    anything that is not a whole entry). The CRC is checked at start-up recovery, not here."""
    data = handle.read(HEADER_SIZE)
    if len(data) < HEADER_SIZE:
        return None
    magic, form, length, _, seq = HEADER.unpack_from(data, 0)
    if magic != MAGIC or form != FORMAT or length > MAX_PAYLOAD:
        return None
    payload = handle.read(length)
    if len(payload) < length:
        return None
    return seq, decode_payload(payload), HEADER_SIZE + length


def decode_header(data: bytes) -> Header | None:
    """The header at the start of ``data``, or None when it is not one."""
    if len(data) < HEADER_SIZE:
        return None
    magic, form, length, crc, seq = HEADER.unpack_from(data, 0)
    if magic != MAGIC or form != FORMAT or length > MAX_PAYLOAD:
        return None
    return Header(length, crc, seq)
