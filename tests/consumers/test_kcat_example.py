"""The kcat example (examples/kcat/consume.sh) against the real Kafka, with the records the
bridge writes: it prints a quiet stream's last records as they come (not when more input
arrives), and a SIGTERM to it or to its process group, even while its output is not read,
lets it print everything kcat committed before it stops, so a restart in the same group
skips nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import pytest
from aiokafka import AIOKafkaProducer

from bridge.pipeline.records import Record
from tests.consumers.test_polyglot import EXAMPLES, build, group_offsets
from tests.services import create_topics, unique

pytestmark = pytest.mark.integration

SCRIPT = EXAMPLES / "kcat" / "consume.sh"
WAIT = 30.0  # seconds for any one step on a loaded 2-core machine


def records(instance: str, count: int) -> list[Record]:
    """``count`` distinct call.update records of ``instance`` as the bridge makes them."""
    return [
        Record(
            destination=f"ryze.{instance}.call.update",
            key=None,
            value=json.dumps({"event": "call.update", "data": {"n": n}}).encode(),
            event="call.update",
            instance=instance,
            received_ns=time.time_ns(),
        )
        for n in range(count)
    ]


async def produce(bootstrap: str, batch: list[Record]) -> None:
    """Write ``batch`` to its (one-partition) topic, in order."""
    await create_topics(bootstrap, {r.destination for r in batch}, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(r.destination, r.value, headers=r.headers()) for r in batch]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


@contextmanager
def consuming(
    bootstrap: str, group: str, instance: str, stdout: int | IO[bytes], stderr: IO[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    """consume.sh reading ``instance``'s topics in ``group``, in its own process group; on
    leaving, whatever still runs in that group is SIGKILLed (kcat and awk too, should the
    script have ended without them)."""
    pattern = rf"^ryze\.{instance}\..+"
    process = subprocess.Popen(
        ["bash", str(SCRIPT), bootstrap, group, pattern],
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def printed(text: str) -> list[str]:
    """The ids of the complete JSON lines in ``text``."""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line)["id"] for line in complete.splitlines() if line.strip()]


def wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT:.0f} s: {what}"
        time.sleep(0.5)


def test_a_quiet_streams_last_records_are_printed_as_they_come(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Five records (under 1 KB of kcat output, then nothing more) are all printed while
    kcat waits for more: awk handles each line as it arrives (mawk on its own waits for 4 KB
    of input, which lost the last records of every quiet stream)."""
    build("kcat")
    instance = unique("quiet")
    batch = records(instance, 5)
    asyncio.run(produce(kafka_bootstrap, batch))
    out = tmp_path / "stdout"
    with (
        out.open("wb") as stdout,
        (tmp_path / "stderr").open("wb") as stderr,
        consuming(kafka_bootstrap, unique("group"), instance, stdout, stderr) as process,
    ):
        wait_for(
            lambda: len(printed(out.read_text())) == 5 or process.poll() is not None, "5 printed"
        )
        assert process.poll() is None, (tmp_path / "stderr").read_text()
    assert printed(out.read_text()) == [r.id for r in batch]


@pytest.mark.parametrize("target", ["group", "script"])
def test_sigterm_with_unread_output_prints_all_it_committed_and_a_restart_skips_nothing(
    target: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With its output unread (awk blocked writing, the pipe from kcat full, kcat blocked),
    the example's group commits offsets past what it printed; a SIGTERM to its process group
    (Ctrl-C, systemd) or to the script alone (a container's PID 1) then lets awk print, once
    its output is read, every record up to the offset kcat commits as it closes, and a second
    run in the group prints the rest: every id, none skipped."""
    build("kcat")
    instance = unique("term")
    group = unique("group")
    batch = records(instance, 3000)  # some 450 KB of kcat output, far over two pipes
    topic = batch[0].destination
    asyncio.run(produce(kafka_bootstrap, batch))

    def committed() -> int:
        return asyncio.run(group_offsets(kafka_bootstrap, group)).get((topic, 0), 0)

    with (
        (tmp_path / "stderr1").open("wb") as stderr,
        consuming(kafka_bootstrap, group, instance, subprocess.PIPE, stderr) as first,
    ):
        wait_for(lambda: committed() > 0, "a commit while nothing was read")
        if target == "group":
            os.killpg(first.pid, signal.SIGTERM)
        else:
            first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=WAIT)  # read to the end: awk drains, kcat closes
    first_ids = printed(out.decode())
    stopped_at = committed()
    assert 0 < stopped_at < len(batch)  # it stopped mid-stream
    assert first_ids == [r.id for r in batch[: len(first_ids)]]
    assert len(first_ids) >= stopped_at, (tmp_path / "stderr1").read_text()

    out2 = tmp_path / "stdout2"
    with (
        out2.open("wb") as stdout,
        (tmp_path / "stderr2").open("wb") as stderr,
        consuming(kafka_bootstrap, group, instance, stdout, stderr),
    ):
        wait_for(lambda: set(first_ids) | set(printed(out2.read_text())) >= {r.id for r in batch},
                 "every id over two runs")  # fmt: skip
    second_ids = printed(out2.read_text())
    assert second_ids[0] == batch[stopped_at].id  # read again from the committed offset
    assert set(first_ids) | set(second_ids) == {r.id for r in batch}
