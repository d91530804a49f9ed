"""Messages between the main process and the shipper: tagged structs, one per kind, as
msgpack behind a u32 length (framing over asyncio streams).

main → shipper (:data:`ToShipper`): :class:`Init` (the sink's sections, logging, the sink's
password, where the tail starts), :class:`Mark` (the spool's files go up to here),
:class:`Ask` (is the sink reachable?), :class:`Stop`.

shipper → main (:data:`FromShipper`): :class:`Ack` (acknowledged stretches and the metrics
that moved), :class:`Reading` (the segment the tail started reading), :class:`Rewound` (the
tail went back to the acknowledged position, in this segment), :class:`Moved` (metrics
that moved), :class:`Answer` (to an :class:`Ask`), :class:`Problem` (why nothing is
delivered, or None).

Every message is validated as it is decoded: one that is not one of its side's kinds, or
whose fields have the wrong types, or that carries a metric change its metric cannot take
(another metric's label names, an increase below zero), raises
:class:`~bridge.errors.LinkError` (the link ends, logged); a peer gone reads as None. The
two transports of the spool's acknowledgement channel (:mod:`bridge.spool`) over the link
are here too: :class:`MarksOverLink` (main) and :class:`AcksOverLink` (shipper).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from bridge.errors import LinkError
from bridge.logs import LogFormat
from bridge.metrics_sink import Change, change_problem
from bridge.spool import Acked, Position

_LENGTH = struct.Struct("<I")
M = TypeVar("M")
MAX_MESSAGE = 64 * 1024 * 1024
MARK_BACKLOG_BYTES = 64 * 1024  # above this much unsent, marks wait (only the latest kept)
MARK_RETRY_SECONDS = 0.05
MARK_LINGER_SECONDS = 0.002  # a mark waits this long for the appends behind it


class Init(msgspec.Struct, tag="init", frozen=True, array_like=True):
    settings: dict[str, Any]  # the sink, spool and event_loop sections, as JSON
    log_level: str
    log_format: LogFormat
    password: str | None
    start: Position  # where the tail starts: the acknowledged position


class Mark(msgspec.Struct, tag="mark", frozen=True, array_like=True):
    segment: int
    offset: int


class Ask(msgspec.Struct, tag="ask", frozen=True, array_like=True):
    question: int


class Stop(msgspec.Struct, tag="stop", frozen=True, array_like=True):
    pass


class Ack(msgspec.Struct, tag="ack", frozen=True, array_like=True):
    stretches: list[Acked]
    metrics: list[Change]


class Reading(msgspec.Struct, tag="reading", frozen=True, array_like=True):
    segment: int


class Rewound(msgspec.Struct, tag="rewound", frozen=True, array_like=True):
    segment: int


class Moved(msgspec.Struct, tag="moved", frozen=True, array_like=True):
    metrics: list[Change]


class Answer(msgspec.Struct, tag="answer", frozen=True, array_like=True):
    question: int
    reachable: bool


class Problem(msgspec.Struct, tag="problem", frozen=True, array_like=True):
    text: str | None


ToShipper = Init | Mark | Ask | Stop
FromShipper = Ack | Reading | Rewound | Moved | Answer | Problem
Message = ToShipper | FromShipper

_encode = msgspec.msgpack.Encoder().encode
TO_SHIPPER: msgspec.msgpack.Decoder[ToShipper] = msgspec.msgpack.Decoder(ToShipper)
FROM_SHIPPER: msgspec.msgpack.Decoder[FromShipper] = msgspec.msgpack.Decoder(FromShipper)


def frame(message: Message) -> bytes:
    """One message as it goes on the wire (pure)."""
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


def decode(decoder: msgspec.msgpack.Decoder[M], body: bytes) -> M:
    """The message in ``body``, validated (the metrics an :class:`Ack` or :class:`Moved`
    carries too, each against its metric's label names); LinkError when it is not one
    (pure)."""
    try:
        message = decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise LinkError(f"shipper link: not a message: {exc}") from None
    if isinstance(message, Ack | Moved):
        for change in message.metrics:
            problem = change_problem(change)
            if problem is not None:
                raise LinkError(f"shipper link: not a message: a metric change: {problem}")
    return message


async def receive(reader: asyncio.StreamReader, decoder: msgspec.msgpack.Decoder[M]) -> M | None:
    """The next message; None when the other side is gone; LinkError when it sent something
    that is not a message of ``decoder``'s kinds (or longer than ``MAX_MESSAGE``)."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE:
            raise LinkError(f"shipper link: a message of {length} bytes (at most {MAX_MESSAGE})")
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return decode(decoder, body)


def send(writer: asyncio.StreamWriter, message: Message) -> None:
    """Queue ``message`` (never waits; a peer gone is noticed by its reader)."""
    if not writer.is_closing():
        writer.write(frame(message))


class MarksOverLink:
    """The writer's marks to a tail in the shipper: one :class:`Mark` per
    ``MARK_LINGER_SECONDS`` at most (the latest), sent that long after the first one it
    covers (thousands of quiet sockets append a record or two per loop turn: a mark per turn
    woke the shipper for a publish and an acknowledgement per record or two); while the link
    has more than ``MARK_BACKLOG_BYTES`` not yet sent (``backlog``: a shipper stopped or slow
    to read), none is queued and only the latest is kept (marks only grow: it says all the
    others said), sent once the backlog is under the bound: the link's buffer stays
    bounded."""

    def __init__(
        self, send_message: Callable[[Message], None], backlog: Callable[[], int] = lambda: 0
    ) -> None:
        self._send = send_message
        self._backlog = backlog
        self._latest: tuple[int, int] | None = None

    def mark(self, segment: int, offset: int) -> None:
        pending = self._latest is not None
        self._latest = (segment, offset)
        if pending:
            return
        try:
            asyncio.get_running_loop().call_later(MARK_LINGER_SECONDS, self._flush)
        except RuntimeError:  # no loop (tools, tests): at once
            self._flush()

    def _flush(self) -> None:
        if self._latest is None:
            return
        if self._backlog() > MARK_BACKLOG_BYTES:
            try:
                asyncio.get_running_loop().call_later(MARK_RETRY_SECONDS, self._flush)
            except RuntimeError:  # no loop (tools, tests): sent at once
                pass
            else:
                return
        segment, offset = self._latest
        self._latest = None
        self._send(Mark(segment, offset))


class AcksOverLink:
    """The tail's acknowledgements to the writer in the main process: each :class:`Ack`
    carries the metrics that moved since the last report (``moved``). Never fewer: an
    acknowledged record is not published again, so a count that had not ridden on its
    acknowledgement would be lost with a shipper killed before its next report."""

    def __init__(
        self, send_message: Callable[[Message], None], moved: Callable[[], list[Change]]
    ) -> None:
        self._send = send_message
        self._moved = moved

    def acked(self, stretches: Sequence[Acked]) -> None:
        self._send(Ack(list(stretches), self._moved()))

    def reading(self, segment: int) -> None:
        self._send(Reading(segment))

    def rewound(self, segment: int) -> None:
        self._send(Rewound(segment))
