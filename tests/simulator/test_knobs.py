"""Simulator conformance, fault knobs and counters: drop, drop_every, stall, pause, burst,
raw frames, run-time instances, stats, frame recording, and the ``/_sim`` control API."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import ClientSession, WSMsgType
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.protocol import State

from bridge.simulator import Simulator
from bridge.simulator.server import heap_keeper
from tests.simulator.helpers import (
    ACCOUNT,
    EVENTS,
    MSG_INVALID_TOKEN,
    MSG_NOT_CONFIGURED,
    OTHER,
    SHOP,
    TOKENS,
    closed_by_server,
    configure,
    error_body,
    frames_for,
    open_ws,
    read_path,
    recv_frames,
    recv_raw,
    refused,
    rest,
    sim_config,
    wait_until,
    ws_url,
)


# ---- drop ----------------------------------------------------------------------------------
async def test_drop_closes_with_the_given_code() -> None:
    """``drop(instance, code)`` closes every socket of the instance with a close frame
    carrying ``code`` (reason "simulator drop") and returns how many it closed; the default
    code is 1000."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        async with await open_ws(sim) as first, await open_ws(sim) as second:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 2)
            assert await sim.drop(SHOP, code=4001) == 2
            for ws in (first, second):
                closed = await closed_by_server(ws)
                assert isinstance(closed, ConnectionClosedError)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 4001
                assert closed.rcvd.reason == "simulator drop"
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            assert await sim.drop(SHOP) == 1
            closed = await closed_by_server(ws)
            assert isinstance(closed, ConnectionClosedOK)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1000
        assert await sim.drop(OTHER) == 0


async def test_drop_abnormal_sends_no_close_frame() -> None:
    """``drop(abnormal=True)`` cuts the TCP connection without a close frame: the client
    sees ConnectionClosedError with no received close (``rcvd is None``, code 1006)."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            assert await sim.drop(SHOP, abnormal=True) == 1
            closed = await closed_by_server(ws)
            assert isinstance(closed, ConnectionClosedError)
            assert closed.rcvd is None
            assert ws.close_code == 1006
        await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 0)


async def test_drop_every_drops_repeatedly_until_stopped() -> None:
    """``drop_every(seconds, instance)`` closes the instance's sockets (code 1001) every
    ``seconds``, reconnections included, until ``stop_dropping``."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        sim.drop_every(0.3, SHOP)
        for _ in range(2):
            async with await open_ws(sim) as ws:
                opened = time.monotonic()
                closed = await closed_by_server(ws, within=2)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 1001
                assert time.monotonic() - opened <= 1.0
        sim.stop_dropping()
        async with await open_ws(sim) as ws:
            await asyncio.sleep(0.7)
            assert ws.state is State.OPEN
        assert sim.stats(SHOP)["upgrades"] == 3


async def test_drop_every_without_instance_drops_all() -> None:
    """``drop_every(seconds)`` without an instance drops the sockets of every instance."""
    async with Simulator(sim_config()) as sim:
        for name in (SHOP, OTHER):
            await configure(sim, name)
        sim.drop_every(0.3)
        async with await open_ws(sim, SHOP) as shop, await open_ws(sim, OTHER) as other:
            for ws in (shop, other):
                closed = await closed_by_server(ws, within=2)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 1001


# ---- stall / pause / rate -----------------------------------------------------------------
async def test_stall_stops_frames_and_pings_then_they_resume() -> None:
    """``stall(instance, seconds)`` sends neither frames nor pings for ``seconds``; both
    resume afterwards (and the socket was not dropped)."""
    async with Simulator(sim_config(rate=100)) as sim, ClientSession() as session:
        await configure(sim)
        async with session.ws_connect(
            ws_url(sim), headers={"token": TOKENS[SHOP]}, autoping=False
        ) as ws:
            log: list[tuple[float, WSMsgType]] = []
            stall_at = resume_at = 0.0

            async def read_for(seconds: float) -> None:
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        async with asyncio.timeout(left):
                            message = await ws.receive()
                    except TimeoutError:
                        return
                    assert message.type in {WSMsgType.TEXT, WSMsgType.PING}, message
                    log.append((time.monotonic(), message.type))
                    if message.type == WSMsgType.PING:
                        await ws.pong(message.data)

            await read_for(0.5)
            stall_at = time.monotonic()
            sim.stall(SHOP, 0.9)
            await read_for(0.9)
            resume_at = time.monotonic()
            await read_for(0.6)
            assert not ws.closed

        def kinds(start: float, end: float) -> set[WSMsgType]:
            return {kind for at, kind in log if start <= at < end}

        assert kinds(0, stall_at) == {WSMsgType.TEXT, WSMsgType.PING}
        assert kinds(stall_at + 0.1, resume_at - 0.05) == set()
        assert kinds(resume_at, resume_at + 0.6) == {WSMsgType.TEXT, WSMsgType.PING}
        assert sim.stats(SHOP)["pong_timeouts"] == 0


async def test_stall_until_resume() -> None:
    """``stall(instance)`` without a duration lasts until ``resume(instance)``."""
    async with Simulator(sim_config(rate=100)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await recv_frames(ws, 1)
            sim.stall(SHOP)
            await frames_for(ws, 0.1)  # frames already in flight
            assert await frames_for(ws, 0.4) == []
            sim.resume(SHOP)
            assert len(await recv_frames(ws, 3, within=2)) == 3


async def test_pause_stops_frames_but_not_pings() -> None:
    """``pause(instance)`` stops frame generation while pings go on; ``resume`` restarts
    the frames."""
    async with Simulator(sim_config(rate=100)) as sim, ClientSession() as session:
        await configure(sim)
        sim.pause(SHOP)
        async with session.ws_connect(
            ws_url(sim), headers={"token": TOKENS[SHOP]}, autoping=False
        ) as ws:
            kinds: list[WSMsgType] = []
            async with asyncio.timeout(5):
                while kinds.count(WSMsgType.PING) < 3:
                    message = await ws.receive()
                    kinds.append(message.type)
                    if message.type == WSMsgType.PING:
                        await ws.pong(message.data)
            assert WSMsgType.TEXT not in kinds
            sim.resume(SHOP)
            async with asyncio.timeout(5):
                while (await ws.receive()).type != WSMsgType.TEXT:
                    pass
        assert sim.stats(SHOP)["frames_sent"] >= 1


async def test_set_rate_changes_the_frame_rate() -> None:
    """``set_rate(rate, instance)`` changes one instance's frames per second; a negative
    rate stops the frames."""
    async with Simulator(sim_config(rate=4)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            slow = await frames_for(ws, 0.5)
            sim.set_rate(300, SHOP)
            fast = await frames_for(ws, 0.5)
            sim.set_rate(-1, SHOP)
            await frames_for(ws, 0.1)
            stopped = await frames_for(ws, 0.3)
        assert len(slow) <= 4
        assert len(fast) >= 40
        assert stopped == []


async def test_always_emit_counts_the_events_nobody_heard() -> None:
    """With ``always_emit`` the instance's events happen whether or not a socket listens, as
    upstream: those emitted with no socket open are counted as unheard (lost upstream) and
    not recorded as sent; with a socket open they are sent as usual."""
    async with Simulator(sim_config(rate=50, always_emit=True)) as sim:
        await configure(sim)
        await wait_until(lambda: sim.stats(SHOP)["unheard"] >= 10)
        assert sim.stats(SHOP)["frames_sent"] == 0
        async with await open_ws(sim) as ws:
            frames = await frames_for(ws, 0.4)
            heard_while_open = sim.stats(SHOP)["unheard"]
        assert len(frames) >= 5
        assert sim.stats(SHOP)["frames_sent"] >= len(frames)
        await wait_until(lambda: sim.stats(SHOP)["unheard"] > heard_while_open)


# ---- burst and raw frames -----------------------------------------------------------------
async def test_burst_delivers_n_frames_at_once() -> None:
    """``burst(instance, n)`` sends n frames right away (returning n), of the given event
    if one is named; the ids are fresh and recorded."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            started = time.monotonic()
            assert await sim.burst(SHOP, 25) == 25
            frames = await recv_frames(ws, 25, within=2)
            assert time.monotonic() - started < 1.0
            assert await sim.burst(SHOP, 5, "call.update") == 5
            calls = await recv_frames(ws, 5, within=2)
            assert await frames_for(ws, 0.2) == []
        assert {f["event"] for f in calls} == {"call.update"}
        ids = [f["data"]["id"] for f in frames + calls]
        assert len(set(ids)) == 30
        assert sim.sent_ids(SHOP) == ids


async def test_burst_respects_the_filter_and_needs_a_socket() -> None:
    """``burst`` goes through the server-side filter (filtered events are not sent and not
    counted) and sends nothing when no socket is open."""
    async with Simulator(sim_config()) as sim:
        await configure(sim, events=["message.status"])
        assert await sim.burst(SHOP, 3) == 0
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            assert await sim.burst(SHOP, 4, "call.update") == 0
            assert await sim.burst(SHOP, 4, "message.status") == 4
            frames = await recv_frames(ws, 4)
        assert {f["event"] for f in frames} == {"message.status"}
        assert sim.stats(SHOP)["frames_sent"] == 4


async def test_raw_frames_arrive_as_sent() -> None:
    """``send_malformed`` (truncated JSON holding the token), ``send_without_event`` and
    ``send_raw`` reach the client byte for byte; with no socket they return False."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        assert await sim.send_malformed(SHOP) is False
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            assert await sim.send_malformed(SHOP) is True
            assert await sim.send_without_event(SHOP) is True
            assert await sim.send_raw(SHOP, b"[1, 2, 3]") is True
            received = await recv_raw(ws, 3)
        token = TOKENS[SHOP].encode()
        assert received == [
            b'{"event": "message.exchange", "data": {"token": "' + token + b'"',
            b'{"data": {"id": "no-event"}, "instanceData": {}}',
            b"[1, 2, 3]",
        ]
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(received[0])
        assert sim.stats(SHOP)["frames_sent"] == 3
        assert sim.sent_ids(SHOP) == []


async def test_send_huge_delivers_a_two_megabyte_frame() -> None:
    """``send_huge(instance, 2_000_000)`` sends one message.exchange frame of about 2 MB
    (inline media) that a client with no size limit receives whole; it returns the frame's
    id."""
    async with Simulator(sim_config(record_frames=True)) as sim:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim, max_size=None) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            frame_id = await sim.send_huge(SHOP, 2_000_000)
            (raw,) = await recv_raw(ws, 1)
        assert frame_id is not None
        assert abs(len(raw) - 2_000_000) < 1_000
        frame = orjson.loads(raw)
        assert frame["event"] == "message.exchange"
        assert frame["data"]["id"] == frame_id
        assert len(frame["data"]["message"]["media"]["base64"]) > 1_900_000
        assert frame["instanceData"]["token"] == TOKENS[SHOP]
        assert sim.sent_frames(SHOP) == [raw]
        assert sim.sent_ids(SHOP) == [frame_id]
        assert await sim.send_huge(OTHER, 10) is None


# ---- instances at run time ---------------------------------------------------------------
async def test_add_instance_at_run_time() -> None:
    """``add_instance(name, token)`` makes a new instance usable at once: its token
    authenticates, it starts unconfigured (404 not configured), can be configured and
    streamed, and the account token covers it."""
    async with Simulator(sim_config(rate=50)) as sim, rest(sim) as client:
        sim.add_instance("late", "tok-late")
        got = await client.get(read_path("late"), headers={"token": "tok-late"})
        assert got.status_code == 404
        assert got.json() == error_body(MSG_NOT_CONFIGURED)
        await configure(sim, "late", token=ACCOUNT)
        async with await open_ws(sim, "late", "tok-late") as ws:
            (frame,) = await recv_frames(ws, 1)
        assert frame["instanceData"]["instance"] == "late"
        assert frame["instanceData"]["token"] == "tok-late"
        assert sim.stats("late")["upgrades"] == 1


async def test_remove_instance_at_run_time() -> None:
    """``remove_instance(name)`` closes the instance's sockets (1001); afterwards its token
    is unknown (401 ``Invalid token``) and the account token gets 404 for it, on REST and
    on the upgrade."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            await sim.remove_instance(SHOP)
            closed = await closed_by_server(ws)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1001
        got = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert got.status_code == 401
        assert got.json() == error_body(MSG_INVALID_TOKEN)
        by_account = await client.get(read_path(SHOP), headers={"token": ACCOUNT})
        assert by_account.status_code == 404
        assert (await refused(sim, SHOP, ACCOUNT)).status_code == 404
        listed = await client.get("/api/instance/list", headers={"token": ACCOUNT})
        assert [i["name"] for i in listed.json()["data"]] == [OTHER]


async def test_readded_instance_frames_carry_the_new_token() -> None:
    """An instance removed and added back with a new token streams frames whose
    ``instanceData.token`` is the new token (the envelope carries the instance's token)."""
    async with Simulator(sim_config(rate=50)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await recv_frames(ws, 1)
        await sim.remove_instance(SHOP)
        sim.add_instance(SHOP, "tok-shop-rotated")
        await configure(sim, token="tok-shop-rotated")
        async with await open_ws(sim, token="tok-shop-rotated") as ws:
            await frames_for(ws, 0.05)
            (frame,) = await recv_frames(ws, 1)
        assert frame["instanceData"]["token"] == "tok-shop-rotated"


# ---- counters and recording ----------------------------------------------------------------
async def test_stats_counters() -> None:
    """``stats(instance)`` counts upgrades, rejections by HTTP status, open and maximum
    concurrent sockets, closed sockets, frames sent, config POSTs; ``sent_ids`` lists the
    ids sent; ``all_stats`` sums requests and 429s over tokens; ``reset_counters`` zeroes
    them."""
    async with Simulator(sim_config(rate_limit=4)) as sim:
        await refused(sim)  # 400: not configured
        await refused(sim, token="bad")  # 401
        await refused(sim, token=TOKENS[OTHER])  # 403
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as first, await open_ws(sim) as second:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 2)
            assert await sim.burst(SHOP, 6) == 6
            first_frames = await recv_frames(first, 6)
            second_frames = await recv_frames(second, 6)
        await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 0)
        assert first_frames == second_frames  # every socket gets every frame
        for _ in range(2):
            await refused(sim)  # 429: shop's token used 4 of 4
        stats = sim.stats(SHOP)
        assert stats == {
            "upgrades": 2,
            "rejected": {"400": 1, "401": 1, "403": 1, "429": 2},
            "open_sockets": 0,
            "max_sockets": 2,
            "frames_sent": 6,
            "pong_timeouts": 0,
            "unheard": 0,
            "config_posts": 1,
        }
        assert sim.sent_ids(SHOP) == [f["data"]["id"] for f in first_frames]
        assert sim.server.stats[SHOP].closed == 2
        everything = sim.all_stats()
        assert everything["config_posts"] == 1
        assert everything["requests"] == 7  # 6 by shop's token, 1 by other's
        assert everything["rate_limited"] == 2
        assert everything["instances"][SHOP] == stats
        sim.reset_counters()
        assert sim.stats(SHOP)["upgrades"] == 0
        assert sim.sent_ids(SHOP) == []
        assert sim.all_stats()["requests"] == 0


async def test_record_frames_keeps_the_exact_bytes() -> None:
    """With ``record_frames=True`` ``sent_frames(instance)`` returns exactly the bytes the
    client received, in order (generated and raw frames alike); without it nothing is
    kept."""
    async with Simulator(sim_config(rate=200, record_frames=True)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            received = await recv_raw(ws, 20)
            sim.pause(SHOP)
            await asyncio.sleep(0.05)
            received += await frames_for(ws, 0.1)
            await sim.send_malformed(SHOP)
            received += await recv_raw(ws, 1)
        assert sim.sent_frames(SHOP) == received
    async with Simulator(sim_config(rate=200)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await recv_raw(ws, 5)
        assert sim.sent_frames(SHOP) == []
        assert len(sim.sent_ids(SHOP)) >= 5


async def test_set_config_changes_the_config_behind_the_clients_back() -> None:
    """``set_config(instance, body)`` applies a config with the POST's rules (visible to
    GET, ``enabled: false`` clearing the rest) without counting a request."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        sim.set_config(SHOP, {"enabled": True, "events": ["group.flow"], "mediaBase64": True})
        got = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert got.json()["websocket"] == {
            "enabled": True,
            "events": ["group.flow"],
            "mediaBase64": True,
        }
        sim.set_config(SHOP, {"enabled": False, "events": ["group.flow"]})
        got = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert got.json()["websocket"] == {"enabled": False, "events": [], "mediaBase64": False}
        assert (await refused(sim)).status_code == 400
        assert sim.stats(SHOP)["config_posts"] == 0


# ---- the control HTTP API ------------------------------------------------------------------
async def test_control_api_needs_no_token() -> None:
    """``/_sim/*`` answers without a token and does not touch the rate limit:
    GET /_sim/stats returns all counters, POST /_sim/<knob> runs the knob with the JSON
    body as arguments and answers ``{"ok": true, "result": …}``, GET /_sim/ids and
    /_sim/frames list what was sent."""
    async with Simulator(sim_config(record_frames=True)) as sim, rest(sim) as client:
        await configure(sim)
        stats = await client.get("/_sim/stats")
        assert stats.status_code == 200
        assert stats.json()["instances"][SHOP]["config_posts"] == 1
        assert stats.json()["config_posts"] == 1
        assert set(stats.json()) == {"instances", "config_posts", "requests", "rate_limited"}
        assert (await client.post("/_sim/pause", json={"instance": SHOP})).json() == {
            "ok": True,
            "result": None,
        }
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            burst = await client.post(
                "/_sim/burst", json={"instance": SHOP, "count": 3, "event": "label.update"}
            )
            assert burst.json() == {"ok": True, "result": 3}
            frames = await recv_frames(ws, 3)
            malformed = await client.post("/_sim/send_malformed", json={"instance": SHOP})
            assert malformed.json() == {"ok": True, "result": True}
            await recv_raw(ws, 1)
            dropped = await client.post("/_sim/drop", json={"instance": SHOP, "code": 4002})
            assert dropped.json() == {"ok": True, "result": 1}
            closed = await closed_by_server(ws)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 4002
        ids = await client.get(f"/_sim/ids/{SHOP}")
        assert ids.json() == [f["data"]["id"] for f in frames]
        sent = await client.get(f"/_sim/frames/{SHOP}")
        assert [orjson.loads(f) for f in sent.json()[:3]] == frames
        assert len(sent.json()) == 4
        added = await client.post("/_sim/add_instance", json={"name": "late", "token": "t-l"})
        assert added.status_code == 200
        assert "late" in (await client.get("/_sim/stats")).json()["instances"]
        assert sim.requests_of(TOKENS[SHOP]) == 2  # the POST and the upgrade only


async def test_control_api_rejects_unknown_knobs_and_bad_arguments() -> None:
    """POST /_sim/<unknown> is 404; a knob with wrong or missing arguments, or a body that
    is not JSON, is 400 with an ``error`` message."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        unknown = await client.post("/_sim/unknown", json={})
        assert unknown.status_code == 404
        assert "unknown" in unknown.json()["error"]
        assert (await client.post("/_sim/server", json={})).status_code == 404
        missing_arg = await client.post("/_sim/drop")
        assert missing_arg.status_code == 400
        assert "TypeError" in missing_arg.json()["error"]
        wrong_arg = await client.post("/_sim/drop", json={"instance": SHOP, "bogus": 1})
        assert wrong_arg.status_code == 400
        not_json = await client.post("/_sim/drop", content=b"{nope")
        assert not_json.status_code == 400
        assert not_json.json() == {"error": "body must be a JSON object"}
        bad_config = await client.post(
            "/_sim/set_config", json={"instance": SHOP, "body": {"events": ["x"]}}
        )
        assert bad_config.status_code == 400
        assert sim.config_of(SHOP) is None
        unknown_instance = await client.post("/_sim/set_config", json={"instance": "ghost"})
        assert unknown_instance.status_code == 400


async def test_set_mix_decides_the_event_kinds() -> None:
    """``set_mix`` decides which kinds the generator builds: a mix of one kind yields only
    that kind."""
    async with Simulator(sim_config(rate=300)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            for event in EVENTS:
                sim.set_mix({event: 1}, SHOP)
                await frames_for(ws, 0.05)
                frames = await recv_frames(ws, 5)
                assert {f["event"] for f in frames} == {event}


# ---- regressions: simulator bugs found by these tests, fixed -------------------------------
async def test_set_rate_applies_from_now_on_without_a_catch_up_burst() -> None:
    """After ``set_rate`` the new rate applies from that moment: raising 1/s to 20/s after
    1.5 s yields about 20 frames per second, not an immediate burst of 1.5 s * 20."""
    async with Simulator(sim_config(rate=1)) as sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            await frames_for(ws, 1.5)
            sim.set_rate(20, SHOP)
            first = await frames_for(ws, 0.25)
        assert len(first) <= 12


async def test_instances_given_a_rate_together_keep_independent_phases() -> None:
    """Instances that take a new rate at the same moment (``set_rate`` for all) do not send
    in step: at 1/s their first frames spread over the second that follows, as independent
    instances' would (they once came in one burst every second, whatever the fleet)."""
    tokens = {f"phase-{i:02d}": f"tok-phase-{i:04d}" for i in range(20)}
    async with Simulator(sim_config(instances=tokens, preconfigured=True, rate=-1)) as sim:
        sockets = [await open_ws(sim, name, token) for name, token in tokens.items()]
        try:
            await wait_until(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in tokens))
            sim.set_rate(1)
            started = time.monotonic()

            async def first_frame(ws: ClientConnection) -> float:
                await recv_raw(ws, 1, within=5)
                return time.monotonic() - started

            arrivals = await asyncio.gather(*(first_frame(ws) for ws in sockets))
        finally:
            for ws in sockets:
                await ws.close()
    assert max(arrivals) <= 3.0  # noticed within a second, sent within the next (and slack)
    assert max(arrivals) - min(arrivals) >= 0.4  # not in step (in step: a few ms apart)


async def test_recorded_raw_frame_matches_the_bytes_received() -> None:
    """With ``record_frames`` a raw frame that is not valid UTF-8 is recorded as the bytes the
    client actually received."""
    async with Simulator(sim_config(record_frames=True)) as sim:
        await configure(sim)
        sim.pause(SHOP)
        async with await open_ws(sim) as ws:
            await wait_until(lambda: sim.stats(SHOP)["open_sockets"] == 1)
            assert await sim.send_raw(SHOP, b'{"bad": "\xff"}')
            received = await recv_raw(ws, 1)
        assert sim.sent_frames(SHOP) == received


async def test_set_mix_before_start_keeps_the_base_url() -> None:
    """A mix set before the simulator starts does not change the envelope:
    ``instanceData.baseUrl`` is still the simulator's base URL."""
    sim = Simulator(sim_config(rate=50))
    sim.set_mix({"message.status": 1})
    async with sim:
        await configure(sim)
        async with await open_ws(sim) as ws:
            (frame,) = await recv_frames(ws, 1)
        assert frame["event"] == "message.status"
        assert frame["instanceData"]["baseUrl"] == sim.base_url


async def test_control_ids_of_an_unknown_instance_is_not_a_server_error() -> None:
    """GET /_sim/ids/<unknown> and /_sim/frames/<unknown> answer a client error or an empty
    list, not 500."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        for path in ("/_sim/ids/ghost", "/_sim/frames/ghost"):
            assert (await client.get(path)).status_code < 500


# ---- the heap keeper -----------------------------------------------------------------------
async def test_the_heap_keeper_counts_the_servers_sockets() -> None:
    """The simulator's heap keeper (the bridge's, :mod:`bridge.heap`) watches this server's
    sockets: upgrades as opened, the ends of sockets as closed, the sockets open now."""
    async with Simulator(sim_config()) as sim:
        await configure(sim)
        keeper = heap_keeper(sim.server)
        assert (keeper.opened(), keeper.closed(), keeper.open_now()) == (0, 0, 0)
        async with await open_ws(sim), await open_ws(sim):
            await wait_until(lambda: keeper.open_now() == 2)
            assert (keeper.opened(), keeper.closed()) == (2, 0)
        await wait_until(lambda: keeper.closed() == 2)
        assert (keeper.opened(), keeper.open_now()) == (2, 0)
