"""A Redis call's deadline: moved on as replies come, so a long pipeline whose replies each
come in time is read whole, and one whose server stops answering is lost (a real socket, a
server of the test's own that answers slowly)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bridge.sinks import redis as sink_redis
from bridge.sinks.redis import IO_SECONDS, UNREAD, failure_text, renewed, send


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    """One RESP array of bulk strings off ``reader``."""
    count = int((await reader.readline())[1:])
    parts = []
    for _ in range(count):
        size = int((await reader.readline())[1:])
        parts.append((await reader.readexactly(size + 2))[:-2])
    return parts


class SlowServer:
    """A server answering +OK to every command, each ``SLOW`` one ``gap`` seconds after the
    previous answer; after ``stop_after`` SLOW answers it answers nothing more (until it is
    closed). Entered, a client of it (no socket timeout, as the sink's)."""

    def __init__(self, gap: float, stop_after: int | None = None) -> None:
        self.gap = gap
        self.stop_after = stop_after
        self.closing = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.answered_at = 0.0  # the loop's time of the last answer
        self.server: asyncio.Server | None = None
        self.client: Redis | None = None

    async def __aenter__(self) -> Redis:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.client = Redis(host="127.0.0.1", port=port, socket_timeout=None)
        return self.client

    async def __aexit__(self, *_: object) -> None:
        if self.client is not None:
            await self.client.aclose()
        self.closing.set()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        slow = 0
        try:
            while True:
                command = await _command(reader)
                if command[:1] == [b"SLOW"]:
                    if self.stop_after is not None and slow >= self.stop_after:
                        await self.closing.wait()
                        return
                    slow += 1
                    await asyncio.sleep(self.gap)
                writer.write(b"+OK\r\n")
                await writer.drain()
                self.answered_at = asyncio.get_running_loop().time()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls' deadline 0.5 s for the test (at least that for each reply)."""
    monkeypatch.setattr(sink_redis, "IO_SECONDS", 0.5)


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When a call's deadline was moved during the test (the loop's times)."""
    moved: list[float] = []

    def counted(due: float | None, now: float) -> bool:
        if renewed(due, now):
            moved.append(now)
            return True
        return False

    monkeypatch.setattr(sink_redis, "renewed", counted)
    return moved


@pytest.mark.usefixtures("short_deadline")
async def test_a_pipeline_whose_replies_each_come_in_time_is_read_whole(
    moves: list[float],
) -> None:
    """Ten replies 0.1 s apart (1 s in all, twice the 0.5 s deadline and more than the 0.75
    it starts with): every one is read, the call is not lost; its deadline was moved a few
    times, not once per reply."""
    async with SlowServer(0.1) as client:
        replies, lost = await send(client, [("SLOW",)] * 10)
    assert lost is UNREAD
    assert replies == [b"OK"] * 10
    assert 1 <= len(moves) <= 5, moves


async def test_a_quick_call_moves_no_timer(moves: list[float]) -> None:
    """A call whose replies all come at once moves no deadline (a timer per reply was the
    cost this replaced)."""
    async with SlowServer(0.0) as client:
        replies, lost = await send(client, [("FAST",)] * 20)
    assert (replies, lost) == ([b"OK"] * 20, UNREAD)
    assert moves == []


@pytest.mark.usefixtures("short_deadline")
async def test_a_pipeline_whose_server_stops_answering_is_lost_in_time() -> None:
    """Two replies 0.3 s apart (the second past the 0.5 s a deadline fixed per call would
    allow with its first), then none: both are read, and the call is lost at least 0.5 s
    after the last and within 0.75 + slack, the rest counted as not read and named."""
    loop = asyncio.get_running_loop()
    server = SlowServer(0.3, stop_after=2)
    async with server as client:
        replies, lost = await send(client, [("SLOW",)] * 5)
        silent = loop.time() - server.answered_at
    assert replies == [b"OK"] * 2
    assert "no reply in time (at least 0.5 s)" in str(lost.error), lost.error
    assert "3 of the pipeline's 5 replies not read" in str(lost.error)
    assert 0.5 <= silent < 1.5, silent


def test_a_calls_deadline_is_moved_when_less_than_its_length_is_left() -> None:
    """Before each reply the deadline moves on when less than ``IO_SECONDS`` is left (one
    move per half of it, not a timer per reply), never when there is none."""
    assert not renewed(None, 100.0)
    assert not renewed(100.0 + IO_SECONDS, 100.0)
    assert not renewed(100.0 + 1.4 * IO_SECONDS, 100.0)
    assert renewed(100.0 + IO_SECONDS - 0.01, 100.0)
    assert renewed(99.0, 100.0)


def test_a_failure_says_what_did_not_come_when_its_error_has_no_text() -> None:
    """Our own deadline's TimeoutError has no text: the failure names what did not come in
    time; an error with a text keeps it, and so does any other error without one."""
    expected = f"TimeoutError: no write in time (at least {IO_SECONDS:g} s)"
    assert failure_text(TimeoutError(), "write") == expected
    assert failure_text(ConnectionError("reset"), "reply") == "ConnectionError: reset"
    assert failure_text(ConnectionError(), "reply") == "ConnectionError: "
