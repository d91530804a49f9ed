"""Simulator conformance, as a process: ``python -m bridge.simulator`` prints its URL,
serves REST, WebSocket and the control API, and stops cleanly (exit 0) on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from tests.simulator.helpers import closed_by_server

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^simulator listening on (http://127\.0\.0\.1:(\d+))$")


@contextlib.asynccontextmanager
async def simulator_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start the simulator on a free port; yield the process and its base URL; kill it if the
    test left it running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.simulator",
        "--port",
        "0",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            line = (await process.stdout.readline()).decode().strip()
        match = LISTENING.match(line)
        assert match, f"unexpected first line {line!r}"
        assert int(match.group(2)) > 0
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(10):
            await process.communicate()


async def stop(process: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[int, bytes]:
    """Send ``sig``; the exit code within 10 s and what was left on stderr."""
    process.send_signal(sig)
    async with asyncio.timeout(10):
        _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr


async def test_cli_serves_and_stops_on_sigterm() -> None:
    """``--instances 2 --rate 20`` serves inst-000/inst-001 with tok-000/tok-001: after a
    config POST, tok-000 streams inst-000 (frames carry tok-000), tok-001 is refused on
    inst-000 (403); SIGTERM closes the open socket (1001) and the process exits 0 within
    10 s."""
    async with simulator_process("--instances", "2", "--rate", "20") as (process, base_url):
        assert process.stdout is not None
        async with asyncio.timeout(5):
            second = json.loads(await process.stdout.readline())
        assert second == {"instances": ["inst-000", "inst-001"]}
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            posted = await client.post(
                "/api/events/websocket/inst-000",
                json={"enabled": True},
                headers={"token": "tok-000"},
            )
            assert posted.status_code == 200
            foreign = await client.get(
                "/api/events/getWebsocket/inst-000", headers={"token": "tok-001"}
            )
            assert foreign.status_code == 403
        url = base_url.replace("http://", "ws://") + "/ws/inst-000"
        async with connect(
            url, additional_headers={"token": "tok-000"}, open_timeout=5, ping_interval=None
        ) as ws:
            async with asyncio.timeout(5):
                frame = orjson.loads(await ws.recv())
            assert frame["instanceData"] == {
                "baseUrl": base_url,
                "instance": "inst-000",
                "token": "tok-000",
            }
            code, stderr = await stop(process, signal.SIGTERM)
            assert code == 0, stderr.decode()
            closed = await closed_by_server(ws)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1001
        assert b"Traceback" not in stderr


async def test_cli_stops_on_sigint() -> None:
    """SIGINT stops the simulator cleanly too (exit 0, no traceback)."""
    async with simulator_process() as (process, _):
        code, stderr = await stop(process, signal.SIGINT)
        assert code == 0
        assert b"Traceback" not in stderr


async def test_cli_config_file_and_control_api(tmp_path: Path) -> None:
    """``--config`` (YAML) adds named instances and account tokens, ``--preconfigured``
    starts every config enabled, ``--rate-limit`` sets the bucket, and the ``/_sim``
    control API answers without a token."""
    config = tmp_path / "sim.yaml"
    config.write_text(
        "instances:\n  shop: tok-shop\naccount_tokens: [tok-acct]\n", encoding="utf-8"
    )
    args = ("--config", str(config), "--preconfigured", "--rate-limit", "3")
    async with simulator_process(*args) as (process, base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            got = await client.get(
                "/api/events/getWebsocket/shop", headers={"Authorization": "Bearer tok-acct"}
            )
            assert got.status_code == 200
            assert got.json()["websocket"] == {"enabled": True, "events": [], "mediaBase64": False}
            assert got.headers["X-RateLimit-Limit"] == "3"
            stats = await client.get("/_sim/stats")
            assert stats.status_code == 200
            assert stats.json()["requests"] == 1
            assert (await client.post("/_sim/unknown", json={})).status_code == 404
        code, _ = await stop(process, signal.SIGTERM)
        assert code == 0


async def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    """An unreadable ``--config`` makes the process exit 2 with a message on stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.simulator",
        "--port",
        "0",
        "--config",
        str(tmp_path / "missing.yaml"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        stdout, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"bad --config" in stderr
    assert stdout == b""
