"""A close cancelled half-way aborts the TCP connection instead of leaving it open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.utils import accept_key

from bridge.upstream.keepalive import close_or_abort


@contextlib.asynccontextmanager
async def stuck_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A server that completes the upgrade and then never reads, answers or hangs up; the
    event is set when the client's end of the TCP connection is gone."""
    gone = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = accept_key(key.decode()).encode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await asyncio.sleep(0.3)  # the client's close frame arrives, unanswered
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # then only watch for the client's end
                pass
        gone.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], gone
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def cancelled_close(connection: ClientConnection, *, abort: bool) -> None:
    """Start closing ``connection`` (with or without the abort on cancel), cancel it."""
    closing = connection.close(1001, "x") if not abort else close_or_abort(connection, 1001, "x")
    task = asyncio.ensure_future(closing)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_close_aborts_the_connection() -> None:
    """Cancelled while the server does not answer the close: the transport is closed at once
    and the server sees the connection end, long before the library's close timeout."""
    async with stuck_server() as (port, gone):
        connection = await connect(f"ws://127.0.0.1:{port}/", close_timeout=30)
        try:
            await cancelled_close(connection, abort=True)
            assert connection.transport.is_closing()
            await asyncio.wait_for(gone.wait(), 5)
        finally:
            connection.transport.abort()


async def test_the_librarys_own_close_cancelled_leaves_the_socket_open() -> None:
    """Why the helper exists: the library's close, cancelled the same way, leaves the TCP
    connection open (its timeout lives in the cancelled coroutine); the test aborts it."""
    async with stuck_server() as (port, gone):
        connection = await connect(f"ws://127.0.0.1:{port}/", close_timeout=30)
        try:
            await cancelled_close(connection, abort=False)
            await asyncio.sleep(0.5)
            assert not connection.transport.is_closing()
            assert not gone.is_set()
        finally:
            connection.transport.abort()
        await asyncio.wait_for(gone.wait(), 5)
