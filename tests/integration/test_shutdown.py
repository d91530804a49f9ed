"""Graceful stop of the real process: SIGTERM mid-stream loses nothing it had received."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import yaml

from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, expected_value
from tests.services import consume_all, create_topics, unique

pytestmark = pytest.mark.integration


async def test_sigterm_delivers_everything_received_and_exits_0(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A bridge process streaming into Kafka gets SIGTERM: it stops reading, delivers every
    frame it had received, and exits 0 well within its shutdown timeout."""
    prefix = unique("term")
    tokens = {"shop-a": "tok-term-a-5555", "shop-b": "tok-term-b-6666"}
    topics = [f"{prefix}.{i}.{e}" for i in tokens for e in EVENT_NAMES]
    await create_topics(kafka_bootstrap, [*topics, f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances=tokens, rate=300, record_frames=True)) as sim:
        config = {
            "upstream": {"base_url": sim.base_url},
            "instances": {name: {"token_env": f"TOKEN_{n}"} for n, name in enumerate(tokens)},
            "sink": {
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "kafka": {
                    "bootstrap_servers": kafka_bootstrap,
                    "topic": prefix + ".{instance}.{event}",
                },
            },
            "spool": {"dir": str(tmp_path / "spool")},
            "admin": {"host": "127.0.0.1", "port": 0},
            "shutdown_timeout": 20,
        }
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {f"TOKEN_{n}": token for n, token in enumerate(tokens.values())}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(path),
            env={**env, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await eventually(lambda: all(sim.stats(n)["frames_sent"] >= 500 for n in tokens), 30)
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=25)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        logs = (await process.stdout.read()).decode() if process.stdout else ""
        assert code == 0, logs[-3000:]
        await eventually(lambda: all(sim.stats(n)["open_sockets"] == 0 for n in tokens), 5)
        sent = {name: sim.sent_frames(name) for name in tokens}
    records = await consume_all(kafka_bootstrap, topics)
    values = sorted(r.value for r in records)
    expected = sorted(expected_value(f, tokens[n]) for n, frames in sent.items() for f in frames)
    assert values == expected
    assert '"event": "bridge.stopped"' in logs
    for token in tokens.values():
        assert token not in logs
