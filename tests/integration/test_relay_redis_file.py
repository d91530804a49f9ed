"""The relay into the real Redis and into the file sink: every frame, exactly, token-free."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from bridge.simulator import SimConfig, Simulator
from tests.brokerdump import delete_redis_keys
from tests.integration.harness import (
    counter,
    event_of,
    eventually,
    expected_value,
    redis_sink,
    running_bridge,
    settings_for,
)
from tests.services import read_stream, unique

TOKENS = {"shop-a": "tok-a-redis-91c3", "shop-b": "tok-b-redis-77d2"}


async def stream_frames(prefix: str, sim_tokens: dict[str, str], sim: Simulator) -> int:
    for name in sim_tokens:
        sim.pause(name)
    return sum(sim.stats(n)["frames_sent"] for n in sim_tokens)


@pytest.mark.integration
async def test_every_frame_lands_in_redis_streams(redis_url: str, tmp_path: Path) -> None:
    """Mixed frames from two instances land in ryze:{instance}:{event} streams, one entry
    each, with event/instance/received_at/id fields and data byte-identical minus token."""
    prefix = unique("relay")
    config = SimConfig(instances=TOKENS, rate=300, record_frames=True, seed=2)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in TOKENS.items()},
            sink=redis_sink(redis_url, prefix),
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sum(sim.stats(n)["frames_sent"] for n in TOKENS) >= 2000)
            total = await stream_frames(prefix, TOKENS, sim)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= total
            )
        sent = {name: sim.sent_frames(name) for name in TOKENS}
    client = Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in await client.keys(f"{prefix}:*") if isinstance(k, bytes))
        entries = {key: await read_stream(client, key) for key in keys}
        await delete_redis_keys(client, *keys)
    finally:
        await client.aclose()
    assert sum(len(e) for e in entries.values()) == total
    for name, frames in sent.items():
        for event in {event_of(f) for f in frames}:
            stream = entries[f"{prefix}:{name}:{event}"]
            expected = [expected_value(f, TOKENS[name]) for f in frames if event_of(f) == event]
            assert [fields[b"data"] for _, fields in stream] == expected
            for _, fields in stream:
                assert fields[b"event"] == event.encode()
                assert fields[b"instance"] == name.encode()
                assert fields[b"received_at"].endswith(b"Z")
                assert len(fields[b"id"]) == 32
    for token in TOKENS.values():
        assert not any(
            token.encode() in value
            for stream in entries.values()
            for _, fields in stream
            for value in fields.values()
        )


async def test_every_frame_lands_in_the_file(tmp_path: Path) -> None:
    """The file sink writes one JSON line per frame, data embedded verbatim minus the token,
    naming the default layout's destination (ryze.{event}) and the instance as its key."""
    events = tmp_path / "out" / "events.jsonl"
    config = SimConfig(instances=TOKENS, rate=300, record_frames=True, seed=3)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in TOKENS.items()},
            sink={"kind": "file", "file": {"path": str(events)}},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sum(sim.stats(n)["frames_sent"] for n in TOKENS) >= 2000)
            total = await stream_frames("file", TOKENS, sim)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= total
            )
        sent = {name: sim.sent_frames(name) for name in TOKENS}
    raw_lines = events.read_bytes().splitlines()
    assert len(raw_lines) == total
    text = events.read_text(encoding="utf-8")
    for token in TOKENS.values():
        assert token not in text
    lines = [(orjson.loads(raw), raw) for raw in raw_lines]
    for name, frames in sent.items():
        mine = [(line, raw) for line, raw in lines if line["instance"] == name]
        expected = [expected_value(f, TOKENS[name]) for f in frames]
        assert len(mine) == len(expected)
        for (line, raw), value in zip(mine, expected, strict=True):
            assert raw.endswith(b',"data":' + value + b"}")  # embedded byte for byte
            assert line["destination"] == f"ryze.{line['event']}"  # the default layout
            assert line["key"] == name
