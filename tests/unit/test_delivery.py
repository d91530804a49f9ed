"""Delivery supervision: whatever ends the sink worker (a bug, a cancellation from below, a
sink that cannot be built for a while, a spool error) is a counted restart, never the end of
delivery; a sink is closed before it is started again. The sinks are the scripted in-memory
ones of test_sink_window; the password file is a real file rotated on disk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from bridge.delivery import PROVEN_SECONDS, WorkerDelivery
from bridge.metrics import Metrics, create_metrics
from bridge.pipeline import Record
from bridge.settings import Settings, read_secret
from bridge.sinks.base import Outcome
from tests.unit.spools import local_spool
from tests.unit.test_sink_window import LaneSink, record, until

SETTINGS = Settings.model_validate(
    {"sink": {"kind": "redis", "retry_initial": 0.01, "retry_max": 0.05}}
)


def restarts(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("ryze_bridge_sink_worker_restarts_total")
    return value or 0.0


class CountingSink(LaneSink):
    """Counts its starts and closes; ``crash`` makes its publish raise that exception."""

    kind = "redis"

    def __init__(self, password: str = "", crash: BaseException | None = None) -> None:
        super().__init__()
        self.password = password
        self.crash = crash
        self.starts = 0
        self.closes = 0

    async def start(self) -> None:
        self.starts += 1

    async def close(self) -> None:
        self.closes += 1

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        if self.crash is not None:
            raise self.crash
        return await super().publish(records)


async def stop(delivery: WorkerDelivery) -> None:
    await asyncio.wait_for(delivery.stop_worker(), 15)


async def test_a_sink_that_cannot_be_built_is_retried_until_its_password_file_is_back(
    tmp_path: Path,
) -> None:
    """The first sink crashes its worker (a bug in a client library); while it is rebuilt
    the password file is empty (being rotated), so building fails with a ConfigError: the
    delivery keeps retrying (before the fix its task ended for good, saying "restarting"
    for ever), says why, and once the file holds the new password the sink built from it
    delivers everything."""
    secret = tmp_path / "password"
    secret.write_text("old-password\n")
    built: list[CountingSink] = []

    def factory() -> CountingSink:
        password = read_secret("sink.redis.password", None, secret, {})
        assert password is not None
        sink = CountingSink(password.get_secret_value())
        if not built:
            sink.crash = RuntimeError("bug in a client library")
        built.append(sink)
        return sink

    spool = local_spool(tmp_path)
    for n in range(20):
        spool.append(record(n, "a"))
    metrics = create_metrics()
    delivery = WorkerDelivery(SETTINGS, spool, metrics, sink_factory=factory, environ={})
    secret.write_text("")  # the rotation begins
    delivery.start()
    try:
        await until(lambda: "cannot start" in (delivery.problem or ""), within=5)
        assert "is empty" in (delivery.problem or "")
        await asyncio.sleep(0.3)  # several tries
        assert delivery._task is not None
        assert not delivery._task.done()
        secret.write_text("new-password\n")
        await asyncio.wait_for(spool.wait_empty(), 5)
        assert delivery.problem is None
    finally:
        await stop(delivery)
        spool.close()
    assert built[-1].password == "new-password"
    assert built[-1].ids("a") == [f"a-{n}" for n in range(20)]
    assert restarts(metrics) >= 1
    assert all(sink.closes >= sink.starts for sink in built[:-1])  # every old one closed


async def test_a_worker_that_crashes_is_restarted_and_counted(tmp_path: Path) -> None:
    """A sink whose publish raises a non-sink error crashes the worker a few times: each
    crash is counted, shown in the problem, the sink renewed (closed before a new one
    starts); once a sink works, everything is delivered."""
    built: list[CountingSink] = []

    def factory() -> CountingSink:
        crash = RuntimeError("boom") if len(built) < 3 else None
        built.append(CountingSink(crash=crash))
        return built[-1]

    spool = local_spool(tmp_path)
    for n in range(10):
        spool.append(record(n, "a"))
    metrics = create_metrics()
    delivery = WorkerDelivery(SETTINGS, spool, metrics, sink_factory=factory, environ={})
    delivery.start()
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stop(delivery)
        spool.close()
    assert restarts(metrics) == 3
    assert [(s.starts, s.closes) for s in built[:3]] == [(1, 1)] * 3
    assert built[3].ids("a") == [f"a-{n}" for n in range(10)]


async def test_the_first_worker_waits_for_the_heap_to_settle_once(tmp_path: Path) -> None:
    """The hook the shipper settles its heap in (a full gc.collect) runs once, after the
    sink started and before any record of the backlog is published; a worker that crashes
    and starts again does not run it again."""
    built: list[CountingSink] = []

    def factory() -> CountingSink:
        built.append(CountingSink(crash=RuntimeError("boom") if not built else None))
        return built[-1]

    seen: list[tuple[int, int]] = []  # (sink starts, records accepted) at each call
    spool = local_spool(tmp_path)
    for n in range(10):
        spool.append(record(n, "a"))
    delivery = WorkerDelivery(
        SETTINGS,
        spool,
        create_metrics(),
        sink_factory=factory,
        environ={},
        before_first_worker=lambda: seen.append((built[-1].starts, len(built[-1].accepted))),
    )
    delivery.start()
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stop(delivery)
        spool.close()
    assert seen == [(1, 0)]
    assert built[-1].ids("a") == [f"a-{n}" for n in range(10)]


async def test_a_cancellation_from_below_is_a_crash_not_an_end(tmp_path: Path) -> None:
    """A CancelledError raised inside a publish call (a library's own, nobody asked the
    delivery to stop) is counted as a crash and delivery starts again; before the fix it
    ended the supervising task silently."""
    built: list[CountingSink] = []

    def factory() -> CountingSink:
        crash = asyncio.CancelledError() if not built else None
        built.append(CountingSink(crash=crash))
        return built[-1]

    spool = local_spool(tmp_path)
    spool.append(record(0, "a"))
    metrics = create_metrics()
    delivery = WorkerDelivery(SETTINGS, spool, metrics, sink_factory=factory, environ={})
    delivery.start()
    try:
        await asyncio.wait_for(spool.wait_empty(), 5)
    finally:
        await stop(delivery)
        spool.close()
    assert restarts(metrics) == 1
    assert built[1].ids("a") == ["a-0"]


async def test_a_supervising_task_that_ends_anyway_is_restarted(tmp_path: Path) -> None:
    """The supervising task cancelled from outside (not by stop_worker) is logged, counted
    and started again; stop_worker then ends it for good."""
    spool = local_spool(tmp_path)
    metrics = create_metrics()
    delivery = WorkerDelivery(SETTINGS, spool, metrics, sink_factory=CountingSink, environ={})
    delivery.start()
    try:
        await until(lambda: delivery.started)
        first = delivery._task
        assert first is not None
        first.cancel()
        await until(lambda: delivery._task is not first and delivery.started)
        spool.append(record(0, "a"))
        await asyncio.wait_for(spool.wait_empty(), 5)
        assert restarts(metrics) == 1
    finally:
        await stop(delivery)
        spool.close()
    assert delivery._task is None
    await asyncio.sleep(0.05)
    assert delivery._task is None  # stopping is no end to restart from


async def test_a_spool_error_never_starts_the_same_sink_twice_without_closing_it(
    tmp_path: Path,
) -> None:
    """Worker crashes caused by the spool (its segment emptied behind its back: every read
    of the tail fails, the file ending before the writer's mark) restart the worker on the
    sink already started: never a start of a live sink without a close between (before the
    fix: 29 starts, 0 closes of one sink in a second)."""
    built: list[CountingSink] = []

    def factory() -> CountingSink:
        built.append(CountingSink())
        return built[-1]

    spool = local_spool(tmp_path)
    spool.append(record(0, "a"))
    os.truncate(next(tmp_path.glob("seg-*.log")), 0)
    metrics = create_metrics()
    delivery = WorkerDelivery(SETTINGS, spool, metrics, sink_factory=factory, environ={})
    delivery.start()
    try:
        await until(lambda: restarts(metrics) >= 5, within=5)
    finally:
        await stop(delivery)
        spool.close()
    assert all(sink.starts - sink.closes <= 1 for sink in built)


async def test_a_crash_is_shown_until_a_new_worker_has_run_a_while(tmp_path: Path) -> None:
    """After a worker crash, readiness keeps saying so and the delivery is not "delivering"
    while the next worker has neither settled a record nor run PROVEN_SECONDS (a crash loop
    never flickers ready); after that, the crash is no longer shown."""
    spool = local_spool(tmp_path)
    delivery = WorkerDelivery(
        Settings.model_validate({"sink": {"kind": "file", "file": {"path": str(tmp_path / "o")}}}),
        spool,
        create_metrics(),
        environ={},
    )
    delivery.start()
    try:
        await until(lambda: delivery.delivering, within=5)
        delivery._crashed_now(RuntimeError("boom"))
        assert not delivery.delivering
        assert "crashed" in (delivery.problem or "")
        worker = delivery.worker
        assert worker is not None
        delivery._prove(worker)  # an idle worker: nothing to settle, proven by time alone
        await asyncio.sleep(PROVEN_SECONDS / 2)
        assert not delivery.delivering
        await until(lambda: delivery.delivering, within=PROVEN_SECONDS + 2)
        assert delivery.problem is None
        delivery._crashed_now(RuntimeError("boom again"))
        delivery._prove(worker)
        spool.append(record(1, "a"))  # a record settled proves it at once
        await until(lambda: delivery.delivering, within=PROVEN_SECONDS / 2)
    finally:
        await delivery.close(5)
        spool.close()
