"""The shipper process: the spool's tail, the sink and the sink worker, reporting back.

Started by the main process as ``python -m bridge.shipper <fd>`` with one end of a socket pair
as ``fd``; everything it needs arrives in the :class:`~bridge.shipper.link.Init` message. The
tail (:class:`~bridge.spool.tail.SpoolTail`) is fed the writer's marks from the link and sends
its acknowledgements back over it (:class:`~bridge.shipper.link.AcksOverLink`); a
:class:`~bridge.delivery.WorkerDelivery` runs the sink worker on it. A message from the main
process that is not one ends the link (logged), and with it the shipper.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time

from pydantic import SecretStr

from bridge.delivery import WorkerDelivery
from bridge.errors import LinkError
from bridge.eventloop import settle_heap
from bridge.logs import configure_logging, get_logger, register_secret
from bridge.metrics import Metrics, create_metrics
from bridge.metrics_sink import Change, sink_side_changes, sink_side_values
from bridge.settings import Settings
from bridge.shipper.link import (
    TO_SHIPPER,
    AcksOverLink,
    Answer,
    Ask,
    Init,
    Mark,
    Message,
    Moved,
    Problem,
    Stop,
    receive,
    send,
)
from bridge.spool.tail import SpoolTail
from bridge.wiring import sink_password, sink_with

log = get_logger(__name__)
METRICS_SECONDS = 1.0  # counts that move outside of acknowledgements (sink start, retries)
STOP_SECONDS = 10.0


class Reporter:
    """Sends what the shipper has to say, with the metrics that moved since the last report."""

    def __init__(self, writer: asyncio.StreamWriter, metrics: Metrics) -> None:
        self.writer = writer
        self.metrics = metrics
        self._last = sink_side_values(metrics)

    def send(self, message: Message) -> None:
        send(self.writer, message)

    def changes(self) -> list[Change]:
        now = sink_side_values(self.metrics)
        moved = sink_side_changes(self._last, now)
        self._last = now
        return moved

    def metrics_now(self) -> None:
        moved = self.changes()
        if moved:
            self.send(Moved(moved))

    def problem(self, text: str | None) -> None:
        """Why nothing is delivered (None: that is over); sent when it changes."""
        self.send(Problem(text))


async def first_message(reader: asyncio.StreamReader) -> Init | None:
    """The init message (None: the main process is gone, or sent something else: logged)."""
    try:
        init = await receive(reader, TO_SHIPPER)
    except LinkError as exc:
        log.error("shipper.link_broken", error=str(exc)[:500])
        return None
    return init if isinstance(init, Init) else None


async def serve(descriptor: int) -> int:
    """Run the shipper on the socket ``descriptor`` until told to stop or left alone."""
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=descriptor))
    init = await first_message(reader)
    if init is None:
        return 1
    settings = Settings.model_validate(init.settings)
    configure_logging(init.log_level, init.log_format)
    password = SecretStr(init.password) if init.password is not None else None
    if password is not None:
        register_secret(password.get_secret_value())
    metrics = create_metrics()
    reporter = Reporter(writer, metrics)
    tail = SpoolTail(settings.spool.dir, init.start, AcksOverLink(reporter.send, reporter.changes))
    delivery = WorkerDelivery(
        settings,
        tail,
        metrics,
        sink_factory=lambda: sink_with(settings, current_password(settings, password)),
        environ={},
        # What building and starting the sink made (its client, its modules) is frozen out of
        # the collector's way, as start-up's objects were, before the worker takes its first
        # record: the full gc.collect() in settle_heap stalls this loop for tens of ms, which
        # must not land on the backlog's drain (where it would add to every record's latency).
        before_first_worker=settle_heap,
    )
    delivery.start()
    log.info(
        "shipper.started", sink=settings.sink.kind, start=[init.start.segment, init.start.offset]
    )
    ticker = asyncio.create_task(_report(reporter, delivery))
    listener = asyncio.create_task(_listen(reader, reporter, tail, delivery))
    code = 0
    try:
        code = await listener
    finally:
        exit_after(STOP_SECONDS + 5, code)  # whatever a library does with the cancellations
        for task in (ticker, listener):
            task.cancel()
        await delivery.close(STOP_SECONDS)
        tail.close()
        reporter.metrics_now()
        if not writer.is_closing():
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 2)
        writer.close()
    return code


def exit_after(seconds: float, code: int) -> None:
    """End the process in ``seconds`` even if the loop cannot finish (a task that swallows
    its cancellation would keep the loop's shutdown waiting forever): a shipper whose main
    process is gone must not outlive it."""
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


async def _listen(
    reader: asyncio.StreamReader,
    reporter: Reporter,
    tail: SpoolTail,
    delivery: WorkerDelivery,
) -> int:
    """Follow the main process's messages until :class:`Stop` or until it is gone (0), or
    until it sends what is not a message (1, logged)."""
    answering: set[asyncio.Task[None]] = set()

    async def answer(question: int) -> None:
        reporter.send(Answer(question, await delivery.reachable()))

    while True:
        try:
            message = await receive(reader, TO_SHIPPER)
        except LinkError as exc:
            log.error("shipper.link_broken", error=str(exc)[:500])
            return 1
        match message:
            case None | Stop():
                return 0
            case Mark(segment, offset):
                tail.mark(segment, offset)
            case Ask(question):  # answered aside: marks keep flowing meanwhile
                task = asyncio.create_task(answer(question))
                answering.add(task)
                task.add_done_callback(answering.discard)
            case Init():
                log.error("shipper.link_broken", error="a second init message")
                return 1


def password_env(settings: Settings) -> str | None:
    """The environment variable the sink's password comes from, if any (pure)."""
    sink = settings.sink
    if sink.kind == "kafka":
        return sink.kafka.sasl_password_env
    if sink.kind == "redis":
        return sink.redis.password_env
    return None


def current_password(settings: Settings, given: SecretStr | None) -> SecretStr | None:
    """The sink's password for a sink built now: its file read again (a rotated password is
    picked up when the sink is rebuilt; an empty or unreadable file is a ConfigError, retried
    by the delivery); one from the environment is the one the main process sent (``given``)."""
    env = password_env(settings)
    if env is not None:
        return given
    return sink_password(settings, {})


def delivery_state(delivery: WorkerDelivery) -> str | None:
    """What the shipper reports: the delivery's problem, or that the sink is not started yet."""
    problem = delivery.problem
    if problem is None and not delivery.started:
        return "the sink is starting"
    return problem


async def _report(reporter: Reporter, delivery: WorkerDelivery) -> None:
    """At once, then every second: the metrics that moved, and the delivery's state when it
    changed (the first report is always sent: the main process waits for it)."""
    said: str | None = "(nothing said yet)"
    while True:
        reporter.metrics_now()
        problem = delivery_state(delivery)
        if problem != said:
            reporter.problem(problem)
            said = problem
        await asyncio.sleep(METRICS_SECONDS)


def main(argv: list[str]) -> int:
    """``python -m bridge.shipper <fd>``: the main process's signals are its own to handle
    (it stops the shipper after draining); this one only follows the socket."""
    from bridge import eventloop  # noqa: PLC0415 - the entry point's own import

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    started = time.monotonic()
    settle_heap()
    code = eventloop.run(serve(int(argv[0])))
    log.info("shipper.stopped", code=code, seconds=round(time.monotonic() - started, 1))
    return code
