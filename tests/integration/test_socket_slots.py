"""A process holds no more upstream sockets than its socket slots allow: with one slot and two
instances, the second instance waits (no upgrade reaches the upstream for it, the wait is
counted) until the first one's socket closes, then connects and reads its frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.errors import SpoolError, UpstreamError
from bridge.pipeline import Frame
from bridge.settings import UpstreamSettings
from bridge.simulator import SimConfig, Simulator
from bridge.upstream.ratelimit import TokenBucket
from bridge.upstream.shared import SocketsShared
from bridge.upstream.slots import SocketSlots
from bridge.upstream.ws import InstanceSource, SessionObserver
from tests.simulator.helpers import wait_until

TOKENS = {"shop-a": "tok-slots-aaaa-0001", "shop-b": "tok-slots-bbbb-0002"}


class Quiet:
    """A session observer that only notes connects."""

    def __init__(self) -> None:
        self.connects = 0

    def connected(self) -> None:
        self.connects += 1

    def disconnected(self, reason: str) -> None:
        del reason

    def failed(self, error: UpstreamError) -> None:
        raise AssertionError(str(error))

    def retrying(self, reason: str, delay: float) -> None:
        del reason, delay

    def activity(self, ping: bool) -> None:
        del ping

    def discarded(self, count: int) -> None:
        del count


async def no_check() -> None:
    """The upstream config check, as a source's ``ensure``: nothing to do."""


def source_for(
    base_url: str,
    name: str,
    observer: SessionObserver,
    shared: SocketsShared,
    bucket: TokenBucket | None = None,
) -> InstanceSource:
    """``name``'s source against ``base_url``: its token, a roomy bucket unless given, no
    config check, the socket first."""
    return InstanceSource(
        name,
        SecretStr(TOKENS[name]),
        UpstreamSettings.model_validate({"base_url": base_url}),
        bucket or TokenBucket(per_minute=6000, burst=100),
        ensure=no_check,
        observer=observer,
        shared=shared,
        check_first=False,
    )


async def test_an_instance_past_the_slots_waits_for_a_socket_to_close() -> None:
    """Two sources, one slot: the first connects and reads; the second waits (counted, no
    upgrade sent) until the first stops, then connects and reads frames too."""
    config = SimConfig(instances=TOKENS, preconfigured=True, rate=20.0)
    async with Simulator(config) as sim:
        shared = SocketsShared(slots=SocketSlots(1))
        read: dict[str, int] = dict.fromkeys(TOKENS, 0)
        observers = {name: Quiet() for name in TOKENS}
        sources = {name: source_for(sim.base_url, name, observers[name], shared) for name in TOKENS}

        def counter(name: str) -> Callable[[list[Frame]], None]:
            def count(batch: list[Frame]) -> None:
                read[name] += len(batch)

            return count

        def consume(name: str) -> Coroutine[Any, Any, None]:
            return sources[name].run(counter(name))

        first = asyncio.create_task(consume("shop-a"))
        for _ in range(200):
            if read["shop-a"]:
                break
            await asyncio.sleep(0.02)
        second = asyncio.create_task(consume("shop-b"))
        await asyncio.sleep(0.5)
        assert read["shop-a"] > 0
        assert read["shop-b"] == 0
        assert observers["shop-b"].connects == 0
        assert shared.slots.state.waiting == 1
        assert shared.slots.state.used == 1

        await sources["shop-a"].stop()
        await asyncio.wait_for(first, 5)
        for _ in range(250):
            if read["shop-b"]:
                break
            await asyncio.sleep(0.02)
        assert observers["shop-b"].connects == 1
        assert read["shop-b"] > 0
        assert shared.slots.state.waits == 1
        await sources["shop-b"].stop()
        await asyncio.wait_for(second, 5)
        assert shared.slots.state.used == 0


async def test_a_source_stopped_during_its_upgrade_reads_what_came_and_ends() -> None:
    """stop() lands while the upgrade is under way (the server answers late and sends a frame
    at once): the source still reads the frame that came with the answer, closes the socket
    it would otherwise have kept open unread, ends, and gives its socket slot back."""
    from websockets.asyncio.server import ServerConnection, serve  # noqa: PLC0415
    from websockets.http11 import Request  # noqa: PLC0415

    async def late(_connection: ServerConnection, _request: Request) -> None:
        await asyncio.sleep(0.5)

    async def handler(server: ServerConnection) -> None:
        await server.send('{"event":"message.status","data":{"id":"first"}}')
        await server.wait_closed()

    async with serve(handler, "127.0.0.1", 0, process_request=late) as server:
        port = server.sockets[0].getsockname()[1]
        shared = SocketsShared(slots=SocketSlots(4))
        observer = Quiet()
        source = source_for(f"http://127.0.0.1:{port}", "shop-a", observer, shared)
        read: list[bytes] = []

        def keep(batch: list[Frame]) -> None:
            read.extend(frame.raw for frame in batch)

        task = asyncio.create_task(source.run(keep))
        await asyncio.sleep(0.2)
        assert source.upgrading
        await source.stop()
        await asyncio.wait_for(task, 10)
    assert read == [b'{"event":"message.status","data":{"id":"first"}}']
    assert observer.connects == 1
    assert shared.slots.state.used == 0


async def test_an_open_socket_keeps_nothing_of_its_handshake_but_what_was_read() -> None:
    """Once connected, the socket holds neither the upgrade's request (with the token's
    header) nor the answer's headers (about 5 KB a socket at fleet scale); what the answer's
    rate headers said was noted by the upstream's budget first, and frames flow."""
    config = SimConfig(instances={"shop-a": TOKENS["shop-a"]}, preconfigured=True, rate=50.0)
    async with Simulator(config) as sim:
        bucket = TokenBucket(per_minute=6000, burst=100)
        shared = SocketsShared(slots=SocketSlots(4))
        source = source_for(sim.base_url, "shop-a", Quiet(), shared, bucket)
        first: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()

        def note(batch: list[Frame]) -> None:
            if not first.done():
                first.set_result(batch)

        reading = asyncio.create_task(source.run(note))
        assert await asyncio.wait_for(first, 10)
        connection = source._connection  # what the open socket holds
        assert connection is not None
        assert connection.request is None
        assert connection.response is not None
        assert not list(connection.response.headers.raw_items())
        assert bucket._server_remaining is not None  # the answer's rate headers, noted
        await source.stop()
        await asyncio.wait_for(reading, 10)


class FailsAtConnect(Quiet):
    """An observer whose ``connected`` raises, as a runner's gap marker does when the spool
    it goes to is gone; notes the ends reported."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def connected(self) -> None:
        super().connected()
        raise SpoolError("the spool is gone")

    def disconnected(self, reason: str) -> None:
        self.reasons.append(reason)


async def test_a_session_that_fails_as_it_starts_closes_its_socket() -> None:
    """A session whose first step raises (the connect report's gap marker into a spool that
    is gone) ends with its socket closed, its slot given back and its end reported: no socket
    is left open, unread and unwatched, with what the server sends on it uncounted."""
    config = SimConfig(instances={"shop-a": TOKENS["shop-a"]}, preconfigured=True, rate=50.0)
    async with Simulator(config) as sim:
        shared = SocketsShared(slots=SocketSlots(4))
        observer = FailsAtConnect()
        source = source_for(sim.base_url, "shop-a", observer, shared)
        with pytest.raises(SpoolError):
            await asyncio.wait_for(source.run(lambda _batch: None), 10)
        assert observer.connects == 1
        assert observer.reasons == ["internal_error"]  # the bridge's failure, not a close
        assert shared.slots.state.used == 0
        assert shared.keepalive.watching == 0
        await wait_until(lambda: sim.stats("shop-a")["open_sockets"] == 0)
