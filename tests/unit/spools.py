"""Spools for tests: the disk spool in a test's directory with its tail, wired by either
transport of the acknowledgement channel (direct calls, or the shipper link's messages)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.pipeline import Record
from bridge.shipper.link import (
    FROM_SHIPPER,
    TO_SHIPPER,
    Ack,
    AcksOverLink,
    Mark,
    MarksOverLink,
    Message,
    Reading,
    Rewound,
    decode,
    frame,
)
from bridge.spool import READ_MAX_BYTES, Acked
from bridge.spool.disk import DiskSpool
from bridge.spool.tail import SpoolTail, follow


def disk_spool(directory: Path, **options: Any) -> DiskSpool:
    """A disk spool in ``directory``, opened (10 MB, fsync never unless told)."""
    settings: dict[str, Any] = {"max_bytes": 10_000_000, "fsync": "never"}
    settings.update(options)
    spool = DiskSpool(directory, **settings)
    spool.open()
    return spool


class Local:
    """A disk spool and the tail that follows it in this process (the in-process delivery's
    wiring): appends and the books go to the writer, reads and acks to the tail."""

    def __init__(self, writer: DiskSpool) -> None:
        self.writer = writer
        self.tail = follow(writer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        return await self.tail.read(max_records, max_bytes)

    def ack(self, count: int) -> None:
        self.tail.ack(count)

    def rewind(self) -> None:
        self.tail.rewind()

    def close(self) -> None:
        self.writer.detach()
        self.tail.close()
        self.writer.close()


def local_spool(directory: Path, **options: Any) -> Local:
    """:func:`disk_spool` with its tail in this process."""
    return Local(disk_spool(directory, **options))


class OverTheLink:
    """The channel's link transport without the processes: every message is framed,
    decoded and validated as the link does, then applied on the other side at once."""

    def __init__(self, writer: DiskSpool, tail: SpoolTail | None = None) -> None:
        self.writer = writer
        self.tail = tail
        self.marks: list[tuple[int, int]] = []
        self.readings: list[int] = []
        self.rewinds: list[int] = []
        self.to_tail = MarksOverLink(self._to_shipper)
        self.to_writer = AcksOverLink(self._to_main, list)

    def _to_shipper(self, message: Message) -> None:
        match decode(TO_SHIPPER, frame(message)[4:]):
            case Mark(segment, offset):
                self.marks.append((segment, offset))
                if self.tail is not None:
                    self.tail.mark(segment, offset)
            case _:
                raise AssertionError(message)

    def _to_main(self, message: Message) -> None:
        match decode(FROM_SHIPPER, frame(message)[4:]):
            case Ack(stretches, _):
                self.writer.acked(stretches)
            case Reading(segment):
                self.readings.append(segment)
                self.writer.reading(segment)
            case Rewound(segment):
                self.rewinds.append(segment)
                self.writer.rewound(segment)
            case _:
                raise AssertionError(message)


class Recorded:
    """An acknowledgement channel's writer end that keeps what it hears (and passes the
    acknowledgements on to ``writer`` when given one)."""

    def __init__(self, writer: DiskSpool | None = None) -> None:
        self.writer = writer
        self.stretches: list[Acked] = []
        self.readings: list[int] = []
        self.rewinds: list[int] = []

    def acked(self, stretches: Sequence[Acked]) -> None:
        self.stretches.extend(stretches)
        if self.writer is not None:
            self.writer.acked(stretches)

    def reading(self, segment: int) -> None:
        self.readings.append(segment)

    def rewound(self, segment: int) -> None:
        self.rewinds.append(segment)
        if self.writer is not None:
            self.writer.rewound(segment)
