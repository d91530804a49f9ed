"""Simulator fault knobs and counters, in-process and over the control API, and the CLI."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections import Counter

import httpx
import orjson
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from bridge.simulator import SimConfig, Simulator
from tests.conformance.helpers import TOKENS, configure, frames, open_ws, ws_url


def sim_config(**kwargs: object) -> SimConfig:
    options: dict[str, object] = {"instances": TOKENS, "preconfigured": True, "rate": 0}
    options.update(kwargs)
    return SimConfig(**options)  # type: ignore[arg-type]


async def test_drop_with_close_code_and_abnormal_drop() -> None:
    """drop() closes with the given code; drop(abnormal=True) cuts TCP with no close frame."""
    async with Simulator(sim_config()) as sim:
        sim.pause("shop")
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        assert await sim.drop("shop", code=4001) == 1
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        await sim.drop("shop", abnormal=True)
        with pytest.raises(ConnectionClosedError) as cut:
            await asyncio.wait_for(ws.recv(), 5)
        assert cut.value.rcvd is None


async def test_drop_every_closes_sockets_periodically() -> None:
    """drop_every(s) keeps closing the instance's sockets until stop_dropping()."""
    async with Simulator(sim_config()) as sim:
        sim.pause("shop")
        sim.drop_every(0.2, "shop")
        for _ in range(2):
            ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
            with pytest.raises(ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), 5)
        sim.stop_dropping()
        assert sim.stats("shop")["upgrades"] == 2


async def test_stall_stops_frames_and_pings_then_resumes() -> None:
    """stall() sends neither frames nor pings until it ends; then both resume."""
    async with (
        Simulator(sim_config(rate=100, ping_interval=0.1, pong_timeout=5)) as sim,
        ClientSession() as http,
    ):
        ws = await http.ws_connect(
            ws_url(sim.base_url, "shop"), headers={"token": TOKENS["shop"]}, autoping=False
        )
        await count_messages(ws, 0.3)
        sim.stall("shop", 0.8)
        await count_messages(ws, 0.1)  # what was already on the wire
        during = await count_messages(ws, 0.5)
        assert during == Counter()
        after = await count_messages(ws, 0.8)
        assert after[WSMsgType.TEXT] > 0
        assert after[WSMsgType.PING] > 0
        await ws.close()


async def count_messages(ws: ClientWebSocketResponse, seconds: float) -> Counter[WSMsgType]:
    """Message kinds received in the next ``seconds`` (pings answered)."""
    kinds: Counter[WSMsgType] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        kinds[message.type] += 1
        if message.type == WSMsgType.PING:
            await ws.pong(message.data)
    return kinds


async def test_burst_malformed_missing_event_and_huge_frames() -> None:
    """burst(n) sends n frames at once; malformed, event-less and multi-MB frames arrive as
    they were sent; record_frames keeps the exact bytes."""
    async with Simulator(sim_config(record_frames=True)) as sim:
        sim.pause("shop")
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"], max_size=None)
        assert await sim.burst("shop", 25) == 25
        assert len(await frames(ws, 25)) == 25
        await sim.send_malformed("shop")
        raw = await asyncio.wait_for(ws.recv(decode=False), 5)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        await sim.send_without_event("shop")
        assert "event" not in orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        frame_id = await sim.send_huge("shop", 3_000_000)
        huge = await asyncio.wait_for(ws.recv(decode=False), 10)
        assert len(huge) >= 2_900_000
        assert orjson.loads(huge)["data"]["id"] == frame_id
        assert sim.sent_frames("shop")[-1] == huge
        assert sim.stats("shop")["frames_sent"] == 28
        await ws.close()


async def test_instances_added_and_removed_at_run_time() -> None:
    """add_instance makes a new instance usable; remove_instance closes its sockets and then
    it is unknown (404)."""
    async with Simulator(sim_config(instances={})) as sim:
        sim.add_instance("late", "tok-late-1234")
        sim.pause("late")
        assert (await configure(sim.base_url, "late", "tok-late-1234")).status_code == 200
        ws = await open_ws(sim.base_url, "late", "tok-late-1234")
        await sim.remove_instance("late")
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            gone = await client.get(
                "/api/events/getWebsocket/late", headers={"token": "tok-late-1234"}
            )
        assert gone.status_code == 401  # the token died with its instance


async def test_control_api_without_token() -> None:
    """/_sim/stats and POST /_sim/<knob> work without a token; unknown knobs are 404."""
    async with (
        Simulator(sim_config()) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as client,
    ):
        sim.pause("shop")
        ws = await open_ws(sim.base_url, "shop", TOKENS["shop"])
        burst = await client.post("/_sim/burst", json={"instance": "shop", "count": 3})
        assert burst.json() == {"ok": True, "result": 3}
        assert len(await frames(ws, 3)) == 3
        stats = (await client.get("/_sim/stats")).json()
        assert stats["instances"]["shop"]["frames_sent"] == 3
        assert stats["instances"]["shop"]["open_sockets"] == 1
        assert len((await client.get("/_sim/ids/shop")).json()) == 3
        assert (await client.post("/_sim/explode", json={})).status_code == 404
        assert (await client.post("/_sim/drop", json={"instance": "shop"})).json()["result"] == 1
        await ws.close()


async def test_cli_process_listens_and_stops_on_sigterm() -> None:
    """`python -m bridge.simulator` prints its listening line, serves, and exits 0 on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.simulator", "--port", "0", "--instances", "2",
        "--rate", "20", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = re.match(r"simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        base_url = match.group(1)
        assert (await configure(base_url, "inst-000", "tok-000")).status_code == 200
        ws = await open_ws(base_url, "inst-000", "tok-000")
        assert len(await frames(ws, 3)) == 3
        await ws.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
