"""Upstream behaviour end to end: a bad token fails one instance only, reconnects stay under
the rate limit and lose nothing sent while connected, drift is repaired."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from bridge.shipper.parent import ShipperDelivery
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for

TOKENS = {"good-1": "tok-good-1-8a8a", "good-2": "tok-good-2-9b9b", "bad": "tok-bad-real-7c7c"}


def file_sink(tmp_path: Path) -> dict[str, object]:
    return {"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}}


def delivered_ids(tmp_path: Path, instance: str) -> list[str]:
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    # whole lines only: the sink may be writing the last one while the test reads
    *whole, _partial = path.read_bytes().split(b"\n")
    lines = [orjson.loads(line) for line in whole if line]
    return [
        line["data"]["data"]["id"]
        for line in lines
        if line["instance"] == instance and line["event"] != "bridge.gap"
    ]


async def test_wrong_token_fails_that_instance_only(tmp_path: Path) -> None:
    """Of three instances one has a wrong token: it is reported failed (metric, status, 401
    at the simulator); the two others deliver every frame sent to them."""
    async with Simulator(SimConfig(instances=TOKENS, rate=100, record_frames=True)) as sim:
        instances: dict[str, dict[str, object]] = {n: {"token": t} for n, t in TOKENS.items()}
        instances["bad"] = {"token": "tok-wrong-0000", "important": True}  # its own series
        settings = settings_for(
            sim.base_url, tmp_path, instances=instances, sink=file_sink(tmp_path)
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("good-2")["frames_sent"] >= 200)
            for name in TOKENS:
                sim.pause(name)
            await eventually(
                lambda: all(
                    len(delivered_ids(tmp_path, n)) == sim.stats(n)["frames_sent"]
                    for n in ("good-1", "good-2")
                )
            )
            failed = counter(bridge.metrics, "ryze_bridge_instance_failed", ryze_instance="bad")
            status = bridge.runners["bad"].status
            assert failed == 1
            assert status.state == "failed"
            assert "401" in (status.last_error or "")
            assert "tok-wrong-0000" not in (status.last_error or "")
        assert sim.stats("bad")["upgrades"] == 0
        assert delivered_ids(tmp_path, "bad") == []
        for name in ("good-1", "good-2"):
            assert delivered_ids(tmp_path, name) == sim.sent_ids(name)


async def test_dropped_sockets_reconnect_under_the_rate_limit_and_lose_nothing_sent(
    tmp_path: Path,
) -> None:
    """The simulator drops every socket every 0.4 s for 6 s under a tight limit (12 requests
    per 3 s window per token): the bridge reconnects every time, never gets a 429, and every
    frame sent while it was connected is delivered."""
    tokens = {"shop-a": "tok-drop-a-1111", "shop-b": "tok-drop-b-2222"}
    config = SimConfig(instances=tokens, rate=200, rate_limit=12, rate_window=3.0)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={name: {"token": token} for name, token in tokens.items()},
            sink=file_sink(tmp_path),
            upstream={"rate_limit_per_minute": 600},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in tokens))
            sim.drop_every(0.4)
            await eventually(lambda: all(sim.stats(n)["upgrades"] >= 8 for n in tokens), 20)
            sim.stop_dropping()
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in tokens))
            for name in tokens:
                sim.pause(name)
            await eventually(
                lambda: all(
                    len(delivered_ids(tmp_path, n)) == sim.stats(n)["frames_sent"] for n in tokens
                )
            )
            reconnects = counter(bridge.metrics, "ryze_bridge_ws_reconnects_total")
        assert sim.all_stats()["rate_limited"] == 0
        assert reconnects >= 14
        for name, token in tokens.items():
            assert delivered_ids(tmp_path, name) == sim.sent_ids(name)
            # not configured yet: the first upgrade is refused (400), then GET and POST
            assert sim.stats(name)["rejected"] == {"400": 1}
            assert sim.requests_of(token) == sim.stats(name)["upgrades"] + 3


async def test_disabled_config_is_restored_after_400(tmp_path: Path) -> None:
    """A config disabled behind the bridge's back does not close the open socket; when that
    socket drops, the upgrade is refused with 400 and the bridge re-runs ensure (POST) and
    reconnects."""
    tokens = {"shop": "tok-drift-3333"}
    async with Simulator(SimConfig(instances=tokens, rate=50)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"], "events": ["message.exchange"]}},
            sink=file_sink(tmp_path),
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            sim.set_config("shop", {"enabled": False})
            await sim.drop("shop")
            await eventually(lambda: sim.stats("shop")["rejected"].get("400", 0) >= 1)
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            config = sim.config_of("shop")
            assert config is not None
            assert config.enabled
            assert config.events == ["message.exchange"]
            assert counter(bridge.metrics, "ryze_bridge_ensure_total", outcome="updated") == 1


async def test_changed_filter_is_restored_while_connected(tmp_path: Path) -> None:
    """An event filter changed behind the bridge's back is put back by the periodic ensure,
    without a reconnect."""
    tokens = {"shop": "tok-drift-4444"}
    async with Simulator(SimConfig(instances=tokens, rate=50)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"], "events": ["message.exchange"]}},
            sink=file_sink(tmp_path),
            upstream={"ensure_interval_seconds": 0.3},
        )
        async with running_bridge(settings):
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            sim.set_config("shop", {"enabled": True, "events": ["call.update"]})

            def restored() -> bool:
                config = sim.config_of("shop")
                return config is not None and config.events == ["message.exchange"]

            await eventually(restored)
            assert sim.stats("shop")["upgrades"] == 1


async def test_silent_socket_is_reopened_by_the_watchdog(tmp_path: Path) -> None:
    """A socket that carries neither frames nor pings past watchdog_seconds is closed and
    reopened (reason "watchdog"), and frames flow again afterwards."""
    tokens = {"shop": "tok-watchdog-5555"}
    config = SimConfig(instances=tokens, rate=50, ping_interval=0.2, record_frames=True)
    async with Simulator(config) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"]}},
            sink=file_sink(tmp_path),
            upstream={"watchdog_seconds": 0.8},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: len(delivered_ids(tmp_path, "shop")) >= 10)
            sim.stall("shop", 2.0)
            await eventually(
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_ws_reconnects_total", reason="watchdog")
                    >= 1
                ),
                within=10,
            )
            await eventually(lambda: sim.stats("shop")["upgrades"] >= 2, within=10)
            sent_before = sim.stats("shop")["frames_sent"]
            await eventually(lambda: sim.stats("shop")["frames_sent"] > sent_before + 20, 10)
            sim.pause("shop")
            await eventually(
                lambda: len(delivered_ids(tmp_path, "shop")) == sim.stats("shop")["frames_sent"]
            )


async def test_the_shipper_process_never_holds_an_instance_token(tmp_path: Path) -> None:
    """With the token given by an environment variable, the shipper process (which publishes)
    has neither the variable nor the token in its environment or command line, and the
    events it wrote do not carry it."""
    token = TOKENS["good-1"]
    async with Simulator(SimConfig(instances={"good-1": token}, rate=100)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"good-1": {"token_env": "SHOP_TOKEN"}},
            sink=file_sink(tmp_path),
        )
        environ = {"SHOP_TOKEN": token, "PATH": os.environ.get("PATH", "/usr/bin")}
        async with running_bridge(settings, environ=environ) as bridge:
            await eventually(lambda: len(delivered_ids(tmp_path, "good-1")) >= 50)
            delivery = bridge.delivery
            assert isinstance(delivery, ShipperDelivery)
            pid = delivery.pid
            assert pid is not None
            seen = Path(f"/proc/{pid}/environ").read_bytes()
            seen += Path(f"/proc/{pid}/cmdline").read_bytes()
    assert token.encode() not in seen
    assert b"SHOP_TOKEN" not in seen
    assert token.encode() not in (tmp_path / "events.jsonl").read_bytes()


def gap_details(tmp_path: Path, instance: str) -> list[str | None]:
    path = tmp_path / "events.jsonl"
    # whole lines only: the sink may be writing the last one while the test reads
    *whole, _partial = path.read_bytes().split(b"\n")
    lines = [orjson.loads(line) for line in whole if line]
    return [
        line["data"]["data"].get("detail")
        for line in lines
        if line["instance"] == instance and line["event"] == "bridge.gap"
    ]


async def test_a_frame_over_the_limit_is_a_counted_drop_and_a_gap_marker(tmp_path: Path) -> None:
    """A message larger than twice ``upstream.max_frame_bytes`` (which the WebSocket library
    closes the socket on without handing it over) is counted as received and dropped with
    reason ``frame_too_large``; the reconnect's gap marker names it, and frames sent after the
    reconnect are delivered."""
    tokens = {"shop-a": "tok-huge-a-3333"}
    async with Simulator(SimConfig(instances=tokens, rate=50, record_frames=True)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-a": {"token": tokens["shop-a"]}},
            sink={**file_sink(tmp_path), "gap_markers": True},
            upstream={"max_frame_bytes": 100_000},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop-a")["frames_sent"] >= 20)
            sim.pause("shop-a")  # nothing else in flight on the socket the huge frame closes
            assert await sim.send_huge("shop-a", 250_000) is not None
            await eventually(lambda: sim.stats("shop-a")["upgrades"] >= 2, 15)
            sim.resume("shop-a")
            sent_after = sim.stats("shop-a")["frames_sent"]
            await eventually(lambda: sim.stats("shop-a")["frames_sent"] >= sent_after + 20)
            sim.pause("shop-a")
            dropped = counter(
                bridge.metrics,
                "ryze_bridge_events_dropped_total",
                ryze_instance="_other",  # not important: folded (the only instance)
                reason="frame_too_large",
            )
            assert dropped == 1
            reconnects = counter(
                bridge.metrics, "ryze_bridge_ws_reconnects_total", reason="frame_too_large"
            )
            assert reconnects == 1
            sent = sim.stats("shop-a")["frames_sent"]
            await eventually(lambda: len(delivered_ids(tmp_path, "shop-a")) == sent - 1)
        assert "frame_too_large" in gap_details(tmp_path, "shop-a")
        delivered = set(delivered_ids(tmp_path, "shop-a"))
        sent = sim.sent_ids("shop-a")
        assert len(set(sent) - delivered) == 1  # the huge one, and nothing else


async def test_a_frame_somewhat_over_the_limit_goes_to_the_dlq_and_keeps_the_socket(
    tmp_path: Path,
) -> None:
    """A message over ``upstream.max_frame_bytes`` but within twice that is read whole and
    dead-lettered as ``too_large`` with its first bytes (the frame's id among them, the token
    cut); the socket stays open and the frames around it are delivered."""
    tokens = {"shop-a": "tok-huge-b-4444"}
    async with Simulator(SimConfig(instances=tokens, rate=50, record_frames=True)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop-a": {"token": tokens["shop-a"]}},
            sink={**file_sink(tmp_path), "dlq": str(tmp_path / "dlq.jsonl")},
            upstream={"max_frame_bytes": 100_000},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop-a")["frames_sent"] >= 20)
            huge_id = await sim.send_huge("shop-a", 150_000)
            assert huge_id is not None
            after = sim.stats("shop-a")["frames_sent"]
            await eventually(lambda: sim.stats("shop-a")["frames_sent"] >= after + 20)
            sim.pause("shop-a")
            sent = sim.sent_ids("shop-a")
            await eventually(lambda: len(delivered_ids(tmp_path, "shop-a")) == len(sent) - 1)
            assert bridge.runners["shop-a"].status.reconnects == 0
        assert set(sent) - set(delivered_ids(tmp_path, "shop-a")) == {huge_id}
        lines = (tmp_path / "dlq.jsonl").read_bytes().splitlines()
        letters = [orjson.loads(line) for line in lines]
        assert [letter["reason"] for letter in letters] == ["too_large"]
        assert huge_id in letters[0]["data_text"]  # the first bytes, cut to fit
        assert len(letters[0]["data_text"]) < 100_000
        assert tokens["shop-a"] not in str(letters[0])


async def test_first_check_after_the_socket_opens_repairs_the_filter(tmp_path: Path) -> None:
    """An instance whose upstream config exists but differs (all events, the bridge wants one):
    the socket opens first, without a refused upgrade, and the config check that follows (paced
    for the process, not the periodic re-check) puts the filter back, counted as ``updated``."""
    tokens = {"shop": "tok-first-5555"}
    async with Simulator(SimConfig(instances=tokens, rate=50, preconfigured=True)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={"shop": {"token": tokens["shop"], "events": ["message.exchange"]}},
            sink=file_sink(tmp_path),
            upstream={"ensure_interval_seconds": 3600},
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)

            def repaired() -> bool:
                config = sim.config_of("shop")
                return config is not None and config.events == ["message.exchange"]

            await eventually(repaired)
            updated = counter(bridge.metrics, "ryze_bridge_ensure_total", outcome="updated")
            assert updated == 1
            assert sim.stats("shop")["upgrades"] == 1
            assert sim.stats("shop")["rejected"] == {}
