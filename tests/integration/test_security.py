"""Secure connections against servers set up that way: Kafka SASL_SSL with SCRAM, Redis TLS
with ACL users, the upstream over wss with a private CA; no secret ever printed."""

from __future__ import annotations

import asyncio
import io
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.errors import SinkConfigError
from bridge.logs import configure_logging
from bridge.runner import Runner
from bridge.settings import EVENT_NAMES, Settings
from bridge.simulator import SimConfig, Simulator
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.redis import RedisSink
from bridge.wiring import build_sink
from tests.integration.harness import counter, eventually, running_bridge, scrape, settings_for
from tests.services import consume, create_topics, read_services, unavailable, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    services = read_services()
    if "kafka_sasl_ssl" not in services:
        unavailable("the services run without TLS; restart them: scripts/services.sh down && up")
    return services


def password(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def kafka_secure(secure: dict[str, Any], prefix: str, **override: Any) -> dict[str, Any]:
    kafka = {
        "bootstrap_servers": secure["kafka_sasl_ssl"]["bootstrap_servers"],
        "topic": prefix + ".{instance}.{event}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": secure["kafka_sasl_ssl"]["username"],
        "sasl_password_env": "KAFKA_PASSWORD",
        "ssl_cafile": secure["tls"]["ca_file"],
    }
    kafka.update(override)
    return {"kind": "kafka", "dlq": f"{prefix}.dlq", "kafka": kafka}


async def test_kafka_sasl_ssl_scram_delivers(secure: dict[str, Any], tmp_path: Path) -> None:
    """Through a SASL_SSL listener with SCRAM-SHA-512 and the test CA, every frame arrives;
    logs and /metrics never show the password or the instance token."""
    prefix = unique("sasl")
    plain = secure["kafka"]["bootstrap_servers"]
    await create_topics(plain, [f"{prefix}.shop.{e}" for e in EVENT_NAMES] + [f"{prefix}.dlq"])
    secret = password(secure["kafka_sasl_ssl"]["password_file"])
    token = "tok-secure-shop-5150"
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    async with Simulator(SimConfig(instances={"shop": token}, rate=200)) as sim:
        settings = settings_for(
            sim.base_url, tmp_path, instances={"shop": {"token": token}},
            sink=kafka_secure(secure, prefix),
        )  # fmt: skip
        async with running_bridge(settings, environ={"KAFKA_PASSWORD": secret}) as bridge:
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 300)
            sim.pause("shop")
            sent = sim.stats("shop")["frames_sent"]
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= sent
            )
            metrics = await scrape(bridge.admin.port)
            instances = await scrape(bridge.admin.port, "/instances")
        config_file = tmp_path / "bridge.yaml"
        config_file.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
        checked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "check-config", "--config", str(config_file)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "KAFKA_PASSWORD": secret},
        )  # fmt: skip
    records = await consume(plain, [f"{prefix}.shop.{e}" for e in EVENT_NAMES], sent, 20)
    assert len(records) == sent
    assert checked.returncode == 0, checked.stderr
    for text in (logs.getvalue(), metrics, instances, checked.stdout + checked.stderr):
        assert secret not in text
        assert token not in text


def sink_settings(sink: dict[str, Any]) -> Settings:
    return Settings.model_validate({"sink": sink})


@pytest.mark.parametrize(
    ("override", "env_password", "cause"),
    [
        ({}, "wrong-password-9f9f", "SASL authentication"),
        ({"ssl_cafile": "OTHER_CA"}, None, "not trusted"),
    ],
    ids=["wrong-password", "untrusted-ca"],
)
async def test_kafka_wrong_password_or_ca_fails_clearly(
    secure: dict[str, Any], override: dict[str, Any], env_password: str | None, cause: str
) -> None:
    """A wrong password and an untrusted CA each stop the Kafka sink with an error that names
    the sink and the cause, and never contains the password."""
    if override.get("ssl_cafile") == "OTHER_CA":
        override = {"ssl_cafile": secure["tls"]["other_ca_file"]}
    real = password(secure["kafka_sasl_ssl"]["password_file"])
    used = env_password or real
    sink = build_sink(
        sink_settings(kafka_secure(secure, "x", **override)), {"KAFKA_PASSWORD": used}
    )
    assert isinstance(sink, KafkaSink)
    with pytest.raises(SinkConfigError) as caught:
        await sink.start()
    # aiokafka closes a refused connection without waiting for its TLS shutdown; on a loaded
    # machine the test's loop could close first, leaving the socket to the collector
    await asyncio.sleep(0.5)
    message = str(caught.value)
    assert message.startswith("kafka:")
    assert cause in message
    assert used not in message
    assert real not in message


def redis_secure(secure: dict[str, Any], prefix: str, user: str) -> dict[str, Any]:
    return {
        "kind": "redis",
        "dlq": "ryze:" + prefix + ":dlq",
        "redis": {
            "url": secure["redis_tls"]["url"],
            "stream": "ryze:" + prefix + ":{instance}:{event}",
            "username": user,
            "password_env": "REDIS_PASSWORD",
            "ssl_ca_file": secure["tls"]["ca_file"],
        },
    }


async def test_redis_tls_acl_user_delivers(secure: dict[str, Any], tmp_path: Path) -> None:
    """Over rediss:// with the test CA, an ACL user allowed only XADD on ryze:* delivers."""
    prefix = unique("tls")
    secret = password(secure["redis_tls"]["password_file"])
    async with Simulator(SimConfig(instances={"shop": "tok-redis-tls-1"}, rate=200)) as sim:
        settings = settings_for(
            sim.base_url, tmp_path, instances={"shop": {"token": "tok-redis-tls-1"}},
            sink=redis_secure(secure, prefix, secure["redis_tls"]["username"]),
        )  # fmt: skip
        async with running_bridge(settings, environ={"REDIS_PASSWORD": secret}) as bridge:
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 200)
            sim.pause("shop")
            sent = sim.stats("shop")["frames_sent"]
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") >= sent
            )


async def test_redis_user_without_xadd_is_refused_at_start(secure: dict[str, Any]) -> None:
    """A user without the XADD permission is refused when the sink starts, with a message
    naming the missing permission (and not the password)."""
    secret = password(secure["redis_tls"]["password_file"])
    sink = build_sink(
        sink_settings(redis_secure(secure, "noperm", secure["redis_tls"]["reader"])),
        {"REDIS_PASSWORD": secret},
    )
    assert isinstance(sink, RedisSink)
    with pytest.raises(SinkConfigError) as caught:
        await sink.start()
    await sink.close()
    assert "may not XADD" in str(caught.value)
    assert "+xadd" in str(caught.value)
    assert secret not in str(caught.value)


async def test_wss_sockets_share_one_tls_context_built_once(
    secure: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``upstream.ca_file`` (the system's trust; here the private CA made the
    system's through ``SSL_CERT_FILE``), every instance's ``wss://`` socket uses one TLS
    context, built once: left to the libraries each socket built its own from the whole CA
    store (~0.8 MB and ~29 ms of CPU a socket)."""
    tls = secure["tls"]
    monkeypatch.setenv("SSL_CERT_FILE", tls["ca_file"])
    names = {f"shop-{n}": f"tok-wss-{n}" for n in range(3)}
    config = SimConfig(
        instances=names,
        preconfigured=True,  # (the REST client keeps its own trust: the upgrades alone here)
        rate=5,
        tls_cert=tls["server_cert"],
        tls_key=tls["server_key"],
    )
    async with Simulator(config) as sim:
        instances = {name: {"token": token} for name, token in names.items()}
        settings = settings_for(
            sim.base_url, tmp_path, instances=instances,
            sink={"kind": "file", "file": {"path": str(tmp_path / "out.jsonl")}},
        )  # fmt: skip
        async with running_bridge(settings) as bridge:
            await eventually(lambda: all(sim.stats(name)["open_sockets"] == 1 for name in names))
            contexts = {id(context_of(bridge.runners[name])) for name in names}
            assert len(contexts) == 1
            first = bridge.runners["shop-0"]
            assert isinstance(first, Runner)
            await first.reconnect()  # a reconnect takes the same context, not a new one
            await eventually(lambda: sim.stats("shop-0")["upgrades"] == 2)
            await eventually(lambda: sim.stats("shop-0")["open_sockets"] == 1)
            await eventually(lambda: first.status.connected)
            assert id(context_of(first)) in contexts


def context_of(runner: object) -> ssl.SSLContext:
    """The TLS context of a runner's open socket, as its transport reports it."""
    assert isinstance(runner, Runner)
    source = runner._source
    assert source is not None
    assert source._connection is not None
    context = source._connection.transport.get_extra_info("sslcontext")
    assert isinstance(context, ssl.SSLContext)
    return context


async def test_upstream_wss_with_private_ca(secure: dict[str, Any], tmp_path: Path) -> None:
    """The simulator served over https/wss with a certificate of the private CA: the bridge
    connects with upstream.ca_file, and without it the instance never connects (TLS refused)."""
    tls = secure["tls"]
    config = SimConfig(
        instances={"shop": "tok-wss-1"},
        rate=50,
        tls_cert=tls["server_cert"],
        tls_key=tls["server_key"],
    )
    async with Simulator(config) as sim:
        assert sim.base_url.startswith("https://")
        trusted = settings_for(
            sim.base_url, tmp_path / "a", instances={"shop": {"token": "tok-wss-1"}},
            sink={"kind": "file", "file": {"path": str(tmp_path / "a.jsonl")}},
            upstream={"ca_file": tls["ca_file"]},
        )  # fmt: skip
        async with running_bridge(trusted) as bridge:
            await eventually(lambda: sim.stats("shop")["open_sockets"] == 1)
            await eventually(
                lambda: counter(bridge.metrics, "ryze_bridge_events_published_total") > 10
            )
        untrusted = settings_for(
            sim.base_url, tmp_path / "b", instances={"shop": {"token": "tok-wss-1"}},
            sink={"kind": "file", "file": {"path": str(tmp_path / "b.jsonl")}},
        )  # fmt: skip
        upgrades = sim.stats("shop")["upgrades"]
        async with running_bridge(untrusted) as bridge:
            # the upgrade goes first (the config check follows an open socket): TLS refuses it
            await eventually(lambda: bridge.runners["shop"].status.state == "reconnecting")
            assert counter(bridge.metrics, "ryze_bridge_ensure_total") == 0
        assert sim.stats("shop")["upgrades"] == upgrades
