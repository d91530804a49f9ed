"""Each sink settles every record on its own destination's fate, against real brokers with
real faults: a Kafka ACL revoked at runtime, a topic deleted and recreated with fewer
partitions, a Redis ACL on one stream, Redis out of memory, Redis turned read-only, a
connection reset in the middle of a pipeline's replies, a really full filesystem."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import AnyUrl, SecretStr
from redis.asyncio import Redis

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.pipeline import Record
from bridge.settings import KafkaSinkSettings, RedisSinkSettings
from bridge.sinks.base import Delivered, Failed, Outcome, Rejected
from bridge.sinks.file import FileSink
from bridge.sinks.kafka import KafkaSink
from bridge.sinks.redis import RedisSink
from tests.brokerdump import delete_kafka_topics, keep_kafka_topics
from tests.services import (
    SCRIPT,
    consume_all,
    create_topics,
    read_services,
    read_stream,
    unavailable,
    unique,
)

pytestmark = pytest.mark.integration


def record(destination: str, n: int, key: str = "shop") -> Record:
    value = b'{"event":"message.exchange","n":%d}' % n
    return Record(destination, key.encode(), value, "message.exchange", key, time.time_ns())


def records_for(destinations: Sequence[str], per: int, start: int = 0) -> list[Record]:
    """``per`` records for each destination, interleaved, keyed over five keys."""
    return [record(d, start + n, key=f"shop-{n % 5}") for n in range(per) for d in destinations]


def kinds(outcomes: Sequence[Outcome], batch: Sequence[Record], destination: str) -> set[str]:
    return {
        type(o).__name__
        for o, r in zip(outcomes, batch, strict=True)
        if r.destination == destination
    }


def of(outcomes: Sequence[Outcome], batch: Sequence[Record], destination: str) -> list[Outcome]:
    return [o for o, r in zip(outcomes, batch, strict=True) if r.destination == destination]


# ---- Kafka --------------------------------------------------------------------------------


def kafka_acls(*args: str) -> None:
    """Kafka's AclCommand through the services script (PLAINTEXT listener, a super user)."""
    subprocess.run(
        ["bash", str(SCRIPT), "kafka-acls", *args],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


@pytest.fixture
def secure() -> dict[str, Any]:
    services = read_services()
    if "kafka_sasl_ssl" not in services:
        unavailable("the services run without SASL_SSL; restart them")
    return services


@contextlib.asynccontextmanager
async def started(sink: KafkaSink | RedisSink) -> AsyncIterator[Any]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


@pytest.mark.parametrize("denied_op", ["Write", "All"], ids=["write-denied", "all-denied"])
async def test_kafka_acl_on_one_topic_rejects_only_its_records(
    secure: dict[str, Any], denied_op: str
) -> None:
    """Writes to one topic are denied by an ACL added at runtime (only Write: the produce
    request is refused; All: already asking for the topic's partitions is refused): in the
    same publish calls only that topic's records come back Rejected(not_authorized); the
    other topic's records are Delivered every time and are all in Kafka."""
    plain = secure["kafka"]["bootstrap_servers"]
    prefix = unique("acl")
    denied, open_, dlq = f"{prefix}.denied", f"{prefix}.open", f"{prefix}.dlq"
    await create_topics(plain, [denied, open_, dlq])
    settings = KafkaSinkSettings(
        bootstrap_servers=secure["kafka_sasl_ssl"]["bootstrap_servers"],
        security_protocol="SASL_SSL",
        sasl_username=secure["kafka_sasl_ssl"]["username"],
        sasl_password_file=Path(secure["kafka_sasl_ssl"]["password_file"]),
        ssl_cafile=Path(secure["tls"]["ca_file"]),
    )
    secret = Path(secure["kafka_sasl_ssl"]["password_file"]).read_text(encoding="utf-8").strip()
    user = f"User:{secure['kafka_sasl_ssl']['username']}"
    acls = [["--topic", denied, "--deny-principal", user, "--operation", denied_op]]
    if denied_op == "Write":  # Describe stays allowed: the topic's metadata is readable
        acls.insert(0, ["--topic", denied, "--allow-principal", user, "--operation", "All"])
    first = [denied, open_] if denied_op == "Write" else [open_]
    delivered_open = 0
    async with started(KafkaSink(settings, dlq, password=SecretStr(secret))) as sink:
        batch = records_for(first, 20)
        assert {type(o) for o in await sink.publish(batch)} == {Delivered}
        delivered_open += 20
        try:
            for acl in acls:
                kafka_acls("--add", *acl)
            rejected: list[Outcome] = []
            deadline = time.monotonic() + 30
            while not rejected and time.monotonic() < deadline:
                batch = records_for([denied, open_], 20, start=1000)
                outcomes = await sink.publish(batch)
                assert kinds(outcomes, batch, open_) == {"Delivered"}
                delivered_open += 20
                rejected = [o for o in of(outcomes, batch, denied) if isinstance(o, Rejected)]
            assert rejected, "the ACL never took effect within 30 s"
            assert kinds(outcomes, batch, denied) == {"Rejected"}
            assert {o.reason for o in rejected if isinstance(o, Rejected)} == {"not_authorized"}
        finally:
            for acl in reversed(acls):
                kafka_acls("--remove", "--force", *acl)
    assert len(await consume_all(plain, [open_])) == delivered_open


async def recreate(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again with ``partitions`` (retried while the broker
    still finishes the deletion)."""
    await keep_kafka_topics(bootstrap, [topic])  # for the token grep (tests/brokerdump.py)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while True:
            response = await admin.create_topics([NewTopic(topic, partitions, 1)])
            if all(code == 0 for _, code, *_ in response.topic_errors):
                return
            assert time.monotonic() < deadline, f"cannot recreate {topic}: {response}"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def test_kafka_topic_recreated_with_fewer_partitions(kafka_bootstrap: str) -> None:
    """A topic deleted at runtime and recreated with one partition instead of three: its
    records come back Failed (never Rejected, no exception) until the sink has learned the new
    partitions, then Delivered to partition 0; the other topic's records in the very same
    calls are Delivered every time, and no call waits for the producer's 30 s delivery timeout."""
    prefix = unique("gone")
    gone, steady, dlq = f"{prefix}.gone", f"{prefix}.steady", f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [gone, steady, dlq], partitions=3)
    settings = KafkaSinkSettings(bootstrap_servers=kafka_bootstrap, linger_ms=1)
    steady_sent = 0
    async with started(KafkaSink(settings, dlq)) as sink:
        batch = records_for([gone, steady], 20)
        assert kinds(await sink.publish(batch), batch, gone) == {"Delivered"}
        steady_sent += 20
        await recreate(kafka_bootstrap, gone, 1)
        history: list[str] = []
        longest = 0.0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            batch = records_for([gone, steady], 20, start=100 * (len(history) + 1))
            began = time.monotonic()
            outcomes = await sink.publish(batch)
            longest = max(longest, time.monotonic() - began)
            assert kinds(outcomes, batch, steady) == {"Delivered"}
            steady_sent += 20
            seen = kinds(outcomes, batch, gone)
            assert seen <= {"Failed", "Delivered"}, seen
            history.append("/".join(sorted(seen)))
            if seen == {"Delivered"}:
                break
            await asyncio.sleep(0.2)
        print(  # noqa: T201 - the measured recovery, under pytest -s
            f"\ngone topic outcomes per call: {history}; longest call {longest:.1f} s"
        )
        assert history[-1] == "Delivered", history
    last = {r.value for r in batch if r.destination == gone}
    landed = await consume_all(kafka_bootstrap, [gone])
    assert last <= {m.value for m in landed}
    assert {m.partition for m in landed} == {0}
    assert len(await consume_all(kafka_bootstrap, [steady])) == steady_sent
    assert longest < 10


async def delete_topic(bootstrap: str, topic: str) -> None:
    await delete_kafka_topics(bootstrap, [topic])


async def test_kafka_deleted_topic_is_transient_and_holds_no_other_call(
    kafka_bootstrap: str,
) -> None:
    """With create_topics off, a topic the sink has written to is deleted: publish calls for
    it, running beside calls for another topic, come back Failed (transient, never the DLQ's
    missing_topic) within seconds, while the other topic's calls keep being Delivered
    promptly; once the topic is created again its records are Delivered."""
    prefix = unique("del")
    gone, steady, dlq = f"{prefix}.gone", f"{prefix}.steady", f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [gone, steady, dlq], partitions=3)
    settings = KafkaSinkSettings(bootstrap_servers=kafka_bootstrap, linger_ms=1)
    async with started(KafkaSink(settings, dlq)) as sink:
        warm = records_for([gone, steady], 10)
        assert {type(o) for o in await sink.publish(warm)} == {Delivered}
        await delete_topic(kafka_bootstrap, gone)
        steady_calls: list[float] = []

        async def steady_traffic() -> None:
            for n in range(10):
                batch = records_for([steady], 10, start=1000 + 10 * n)
                began = time.monotonic()
                assert {type(o) for o in await sink.publish(batch)} == {Delivered}
                steady_calls.append(time.monotonic() - began)
                await asyncio.sleep(0.2)

        async def gone_traffic() -> list[set[type]]:
            seen = []
            for n in range(3):
                batch = records_for([gone], 10, start=2000 + 10 * n)
                began = time.monotonic()
                outcomes = await sink.publish(batch)
                seen.append({type(o) for o in outcomes})
                assert time.monotonic() - began < 10
            return seen

        _, gone_seen = await asyncio.gather(steady_traffic(), gone_traffic())
        assert gone_seen[-1] == {Failed}, gone_seen
        assert all(kinds <= {Failed, Delivered} for kinds in gone_seen), gone_seen
        print(  # noqa: T201 - the measured isolation, under pytest -s
            f"\ndeleted topic's calls: {gone_seen}; other topic's longest call "
            f"{max(steady_calls):.2f} s"
        )
        assert max(steady_calls) < 3, steady_calls
        await create_topics(kafka_bootstrap, [gone], partitions=3)
        last: set[type] = set()
        deadline = time.monotonic() + 60
        while last != {Delivered} and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            last = {type(o) for o in await sink.publish(records_for([gone], 10, start=3000))}
        assert last == {Delivered}


async def test_kafka_topic_listed_but_never_written_is_missing_topic(kafka_bootstrap: str) -> None:
    """A topic that existed when the sink started (so the sink listed it) but that the sink
    never delivered to is deleted: its records are Rejected(missing_topic) in the first call,
    the same as after a restart, never retried as a vanished topic."""
    prefix = unique("never")
    idle, dlq = f"{prefix}.idle", f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [idle, dlq])
    settings = KafkaSinkSettings(bootstrap_servers=kafka_bootstrap, linger_ms=1)
    async with started(KafkaSink(settings, dlq)) as sink:
        await delete_topic(kafka_bootstrap, idle)
        outcomes = await sink.publish(records_for([idle], 5))
    assert {type(o) for o in outcomes} == {Rejected}, outcomes
    assert {o.reason for o in outcomes if isinstance(o, Rejected)} == {"missing_topic"}


async def test_kafka_deleted_topic_dead_lettered_after_grace(kafka_bootstrap: str) -> None:
    """A topic the sink delivered to is deleted (grace 3 s): its records are Failed while it
    has been gone less than the grace, then Rejected(missing_topic) naming the deletion; the
    other topic's records in the same calls are Delivered throughout; once the topic is
    created again its records are Delivered (the grace starts afresh)."""
    prefix = unique("grace")
    gone, steady, dlq = f"{prefix}.gone", f"{prefix}.steady", f"{prefix}.dlq"
    await create_topics(kafka_bootstrap, [gone, steady, dlq])
    settings = KafkaSinkSettings(
        bootstrap_servers=kafka_bootstrap, linger_ms=1, vanished_topic_grace_seconds=3
    )
    history: list[tuple[float, str]] = []
    async with started(KafkaSink(settings, dlq)) as sink:
        warm = records_for([gone, steady], 5)
        assert {type(o) for o in await sink.publish(warm)} == {Delivered}
        await delete_topic(kafka_bootstrap, gone)
        began = time.monotonic()
        deadline = began + 30
        while time.monotonic() < deadline:
            batch = records_for([gone, steady], 5, start=100 * (len(history) + 1))
            outcomes = await sink.publish(batch)
            assert kinds(outcomes, batch, steady) == {"Delivered"}
            seen = kinds(outcomes, batch, gone)
            history.append((time.monotonic() - began, "/".join(sorted(seen))))
            if seen == {"Rejected"}:
                break
            assert seen == {"Failed"}, history
            await asyncio.sleep(0.3)
        print(f"\ndeleted topic's outcomes over time: {history}")  # noqa: T201
        assert history[0][1] == "Failed", history
        assert history[-1][1] == "Rejected", history
        assert 3 <= history[-1][0] < 15, history
        rejected = [o for o in of(outcomes, batch, gone) if isinstance(o, Rejected)]
        assert {o.reason for o in rejected} == {"missing_topic"}
        assert "deleted at runtime" in rejected[0].error
        await create_topics(kafka_bootstrap, [gone])
        last: set[type] = set()
        deadline = time.monotonic() + 30
        while last != {Delivered} and time.monotonic() < deadline:
            last = {type(o) for o in await sink.publish(records_for([gone], 5, start=9000))}
            await asyncio.sleep(0.3)
        assert last == {Delivered}


async def test_kafka_renewal_with_tls_files_gone_fails_records(
    secure: dict[str, Any], tmp_path: Path
) -> None:
    """Over SASL_SSL, the producer must be renewed (as after a broken idempotent session: the
    one internal step taken here) while its CA file has really been deleted: publish returns
    Failed naming the TLS files for every record instead of raising; once the file is back
    the renewal succeeds and the same records are Delivered."""
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(Path(secure["tls"]["ca_file"]).read_bytes())
    prefix = unique("tls")
    topic, dlq = f"{prefix}.t", f"{prefix}.dlq"
    await create_topics(secure["kafka"]["bootstrap_servers"], [topic, dlq])
    settings = KafkaSinkSettings(
        bootstrap_servers=secure["kafka_sasl_ssl"]["bootstrap_servers"],
        security_protocol="SASL_SSL",
        sasl_username=secure["kafka_sasl_ssl"]["username"],
        sasl_password_file=Path(secure["kafka_sasl_ssl"]["password_file"]),
        ssl_cafile=cafile,
        linger_ms=1,
    )
    secret = Path(secure["kafka_sasl_ssl"]["password_file"]).read_text(encoding="utf-8").strip()
    batch = records_for([topic], 5)
    async with started(KafkaSink(settings, dlq, password=SecretStr(secret))) as sink:
        cafile.unlink()
        sink._broken = sink._producer  # what a broken idempotent session sets
        outcomes = await sink.publish(batch)
        assert {type(o) for o in outcomes} == {Failed}, outcomes
        assert all("TLS files unusable" in str(o.error) for o in outcomes if isinstance(o, Failed))
        cafile.write_bytes(Path(secure["tls"]["ca_file"]).read_bytes())
        assert {type(o) for o in await sink.publish(batch)} == {Delivered}


# ---- Redis --------------------------------------------------------------------------------


@pytest.fixture
def own_redis(own_redis_process: tuple[str, subprocess.Popen[bytes]]) -> str:
    """A throwaway redis-server on a free port, for tests that change the server's config
    (read-only, maxmemory): the shared test Redis is never touched, even if a timeout kills
    the test before it could undo the change."""
    return own_redis_process[0]


@pytest.fixture
def own_redis_process(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`own_redis`'s URL and its process (to stop and continue it); the process is
    continued and ended after the test, whatever it did to it."""
    port = dead_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not listen within 10 s"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def redis_settings(url: str, prefix: str) -> RedisSinkSettings:
    return RedisSinkSettings(url=AnyUrl(url), stream=prefix + ":{instance}:{event}")


@contextlib.asynccontextmanager
async def admin_client(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def sink_user(
    admin: Redis, user: str, secret: str, keys: list[str], commands: list[str]
) -> None:
    """An ACL user on the test Redis: ``keys`` patterns, ``commands`` besides PING and HELLO."""
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{secret}"],
        keys=keys,
        commands=["-@all", *commands, "+ping", "+hello"],
        reset_keys=True,
        reset_channels=True,
    )


async def test_redis_acl_on_one_stream_rejects_only_its_records(redis_url: str) -> None:
    """An ACL user may write every stream of the prefix except one: that stream's records are
    Rejected(not_authorized) and the others' Delivered, in the same pipeline."""
    prefix = f"ryze:{unique('acl')}"
    denied, allowed = f"{prefix}:denied", f"{prefix}:open"
    user, secret = unique("sinkuser"), unique("pw")
    async with admin_client(redis_url) as admin:
        keys = [f"{prefix}:open*", f"{prefix}:__probe__*"]
        await sink_user(admin, user, secret, keys, ["+xadd", "+multi", "+exec"])
        settings = redis_settings(redis_url, prefix).model_copy(update={"username": user})
        try:
            async with started(RedisSink(settings, password=SecretStr(secret))) as sink:
                batch = records_for([denied, allowed], 10)
                outcomes = await sink.publish(batch)
        finally:
            await admin.acl_deluser(user)
        assert kinds(outcomes, batch, allowed) == {"Delivered"}
        reasons = {o.reason for o in of(outcomes, batch, denied) if isinstance(o, Rejected)}
        assert kinds(outcomes, batch, denied) == {"Rejected"}
        assert reasons == {"not_authorized"}
        assert len(await read_stream(admin, allowed)) == 10
        assert not await admin.exists(denied)


async def test_redis_user_without_transactions_is_refused_at_start(redis_url: str) -> None:
    """An ACL user allowed XADD but not MULTI/EXEC (which keep each stream's records whole)
    is refused when the sink starts, the message naming what to grant."""
    prefix = f"ryze:{unique('nomulti')}"
    user, secret = unique("sinkuser"), unique("pw")
    async with admin_client(redis_url) as admin:
        await sink_user(admin, user, secret, [f"{prefix}:*"], ["+xadd"])
        settings = redis_settings(redis_url, prefix).model_copy(update={"username": user})
        sink = RedisSink(settings, password=SecretStr(secret))
        try:
            with pytest.raises(SinkConfigError) as caught:
                await sink.start()
        finally:
            await sink.close()
            await admin.acl_deluser(user)
    assert "+multi +exec" in str(caught.value)
    assert secret not in str(caught.value)


async def test_redis_out_of_memory_fails_then_delivers(own_redis: str) -> None:
    """With maxmemory just above what Redis uses (noeviction; a Redis of the test's own), XADDs
    are refused with OOM: the stream's records, one transaction, are all Failed (transient,
    never the DLQ) and none of them was applied, so none can land ahead of another when they
    are retried; once the limit is lifted the same records are Delivered, in order."""
    prefix = f"ryze:{unique('oom')}"
    stream = f"{prefix}:s"
    async with (
        admin_client(own_redis) as admin,
        started(RedisSink(redis_settings(own_redis, prefix))) as sink,
    ):
        batch = [large(stream, n) for n in range(20)]
        await admin.config_set("maxmemory-policy", "noeviction")
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", used + 50_000)
        outcomes = await sink.publish(batch)
        await admin.config_set("maxmemory", 0)
        failed = [o for o in outcomes if isinstance(o, Failed)]
        assert len(failed) == len(batch), outcomes
        assert all(isinstance(o.error, SinkUnavailableError) for o in failed)
        assert all("OOM" in str(o.error) or "memory" in str(o.error) for o in failed)
        assert not await admin.exists(stream)
        assert all(isinstance(o, Delivered) for o in await sink.publish(batch))
        ids = [fields[b"id"] for _, fields in await read_stream(admin, stream)]
        assert ids == [r.id.encode() for r in batch]


async def test_redis_that_stops_answering_fails_the_call_within_its_deadline(
    own_redis_process: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis whose process is stopped (SIGSTOP: the kernel still takes the pipeline, nothing
    answers) fails the call's records (transient) once no reply came in time (``IO_SECONDS``
    1 s here: 1-1.5 s), and a PING says unreachable as long; continued, the same records are
    Delivered by the next call."""
    monkeypatch.setattr("bridge.sinks.redis.IO_SECONDS", 1.0)
    url, process = own_redis_process
    prefix = f"ryze:{unique('stopped')}"
    batch = records_for([f"{prefix}:a", f"{prefix}:b"], 5)
    async with started(RedisSink(redis_settings(url, prefix))) as sink:
        assert all(isinstance(o, Delivered) for o in await sink.publish(batch[:2]))
        process.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            outcomes = await sink.publish(batch)
            took = time.monotonic() - began
            assert not await sink.reachable()
        finally:
            process.send_signal(signal.SIGCONT)
        assert {type(o) for o in outcomes} == {Failed}, outcomes
        assert all(
            isinstance(o.error, SinkUnavailableError) and "no reply in time" in str(o.error)
            for o in outcomes
            if isinstance(o, Failed)
        ), outcomes
        assert 1.0 <= took < 5, took  # (at least IO_SECONDS after the write)
        assert all(isinstance(o, Delivered) for o in await sink.publish(batch))
        assert await sink.reachable()


async def test_redis_that_does_not_answer_at_start_is_unreachable(
    own_redis_process: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink started against a Redis whose process is stopped fails its start as the sink
    unreachable (SinkUnavailableError, retried as such) once the PING's deadline passed, not
    with a bare TimeoutError (which reads as the worker crashing)."""
    monkeypatch.setattr("bridge.sinks.redis.IO_SECONDS", 1.0)
    url, process = own_redis_process
    sink = RedisSink(redis_settings(url, f"ryze:{unique('stopped')}"))
    process.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(SinkUnavailableError, match="answer to PING within 1 s"):
            await sink.start()
        assert time.monotonic() - began < 5
    finally:
        process.send_signal(signal.SIGCONT)
        await sink.close()


def large(destination: str, n: int) -> Record:
    value = b'{"n":%d,"pad":"%s"}' % (n, b"x" * 20_000)
    return Record(destination, b"shop", value, "message.exchange", "shop", time.time_ns())


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_redis_read_only_fails_then_delivers(own_redis: str) -> None:
    """Redis (the test's own) turned into a replica of a dead primary (REPLICAOF a closed
    port) refuses writes with READONLY: the records are Failed (transient), and Delivered once
    it is a primary again (REPLICAOF NO ONE)."""
    prefix = f"ryze:{unique('ro')}"
    stream = f"{prefix}:s"
    batch = records_for([stream], 10)
    async with (
        admin_client(own_redis) as admin,
        started(RedisSink(redis_settings(own_redis, prefix))) as sink,
    ):
        await admin.replicaof("127.0.0.1", dead_port())
        outcomes = await sink.publish(batch)
        await admin.replicaof("NO", "ONE")
        assert {type(o) for o in outcomes} == {Failed}, outcomes
        first = outcomes[0]
        assert isinstance(first, Failed)
        assert "READONLY" in str(first.error) or "read only" in str(first.error)
        assert {type(o) for o in await sink.publish(batch)} == {Delivered}
        assert len(await read_stream(admin, stream)) == len(batch)


class ResettingProxy:
    """A TCP proxy to Redis that, once armed, forwards only the first ``keep`` bytes of the
    server's next reply and then resets the client's connection (SO_LINGER 0: an RST)."""

    def __init__(self, host: str, port: int, keep: int) -> None:
        self.target = (host, port)
        self.keep = keep
        self.armed = False
        self.resets = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ResettingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for handler in self.handlers:  # connections still open: closed with their sockets
            handler.cancel()
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        upstream = asyncio.create_task(self._pipe(reader, up_writer))
        try:
            await self._replies(up_reader, writer)
        finally:
            upstream.cancel()
            up_writer.close()
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self.armed:
                    data = await self._more(reader, data)
                    self.armed = False
                    self.resets += 1
                    writer.write(data[: self.keep])
                    await writer.drain()
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

    async def _more(self, reader: asyncio.StreamReader, data: bytes) -> bytes:
        """Gather at least ``keep`` bytes of the reply (bounded wait) before cutting it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while len(data) <= self.keep:
                    data += await reader.read(65536)
        return data


@contextlib.asynccontextmanager
async def proxied(
    proxy_type: type[ResettingProxy], redis_url: str, prefix: str, keep: int
) -> AsyncIterator[tuple[ResettingProxy, RedisSink, Redis]]:
    """A Redis sink started through a proxy of ``proxy_type`` to the test Redis, and an admin
    client of that Redis."""
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    async with proxy_type(host, int(port), keep=keep) as proxy, admin_client(redis_url) as admin:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with started(RedisSink(redis_settings(url, prefix))) as sink:
            yield proxy, sink, admin


async def test_redis_connection_reset_mid_pipeline(redis_url: str) -> None:
    """The connection is reset (RST) after part of a pipeline's replies came back, with one
    record for each of 50 streams: the records whose reply was read are Delivered, the rest
    Failed (they may have been written: at least once), publish raises nothing, and the next
    call reconnects and delivers them."""
    prefix = f"ryze:{unique('rst')}"
    streams = [f"{prefix}:s{n}" for n in range(50)]
    batch = records_for(streams, 1)
    async with proxied(ResettingProxy, redis_url, prefix, keep=200) as (proxy, sink, admin):
        proxy.armed = True
        outcomes = await sink.publish(batch)
        assert proxy.resets == 1
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, Failed)]
        delivered = [i for i, o in enumerate(outcomes) if isinstance(o, Delivered)]
        assert 0 < len(delivered) < len(batch), "some replies forwarded before the reset"
        # replies are read in order: a prefix Delivered, every record after it Failed
        assert delivered == list(range(len(delivered)))
        assert failed == list(range(len(delivered), len(batch)))
        again = [batch[i] for i in failed]
        assert {type(o) for o in await sink.publish(again)} == {Delivered}
        print(f"\nreset after {len(delivered)} of {len(batch)} replies")  # noqa: T201
        for stream, sent in zip(streams, batch, strict=True):
            ids = {fields[b"id"] for _, fields in await read_stream(admin, stream)}
            assert ids == {sent.id.encode()}


async def test_redis_connection_reset_inside_a_transaction(redis_url: str) -> None:
    """50 records of one stream (one MULTI … EXEC) and the connection reset before EXEC's
    reply came back: every record is Failed, none reported delivered; once retried each is
    in the stream, the first copies in the order sent (the transaction was applied whole or
    not at all, so a retry can only repeat it, never put a record ahead of another)."""
    batch, outcomes, ids = await failed_then_delivered(ResettingProxy, redis_url, 50, keep=200)
    assert {type(o) for o in outcomes} == {Failed}, outcomes
    sent = [r.id.encode() for r in batch]
    assert ids in (sent, sent * 2), "applied whole once or twice, never in part"


async def failed_then_delivered(
    proxy_type: type[ResettingProxy], redis_url: str, count: int, keep: int
) -> tuple[list[Record], list[Outcome], list[bytes]]:
    """``count`` records of one stream published once through an armed proxy of
    ``proxy_type`` (their outcomes), then again until Delivered; the stream's ids after."""
    prefix = f"ryze:{unique('proxied')}"
    stream = f"{prefix}:s"
    batch = records_for([stream], count)
    async with proxied(proxy_type, redis_url, prefix, keep=keep) as (proxy, sink, admin):
        proxy.armed = True
        outcomes = await sink.publish(batch)
        assert proxy.resets == 1
        assert {type(o) for o in await sink.publish(batch)} == {Delivered}
        ids = [fields[b"id"] for _, fields in await read_stream(admin, stream)]
    return batch, outcomes, ids


class CorruptingProxy(ResettingProxy):
    """A TCP proxy to Redis that, once armed, turns the first byte of the server's next
    reply into one RESP does not know (``?``): the client reads a reply it cannot parse."""

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self.armed:
                    self.armed = False
                    self.resets += 1
                    data = b"?" + data[1:]
                writer.write(data)
                await writer.drain()


async def test_redis_unparsable_reply_fails_records(redis_url: str) -> None:
    """A reply that is not RESP (InvalidResponse, not a connection error) in the middle of a
    pipeline: publish raises nothing, the records whose reply was not read are Failed naming
    the error, and the next call, on a fresh connection, delivers them."""
    batch, outcomes, ids = await failed_then_delivered(CorruptingProxy, redis_url, 20, keep=0)
    assert {type(o) for o in outcomes} == {Failed}, outcomes
    first = outcomes[0]
    assert isinstance(first, Failed)
    assert "InvalidResponse" in str(first.error) or "Protocol" in str(first.error)
    # the first pipeline was applied though its replies were unreadable: at least once
    assert sorted(ids) == sorted([r.id.encode() for r in batch] * 2)


# ---- file ---------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, unmounted afterwards (mounting needs root)."""
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill(where: Path) -> Path:
    """Write a file until the filesystem is really full (ENOSPC); return it."""
    filler = where / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


async def test_file_sink_full_disk_fails_then_delivers(small_fs: Path) -> None:
    """On a really full filesystem (ENOSPC) publish returns Failed for every record instead of
    raising, leaves no partial line behind, and delivers the same records once space frees;
    each line is then a whole JSON object, each record exactly once."""
    sink = FileSink(small_fs / "events.jsonl", "dead.jsonl")
    await sink.start()
    try:
        batch = [large("ryze:shop:message.exchange", n) for n in range(8)]
        filler = fill(small_fs)
        outcomes = await sink.publish(batch)
        assert {type(o) for o in outcomes} == {Failed}, outcomes
        assert all("write failed" in str(o.error) for o in outcomes if isinstance(o, Failed))
        assert (small_fs / "events.jsonl").stat().st_size == 0
        filler.unlink()
        assert {type(o) for o in await sink.publish(batch)} == {Delivered}
    finally:
        await sink.close()
    lines = (small_fs / "events.jsonl").read_bytes().splitlines()
    assert sorted(json.loads(line)["data"]["n"] for line in lines) == list(range(8))


def drain_fifo(path: Path) -> tuple[threading.Thread, bytearray]:
    """Read the FIFO at ``path`` in a thread, a little at a time, from when a writer opens
    it (the open of each side waits for the other) until every writer has closed it."""
    received = bytearray()

    def read() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 4096):
                received.extend(chunk)
        finally:
            os.close(fd)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, received


async def test_file_sink_concurrent_calls_never_interleave(tmp_path: Path) -> None:
    """Eight publish calls in flight at once, each with 600 KB of lines for its own
    destination, into a named pipe (where the kernel splits a write larger than the pipe's
    buffer, so two unlocked writers do interleave): every line read from the pipe is one
    whole record and each call's lines are contiguous."""
    path = tmp_path / "events.jsonl"
    os.mkfifo(path)
    reader, received = drain_fifo(path)
    sink = FileSink(path, "dead.jsonl")
    await sink.start()
    try:
        calls = [[large(f"dest-{c}", n) for n in range(30)] for c in range(8)]
        results = await asyncio.gather(*(sink.publish(batch) for batch in calls))
    finally:
        await sink.close()
    reader.join(timeout=30)
    assert not reader.is_alive(), "the pipe was not closed within 30 s"
    assert all(isinstance(o, Delivered) for outcomes in results for o in outcomes)
    lines = [json.loads(line) for line in bytes(received).splitlines()]
    order = [line["destination"] for line in lines]
    assert len(order) == 8 * 30
    runs = [d for i, d in enumerate(order) if i == 0 or order[i - 1] != d]
    assert sorted(runs) == sorted(f"dest-{c}" for c in range(8))


async def test_file_sink_bad_descriptor_fails_records(tmp_path: Path) -> None:
    """The events file's descriptor is really closed behind the sink (EBADF on fstat and
    write): publish returns Failed naming the error for every event record instead of
    raising, and close() still succeeds."""
    sink = FileSink(tmp_path / "events.jsonl", "dead.jsonl")
    await sink.start()
    assert sink._events is not None  # opened by start
    os.close(sink._events.fileno())
    try:
        outcomes = await sink.publish(records_for(["ryze:shop:message.exchange"], 5))
    finally:
        await sink.close()
    assert {type(o) for o in outcomes} == {Failed}, outcomes
    assert all("write failed" in str(o.error) for o in outcomes if isinstance(o, Failed))
