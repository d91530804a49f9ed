"""The knobs the chaos soak uses: frames with ids in every odd shape (truncated JSON,
binary, invalid UTF-8, byte-identical copies) and 429 answers to upgrades."""

from __future__ import annotations

import time

import orjson
import pytest
from aiohttp import ClientSession
from websockets.exceptions import InvalidStatus

from bridge.simulator import Simulator
from tests.simulator.helpers import (
    SHOP,
    TOKENS,
    configure,
    open_ws,
    recv_raw,
    sim_config,
    wait_until,
)


async def test_odd_frames_carry_their_ids_and_are_counted() -> None:
    """``send_malformed_id`` (truncated JSON with an id and the token), ``send_binary`` (a
    binary message), ``send_invalid_utf8`` (a text message with 0xff bytes) and
    ``send_duplicate`` (the same bytes twice) reach the client as sent, and each id is in
    ``sent_ids`` once per copy sent."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            malformed = await sim.send_malformed_id(SHOP)
            binary = await sim.send_binary(SHOP)
            invalid = await sim.send_invalid_utf8(SHOP)
            duplicate = await sim.send_duplicate(SHOP, copies=2)
            received = await recv_raw(ws, 5)
        assert sim.sent_ids(SHOP) == [malformed, binary, invalid, duplicate, duplicate]
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(received[0])
        assert f'"id":"{malformed}"'.encode() in received[0]
        assert received[0].endswith(b'"token":"' + TOKENS[SHOP].encode() + b'"')
        assert orjson.loads(received[1])["data"]["id"] == binary
        assert b"\xff\xfe" in received[2]
        with pytest.raises(UnicodeDecodeError):
            received[2].decode("utf-8")
        assert received[3] == received[4]
        assert orjson.loads(received[3])["data"]["id"] == duplicate


async def test_odd_frames_with_no_socket_are_not_sent() -> None:
    """With no socket open the odd-frame knobs send nothing, return None and record no id."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        assert await sim.send_binary(SHOP) is None
        assert await sim.send_duplicate(SHOP) is None
        assert sim.sent_ids(SHOP) == []


@pytest.mark.parametrize("with_reset", [True, False])
async def test_reject_upgrades_answers_429_then_lets_upgrades_through(with_reset: bool) -> None:
    """``reject_upgrades(instance, 2)`` answers the next two upgrades 429 (with an
    ``X-RateLimit-Reset`` header only when ``with_reset``), counted as rejections; the third
    upgrade opens."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        sim.reject_upgrades(SHOP, 2, with_reset=with_reset)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await open_ws(sim)
            assert refused.value.response.status_code == 429
            assert ("X-RateLimit-Reset" in refused.value.response.headers) is with_reset
        async with await open_ws(sim):
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
        assert sim.stats(SHOP)["rejected"] == {"429": 2}


async def test_ids_come_with_their_send_times_over_control() -> None:
    """``GET /_sim/ids/{instance}?times=1`` answers ``[id, Unix time]`` pairs in send order,
    the times within the test's own clock readings; without ``times`` it answers ids."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            before = time.time()
            await sim.burst(SHOP, 3, "message.status")
            after = time.time()
            await recv_raw(ws, 3)
        async with ClientSession() as http:
            async with http.get(f"{sim.base_url}/_sim/ids/{SHOP}?times=1") as answer:
                pairs = await answer.json()
            async with http.get(f"{sim.base_url}/_sim/ids/{SHOP}") as answer:
                ids = await answer.json()
        assert [p[0] for p in pairs] == ids == sim.sent_ids(SHOP)
        assert len(ids) == 3
        assert all(before <= p[1] <= after for p in pairs)
        assert [p[1] for p in pairs] == sorted(p[1] for p in pairs)
