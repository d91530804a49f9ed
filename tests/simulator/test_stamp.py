"""The simulator's send-time stamp (``stamp_sent``): every generated frame carries the time
it was written to the socket, in the field the upstream plausibly has, fresh at every send
of a pre-built frame; without the option the fixtures go out untouched."""

from __future__ import annotations

import time
from datetime import datetime

import orjson

from bridge.simulator import Simulator
from bridge.simulator.frames import FrameFactory
from bridge.simulator.stamp import PLACEHOLDER, iso_us, stamped
from tests.simulator.helpers import SHOP, configure, open_ws, recv_frames, sim_config


def stamp_of(frame: dict[str, object]) -> str:
    data = frame["data"]
    assert isinstance(data, dict)
    holder = data["message"] if isinstance(data.get("message"), dict) else data
    value = holder["timestamp"]
    assert isinstance(value, str)
    return value


def test_a_stamp_is_as_wide_as_the_placeholder_and_reads_back_to_the_microsecond() -> None:
    """iso_us keeps the placeholder's width and round-trips through fromisoformat."""
    ns = 1_796_000_000_123_456_789
    text = iso_us(ns).decode()
    assert len(text) == len(PLACEHOLDER)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert int(moment.timestamp()) == ns // 1_000_000_000
    assert moment.microsecond == 123_456


def test_the_placeholder_goes_where_each_event_keeps_its_time() -> None:
    """A message's time is data.message.timestamp (the catalog's field); any other event's
    is data.timestamp; a frame without the placeholder is left as it is."""
    factory = FrameFactory("shop", "tok", "http://x", stamp=True)
    _, message = factory.build("message.exchange")
    _, status = factory.build("message.status")
    now = time.time_ns()
    assert PLACEHOLDER.encode() in message
    assert stamped(message, now) != message
    assert orjson.loads(stamped(status, now))["data"]["timestamp"] == iso_us(now).decode()
    assert orjson.loads(stamped(message, now))["data"]["message"]["timestamp"].startswith("20")
    plain = FrameFactory("shop", "tok", "http://x").build("message.status")[1]
    assert stamped(plain, now) == plain


async def test_pre_built_frames_get_a_fresh_send_time_at_every_send() -> None:
    """With stamp_sent and a pre-built pool of one frame, each frame sent carries its own
    send time, between the moments before and after it was received."""
    config = sim_config(prebuilt=1, rate=200.0, stamp_sent=True, mix={"message.exchange": 1})
    async with Simulator(config) as sim:
        await configure(sim, SHOP)
        before = time.time()
        ws = await open_ws(sim, SHOP)
        try:
            frames = await recv_frames(ws, 5)
        finally:
            await ws.close()
        after = time.time()
    stamps = [stamp_of(f) for f in frames]
    assert len(set(stamps)) == 5
    for text in stamps:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        assert before - 0.001 <= moment <= after


async def test_without_stamp_sent_the_fixture_times_go_out_unchanged() -> None:
    """The default keeps the fixture's own message timestamp (no placeholder, no clock)."""
    config = sim_config(rate=200.0, mix={"message.exchange": 1})
    async with Simulator(config) as sim:
        await configure(sim, SHOP)
        ws = await open_ws(sim, SHOP)
        try:
            frames = await recv_frames(ws, 2)
        finally:
            await ws.close()
    assert {stamp_of(f)[:10] for f in frames} == {"2026-04-28"}
