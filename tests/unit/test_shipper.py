"""The shipper's link to the main process: what it counts arrives in the main process's
metrics unchanged, nothing it is given or inherits carries an instance token, its messages
are typed and validated at the boundary (a malformed one ends the link, logged, on either
side), and both deliveries keep the one Delivery protocol."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.delivery import Delivery, LocalDelivery, build_delivery
from bridge.errors import LinkError
from bridge.logs import configure_logging
from bridge.metrics import create_metrics, observe_all
from bridge.metrics_sink import apply_sink_side, sink_side_changes, sink_side_values
from bridge.settings import Settings
from bridge.shipper.link import (
    FROM_SHIPPER,
    TO_SHIPPER,
    Ack,
    Init,
    Mark,
    Problem,
    Reading,
    decode,
    frame,
    receive,
)
from bridge.shipper.parent import ShipperDelivery, init_message, shipper_environment
from bridge.spool import Acked, Position
from tests.unit.spools import disk_spool

SINK_LINES = ("events_published", "publish_latency", "publish_errors", "sink_up", "dlq_records")


def sink_lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(
        line
        for line in text.splitlines()
        if not line.startswith("#") and any(name in line for name in SINK_LINES)
    )


def test_what_the_shipper_counts_reaches_the_main_process_unchanged() -> None:
    """Counters, the sink_up gauge and the latency histogram (buckets and sum), carried
    over in two reports, read the same in the main process as in the shipper."""
    shipper = create_metrics()
    main = create_metrics()
    before = sink_side_values(shipper)
    shipper.events_published.labels("kafka", "message.status").inc(5)
    shipper.sink_up.labels("kafka").set(1)
    observe_all(shipper.publish_latency.labels("kafka"), [0.002, 0.003, 0.2, 7.0])
    middle = sink_side_values(shipper)
    apply_sink_side(main, sink_side_changes(before, middle))
    shipper.events_published.labels("kafka", "message.status").inc(2)
    shipper.publish_errors.labels("kafka", "SinkUnavailableError").inc()
    shipper.sink_up.labels("kafka").set(0)
    shipper.dlq_records.labels("too_large").inc()
    observe_all(shipper.publish_latency.labels("kafka"), [0.0004, 45.0])
    apply_sink_side(main, sink_side_changes(middle, sink_side_values(shipper)))
    assert sink_lines(main.registry) == sink_lines(shipper.registry)
    assert any('ryze_bridge_events_published_total{' in line and line.endswith(" 7.0")
               for line in sink_lines(main.registry))  # fmt: skip


def test_nothing_that_did_not_move_is_reported() -> None:
    """Two readings without a change between them give no change (pure)."""
    metrics = create_metrics()
    metrics.events_published.labels("kafka", "other").inc()
    values = sink_side_values(metrics)
    assert sink_side_changes(values, sink_side_values(metrics)) == []


def test_the_shipper_gets_no_instance_token() -> None:
    """Its environment keeps Python's variables only, and its init message the sink, spool
    and event-loop sections: an instance token given inline or by variable is in neither."""
    environ = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
               "SHOP_TOKEN": "tok-secret-1", "RYZE_BRIDGE__SINK__KIND": "kafka"}  # fmt: skip
    assert shipper_environment(environ) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
    }
    settings = Settings.model_validate(
        {
            "instances": {
                "shop": {"token": "tok-secret-2"},
                "desk": {"token_env": "SHOP_TOKEN"},
            }
        }
    )
    message = init_message(settings, None, Position(1, 0))
    assert "tok-secret" not in repr(message)
    assert "SHOP_TOKEN" not in repr(message)
    assert set(message.settings) == {"sink", "spool", "event_loop"}
    assert Settings.model_validate(message.settings).sink == settings.sink
    assert decode(TO_SHIPPER, frame(message)[4:]) == message  # as the shipper reads it


async def test_messages_survive_the_framing() -> None:
    """A message framed on one side is read whole on the other; a peer gone reads as None."""
    reader = asyncio.StreamReader()
    change = ("events_published", "", [("event", "message.status"), ("sink", "kafka")], 2.0)
    ack = Ack([Acked(1, 2, 3, 4, 5)], [change])
    reader.feed_data(frame(ack) + frame(Problem(None)))
    reader.feed_eof()
    assert await receive(reader, FROM_SHIPPER) == ack
    assert await receive(reader, FROM_SHIPPER) == Problem(None)
    assert await receive(reader, FROM_SHIPPER) is None


def test_a_shipper_that_cannot_finish_still_exits() -> None:
    """Once its main process is gone, the shipper ends within the bound even when something
    keeps its event loop from finishing (here: a sleep that ignores everything)."""
    code = (
        "from bridge.shipper.child import exit_after; import time\n"
        "exit_after(0.2, 3)\n"
        "time.sleep(30)"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], check=False, timeout=20)
    assert done.returncode == 3
    assert time.monotonic() - started < 10


MALFORMED = {
    "garbage": b"\xc1\xc1",
    "an unknown kind": msgspec.msgpack.encode(["hello", 1]),
    "the other side's kind": msgspec.msgpack.encode(["mark", 1, 2]),
    "a field of the wrong type": msgspec.msgpack.encode(["reading", "one"]),
    "a field missing": msgspec.msgpack.encode(["ack", [{"segment": 1}]]),
    "a positional list of old": msgspec.msgpack.encode(["ack", [[1, 2, 3, 4, 5]], []]),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_message_is_a_link_error(body: bytes) -> None:
    """Whatever is not one of its side's messages (with every field of its type) raises
    LinkError as it is read, never an IndexError or a half-read message further on."""
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack("<I", len(body)) + body)
    reader.feed_eof()
    with pytest.raises(LinkError, match="not a message"):
        await receive(reader, FROM_SHIPPER)


async def test_a_message_longer_than_the_bound_is_a_link_error() -> None:
    """A length prefix over MAX_MESSAGE is refused before anything is read after it."""
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack("<I", 1 << 31))
    with pytest.raises(LinkError, match="bytes"):
        await receive(reader, TO_SHIPPER)


async def test_the_main_process_ends_a_link_that_sends_a_malformed_message(
    tmp_path: Path,
) -> None:
    """The main process applies the shipper's messages until one is not a message: that one
    is logged (shipper.link_broken) and the link is over (the shipper is then killed and
    started again like any shipper that ends); what came before it was applied."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    spool = disk_spool(tmp_path / "spool", when_full="drop_oldest")
    delivery = ShipperDelivery(Settings(), spool, create_metrics(), environ={})
    reader = asyncio.StreamReader()
    reader.feed_data(frame(Reading(7)) + frame(Mark(1, 2)) + frame(Problem("never read")))
    assert await asyncio.wait_for(delivery._hear(reader), 5) is False
    spool.close()
    assert delivery.problem != "never read"
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line[:1] == "{"]
    assert [line["event"] for line in lines] == ["shipper.link_broken"]
    assert "mark" in lines[0]["error"]


async def test_the_shipper_ends_a_link_that_sends_a_malformed_message(tmp_path: Path) -> None:
    """A real shipper process, started as the main process starts it: after a valid init
    it reports; a malformed message then ends it with exit code 1 and shipper.link_broken
    in its log, within seconds."""
    settings = Settings.model_validate(
        {
            "sink": {"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
            "spool": {"dir": str(tmp_path / "spool")},
            "log": {"format": "json"},
        }
    )
    spool = disk_spool(tmp_path / "spool")
    ours, theirs = socket.socketpair()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.shipper", str(theirs.fileno()),
        pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    theirs.close()
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(sock=ours)
        start = Init(settings.model_dump(mode="json", include={"sink", "spool", "event_loop"}),
                     "info", "json", None, spool.acked_position())  # fmt: skip
        writer.write(frame(start))
        report = receive(reader, FROM_SHIPPER)
        first = await asyncio.wait_for(report, 30)
        assert first is not None, "the shipper reports once it runs"
        body = msgspec.msgpack.encode(["mark", "one", 2])
        writer.write(struct.pack("<I", len(body)) + body)
        assert await asyncio.wait_for(process.wait(), 30) == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if writer is not None:
            writer.close()
            await writer.wait_closed()
        spool.close()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "shipper.link_broken" in log


def test_both_deliveries_keep_the_one_protocol(tmp_path: Path) -> None:
    """The supervisor sees one Delivery protocol whichever place the worker runs in; what
    tells them apart for the pacer is the protocol's own property, no flag read by type."""
    spool = disk_spool(tmp_path / "spool")
    file_sink = {"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}}
    apart = Settings.model_validate({"sink": {**file_sink, "separate_process": True}})
    together = Settings.model_validate({"sink": {**file_sink, "separate_process": False}})
    shipper = build_delivery(apart, spool, create_metrics(), environ={})
    local = build_delivery(together, spool, create_metrics(), environ={})
    spool.close()
    assert isinstance(shipper, ShipperDelivery)
    assert isinstance(local, LocalDelivery)
    for delivery in (shipper, local):
        assert isinstance(delivery, Delivery)
    assert (shipper.shares_loop_with_readers, local.shares_loop_with_readers) == (False, True)
    assert not hasattr(shipper, "swap")
    assert not hasattr(local, "in_process")


def test_every_acknowledgement_carries_the_metrics_that_moved_with_it() -> None:
    """Each acknowledgement carries what moved since the one before: an acknowledged record is
    not published again, so a count left for a later report would be lost with a shipper
    killed before it (the soak's accounting found 6 such publishes after a shipper kill)."""
    from bridge.shipper.link import Ack, AcksOverLink, Message  # noqa: PLC0415

    sent: list[Message] = []
    counted = [0.0]

    def moved() -> list[tuple[str, str, list[tuple[str, str]], float]]:
        amount, counted[0] = counted[0], 0.0
        return [("events_published", "x", [], amount)] if amount else []

    acks = AcksOverLink(sent.append, moved)
    for amount in (3.0, 2.0, 0.0, 1.0):
        counted[0] = amount
        acks.acked([])
    assert [m.metrics for m in sent if isinstance(m, Ack)] == [
        [("events_published", "x", [], 3.0)],
        [("events_published", "x", [], 2.0)],
        [],
        [("events_published", "x", [], 1.0)],
    ]
