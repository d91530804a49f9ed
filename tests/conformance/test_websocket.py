"""Simulator conformance, WebSocket: upgrade rules, pings and the 60 s pong rule (scaled),
server-side filter, media, the frame envelope (upstream/ryzeapi.md §3, §5, §6)."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from aiohttp import ClientSession, WSMsgType
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.simulator import SimConfig, Simulator
from tests.conformance.helpers import TOKENS, configure, frames, open_ws, ws_url

NOT_ENABLED = (
    "WebSocket is not enabled for this instance. Configure it first using "
    "POST /api/events/websocket/shop"
)


async def refused(base_url: str, instance: str, token: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        await open_ws(base_url, instance, token)
    return caught.value


async def test_upgrade_400_before_config_and_after_disable() -> None:
    """Without a config row, and with enabled false, the upgrade is refused with 400 and the
    documented body, before it becomes a WebSocket."""
    async with Simulator(SimConfig(instances=TOKENS)) as sim:
        first = await refused(sim.base_url, "shop", TOKENS["shop"])
        await configure(sim.base_url, "shop", TOKENS["shop"], enabled=False)
        second = await refused(sim.base_url, "shop", TOKENS["shop"])
        for error in (first, second):
            assert error.response.status_code == 400
            body = orjson.loads(error.response.body or b"{}")
            assert body == {"success": False, "error": {"message": NOT_ENABLED}}
        assert sim.stats("shop")["rejected"] == {"400": 2}


async def test_upgrade_auth_errors() -> None:
    """The upgrade answers 401 for a bad token, 403 for another instance's token, 404 for an
    unknown instance."""
    async with Simulator(SimConfig(instances=TOKENS, preconfigured=True)) as sim:
        assert (await refused(sim.base_url, "shop", "bad")).response.status_code == 401
        foreign = await refused(sim.base_url, "shop", TOKENS["other"])
        assert foreign.response.status_code == 403
        missing = await refused(sim.base_url, "ghost", TOKENS["shop"])
        assert missing.response.status_code == 404


async def test_upgrade_counts_against_the_bucket_and_carries_rate_headers() -> None:
    """Upgrades spend the token's requests: the 101 carries X-RateLimit-*, and past the limit
    the upgrade is refused with 429 (with the headers)."""
    config = SimConfig(instances=TOKENS, preconfigured=True, rate_limit=2, rate_window=30)
    async with Simulator(config) as sim:
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        assert ws.response is not None
        assert ws.response.headers["X-RateLimit-Remaining"] == "1"
        await ws.close()
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        await ws.close()
        limited = await refused(sim.base_url, "shop", TOKENS["shop"])
        assert limited.response.status_code == 429
        assert limited.response.headers["X-RateLimit-Remaining"] == "0"
        assert "X-RateLimit-Reset" in limited.response.headers


async def test_open_socket_survives_disable() -> None:
    """Disabling the config does not close open sockets (frames keep coming: the filter then
    lets nothing through, so the socket stays open and silent); new upgrades get 400."""
    async with Simulator(SimConfig(instances=TOKENS, preconfigured=True, rate=50)) as sim:
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        await frames(ws, 3)
        await configure(sim.base_url, "shop", TOKENS["shop"], enabled=False)
        await asyncio.sleep(0.3)
        assert sim.stats("shop")["open_sockets"] == 1
        assert (await refused(sim.base_url, "shop", TOKENS["shop"])).response.status_code == 400
        await ws.close()


async def test_server_pings_and_drops_a_client_that_never_pongs() -> None:
    """The server pings every ping_interval; a client that never answers is dropped after
    pong_timeout, one that answers stays."""
    config = SimConfig(
        instances=TOKENS, preconfigured=True, rate=0, ping_interval=0.2, pong_timeout=0.7
    )
    async with Simulator(config) as sim:
        sim.pause("shop")
        answering = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        async with ClientSession() as http:
            silent = await http.ws_connect(
                ws_url(sim.base_url, "shop"), headers={"token": TOKENS["shop"]}, autoping=False
            )
            kinds: Counter[WSMsgType] = Counter()
            async with asyncio.timeout(5):
                async for message in silent:
                    kinds[message.type] += 1
            assert kinds[WSMsgType.PING] >= 2
            assert silent.close_code == 1008
        assert sim.stats("shop")["pong_timeouts"] == 1
        await asyncio.sleep(0.8)
        assert sim.stats("shop")["open_sockets"] == 1  # the answering client is still there
        await answering.close()


async def test_server_side_filter_and_all_six_when_empty() -> None:
    """Only the configured events are sent; an empty events list means all six."""
    async with Simulator(SimConfig(instances=TOKENS, rate=400, seed=5)) as sim:
        await configure(sim.base_url, "shop", TOKENS["shop"], events=["message.status"])
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        assert {f["event"] for f in await frames(ws, 20)} == {"message.status"}
        await configure(sim.base_url, "shop", TOKENS["shop"], events=[])
        seen: set[str] = set()
        async with asyncio.timeout(10):
            while len(seen) < 6:
                seen.add(orjson.loads(await ws.recv())["event"])
        await ws.close()


@pytest.mark.parametrize("media", [True, False])
async def test_media_base64_follows_the_config(media: bool) -> None:
    """Image messages carry data.message.media.base64 only with mediaBase64 true."""
    async with Simulator(SimConfig(instances=TOKENS, rate=300)) as sim:
        sim.set_mix({"message.exchange": 1})
        await configure(sim.base_url, "shop", TOKENS["shop"], mediaBase64=media)
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        with_media = [
            f["data"]["message"]["media"]
            for f in await frames(ws, 20)
            if "media" in f["data"]["message"]
        ]
        await ws.close()
    assert with_media
    assert all(("base64" in m) is media for m in with_media)


async def test_frame_envelope_token_and_unique_ids() -> None:
    """Every frame is {event, data, instanceData{baseUrl, instance, token}} with the
    instance's own token, and data.id is unique; what the client sends is ignored."""
    async with Simulator(SimConfig(instances=TOKENS, preconfigured=True, rate=300)) as sim:
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        await ws.send('{"subscribe": "everything"}')
        got = await frames(ws, 200)
        await ws.close()
    assert all(set(f) == {"event", "data", "instanceData"} for f in got)
    assert all(
        f["instanceData"] == {"baseUrl": sim.base_url, "instance": "shop", "token": TOKENS["shop"]}
        for f in got
    )
    ids = [f["data"]["id"] for f in got]
    assert len(set(ids)) == len(ids)


async def test_two_sockets_each_get_every_frame() -> None:
    """Several sockets per instance are allowed and each receives every frame."""
    async with Simulator(SimConfig(instances=TOKENS, preconfigured=True, rate=0)) as sim:
        sim.pause("shop")
        first = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        second = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        await sim.burst("shop", 10)
        a, b = await frames(first, 10), await frames(second, 10)
        assert a == b
        assert sim.stats("shop")["max_sockets"] == 2
        for ws in (first, second):
            await ws.close()
        with pytest.raises(ConnectionClosed):
            await first.recv()
