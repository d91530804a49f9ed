"""Messages between the main process and the shipper: u32 length, then msgpack (pure
framing over asyncio streams)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

_LENGTH = struct.Struct("<I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
MAX_MESSAGE = 64 * 1024 * 1024


def frame(message: Any) -> bytes:
    """One message as it goes on the wire (pure)."""
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message; None when the other side is gone."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE:
            return None
        return _decode(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError):
        return None


def send(writer: asyncio.StreamWriter, message: Any) -> None:
    """Queue ``message`` (never waits; a peer gone is noticed by its reader)."""
    if not writer.is_closing():
        writer.write(frame(message))
