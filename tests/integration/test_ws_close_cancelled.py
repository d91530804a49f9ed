"""A session whose closing handshake is cut short (its task cancelled while the server does
not answer the close) aborts its socket and still reports how it ended."""

from __future__ import annotations

import asyncio

from bridge.pipeline import Frame
from bridge.simulator import SimConfig, Simulator
from bridge.upstream.shared import SocketsShared
from bridge.upstream.ws import WatchedConnection
from tests.integration.test_socket_slots import TOKENS, Quiet, source_for


class Ends(Quiet):
    """A session observer that notes each end's reason."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[str] = []

    def disconnected(self, reason: str) -> None:
        self.ends.append(reason)


async def test_a_cancelled_close_of_an_ended_session_aborts_its_socket() -> None:
    """The consumer fails, the session closes its socket, the server never reads the close
    (its reading paused); the source's task is cancelled meanwhile: the socket is aborted at
    once (not left open until the server hangs up), the session's end is reported, its
    socket slot given back."""
    name = "shop-a"
    config = SimConfig(instances={name: TOKENS[name]}, preconfigured=True, rate=20.0)
    async with Simulator(config) as sim:
        shared = SocketsShared()
        ends = Ends()
        source = source_for(sim.base_url, name, ends, shared)
        held: list[WatchedConnection] = []

        def consume(batch: list[Frame]) -> None:
            del batch
            assert source._connection is not None
            held.append(source._connection)
            for socket in sim.server.sockets[name]:  # the server reads no more: no close reply
                assert socket.request.transport is not None
                socket.request.transport.pause_reading()
            raise RuntimeError("consumer failed")

        task = asyncio.create_task(source.run(consume))
        for _ in range(250):
            if held:
                break
            await asyncio.sleep(0.02)
        assert held, "no frame reached the consumer"
        await asyncio.sleep(0.3)  # the session is in its close, waiting for the reply
        connection = held[0]
        assert not connection.transport.is_closing()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        closing = connection.transport.is_closing()
        connection.transport.abort()  # (whatever the outcome: no socket left to the next test)
        assert closing
        assert ends.ends == ["internal_error"]
        assert shared.slots.state.used == 0
