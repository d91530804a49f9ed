"""The consumer examples in Java, Go, Node, kcat and Python, run with their default topic
pattern against the real Kafka the bridge wrote to: each reports every record exactly once
(duplicates from a SIGKILL and a replayed batch dropped by ``ryze-id``), the gap markers
included, and never reads the DLQ; the Go DLQ example reports every dead letter with its
reason and original event."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from bridge.settings import EVENT_NAMES, SinkSettings
from bridge.simulator import SimConfig, Simulator
from tests.consumers.test_examples import replay
from tests.integration.harness import eventually, kafka_sink
from tests.integration.test_faults import bridge_config, start_bridge, stop
from tests.services import consume_all, from_the_start, topic_partitions, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DLQ = "ryze.dlq"  # the bridge's default, which every example's default pattern must leave out
UNROUTED = "custom.unrouted"  # an event whose topic nobody created: a missing_topic dead letter
BUILD_LIMIT = 300.0  # seconds a fresh build may take on a loaded 2-core machine
READ_LIMIT = 90.0  # seconds for an example to read everything and commit it


@dataclass(frozen=True)
class Relayed:
    """What the bridge wrote for this module's instances (ids are ``ryze-id``s)."""

    instances: frozenset[str]
    topics: tuple[str, ...]
    events: frozenset[str]
    gaps: dict[str, str]  # id -> instance
    dead: dict[str, tuple[str, str | None]]  # id -> (reason, the frame's event or None)
    records: int  # records in the topics, duplicates included


@dataclass(frozen=True)
class Example:
    """How to build one example and the command that runs it with its defaults."""

    build: str  # the examples/build.sh target
    command: tuple[str, ...]
    cwd: Path


def example(name: str, bootstrap: str, group: str) -> Example:
    java_cp = "target/classes:target/lib/*"
    examples = {
        "java": Example(
            "java",
            ("java", "-cp", java_cp, "ryze.examples.EventsConsumer", "--bootstrap", bootstrap,
             "--group", group),
            EXAMPLES / "java",
        ),
        "go": Example(
            "go", ("bin/events", "-bootstrap", bootstrap, "-group", group), EXAMPLES / "go"
        ),
        "node": Example(
            "node",
            ("node", "consumer.js", "--bootstrap", bootstrap, "--group", group),
            EXAMPLES / "node",
        ),
        "kcat": Example("kcat", ("bash", "kcat/consume.sh", bootstrap, group), EXAMPLES),
        "python": Example(
            "",
            (sys.executable, "-m", "examples.kafka_consumer", "--bootstrap", bootstrap,
             "--group", group),
            ROOT,
        ),
    }  # fmt: skip
    return examples[name]


def build(target: str) -> float:
    """Run ``examples/build.sh target``; its duration. A tool that cannot be had skips the test
    (fails under CI=true, like the other services)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", str(EXAMPLES / "build.sh"), target],
            capture_output=True,
            text=True,
            timeout=BUILD_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building the {target} example took over {BUILD_LIMIT:.0f} s")
    if done.returncode != 0:
        message = f"cannot build the {target} example: {done.stderr[-2000:]}"
        if os.environ.get("CI") == "true" or os.environ.get("BRIDGE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return time.monotonic() - started


async def ensure_topics(bootstrap: str, names: list[str]) -> None:
    """Create ``names``; one that exists already (the shared default DLQ) is fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            try:
                await admin.create_topics([NewTopic(name, 3, 1)])
            except TopicAlreadyExistsError:
                continue
    finally:
        await admin.close()


def unrouted_frame(instance: str) -> bytes:
    return json.dumps(
        {
            "event": UNROUTED,
            "data": {"id": unique("unrouted")},
            "instanceData": {"instance": instance},
        }
    ).encode()


async def relay(bootstrap: str, tmp: Path) -> Relayed:
    """The bridge relays two instances from the simulator under the default topic template
    (``ryze.{event}``, shared with other tests: only these instances' records count) and DLQ,
    is SIGKILLed mid-stream and started again (re-deliveries, gap markers); each instance
    also sends a malformed frame, one without an event and one of an event whose topic does
    not exist (three dead letters); then a batch of records is re-sent byte for byte."""
    tokens = {unique("shop"): "tok-poly-shop-1", unique("desk"): "tok-poly-desk-2"}
    topics = [f"ryze.{e}" for e in (*EVENT_NAMES, "bridge.gap")]
    await ensure_topics(bootstrap, [*topics, DLQ])
    async with Simulator(SimConfig(instances=tokens, rate=300)) as sim:
        sink = kafka_sink(bootstrap, SinkSettings().kafka.topic, DLQ)
        path = bridge_config(tmp, sim.base_url, tokens, sink)
        first = await start_bridge(path, tokens)
        await eventually(lambda: all(sim.stats(n)["frames_sent"] > 300 for n in tokens), 30)
        for name in tokens:
            assert await sim.send_malformed(name)
            assert await sim.send_without_event(name)
            assert await sim.send_raw(name, unrouted_frame(name))
        await eventually(lambda: all(sim.stats(n)["frames_sent"] > 600 for n in tokens), 30)
        await stop(first, signal.SIGKILL)
        second = await start_bridge(path, tokens)
        await eventually(lambda: all(sim.stats(n)["upgrades"] == 2 for n in tokens), 30)
        await asyncio.sleep(1.0)
        for name in tokens:
            sim.pause(name)
        await asyncio.sleep(2.0)
        await stop(second)
    everything = await consume_all(bootstrap, topics)
    records = [r for r in everything if header(r, "ryze-instance") in tokens]
    await replay(bootstrap, records[:50])
    dead = [r for r in await consume_all(bootstrap, [DLQ]) if header(r, "ryze-instance") in tokens]
    return summarize(frozenset(tokens), topics, records, dead)


def summarize(
    instances: frozenset[str], topics: list[str], records: list[Any], dead: list[Any]
) -> Relayed:
    """The distinct ids of event records, gap markers and dead letters (50 records re-sent)."""
    gaps = [r for r in records if r.topic.endswith(".bridge.gap")]
    return Relayed(
        instances=instances,
        topics=tuple(topics),
        events=frozenset(header(r, "ryze-id") for r in records if r not in gaps),
        gaps={header(r, "ryze-id"): header(r, "ryze-instance") for r in gaps},
        dead={
            header(r, "ryze-id"): (header(r, "ryze-dlq-reason"), frame_event(r.value)) for r in dead
        },
        records=len(records) + 50,
    )


def header(record: Any, name: str) -> str:
    return str(dict(record.headers)[name].decode())


def frame_event(value: bytes) -> str | None:
    try:
        document = json.loads(value)
    except ValueError:
        return None
    event = document.get("event") if isinstance(document, dict) else None
    return event if isinstance(event, str) else None


@pytest.fixture(scope="module")
def relayed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Relayed:
    return asyncio.run(relay(kafka_bootstrap, tmp_path_factory.mktemp("polyglot")))


async def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets; none while its coordinator is not there yet (a fresh
    broker creates its offsets topic on the first group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return {}
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    partitions = await topic_partitions(bootstrap, topics)
    consumer = await from_the_start(bootstrap)
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end for tp, end in ends.items() if end > 0}


def caught_up(committed: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> bool:
    return all(committed.get(tp, -1) >= end for tp, end in ends.items())


@contextmanager
def running(command: tuple[str, ...], cwd: Path, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The example runs in its own process group, its output in ``out``/stdout and stderr
    (and what it was given in ``out``/raw, when it copies that to $RAW); on leaving, SIGTERM
    (a bounded wait), then SIGKILL."""
    env = {**os.environ, "RAW": str(out / "raw")}
    with (out / "stdout").open("wb") as stdout, (out / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True, env=env
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def lines_of(out: Path, instances: frozenset[str]) -> list[dict[str, Any]]:
    """The complete JSON lines printed so far about ``instances`` (the default pattern also
    reads other tests' ``ryze.*`` topics on the shared broker)."""
    text = (out / "stdout").read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return [line for line in lines if line.get("instance") in instances]


def given(out: Path, missing: set[str]) -> str:
    """For an example that copies its input to ``out``/raw (kcat's): how many of the
    ``missing`` ids it was given and how far from its end the first of them came, which tells
    a record never read from one read but not handled."""
    raw = out / "raw"
    if not missing or not raw.exists():
        return ""
    lines = raw.read_text(encoding="utf-8", errors="replace").splitlines()
    found = {n: i for n, line in enumerate(lines) for i in missing if i in line}
    if not found:
        return f"; none of them in its input of {len(lines)} lines"
    return (
        f"; {len(set(found.values()))} of them in its input of {len(lines)} lines, the first "
        f"{len(lines) - min(found)} lines from its end"
    )


def read_everything(
    command: tuple[str, ...],
    cwd: Path,
    out: Path,
    *,
    group: str,
    wanted: set[str],
    topics: list[str],
    bootstrap: str,
    instances: frozenset[str],
) -> dict[tuple[str, int], int]:
    """Run the example until it printed every wanted id and its group committed the end of
    ``topics`` (so the duplicates behind the originals were read too); the group's offsets."""
    ends = asyncio.run(end_offsets(bootstrap, topics))
    deadline = time.monotonic() + READ_LIMIT
    with running(command, cwd, out) as process:
        while True:
            seen = {line["id"] for line in lines_of(out, instances)}
            committed = asyncio.run(group_offsets(bootstrap, group))
            if seen >= wanted and caught_up(committed, ends):
                return committed
            stderr = (out / "stderr").read_text(encoding="utf-8", errors="replace")[-3000:]
            assert process.poll() is None, f"{command[0]} exited early: {stderr}"
            assert time.monotonic() < deadline, (
                f"{command[0]}: {len(seen & wanted)} of {len(wanted)} ids (missing "
                f"{sorted(wanted - seen)[:3]}{given(out, wanted - seen)}) and "
                f"caught up={caught_up(committed, ends)} after {READ_LIMIT:.0f} s: {stderr}"
            )
            time.sleep(1.0)


@pytest.mark.parametrize("language", ["java", "go", "node", "kcat", "python"])
def test_example_reports_every_record_once_with_its_gap_markers_and_no_dead_letter(
    language: str,
    relayed: Relayed,
    kafka_bootstrap: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Run with its default pattern, each example prints one line per distinct ryze-id of
    the bridge's topics (events and gap markers), never a re-delivered one twice, and does not
    subscribe to the DLQ (its group holds no DLQ offset, and it skipped no dead letter)."""
    group = unique("group")
    ex = example(language, kafka_bootstrap, group)
    seconds = build(ex.build) if ex.build else 0.0
    record_property("build_seconds", round(seconds, 1))
    wanted = set(relayed.events) | set(relayed.gaps)
    assert relayed.records > len(wanted)  # there are re-deliveries to drop
    assert len(relayed.gaps) >= 2 * len(relayed.instances)  # a start and a restart each
    committed = read_everything(
        ex.command, ex.cwd, tmp_path, group=group, wanted=wanted, topics=list(relayed.topics),
        bootstrap=kafka_bootstrap, instances=relayed.instances,
    )  # fmt: skip
    lines = lines_of(tmp_path, relayed.instances)
    counts = Counter(line["id"] for line in lines)
    assert set(counts) == wanted
    assert max(counts.values()) == 1
    gaps = {line["id"]: line["instance"] for line in lines if line["event"] == "bridge.gap"}
    assert gaps == relayed.gaps
    assert DLQ not in {topic for topic, _ in committed}
    assert "dead letter" not in (tmp_path / "stderr").read_text(encoding="utf-8", errors="replace")


def test_go_dlq_example_reports_each_dead_letter_with_its_reason_and_event(
    relayed: Relayed, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The Go DLQ reader prints every dead letter once (re-deliveries dropped) with the
    reason the bridge gave and the frame's own event name (null when the bytes are not JSON
    or have none): malformed_json, unknown_shape and missing_topic here."""
    build("go")
    group = unique("dlq-group")
    command = ("bin/dlq", "-bootstrap", kafka_bootstrap, "-group", group, "-topic", DLQ)
    read_everything(
        command, EXAMPLES / "go", tmp_path, group=group, wanted=set(relayed.dead), topics=[DLQ],
        bootstrap=kafka_bootstrap, instances=relayed.instances,
    )  # fmt: skip
    lines = lines_of(tmp_path, relayed.instances)
    assert Counter(line["id"] for line in lines).most_common(1)[0][1] == 1
    assert {line["id"]: (line["reason"], line["event"]) for line in lines} == relayed.dead
    reasons = Counter(reason for reason, _ in relayed.dead.values())
    assert reasons == {"malformed_json": 2, "unknown_shape": 2, "missing_topic": 2}
    assert {event for reason, event in relayed.dead.values() if reason == "missing_topic"} == {
        UNROUTED
    }
    assert all(line["error"] for line in lines)
