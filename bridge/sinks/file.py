"""The file sink: one JSON line per record, for the demo and for debugging.

Each line is ``{"destination", "key", "event", "instance", "received_at", "id", "data"}``
where ``data`` is the record's value embedded verbatim (it is JSON already). Dead-letter
records go to the DLQ file (``sink.dlq``, relative to the events file's folder) with their
raw value as text (``data_text``) or base64 (``data_base64``) and the reason. A batch is
written (and fsynced when asked) before it counts as delivered.

Concurrent ``publish`` calls take turns (a lock held by the writing thread, so even a
cancelled call cannot overlap the next one): their lines never interleave. A write that fails
(``ENOSPC``, ``EIO``, a descriptor gone bad) cuts the file back to where it ended, so no
partial line stays, and the records of that file are Failed (retried), never an exception.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from bridge.errors import SinkUnavailableError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.sinks.base import DELIVERED, Failed, Outcome
from bridge.spool.files import open_private_file, private_dir

log = get_logger(__name__)


def event_line(record: Record) -> bytes:
    """The JSON line of an event record, its value embedded byte for byte (pure)."""
    meta = orjson.dumps(
        {
            "destination": record.destination,
            "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
            "event": record.event,
            "instance": record.instance,
            "received_at": record.received_at,
            "id": record.id,
        }
    )
    return meta[:-1] + b',"data":' + record.value + b"}\n"


def dead_letter_line(record: Record) -> bytes:
    """The JSON line of a DLQ record; the raw value as text when it is UTF-8 (pure)."""
    entry: dict[str, object] = {
        "reason": record.dlq_reason,
        "error": record.dlq_error,
        "instance": record.instance,
        "received_at": record.received_at,
        "id": record.id,
    }
    try:
        entry["data_text"] = record.value.decode("utf-8")
    except UnicodeDecodeError:
        entry["data_base64"] = base64.b64encode(record.value).decode("ascii")
    return orjson.dumps(entry) + b"\n"


def dlq_path(events_path: Path, dlq: str) -> Path:
    """Where DLQ lines go: ``dlq`` as a path, relative to the events file's folder."""
    candidate = Path(dlq)
    return candidate if candidate.is_absolute() else events_path.parent / candidate


class FileSink:
    kind = "file"

    def __init__(self, path: Path, dlq: str, *, fsync: bool = False) -> None:
        self.path = path
        self.dlq_path = dlq_path(path, dlq)
        self.fsync = fsync
        self._events: IO[bytes] | None = None
        self._dead: IO[bytes] | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        try:
            private_dir(self.path.parent)
            private_dir(self.dlq_path.parent)
            self._events = open_private_file(self.path, "ab")
            self._dead = open_private_file(self.dlq_path, "ab")
        except OSError as exc:
            msg = f"file sink: cannot open {exc.filename}: {exc.strerror}"
            raise SinkUnavailableError(msg) from None

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        if self._events is None or self._dead is None:
            raise SinkUnavailableError("file sink: not started")
        try:
            events = b"".join(event_line(r) for r in records if r.dlq_reason is None)
            dead = b"".join(dead_letter_line(r) for r in records if r.dlq_reason is not None)
            events_error, dead_error = await asyncio.to_thread(self._write, events, dead)
        except Exception as exc:  # every record's outcome, never an exception
            log.exception("sink.publish_crashed", sink=self.kind, error=type(exc).__name__)
            crash = SinkUnavailableError(f"file sink: unexpected {type(exc).__name__}: {exc}")
            return [Failed(crash)] * len(records)
        outcomes: list[Outcome] = []
        for record in records:
            error = events_error if record.dlq_reason is None else dead_error
            outcomes.append(DELIVERED if error is None else Failed(error))
        return outcomes

    def _write(
        self, events: bytes, dead: bytes
    ) -> tuple[SinkUnavailableError | None, SinkUnavailableError | None]:
        with self._lock:
            return self._append(self._events, events), self._append(self._dead, dead)

    def _append(self, handle: IO[bytes] | None, data: bytes) -> SinkUnavailableError | None:
        """Append ``data`` whole, or leave the file as it was and say why."""
        if not data:
            return None
        if handle is None or handle.closed:
            return SinkUnavailableError("file sink: closed")
        end: int | None = None
        try:
            fd = handle.fileno()
            end = os.fstat(fd).st_size
            written = 0
            while written < len(data):
                written += os.write(fd, memoryview(data)[written:])
            if self.fsync:
                os.fsync(fd)
        except (OSError, ValueError) as exc:  # ValueError: the handle was closed meanwhile
            if end is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
            reason = getattr(exc, "strerror", None) or exc
            return SinkUnavailableError(f"file sink: write failed: {reason}")
        return None

    async def reachable(self) -> bool:
        return self._events is not None and not self._events.closed

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:  # after a write in flight, never under it
            for handle in (self._events, self._dead):
                if handle is not None:
                    with contextlib.suppress(OSError):  # its descriptor already failing
                        handle.close()
            self._events = self._dead = None
