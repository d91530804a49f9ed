"""The Kafka consumer examples meet records the bridge did not write, on a topic their default
pattern matches: a record without a ``ryze-id`` header is logged and skipped (every one of
them, not just the later ones as de-duplication by an empty id did), and the Python example
also logs and skips a tombstone and a value that is not JSON instead of crashing before its
commit; each commits past them. A de-duplication window below one id is refused at start."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from examples.dedup import SeenWindow
from tests.consumers.test_polyglot import build, example, lines_of, read_everything
from tests.services import create_topics, unique

START_LIMIT = 60.0  # seconds for an example to refuse its arguments (a JVM on a busy machine)
Headers = list[tuple[str, bytes]]


def bridge_headers(record_id: str | None, instance: str) -> Headers:
    headers = [("ryze-event", b"message.exchange"), ("ryze-instance", instance.encode())]
    return headers if record_id is None else [("ryze-id", record_id.encode()), *headers]


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, Headers]]) -> None:
    """The records, in order, into partition 0 of a new one-partition topic (keyed: a
    tombstone needs a key)."""
    await create_topics(bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, key=b"k", partition=0, headers=headers)
    finally:
        await producer.stop()


def skip_lines(out: Path, topic: str) -> list[str]:
    """The example's standard-error lines about skipping a record of ``topic``."""
    text = (out / "stderr").read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if "skipped" in line and topic in line]


@pytest.mark.integration
@pytest.mark.parametrize("language", ["java", "go", "node", "python"])
def test_records_without_an_id_are_logged_and_skipped(
    language: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two records without a ryze-id before two of the bridge's: the example prints exactly
    the two with an id, logs a skip for each id-less one, and its group commits the end."""
    instance = unique("foreign")
    topic = f"ryze.{instance}.message.exchange"
    valid = [unique("id"), unique("id")]
    value = json.dumps({"event": "message.exchange", "data": {}}).encode()
    records: list[tuple[bytes | None, Headers]] = [
        (value, bridge_headers(None, instance)),
        (value, bridge_headers(None, instance)),
    ]
    records += [(value, bridge_headers(record_id, instance)) for record_id in valid]
    asyncio.run(produce(kafka_bootstrap, topic, records))
    group = unique("group")
    ex = example(language, kafka_bootstrap, group)
    if ex.build:
        build(ex.build)
    read_everything(
        ex.command, ex.cwd, tmp_path, group=group, wanted=set(valid), topics=[topic],
        bootstrap=kafka_bootstrap, instances=frozenset({instance}),
    )  # fmt: skip
    assert [line["id"] for line in lines_of(tmp_path, frozenset({instance}))] == valid
    skips = skip_lines(tmp_path, topic)
    assert len(skips) == 2, skips
    assert all("ryze-id" in line for line in skips)


@pytest.mark.integration
def test_python_example_skips_values_that_are_not_json(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A tombstone, bytes that are not JSON, a JSON array and a gap marker without data, each
    with a ryze-id, before one of the bridge's records: the Python example logs and skips the
    four, prints the last one and commits past all of them (it used to crash before its
    commit, and so again on every restart)."""
    instance = unique("foreign")
    topic = f"ryze.{instance}.message.exchange"
    good = unique("id")
    gap = [("ryze-id", unique("id").encode()), ("ryze-event", b"bridge.gap"),
           ("ryze-instance", instance.encode())]  # fmt: skip
    records: list[tuple[bytes | None, Headers]] = [
        (None, bridge_headers(unique("id"), instance)),
        (b"\xff not json", bridge_headers(unique("id"), instance)),
        (b"[1, 2]", bridge_headers(unique("id"), instance)),
        (b"{}", gap),
        (json.dumps({"event": "message.exchange"}).encode(), bridge_headers(good, instance)),
    ]
    asyncio.run(produce(kafka_bootstrap, topic, records))
    group = unique("group")
    ex = example("python", kafka_bootstrap, group)
    read_everything(
        ex.command, ex.cwd, tmp_path, group=group, wanted={good}, topics=[topic],
        bootstrap=kafka_bootstrap, instances=frozenset({instance}),
    )  # fmt: skip
    assert [line["id"] for line in lines_of(tmp_path, frozenset({instance}))] == [good]
    skips = skip_lines(tmp_path, topic)
    assert len(skips) == 4, skips


@pytest.mark.parametrize("language", ["java", "go", "node"])
def test_a_window_below_one_id_is_refused(language: str, tmp_path: Path) -> None:
    """-window 0 (or --window 0) ends the example at once with exit status 2 and a message
    naming the option, before it connects (Go's used to panic at the first record)."""
    ex = example(language, "127.0.0.1:9", unique("group"))
    build(ex.build)
    option = "-window" if language == "go" else "--window"
    done = subprocess.run(
        [*ex.command, option, "0"], cwd=ex.cwd, capture_output=True, text=True,
        timeout=START_LIMIT, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "window must be" in done.stderr


def test_python_window_below_one_id_is_refused() -> None:
    """The Python examples' SeenWindow refuses a size below one (it would drop nothing)."""
    with pytest.raises(ValueError, match="at least one id"):
        SeenWindow(0)
    assert SeenWindow(1).first_time("a")
