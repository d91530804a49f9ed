"""Per-frame cost of the bridge's own work, in microseconds (no sockets, no broker):

    python -m bench.micro [--frames 50000]

- ``pipeline``: decode, cut the token, route, id (``Pipeline.process``);
- ``spool``: append to the disk spool (fsync never) 64 at a time, as one read off a socket
  brings them, and read back + ack in batches by the tail: following the writer as the
  appends go (in the same process, direct calls), and after them (as a shipper that
  starts behind); and closely: each append of 64 read back and acknowledged at once, as a
  worker that keeps up does in one process (``--spool-only``: these lines alone, repeated,
  ``--per-append 2`` for a quiet stream, where the per-read cost shows);
- ``kafka batch``: append to aiokafka batch builders as the Kafka sink does, headers and
  zstd compression of each full batch included (no network);
- ``sink worker``: the worker's own bookkeeping (window, lanes, acknowledgements, counts)
  from a list of records into a sink that accepts everything at once, the records on one
  destination and spread over six (as ``ryze.{event}`` spreads them).

Frames come from the simulator's frame factory (the fixtures), ~600 B text messages. Used to
say what each optimisation bought, beside the end-to-end benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from bridge.metrics import create_metrics
from bridge.pipeline import Frame, Publish, Record
from bridge.settings import InstanceSettings, KafkaSinkSettings, Settings
from bridge.simulator.frames import FrameFactory
from bridge.sinks.base import DELIVERED, Outcome
from bridge.sinks.kafka import _Batches
from bridge.sinks.worker import SinkWorker
from bridge.spool import READ_MAX_BYTES
from bridge.spool.disk import DiskSpool
from bridge.spool.tail import SpoolTail, follow
from bridge.upstream.ws import BATCH_FRAMES
from bridge.wiring import build_pipeline

TOKEN = "tok-micro-0000"  # noqa: S105 - not a secret
READ_BATCH = BATCH_FRAMES


def frames(count: int) -> list[Frame]:
    factory = FrameFactory("shop", TOKEN, "http://127.0.0.1", {"message.exchange": 1}, seed=1)
    now = time.time_ns()
    # one receipt time per read, as the reader stamps them
    return [
        Frame("shop", factory.build(media_base64=False)[1], now + i // READ_BATCH)
        for i in range(count)
    ]


def per_frame(seconds: float, count: int) -> float:
    return seconds / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--spool-only", action="store_true", help="only the spool's lines")
    parser.add_argument("--rounds", type=int, default=1, help="with --spool-only: repeated")
    parser.add_argument(
        "--per-append", type=int, default=READ_BATCH, help="with --spool-only: records per append"
    )
    args = parser.parse_args()
    batch = frames(args.frames)
    if args.spool_only:
        await spool_only(batch, args.rounds, args.per_append)
        return
    settings = Settings.model_validate({"sink": {"kind": "kafka"}})
    pipeline = build_pipeline(settings, InstanceSettings(token=TOKEN))
    pipeline = type(pipeline)(
        pipeline.router, pipeline.dlq, pipeline.max_value_bytes, pipeline.event_filter,
        TOKEN.encode(),
    )  # fmt: skip
    started = time.perf_counter()
    results = [pipeline.process(f) for f in batch]
    process_us = per_frame(time.perf_counter() - started, len(batch))
    records = [r.record for r in results if isinstance(r, Publish)]
    with tempfile.TemporaryDirectory() as tmp:
        spool = DiskSpool(Path(tmp), 1 << 32, "drop_newest", "never", 50)
        spool.open()
        tail = follow(spool)
        started = time.perf_counter()
        for start in range(0, len(records), READ_BATCH):  # as the runner: one read at a time
            spool.append_all(records[start : start + READ_BATCH])
            await asyncio.sleep(0)
        append_us = per_frame(time.perf_counter() - started, len(records))
        started = time.perf_counter()
        while spool.stats().events:
            got = await tail.read(1000)
            tail.ack(len(got))
        read_us = per_frame(time.perf_counter() - started, len(records))
        tail.close()
        spool.close()
    tail_us = per_frame(await tail_reads(records), len(records))
    close_us = per_frame((await follow_closely(records, READ_BATCH))[1], len(records))
    batch_us = per_frame(kafka_batches(records, settings), len(records))
    worker_us = per_frame(await worker_drains(records, 1), len(records))
    worker6_us = per_frame(await worker_drains(records, 6), len(records))
    print(f"pipeline.process      {process_us:6.2f} µs/frame")
    print(f"spool append          {append_us:6.2f} µs/frame")
    print(f"spool read + ack      {read_us:6.2f} µs/frame  (the tail, following the appends)")
    print(f"spool tail read + ack {tail_us:6.2f} µs/frame  (the tail, started after them)")
    print(f"spool close read+ack  {close_us:6.2f} µs/frame  (each append read back at once)")
    print(f"kafka batch           {batch_us:6.2f} µs/frame")
    print(f"sink worker           {worker_us:6.2f} µs/frame  (one destination)")
    print(f"sink worker           {worker6_us:6.2f} µs/frame  (six destinations)")


def publishable(batch: list[Frame]) -> list[Record]:
    """The records the pipeline makes of ``batch`` (not timed)."""
    settings = Settings.model_validate({"sink": {"kind": "kafka"}})
    pipeline = build_pipeline(settings, InstanceSettings(token=TOKEN))
    results = [pipeline.process(f) for f in batch]
    return [r.record for r in results if isinstance(r, Publish)]


async def spool_only(batch: list[Frame], rounds: int, per_append: int) -> None:
    """The spool's lines alone, ``rounds`` times (to compare two versions of the spool); the
    close follow with ``per_append`` records per append (fewer: more of the tail's per-read
    cost in each record's)."""
    records = publishable(batch)
    for _ in range(rounds):
        append_s, read_s = await follow_closely(records, per_append)
        tail_s = await tail_reads(records)
        print(
            f"close follow: append {per_frame(append_s, len(records)):5.2f}  "
            f"read+ack {per_frame(read_s, len(records)):5.2f}  "
            f"| tail behind: read+ack {per_frame(tail_s, len(records)):5.2f} µs/record",
            flush=True,
        )


async def follow_closely(records: list[Record], per_append: int) -> tuple[float, float]:
    """Seconds spent appending ``records`` ``per_append`` at a time (64: as one busy read off
    a socket brings them) and seconds spent reading each append back and acknowledging it
    at once, through :func:`follow` (the one-process mode with a worker that keeps up)."""
    append_s = read_s = 0.0
    clock = time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        spool = DiskSpool(Path(tmp), 1 << 32, "drop_newest", "never", 50)
        spool.open()
        tail = follow(spool)
        for start in range(0, len(records), per_append):
            t0 = clock()
            spool.append_all(records[start : start + per_append])
            t1 = clock()
            got = await tail.read(1000)
            tail.ack(len(got))
            read_s += clock() - t1
            append_s += t1 - t0
        assert not spool.stats().events, "every record read and acknowledged"
        tail.close()
        spool.close()
    return append_s, read_s


class AcceptingSink:
    """Accepts every record at once: what is left to time is the worker's own work."""

    kind = "bench"

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        return [DELIVERED] * len(records)

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def bounded(records: list[Record], max_bytes: int) -> list[Record]:
    """The leading ``records`` that fit in ``max_bytes`` (the first one in any case)."""
    batch: list[Record] = []
    size = 0
    for record in records:
        size += record.size
        if batch and size > max_bytes:
            break
        batch.append(record)
    return batch


class ListReader:
    """Hands out a list of records, in order (the spool's reading half without the disk: what
    is left to time is the worker's own work)."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.read_to = 0
        self.acked = 0
        self.empty = asyncio.Event()

    async def read(self, max_records: int, max_bytes: int = READ_MAX_BYTES) -> list[Record]:
        if self.read_to >= len(self.records):
            await asyncio.Event().wait()  # all handed out: nothing ever comes
        batch = bounded(self.records[self.read_to : self.read_to + max_records], max_bytes)
        self.read_to += len(batch)
        return batch

    def ack(self, count: int) -> None:
        self.acked += count
        if self.acked >= len(self.records):
            self.empty.set()

    def rewind(self) -> None:
        self.read_to = self.acked


async def worker_drains(records: list[Record], destinations: int) -> float:
    """Seconds for a sink worker to move ``records`` (spread over ``destinations``) from a
    list into :class:`AcceptingSink` (preparing the list is not timed)."""
    spread = [
        replace(record, destination=f"ryze.bench.{index % destinations}")
        for index, record in enumerate(records)
    ]
    reader = ListReader(spread)
    worker = SinkWorker(AcceptingSink(), reader, create_metrics(), dlq="ryze.dlq")
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    await reader.empty.wait()
    seconds = time.perf_counter() - started
    task.cancel()
    await asyncio.wait({task})
    return seconds


async def tail_reads(records: list[Record]) -> float:
    """Seconds for a tail attached after the appends (a shipper that starts behind) to read
    ``records`` back from the segment files and acknowledge them, in batches of 1000 (the
    appends are not timed)."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = DiskSpool(Path(tmp), 1 << 32, "drop_newest", "never", 50)
        spool.open()
        tail = SpoolTail(Path(tmp), spool.acked_position(), spool)
        for start in range(0, len(records), READ_BATCH):
            spool.append_all(records[start : start + READ_BATCH])
        spool.attach(tail)  # told how far the files go
        started = time.perf_counter()
        while spool.stats().events:
            got = await tail.read(1000)
            tail.ack(len(got))
        seconds = time.perf_counter() - started
        tail.close()
        spool.close()
    return seconds


class BatchesOnly:
    """Makes producer batches the way the Kafka sink's producer does, sends nothing."""

    def __init__(self, settings: KafkaSinkSettings) -> None:
        self.size = settings.max_batch_bytes
        self.codec = DefaultRecordBatch.CODEC_ZSTD

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.size, self.codec)


def kafka_batches(records: list[Record], settings: Settings) -> float:
    """Seconds to append ``records`` to producer batches with the sink's headers and
    partitions, building (compressing) every batch that fills up and the last ones."""
    assert settings.sink.kafka is not None
    producer = BatchesOnly(settings.sink.kafka)
    batches = _Batches(producer, cloudevents=False)
    started = time.perf_counter()
    for index, record in enumerate(records):
        batches.add(index, record, 0)
    for chain in batches.chains.values():
        for builder, _ in chain:
            builder.close()
            builder._build()
    return time.perf_counter() - started


if __name__ == "__main__":
    asyncio.run(main())
