"""Simulator conformance, WebSocket: upgrade rules, rate limit on the upgrade, keepalive
(server pings, the pong rule, scaled down), the server-side filter, mediaBase64, the frame
envelope (upstream/ryzeapi.md §3, §5, §7)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from websockets.protocol import State

from bridge.simulator import Simulator
from tests.simulator.helpers import (
    ACCOUNT,
    EVENTS,
    MSG_FORBIDDEN,
    MSG_INSTANCE_NOT_FOUND,
    MSG_INVALID_TOKEN,
    MSG_MISSING_TOKEN,
    MSG_RATE_LIMITED,
    OTHER,
    SHOP,
    TOKENS,
    assert_rate_headers,
    body_of,
    configure,
    error_body,
    frames_for,
    open_ws,
    read_path,
    recv_frames,
    refused,
    rest,
    sim_config,
    wait_until,
    ws_url,
)


# ---- the upgrade (§2.2, §3.1, §3.2) -------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"token": TOKENS[SHOP]}, ""),
        ({"Authorization": f"Bearer {TOKENS[SHOP]}"}, ""),
        ({}, f"token={TOKENS[SHOP]}"),
    ],
    ids=["token-header", "bearer", "query"],
)
async def test_upgrade_accepts_token_in_header_bearer_and_query(
    headers: dict[str, str], query: str
) -> None:
    """The upgrade takes the token from the ``token`` header, ``Authorization: Bearer`` or
    ``?token=`` (the browser form); the socket opens (101) and frames arrive."""
    async with Simulator(sim_config(rate=50)) as sim:
        await configure(sim)
        async with await open_ws(sim, headers=headers, query=query) as ws:
            assert ws.response is not None
            assert ws.response.status_code == 101
            (frame,) = await recv_frames(ws, 1)
            assert frame["instanceData"]["instance"] == SHOP
        assert sim.stats(SHOP)["upgrades"] == 1


async def test_upgrade_400_when_not_configured() -> None:
    """Without a config row the upgrade is refused before it becomes a WebSocket: 400 with
    the documented body naming the instance, and rate-limit headers."""
    async with Simulator(sim_config()) as sim:
        response = await refused(sim)
        assert response.status_code == 400
        assert body_of(response) == error_body(
            "WebSocket is not enabled for this instance. Configure it first using "
            "POST /api/events/websocket/shop"
        )
        assert response.headers["Content-Type"].startswith("application/json")
        assert_rate_headers(response.headers)
        assert sim.stats(SHOP)["rejected"] == {"400": 1}
        assert sim.stats(SHOP)["upgrades"] == 0


async def test_upgrade_400_when_disabled() -> None:
    """With a config row that has ``enabled: false`` the upgrade is refused with the same
    documented 400 body."""
    async with Simulator(sim_config()) as sim:
        await configure(sim, OTHER, enabled=False)
        response = await refused(sim, OTHER)
        assert response.status_code == 400
        assert body_of(response) == error_body(
            "WebSocket is not enabled for this instance. Configure it first using "
            "POST /api/events/websocket/other"
        )
        assert_rate_headers(response.headers)
        assert sim.stats(OTHER)["rejected"] == {"400": 1}


async def test_upgrade_auth_refusals() -> None:
    """The upgrade answers 401 for a missing token, 401 ``Invalid token`` for an unknown
    one, 403 for another instance's token and 404 ``Instance not found`` for an unknown
    instance — each in the error envelope, counted per status."""
    async with Simulator(sim_config(preconfigured=True)) as sim:
        missing = await refused(sim, headers={})
        invalid = await refused(sim, token="nope")
        foreign = await refused(sim, token=TOKENS[OTHER])
        unknown = await refused(sim, "ghost", token=ACCOUNT)
        assert [r.status_code for r in (missing, invalid, foreign, unknown)] == [
            401,
            401,
            403,
            404,
        ]
        assert body_of(missing) == error_body(MSG_MISSING_TOKEN)
        assert body_of(invalid) == error_body(MSG_INVALID_TOKEN)
        assert body_of(foreign) == error_body(MSG_FORBIDDEN)
        assert body_of(unknown) == error_body(MSG_INSTANCE_NOT_FOUND)
        assert_rate_headers(foreign.headers)
        assert_rate_headers(unknown.headers)
        assert sim.stats(SHOP)["rejected"] == {"401": 2, "403": 1}
        assert sim.stats(SHOP)["upgrades"] == 0


async def test_account_token_upgrades_every_instance() -> None:
    """One TokenAccount opens the stream of every instance of the account."""
    async with Simulator(sim_config(rate=50)) as sim:
        for name in (SHOP, OTHER):
            await configure(sim, name, token=ACCOUNT)
        async with (
            await open_ws(sim, SHOP, ACCOUNT) as shop,
            await open_ws(sim, OTHER, ACCOUNT) as other,
        ):
            (a,) = await recv_frames(shop, 1)
            (b,) = await recv_frames(other, 1)
        assert (a["instanceData"]["instance"], b["instanceData"]["instance"]) == (SHOP, OTHER)
        assert sim.requests_of(ACCOUNT) == 4


async def test_upgrade_101_carries_rate_limit_headers() -> None:
    """The 101 Switching Protocols answer carries X-RateLimit-Limit/-Remaining/-Reset too."""
    async with Simulator(sim_config(rate_limit=7)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            assert ws.response is not None
            assert_rate_headers(ws.response.headers, limit=7, remaining=5)


async def test_upgrade_counts_against_the_token_bucket() -> None:
    """Every upgrade attempt, accepted or refused, costs one request of the token's bucket
    shared with REST; past the limit the upgrade is refused with 429, the documented body
    and the headers (Remaining 0)."""
    async with Simulator(sim_config(rate_limit=4)) as sim, rest(sim) as client:
        await configure(sim)  # 1
        refusal = await refused(sim, OTHER, token=TOKENS[SHOP])  # 2 (403)
        assert refusal.headers["X-RateLimit-Remaining"] == "2"
        async with await open_ws(sim) as ws:  # 3
            assert ws.response is not None
            assert ws.response.headers["X-RateLimit-Remaining"] == "1"
            got = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})  # 4
            assert got.status_code == 200
            assert got.headers["X-RateLimit-Remaining"] == "0"
            limited = await refused(sim)  # 5
        assert limited.status_code == 429
        assert body_of(limited) == error_body(MSG_RATE_LIMITED)
        assert_rate_headers(limited.headers, limit=4, remaining=0)
        assert sim.stats(SHOP)["rejected"] == {"429": 1}
        assert sim.requests_of(TOKENS[SHOP]) == 5
        assert sim.rate_limited_of(TOKENS[SHOP]) == 1


async def test_open_socket_survives_disable_new_upgrades_get_400() -> None:
    """Disabling the config does not disconnect a socket already open (it stays, answering
    pings, and frames sent to the instance still reach it) while new upgrades get 400."""
    async with Simulator(sim_config(rate=50)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await recv_frames(ws, 1)
            await configure(sim, enabled=False)
            response = await refused(sim)
            assert response.status_code == 400
            await asyncio.sleep(0.8)  # several ping intervals, more than the pong timeout
            assert ws.state is State.OPEN
            assert sim.stats(SHOP)["open_sockets"] == 1
            assert await sim.send_raw(SHOP, b'{"still": "here"}')
            async with asyncio.timeout(5):
                while (data := await ws.recv()) != '{"still": "here"}':
                    assert orjson.loads(data)["event"] in EVENTS
            assert sim.stats(SHOP)["pong_timeouts"] == 0


async def test_no_frames_are_built_without_a_socket() -> None:
    """Nothing is generated for an instance without a socket (no persistence, no replay):
    frames_sent stays 0 before the first connection and stops growing after the last
    one closes."""
    async with Simulator(sim_config(rate=100)) as sim:
        await configure(sim)
        await asyncio.sleep(0.2)
        assert sim.stats(SHOP)["frames_sent"] == 0
        async with await open_ws(sim) as ws:
            await recv_frames(ws, 3)
        await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 0)
        before = sim.stats(SHOP)["frames_sent"]
        await asyncio.sleep(0.2)
        assert sim.stats(SHOP)["frames_sent"] == before


# ---- keepalive (§3.4, scaled: ping_interval 0.2 s, pong_timeout 0.6 s) ----------------------
async def pings_during(ws: ClientWebSocketResponse, seconds: float, answer: bool) -> list[float]:
    """Times of the server's pings during ``seconds`` (answering them or not)."""
    stamps: list[float] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                message = await ws.receive()
        except TimeoutError:
            break
        if message.type == WSMsgType.PING:
            stamps.append(time.monotonic())
            if answer:
                await ws.pong(message.data)
        elif message.type in {WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING}:
            break
    return stamps


async def test_server_pings_at_ping_interval() -> None:
    """The server sends WebSocket PINGs every ping_interval (here 0.2 s), with no frames
    needed to trigger them."""
    async with Simulator(sim_config()) as sim, ClientSession() as session:
        await configure(sim)
        sim.pause(SHOP)
        async with session.ws_connect(
            ws_url(sim), headers={"token": TOKENS[SHOP]}, autoping=False
        ) as ws:
            stamps = await pings_during(ws, 1.1, answer=True)
            assert not ws.closed
        assert 3 <= len(stamps) <= 6, stamps
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(0.15 <= gap <= 0.45 for gap in gaps), gaps
        assert sim.stats(SHOP)["pong_timeouts"] == 0


async def test_silent_client_is_dropped_after_pong_timeout() -> None:
    """A client that does not answer pings is closed after pong_timeout (close 1008 "pong
    timeout"), while a client that answers on the same instance stays connected."""
    async with Simulator(sim_config()) as sim, ClientSession() as session:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as answering:
            opened = time.monotonic()
            async with session.ws_connect(
                ws_url(sim), headers={"token": TOKENS[SHOP]}, autoping=False
            ) as silent:
                async with asyncio.timeout(5):
                    while True:
                        message = await silent.receive()
                        if message.type in {WSMsgType.CLOSE, WSMsgType.CLOSED}:
                            break
                        assert message.type == WSMsgType.PING
                elapsed = time.monotonic() - opened
                assert silent.close_code == 1008
                assert message.extra == "pong timeout"
            assert 0.6 <= elapsed <= 2.0, elapsed
            await asyncio.sleep(0.8)
            assert answering.state is State.OPEN
            assert sim.stats(SHOP)["open_sockets"] == 1
            assert sim.stats(SHOP)["pong_timeouts"] == 1


# ---- the server-side filter (§4.1) ------------------------------------------------------------
@pytest.mark.parametrize(
    "events",
    [["message.status"], ["call.update", "label.update"]],
    ids=["one", "two"],
)
async def test_filter_sends_only_configured_events(events: list[str]) -> None:
    """With ``events`` set, only frames of those kinds arrive (the filter is server-side)."""
    async with Simulator(sim_config(rate=400)) as sim:
        sim.set_mix(dict.fromkeys(EVENTS, 1))
        await configure(sim, events=events)
        async with await open_ws(sim) as ws:
            frames = await recv_frames(ws, 30)
        kinds = {frame["event"] for frame in frames}
        assert kinds == set(events)


async def test_empty_events_delivers_all_six_kinds() -> None:
    """An empty (or omitted) ``events`` list means all six kinds arrive."""
    async with Simulator(sim_config(rate=400)) as sim:
        sim.set_mix(dict.fromkeys(EVENTS, 1))
        await configure(sim, events=[])
        seen: Counter[str] = Counter()
        async with await open_ws(sim) as ws, asyncio.timeout(5):
            while len(seen) < len(EVENTS):
                (frame,) = await recv_frames(ws, 1)
                seen[frame["event"]] += 1
        assert set(seen) == set(EVENTS)


@pytest.mark.parametrize("media", [False, True], ids=["stripped", "inline"])
async def test_media_base64_controls_inline_media(media: bool) -> None:
    """``mediaBase64: false`` strips ``data.message.media.base64`` from message frames that
    carry media; ``true`` keeps it (a non-empty base64 string)."""
    async with Simulator(sim_config(rate=200)) as sim:
        sim.set_mix({"message.exchange": 1})
        await configure(sim, mediaBase64=media)
        async with await open_ws(sim) as ws:
            frames = await recv_frames(ws, 12)
        with_media = [f for f in frames if "media" in f["data"]["message"]]
        assert with_media, "no frame carried media"
        assert len(with_media) < len(frames)  # text frames too
        for frame in with_media:
            inline = frame["data"]["message"]["media"].get("base64")
            if media:
                assert isinstance(inline, str)
                assert inline
            else:
                assert inline is None


# ---- frames (§3.3, §5) -------------------------------------------------------------------------
def assert_envelope(frame: Any, sim: Simulator, instance: str) -> None:
    assert isinstance(frame, dict)
    assert set(frame) == {"event", "data", "instanceData"}
    assert frame["event"] in EVENTS
    assert isinstance(frame["data"], dict)
    assert frame["instanceData"] == {
        "baseUrl": sim.base_url,
        "instance": instance,
        "token": TOKENS[instance],
    }
    if isinstance(frame["data"].get("message"), dict):
        assert frame["data"]["message"]["id"] == frame["data"]["id"]


async def test_every_frame_has_the_envelope_and_a_unique_id() -> None:
    """Every frame is ``{event, data, instanceData{baseUrl, instance, token}}`` with the
    instance's own TokenInstance (also when the socket was opened with the account token)
    and a ``data.id`` unique across frames and instances; the ids are the ones the
    simulator reports as sent, in order."""
    async with Simulator(sim_config(rate=300)) as sim:
        sim.set_mix(dict.fromkeys(EVENTS, 1))
        for name in (SHOP, OTHER):
            await configure(sim, name)
        async with await open_ws(sim, SHOP, ACCOUNT) as shop, await open_ws(sim, OTHER) as other:
            shop_frames = await recv_frames(shop, 40)
            other_frames = await recv_frames(other, 40)
        for frame in shop_frames:
            assert_envelope(frame, sim, SHOP)
        for frame in other_frames:
            assert_envelope(frame, sim, OTHER)
        ids = [f["data"]["id"] for f in shop_frames + other_frames]
        assert len(set(ids)) == len(ids)
        assert all(isinstance(i, str) and i for i in ids)
        assert sim.sent_ids(SHOP)[:40] == ids[:40]
        assert sim.sent_ids(OTHER)[:40] == ids[40:]


async def test_client_messages_are_ignored() -> None:
    """Text and binary messages from the client (subscribe-like JSON, junk) are ignored:
    no answer frame, no close, and the configured filter is unchanged."""
    async with Simulator(sim_config(rate=300)) as sim:
        sim.set_mix(dict.fromkeys(EVENTS, 1))
        await configure(sim, events=["message.exchange"])
        async with await open_ws(sim) as ws:
            await ws.send(orjson.dumps({"event": "subscribe", "events": list(EVENTS)}).decode())
            await ws.send('{"action": "ack", "id": "x"}')
            await ws.send("not json at all")
            await ws.send(b"\x00\x01binary")
            frames = [orjson.loads(f) for f in await frames_for(ws, 0.3)]
            assert frames
            assert {f["event"] for f in frames} == {"message.exchange"}
            assert ws.state is State.OPEN
        config = sim.config_of(SHOP)
        assert config is not None
        assert config.events == ["message.exchange"]
