"""Hot reload changes only what changed; an invalid file changes nothing; the status API
shows no token and its mutating endpoints need the admin token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bridge.settings import Settings, load_settings
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for

TOKENS = {f"shop-{n:02d}": f"tok-reload-{n:02d}" for n in range(23)}
ADMIN = "admin-secret-4c4c4c"


def write_config(root: Path, base_url: str, names: list[str], version: int) -> None:
    """Publish a config the way a ConfigMap volume does: a new directory, then a symlink swap."""
    config = {
        "upstream": {"base_url": base_url, "backoff_initial": 0.05, "backoff_max": 0.5},
        "instances": {n: {"token": TOKENS[n]} for n in names},
        "sink": {"kind": "file", "file": {"path": str(root / "events.jsonl")},
                 "gap_markers": False},
        "spool": {"dir": str(root / "spool"), "fsync": "never"},
        "admin": {"host": "127.0.0.1", "port": 0, "token_env": "ADMIN_TOKEN"},
        "reload": {"poll_seconds": 0.2},
    }  # fmt: skip
    data = root / f"..{version}"
    data.mkdir()
    (data / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    link = root / "..data"
    tmp = root / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, link)
    config_path = root / "config.yaml"
    if not config_path.is_symlink():
        config_path.symlink_to("..data/config.yaml")


def delivered(path: Path, instance: str) -> list[str]:
    if not path.exists():
        return []
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [line["data"]["data"]["id"] for line in lines if line["instance"] == instance]


async def test_reload_touches_only_what_changed(tmp_path: Path) -> None:
    """20 instances stream; a ConfigMap-style swap adds two and removes one: the untouched
    ones see no reconnect and lose no frame, the new ones stream, the removed one stops.
    Then an invalid file is refused and changes nothing."""
    names = sorted(TOKENS)
    first, added = names[:21], names[21:]
    events = tmp_path / "events.jsonl"
    async with Simulator(SimConfig(instances=TOKENS, rate=20, record_frames=False)) as sim:
        write_config(tmp_path, sim.base_url, first, 1)
        path = tmp_path / "config.yaml"
        settings = load_settings(path)
        environ = {"ADMIN_TOKEN": ADMIN}
        async with running_bridge(settings, config_path=path, environ=environ) as bridge:
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in first))
            removed, untouched = first[0], first[1:]
            write_config(tmp_path, sim.base_url, [*untouched, *added], 2)
            await eventually(lambda: all(len(delivered(events, n)) > 0 for n in added), 15)
            await eventually(lambda: removed not in bridge.runners)
            assert (
                counter(bridge.metrics, "ryze_bridge_config_reloads_total", outcome="applied") == 1
            )

            (tmp_path / "..2" / "config.yaml").write_text("sink: {kind: mongo}\n")
            await eventually(
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_config_reloads_total", outcome="invalid")
                    == 1
                )
            )
            assert set(bridge.runners) == {*untouched, *added}
            for name in [*untouched, *added]:
                sim.pause(name)
            await eventually(
                lambda: all(
                    len(delivered(events, n)) == sim.stats(n)["frames_sent"] for n in untouched
                )
            )
        for name in untouched:
            assert sim.stats(name)["upgrades"] == 1, name
            assert delivered(events, name) == sim.sent_ids(name)
        assert sim.stats(removed)["open_sockets"] == 0


async def test_status_api_shows_no_token_and_guards_its_actions(tmp_path: Path) -> None:
    """GET /instances describes each instance without any secret; with an admin token,
    /instances and the actions need it (401 without), reconnect/pause/resume work with it;
    without an admin token the actions do not exist."""
    tokens = {"shop": "tok-status-shop-1", "bad": "tok-status-bad-2"}
    async with Simulator(SimConfig(instances=tokens, rate=20)) as sim:
        write = {
            "upstream": {"base_url": sim.base_url, "backoff_initial": 0.05, "backoff_max": 0.5},
            "instances": {"shop": {"token": tokens["shop"]}, "bad": {"token": "tok-wrong-3"}},
            "sink": {"kind": "file", "file": {"path": str(tmp_path / "e.jsonl")}},
            "spool": {"dir": str(tmp_path / "spool")},
            "admin": {"host": "127.0.0.1", "port": 0, "token_env": "ADMIN_TOKEN"},
        }
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(write), encoding="utf-8")
        async with (
            running_bridge(load_settings(path), environ={"ADMIN_TOKEN": ADMIN}) as bridge,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{bridge.admin.port}") as client,
        ):
            auth = {"Authorization": f"Bearer {ADMIN}"}
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            await eventually(lambda: bridge.runners["bad"].status.state == "failed")
            assert (await client.get("/instances")).status_code == 401
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            answer = await client.get("/instances", headers=auth)
            body: dict[str, Any] = answer.json()
            assert body["instances"]["shop"]["state"] == "connected"
            assert "401" in body["instances"]["bad"]["last_error"]
            for secret in (*tokens.values(), "tok-wrong-3", ADMIN):
                assert secret not in answer.text
            wrong = {"Authorization": "Bearer nope"}
            assert (
                await client.post("/instances/shop/reconnect", headers=wrong)
            ).status_code == 401
            assert (await client.post("/instances/shop/reconnect", headers=auth)).status_code == 200
            await eventually(lambda: sim.stats("shop")["upgrades"] == 2)
            assert (await client.post("/instances/shop/pause", headers=auth)).status_code == 200
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 0)
            assert (await client.get("/instances", headers=auth)).json()["instances"]["shop"] == {
                "state": "paused"
            }
            assert (await client.post("/instances/shop/resume", headers=auth)).status_code == 200
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            assert (await client.post("/instances/ghost/pause", headers=auth)).status_code == 404
            table = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bridge", "status", "--url", str(client.base_url),
                 "--token-env", "ADMIN_TOKEN"],
                capture_output=True, text=True, timeout=30, check=True,
                env={**os.environ, "ADMIN_TOKEN": ADMIN},
            )  # fmt: skip
            summary, header, *lines = table.stdout.splitlines()
            assert summary.startswith("2 instances: 1 failed, ")  # shop: connected or connecting
            assert header.split()[:2] == ["instance", "state"]
            rows = {line.split()[0]: line.split()[1] for line in lines}
            assert rows["bad"] == "failed"
            assert rows["shop"] in ("connected", "connecting")
            assert "tok-" not in table.stdout

        write["admin"] = {"host": "127.0.0.1", "port": 0}
        path.write_text(yaml.safe_dump(write), encoding="utf-8")
        async with (
            running_bridge(load_settings(path)) as bridge,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{bridge.admin.port}") as client,
        ):
            assert (await client.get("/instances")).status_code == 200
            assert (await client.post("/instances/shop/pause")).status_code in (404, 405)


async def test_reloaded_sink_takes_over_from_the_spool(tmp_path: Path) -> None:
    """A reload that changes the sink swaps it with the spool in between: what was received
    before lands in the old sink or the new one, nothing is lost, and later frames go to the
    new sink; the instance's socket is reopened (the routing may have changed)."""
    tokens = {"shop": "tok-swap-1234"}
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    def both() -> list[str]:
        return delivered(first, "shop") + delivered(second, "shop")

    def config(events: Path) -> dict[str, Any]:
        return {
            "upstream": {"base_url": sim.base_url, "backoff_initial": 0.05, "backoff_max": 0.5},
            "instances": {"shop": {"token": tokens["shop"]}},
            "sink": {"kind": "file", "file": {"path": str(events)}, "gap_markers": False},
            "spool": {"dir": str(tmp_path / "spool"), "fsync": "never"},
            "admin": {"host": "127.0.0.1", "port": 0},
            "reload": {"poll_seconds": 0.2},
        }

    async with Simulator(SimConfig(instances=tokens, rate=200)) as sim:
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config(first)), encoding="utf-8")
        async with running_bridge(load_settings(path), config_path=path) as bridge:
            await eventually(lambda: len(delivered(first, "shop")) > 100)
            path.write_text(yaml.safe_dump(config(second)), encoding="utf-8")
            await eventually(lambda: len(delivered(second, "shop")) > 100, within=15)
            sim.pause("shop")
            both = lambda: delivered(first, "shop") + delivered(second, "shop")  # noqa: E731
            await eventually(lambda: len(set(both())) == sim.stats("shop")["frames_sent"])
            assert (
                counter(bridge.metrics, "ryze_bridge_config_reloads_total", outcome="applied") == 1
            )
        assert set(both()) == set(sim.sent_ids("shop"))


def one_instance(base_url: str, root: Path, tokens: dict[str, str]) -> Settings:
    """``shop-a`` of ``tokens`` streaming into a file sink under ``root``."""
    return settings_for(
        base_url,
        root,
        instances={"shop-a": {"token": tokens["shop-a"]}},
        sink={"kind": "file", "file": {"path": str(root / "events.jsonl")}},
    )


async def test_a_reloaded_sink_whose_secret_cannot_be_read_keeps_the_running_one(
    tmp_path: Path,
) -> None:
    """A reload to a sink whose password file is empty (mid-rotation) is refused: the running
    sink keeps delivering and the settings stay as they were; once the file holds the
    password, the same reload is applied."""
    tokens = {"shop-a": "tok-reload-secret-1"}
    password = tmp_path / "redis-password"
    password.write_text("")
    async with Simulator(SimConfig(instances=tokens, rate=50, record_frames=False)) as sim:
        settings = one_instance(sim.base_url, tmp_path, tokens)
        data = settings.model_dump(mode="json")
        data["sink"]["kind"] = "redis"
        data["sink"]["redis"] = {
            "url": "redis://127.0.0.1:1/0",
            "username": "u",
            "password_file": str(password),
        }
        wanted = Settings.model_validate(data)
        async with running_bridge(settings) as bridge:
            running = bridge.delivery
            assert await bridge.apply(wanted) == "invalid"
            assert bridge.delivery is running
            assert bridge.settings.sink.kind == "file"
            before = len(delivered(tmp_path / "events.jsonl", "shop-a"))
            await eventually(lambda: len(delivered(tmp_path / "events.jsonl", "shop-a")) > before)
            password.write_text("now-it-is-there-7")
            assert await bridge.apply(wanted) == "applied"
            assert bridge.delivery.kind == "redis"


async def test_a_reload_whose_ca_file_cannot_be_read_keeps_the_instances_running(
    tmp_path: Path,
) -> None:
    """A reload naming an upstream CA file that cannot be read (mid-rotation) is refused
    before any runner stops: the instances keep streaming and the settings stay; once the
    file can be read, the same reload is applied and the instances come back."""
    tokens = {"shop-a": "tok-reload-ca-1"}
    ca_file = tmp_path / "upstream-ca.pem"
    async with Simulator(SimConfig(instances=tokens, rate=50, record_frames=False)) as sim:
        settings = one_instance(sim.base_url, tmp_path, tokens)
        data = settings.model_dump(mode="json")
        data["upstream"]["ca_file"] = str(ca_file)
        data["instances"]["shop-a"]["token"] = tokens["shop-a"]  # (dumped masked)
        wanted = Settings.model_validate(data)
        async with running_bridge(settings) as bridge:
            await eventually(lambda: len(delivered(tmp_path / "events.jsonl", "shop-a")) > 5)
            runner = bridge.runners["shop-a"]
            assert await bridge.apply(wanted) == "invalid"
            assert bridge.runners["shop-a"] is runner
            assert bridge.settings.upstream.ca_file is None
            before = len(delivered(tmp_path / "events.jsonl", "shop-a"))
            await eventually(lambda: len(delivered(tmp_path / "events.jsonl", "shop-a")) > before)
            ca_file.write_text(a_ca_bundle(tmp_path))
            upgrades = sim.stats("shop-a")["upgrades"]
            assert await bridge.apply(wanted) == "applied"
            assert bridge.settings.upstream.ca_file == ca_file
            await eventually(lambda: sim.stats("shop-a")["upgrades"] > upgrades)  # restarted
            await eventually(lambda: bridge.runners["shop-a"].status.connected)
            after = len(delivered(tmp_path / "events.jsonl", "shop-a"))
            await eventually(lambda: len(delivered(tmp_path / "events.jsonl", "shop-a")) > after)


def a_ca_bundle(directory: Path) -> str:
    """A readable CA bundle: a self-signed CA made with openssl (as scripts/services.sh makes
    the suite's); the upstream here is http, so what it trusts is never used."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=reload-ca", "-keyout", str(directory / "ca.key"),
         "-out", str(directory / "made-ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (directory / "made-ca.pem").read_text()
