"""The main process's side of the shipper: starts it, keeps it running, hears it out.

It is the :class:`~bridge.delivery.Delivery` whose worker runs in the shipper: the spool's
writer is attached to the link (:class:`~bridge.shipper.link.MarksOverLink`) for each
shipper's life, and the shipper's acknowledgements are taken on the writer's books as they
arrive. A shipper that dies is started
again after a backoff from the spool's acknowledged position (what it had in flight is
published again: at least once). The shipper supervises its own worker as the in-process
delivery does and reports why it is not delivering (``problem``); that, or no shipper
running, is :attr:`ShipperDelivery.problem`, which readiness shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from bridge.errors import ConfigError, LinkError
from bridge.logs import get_logger, logging_configured
from bridge.metrics import Metrics, init_sink
from bridge.metrics_sink import apply_sink_side
from bridge.retry import RetryPolicy
from bridge.settings import Settings
from bridge.shipper.link import (
    FROM_SHIPPER,
    Ack,
    Answer,
    Ask,
    FromShipper,
    Init,
    MarksOverLink,
    Message,
    Moved,
    Problem,
    Reading,
    Rewound,
    Stop,
    frame,
    receive,
    send,
)
from bridge.spool import Position
from bridge.spool.disk import DiskSpool
from bridge.wiring import sink_password

log = get_logger(__name__)
REACHABLE_TIMEOUT = 5.0
HEALTHY_SECONDS = 60.0  # a shipper that ran this long restarts without the backoff it had
# What the shipper's Python needs of the environment; nothing else (tokens) is passed on.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                    "SSL_CERT_FILE", "SSL_CERT_DIR")  # fmt: skip


def shipper_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The shipper's environment: Python's own variables and the locale, nothing else (pure)."""
    return {
        k: v for k, v in environ.items() if k in KEPT_ENVIRONMENT or k.startswith(("LC_", "PYTHON"))
    }


def init_message(settings: Settings, password: SecretStr | None, start: Position) -> Init:
    """What a new shipper is told (pure): the sections it works with, never the instances."""
    sections: dict[str, Any] = settings.model_dump(
        mode="json", include={"sink", "spool", "event_loop"}
    )
    level, fmt = logging_configured()
    secret = None if password is None else password.get_secret_value()
    return Init(sections, level, fmt, secret, start)


class ShipperDelivery:
    """The sink worker in the shipper process."""

    def __init__(
        self,
        settings: Settings,
        spool: DiskSpool,
        metrics: Metrics,
        *,
        environ: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.environ = environ
        self._problem: str | None = "the shipper is starting"
        self.password = sink_password(settings, environ)  # a missing one fails here, named
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._questions: dict[int, asyncio.Future[bool]] = {}
        self._asked = 0
        self._stopping = False

    @property
    def kind(self) -> str:
        return self.settings.sink.kind

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def shares_loop_with_readers(self) -> bool:
        """The worker has a process (and a loop) of its own."""
        return False

    @property
    def pid(self) -> int | None:
        """The running shipper's process id."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def delivering(self) -> bool:
        """A shipper is running, connected, and reports no problem."""
        return self._writer is not None and self._problem is None

    @property
    def problem(self) -> str | None:
        """Why nothing is delivered: the shipper's own report, or no shipper running."""
        return self._problem

    def start(self) -> None:
        init_sink(self.metrics, self.kind)
        self._stopping = False
        self._spawn()

    def _spawn(self, delay: float = 0.0) -> None:
        task = self._task = asyncio.create_task(self._keep_running(delay), name="shipper")
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The supervising task ended (done callback): only ``stop_worker`` may end it; any
        other end (an error escaping the supervision, a cancellation nobody asked for) is
        logged, counted as a shipper restart, and the supervision starts again (after the
        retry policy's first wait)."""
        if self._stopping or task is not self._task:
            return
        error = "cancelled" if task.cancelled() else repr(task.exception())
        self.metrics.shipper_restarts.inc()
        self.metrics.sink_up.labels(self.kind).set(0)
        self._problem = f"the shipper's supervision ended ({error[:200]}); restarting"
        log.error("shipper.supervision_ended", error=error[:1000])
        self._spawn(self.settings.sink.retry_initial)

    async def _keep_running(self, delay: float = 0.0) -> None:
        """Run shippers one after the other until ``stop_worker``: whatever ends one (its
        exit, a link that breaks, any error here) is logged and counted, and the next starts
        after the retry policy's wait."""
        await asyncio.sleep(delay)
        sink = self.settings.sink
        retry = RetryPolicy(sink.retry_initial, sink.retry_max, healthy_after=HEALTHY_SECONDS)
        restarts = retry.start()
        while not self._stopping:
            restarts.healthy(time.monotonic())
            try:
                self.password = sink_password(self.settings, self.environ)  # read again each time
                code = await self._run_once()
            except ConfigError as exc:  # the password file is missing or empty for now
                log.error("shipper.cannot_start", error=str(exc))
                self._problem = f"the sink cannot start: {exc}"
                await asyncio.sleep(retry.maximum)
                continue
            except OSError as exc:  # could not even start it (no memory, no process slot)
                log.error("shipper.start_failed", error=str(exc))
                code = -1
            except Exception as exc:  # noqa: BLE001 - supervised: any failure is a restart
                log.error("shipper.failed", error=repr(exc)[:1000])
                code = -1
            if self._stopping:
                return
            delay = restarts.next_delay(time.monotonic())
            self.metrics.shipper_restarts.inc()
            self.metrics.sink_up.labels(self.kind).set(0)
            self._problem = f"the shipper exited (code {code}); restarting"
            log.error("shipper.exited", code=code, attempt=restarts.attempt)
            await asyncio.sleep(delay)

    async def _run_once(self) -> int:
        """One shipper's life; its exit code."""
        ours, theirs = socket.socketpair()
        try:
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.shipper", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=shipper_environment(self.environ),
                start_new_session=True,
            )  # fmt: skip
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            start = self.spool.acked_position()
            writer.write(frame(init_message(self.settings, self.password, start)))
            self._writer = writer
            # the first mark follows the init; the start segment is kept from now on
            marks = MarksOverLink(self._send, writer.transport.get_write_buffer_size)
            self.spool.attach(marks, elsewhere=True)
            if self._stopping:  # asked to stop while it was starting
                send(writer, Stop())
            log.info("shipper.started", pid=process.pid, sink=self.kind)
            if not await self._hear(reader):  # it sent what is not a message: ended here
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            return await process.wait()
        finally:
            self.spool.detach()
            self._writer = None
            for question in self._questions.values():
                if not question.done():
                    question.set_result(False)
            self._questions.clear()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if writer is not None:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            ours.close()

    async def _hear(self, reader: asyncio.StreamReader) -> bool:
        """Apply the shipper's messages until it is gone (True), or until it sends one that
        is not a message (False, logged: the link is over, the shipper is killed and, like
        any shipper that ends, started again)."""
        # The last problem stands until the shipper's first report (sent as it connects).
        if self._problem is None:
            self._problem = "the shipper is starting"
        while True:
            try:
                message = await receive(reader, FROM_SHIPPER)
            except LinkError as exc:
                log.error("shipper.link_broken", error=str(exc)[:500])
                return False
            if message is None:
                return True
            self._apply(message)

    def _apply(self, message: FromShipper) -> None:
        match message:
            case Ack(stretches, metrics):
                self.spool.acked(stretches)
                apply_sink_side(self.metrics, metrics)
            case Moved(metrics):
                apply_sink_side(self.metrics, metrics)
            case Reading(segment):
                self.spool.reading(segment)
            case Rewound(segment):
                self.spool.rewound(segment)
            case Answer(question, reachable):
                answer = self._questions.pop(question, None)
                if answer is not None and not answer.done():
                    answer.set_result(reachable)
            case Problem(text):
                self._problem = text

    def _send(self, message: Message) -> None:
        if self._writer is not None:
            send(self._writer, message)

    async def reachable(self) -> bool:
        """Ask the shipper whether its sink answers (False without a shipper)."""
        if self._writer is None:
            return False
        self._asked += 1
        question = self._asked
        answer = self._questions[question] = asyncio.get_running_loop().create_future()
        send(self._writer, Ask(question))
        try:
            return await asyncio.wait_for(answer, REACHABLE_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            self._questions.pop(question, None)

    async def stop_worker(self, within: float = 10.0) -> None:
        """Tell the shipper to stop (what it has in flight stays in the spool) and wait for it
        to close its sink and exit; killed after ``within`` seconds."""
        self._stopping = True
        if self._writer is not None:
            send(self._writer, Stop())
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=max(1.0, within))
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def close(self, within: float) -> None:
        await self.stop_worker(within)
