"""A TCP proxy between the bridge and Redis that, while ``resetting``, forwards part of a
client's write (the middle of a pipeline) and then resets both connections (RST through
SO_LINGER 0)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER on with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    writer.transport.abort()


@dataclass
class ResettingProxy:
    target_port: int
    port: int = 0
    resetting: bool = False
    resets: int = 0
    _server: asyncio.Server | None = None
    _links: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            reset(client_w)
            return
        self._links.update((client_w, server_w))
        upstream = asyncio.create_task(self._pump(client_r, server_w, client_w, cut=True))
        downstream = asyncio.create_task(self._pump(server_r, client_w, server_w, cut=False))
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_w, server_w):
            self._links.discard(writer)
            writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        *,
        cut: bool,
    ) -> None:
        while data := await reader.read(65536):
            if cut and self.resetting and len(data) > 1:
                writer.write(data[: len(data) // 2])  # half a pipeline reaches Redis
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                self.resets += 1
                reset(other)
                reset(writer)
                return
            writer.write(data)
            await writer.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._links):
                writer.transport.abort()
            await self._server.wait_closed()
