"""``ryze-bridge demo`` run for a few seconds, as a user would: what it prints is true.

It runs until everything is checked, then gets Ctrl-C (SIGINT), so a busy machine makes it
slower, not wrong.

The admin address it prints answers (metrics, and the printed status command lists the demo's
instances), the printed check-config command accepts the config file it names, the sample
record is an event record of the output file, and no instance token is printed or written.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from bridge.demo import DEMO_INSTANCES
from bridge.pipeline.gap import GAP_EVENT
from bridge.settings import load_settings

pytestmark = pytest.mark.slow

COMMAND = Path(sys.executable).parent / "ryze-bridge"
RUN_SECONDS = 90.0
LINE_SECONDS = 30.0
USERS_CONFIG = "# my own bridge\ninstances: {my-shop: {}}\n"


async def read_until(stream: asyncio.StreamReader, prefix: str, seen: list[str]) -> str:
    """Lines into ``seen`` until one starts with ``prefix``; that line (bounded per line)."""
    while True:
        raw = await asyncio.wait_for(stream.readline(), LINE_SECONDS)
        assert raw, f"the demo ended before a line starting {prefix!r}:\n" + "\n".join(seen)
        line = raw.decode("utf-8").rstrip("\n")
        seen.append(line)
        if line.startswith(prefix):
            return line


async def shell(command: str, env: dict[str, str], cwd: Path) -> str:
    """A printed command line, run as a user would type it; its output (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), LINE_SECONDS)
    assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{out.decode()}"
    return out.decode("utf-8")


async def test_demo_prints_where_to_look_and_a_sample_record(tmp_path: Path) -> None:
    """The demo prints its bound admin URL, the metrics URL, the config file and output file,
    the status/check-config commands and the first event record, and each of them is real.
    A user's own bridge.yaml in the output's folder (the quickstart's file name) is untouched."""
    (tmp_path / "ryze-demo").mkdir()
    users = tmp_path / "ryze-demo" / "bridge.yaml"
    users.write_text(USERS_CONFIG, encoding="utf-8")
    env = {**os.environ, "PATH": f"{COMMAND.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "demo",  # no --duration: it runs until Ctrl-C, sent once everything is checked
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(RUN_SECONDS):
            metrics_url = (await read_until(proc.stdout, "metrics  ", seen)).split()[1]
            status = (await read_until(proc.stdout, "  ryze-bridge status ", seen)).strip()
            check = (await read_until(proc.stdout, "  ryze-bridge check-config ", seen)).strip()
            await read_until(proc.stdout, "first event record in ryze-demo/events.jsonl:", seen)
            sample = (await read_until(proc.stdout, "  {", seen)).strip()
            async with httpx.AsyncClient() as client:  # while it runs
                response = await client.get(metrics_url)
            assert response.status_code == 200
            assert "ryze_bridge_events_received_total" in response.text
            table = await shell(status, env, tmp_path)
            assert all(name in table for name in DEMO_INSTANCES), table
            effective = await shell(check, env, tmp_path)
            proc.send_signal(signal.SIGINT)
            rest, errors = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    printed = "\n".join(seen) + rest.decode("utf-8") + errors.decode("utf-8")
    assert proc.returncode == 0, printed
    assert seen[1] == metrics_url.removesuffix("/metrics").join(("admin    ", "  ")) + (
        "(/metrics, /healthz, /readyz, /instances)"
    )
    assert "config   ryze-demo/ryze-demo.yaml" in seen
    assert "output   ryze-demo/events.jsonl" in seen
    assert rest.decode("utf-8").splitlines()[-1].startswith("stopped: ")

    output = (tmp_path / "ryze-demo" / "events.jsonl").read_bytes()
    matching = [
        line for line in output.splitlines() if line.decode().startswith(sample.rstrip("…"))
    ]
    assert matching, f"the sample is no line of the output: {sample}"
    assert orjson.loads(matching[0])["event"] != GAP_EVENT
    assert len(sample) <= 300

    settings = load_settings(tmp_path / "ryze-demo" / "ryze-demo.yaml")
    assert settings.sink.file.path == Path("ryze-demo/events.jsonl")
    assert sorted(settings.instances) == sorted(DEMO_INSTANCES)
    assert "demo-token" not in printed + effective
    assert b"demo-token" not in output
    assert users.read_text(encoding="utf-8") == USERS_CONFIG


async def test_demo_refuses_to_overwrite_a_config_it_did_not_write(tmp_path: Path) -> None:
    """A file at the demo's config path that the demo did not write is left as it is: the
    demo says so on stderr and exits 2 before starting anything; a config an earlier demo
    run wrote is not in the way (the first test rewrites it)."""
    foreign = tmp_path / "ryze-demo.yaml"
    foreign.write_text(USERS_CONFIG, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        str(COMMAND), "demo", "--duration", "1", "--output", "events.jsonl",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, errors = await asyncio.wait_for(proc.communicate(), LINE_SECONDS)
    assert proc.returncode == 2, out.decode() + errors.decode()
    assert "ryze-demo.yaml exists and was not written by the demo" in errors.decode()
    assert foreign.read_text(encoding="utf-8") == USERS_CONFIG
    assert not (tmp_path / "events.jsonl").exists()
