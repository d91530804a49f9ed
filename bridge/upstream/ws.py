"""One instance's WebSocket: an endless, reconnecting async iterator of frames.

``async for frames in source`` yields every message read off the socket, stamped at receipt,
in batches: the message awaited plus the ones already read behind it (:class:`MessageReader`,
the library's public ``recv`` in a task of its own; one await, one timestamp and one activity
note per batch instead of per frame).
Between sessions the source decides, from what went wrong, what to do before the next try:

- the upstream config (ensure) is checked before the first upgrade only when ``check_first``;
  otherwise the upgrade goes first and the check follows once the socket is open, paced for the
  process (``SocketsShared.first_checks``), repeated at the next session until one succeeded;
- 400 on upgrade (config missing or disabled) → run ensure, then retry (at once when no check
  has succeeded yet: a fresh instance's config is simply not there yet);
- 401 / 403 / 404 → the instance is *failed*: reported, retried slowly (a token may be fixed);
- 429 → wait until ``X-RateLimit-Reset``, or longer if the backoff has grown past it (without a
  usable reset: the backoff, like any failure);
- a message over ``max_frame_bytes`` is still read, up to twice that (the pipeline dead-letters
  it with its first bytes, the socket stays open); over twice that the library closes the
  socket (1009) without handing the message over: reported as ``frame_too_large`` (the runner
  counts the drop), then a reconnect;
- anything else → the reconnect backoff (``bridge.retry``: exponential, full jitter), counted
  from the first retry again after a session that lasted ``healthy_after``.

Every upgrade spends one request of the token's bucket. The token goes in the ``token``
header, never the query string; no ``Origin`` header is sent. The process's keepalive ticker
(:mod:`bridge.upstream.keepalive`) pings a socket silent for 25 s and closes one silent (no
frame, no ping, no pong) for ``watchdog_seconds`` or 20 s past an unanswered ping. A session
that ends for any reason, the consumer's own failure or leaving included, closes its socket: an
instance never holds a second socket beside a forgotten one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
)
from websockets.frames import CloseCode, Opcode
from websockets.frames import Frame as WsFrame

from bridge.errors import (
    InstanceNotFoundError,
    RateLimitedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamUnavailableError,
    WebSocketNotEnabledError,
)
from bridge.pipeline import Frame
from bridge.retry import Backoff, RetryPolicy
from bridge.settings import UpstreamSettings
from bridge.upstream.budget import BufferBudget
from bridge.upstream.ratelimit import TokenBucket, parse_rate_headers, usable_reset
from bridge.upstream.shared import SocketsShared


class SessionObserver(Protocol):
    """What a source reports about its sessions (the runner logs and counts it)."""

    def connected(self) -> None: ...

    def disconnected(self, reason: str) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...

    def retrying(self, reason: str, delay: float) -> None: ...

    def discarded(self, count: int) -> None: ...

    def activity(self, ping: bool) -> None: ...


BATCH_FRAMES = 64  # messages, or
BATCH_BYTES = 1 << 20  # bytes, whichever comes first, in one batch (and a reader's turn)
MAX_QUEUE = 4  # frames the library queues per socket before it stops reading TCP
_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class WatchedConnection(ClientConnection):
    """A client connection that notes when the server last sent anything (ping included):
    control frames as they arrive, messages as they are read (once per batch).

    ``process_event`` is the one hook websockets has where a control frame is seen (the library
    answers pings itself and its public API reports none). It is undocumented: websockets is
    pinned to the tested range in pyproject.toml and tests/unit/test_ws_batches.py fails
    loudly if a server ping stops reaching it."""

    last_activity: float = 0.0
    on_ping: Callable[[], None] | None = None

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        if isinstance(event, WsFrame) and event.opcode not in _DATA:
            self.last_activity = time.monotonic()
            if event.opcode is Opcode.PING and self.on_ping is not None:
                self.on_ping()


class MessageReader:
    """A connection's messages in batches, read with the library's public ``recv`` by a task
    of its own into a bounded buffer of ours: a batch is the message awaited plus those read
    behind it (up to ``BATCH_FRAMES`` messages or ``BATCH_BYTES``), one wake-up per batch for
    the consumer. The buffer holds at most one batch; while it is full, or the process-wide
    ``budget`` has no room for the message just read, nothing more is read and the library's
    ``max_queue`` pushes back on the socket (the message waiting in hand is counted by
    :meth:`close` like those buffered). A batch's bytes stay in the budget until the consumer
    is done with it: it has handed the batch to the intake, whose spool append is queued
    before any reader the release wakes runs (the bytes are in the spool within that loop
    turn, before another message is read into the budget). Messages come
    whole (``recv`` reassembles fragments), as bytes, in order; the error that ended the
    reading (the socket closed) is raised once every message read before it was taken."""

    def __init__(self, connection: WatchedConnection, budget: BufferBudget) -> None:
        self.connection = connection
        self.budget = budget
        self._messages: deque[bytes] = deque()
        self._held: bytes | None = None  # read, waiting for room in the budget
        self._bytes = 0
        self._out = 0  # bytes of the batch handed out last, still in the budget
        self._ended: BaseException | None = None
        self._ready = asyncio.Event()  # a message, or the end, to take
        self._room = asyncio.Event()  # the buffer may take more
        self._room.set()
        self._task = asyncio.create_task(self._read(), name="ws-reader")

    def _full(self) -> bool:
        return len(self._messages) >= BATCH_FRAMES or self._bytes >= BATCH_BYTES

    async def _read(self) -> None:
        try:
            while True:
                if self._full():
                    self._room.clear()
                    await self._room.wait()
                self._held = message = await self.connection.recv(decode=False)
                await self.budget.take(len(message))
                self._held = None
                self._messages.append(message)
                self._bytes += len(message)
                self._ready.set()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, in order
            self._ended = exc
            self._ready.set()

    async def batch(self) -> list[bytes]:
        """The next messages (at least one); raises what ended the reading after the last.
        The previous batch leaves the budget now if :meth:`done` did not release it yet."""
        self.done()
        messages = self._messages
        while not messages:
            if self._ended is not None:
                raise self._ended
            self._ready.clear()
            await self._ready.wait()
        batch = [messages.popleft()]
        size = len(batch[0])
        while messages and len(batch) < BATCH_FRAMES and size < BATCH_BYTES:
            batch.append(messages.popleft())
            size += len(batch[-1])
        self._bytes -= size
        self._out = size
        self._room.set()
        self.connection.last_activity = time.monotonic()
        return batch

    def done(self) -> None:
        """The consumer is done with the last batch (handed to the intake, appended at the
        loop's next queued callback, ahead of any reader this release wakes): its bytes leave
        the budget."""
        self.budget.release(self._out)
        self._out = 0

    async def close(self) -> int:
        """Stop reading (a pending ``recv`` is cancelled, which the library allows); how many
        messages read were never taken, the one held waiting for the budget included (the
        consumer left: they are to be counted). What is left leaves the budget with the
        socket (the held message never entered it)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = len(self._messages) + (self._held is not None)
        self._messages.clear()
        self._held = None
        self.budget.release(self._out + self._bytes)
        self._out = self._bytes = 0
        return left


def upgrade_error(exc: InvalidStatus, instance: str) -> UpstreamError:
    """The error a refused upgrade stands for (pure)."""
    status = exc.response.status_code
    text = f"{instance}: upgrade refused with HTTP {status}"
    if status == 400:
        return WebSocketNotEnabledError(text, status=status)
    if status in (401, 403):
        return UpstreamAuthError(text, status=status)
    if status == 404:
        return InstanceNotFoundError(text, status=status)
    if status == 429:
        _, reset_at = parse_rate_headers(dict(exc.response.headers.raw_items()))
        return RateLimitedError(text, reset_at=reset_at)
    return UpstreamUnavailableError(text, status=status)


def reconnect_policy(settings: UpstreamSettings) -> RetryPolicy:
    """The reconnect backoff of every instance's socket (pure)."""
    return RetryPolicy(
        settings.backoff_initial, settings.backoff_max, healthy_after=settings.healthy_after
    )


def socket_limit(max_frame_bytes: int) -> int:
    """The largest message read off a socket (pure): twice the accepted size, so a message
    somewhat over it reaches the DLQ with its first bytes instead of closing the socket (which
    would lose what follows it on the wire); the library closes on anything larger."""
    return 2 * max_frame_bytes  # = UpstreamSettings.largest_read


def ws_url(base_url: str, instance: str) -> str:
    """``wss://host/ws/{instance}`` from the REST base URL, the instance quoted as one path
    segment (a ``/``, ``?`` or ``..`` in it cannot reach another path) (pure)."""
    base = base_url.rstrip("/")
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/{quote(instance, safe='')}"


class InstanceSource:
    """The frames of one instance, across reconnects, until :meth:`stop`."""

    def __init__(
        self,
        instance: str,
        token: SecretStr,
        settings: UpstreamSettings,
        bucket: TokenBucket,
        *,
        ensure: Callable[[], Awaitable[None]],
        observer: SessionObserver,
        shared: SocketsShared,
        ssl: Any = None,
        check_first: bool = True,
    ) -> None:
        self.instance = instance
        self._token = token
        self.settings = settings
        self.bucket = bucket
        self.ensure = ensure
        self.observer = observer
        self.shared = shared
        self.ssl = ssl
        self._watchdog_fired = False
        self.backoff: Backoff = reconnect_policy(settings).start()
        self.url = ws_url(str(settings.base_url), instance)
        self.need_ensure = check_first
        self.first_check_due = not check_first  # checked once the socket is open
        self._connection: WatchedConnection | None = None
        self._stopping = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[list[Frame]]:
        return self.frames()

    async def frames(self) -> AsyncGenerator[list[Frame], None]:
        while not self._stopping.is_set():
            try:
                connection = await self._open()
            except UpstreamError as error:
                await self._pause(error)
                continue
            self.backoff.healthy(time.monotonic())
            async with contextlib.aclosing(self._session(connection)) as session:
                async for batch in session:
                    yield batch
            if not self._stopping.is_set():
                await self._wait("reconnect", self._next_delay())

    async def _open(self) -> WatchedConnection:
        if self.need_ensure:
            await self.ensure()
            self.need_ensure = self.first_check_due = False
        await self.bucket.acquire()
        # no context: the library's default for wss:// (it refuses an explicit None there)
        tls = {} if self.ssl is None else {"ssl": self.ssl}
        try:
            connection = await connect(
                self.url,
                additional_headers={"token": self._token.get_secret_value()},
                create_connection=WatchedConnection,
                open_timeout=self.settings.open_timeout,
                max_size=socket_limit(self.settings.max_frame_bytes),
                max_queue=MAX_QUEUE,
                ping_interval=None,  # the process's keepalive ticker pings silent sockets
                ping_timeout=None,
                close_timeout=5,
                compression=None,  # CPU is what a relay runs out of, not bandwidth
                proxy=None,
                user_agent_header="ryze-bridge",
                **tls,
            )
        except InvalidStatus as exc:
            self.bucket.observe(*parse_rate_headers(dict(exc.response.headers.raw_items())))
            raise upgrade_error(exc, self.instance) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise UpstreamUnavailableError(f"{self.instance}: {type(exc).__name__}") from None
        if not isinstance(connection, WatchedConnection):  # create_connection guarantees it
            raise TypeError("connect() ignored create_connection")
        if connection.response is not None:
            self.bucket.observe(*parse_rate_headers(dict(connection.response.headers.raw_items())))
        return connection

    async def _session(self, connection: WatchedConnection) -> AsyncGenerator[list[Frame], None]:
        """Yield the frames of one open connection, in batches; report why it ended."""
        connection.last_activity = time.monotonic()
        connection.on_ping = lambda: self.observer.activity(ping=True)
        self._connection = connection
        self.observer.connected()
        self._watchdog_fired = False
        keepalive = self.shared.keepalive
        watched = keepalive.watch(connection, self.settings.watchdog_seconds, self._silent)
        reensure = asyncio.create_task(self._reensure())
        reason = "closed"
        reader = MessageReader(connection, self.shared.budget)
        try:
            instance = self.instance
            while True:  # bytes as received, text frames too: no decode and re-encode
                batch = await reader.batch()
                received_ns = time.time_ns()
                self.observer.activity(ping=False)
                yield [Frame(instance, raw, received_ns) for raw in batch]
                reader.done()  # the consumer came back: the batch is in the intake
        except ConnectionClosedOK:
            pass  # a normal close: reason stays "closed"
        except ConnectionClosed as exc:
            reason = _close_reason(exc)
        finally:
            keepalive.forget(watched)
            reensure.cancel()
            left = await reader.close()
            if left:  # read off the socket, never handed over: counted, not lost
                self.observer.discarded(left)
            self._connection = None
            # the session may end without the socket closing (the consumer raised or left):
            # close it, or it stays open unread, the server's frames lost, until the process
            # exits (no-op when the socket is closed already)
            await connection.close(code=CloseCode.INTERNAL_ERROR, reason="bridge reader gone")
            if self._watchdog_fired:
                reason = "watchdog"
            elif self._stopping.is_set():
                reason = "stopping"
            self.observer.disconnected(reason)

    def _silent(self) -> None:
        """The keepalive ticker closes the socket: nothing heard past the watchdog."""
        self._watchdog_fired = True

    async def _reensure(self) -> None:
        """While connected, check the upstream config now and then: drift (someone changed or
        disabled it) is repaired without waiting for a reconnect. The checks of all sockets
        share one pace (:mod:`bridge.upstream.shared`)."""
        interval = self.settings.ensure_interval_seconds
        if self.first_check_due:
            await self.shared.first_checks.acquire()  # the fleet's upgrades go first
            with contextlib.suppress(UpstreamError):
                await self.ensure()
                self.first_check_due = False
        while True:
            await asyncio.sleep(random.uniform(interval * 0.9, interval))  # noqa: S311
            await self.shared.rechecks.acquire()  # paced for the whole process
            with contextlib.suppress(UpstreamError):
                await self.ensure()

    async def _pause(self, error: UpstreamError) -> None:
        """Wait before the next try, as the error calls for."""
        if isinstance(error, WebSocketNotEnabledError):
            delay = 0.0 if self.first_check_due else self._next_delay()
            self.need_ensure = True
            await self._wait("not_enabled", delay)
        elif isinstance(error, UpstreamAuthError | InstanceNotFoundError):
            self.need_ensure = True
            self.observer.failed(error)
            delay = self.settings.failed_retry_seconds  # a slow fixed period, not a backoff:
            await self._wait("failed", random.uniform(delay * 0.8, delay))  # noqa: S311
        elif isinstance(error, RateLimitedError):
            now = time.time()
            reset_at = usable_reset(error.reset_at, now)
            if reset_at is None:  # no usable X-RateLimit-Reset: back off like any failure
                await self._wait("rate_limited", self._next_delay())
                return
            self.bucket.block_until(reset_at)
            await self._wait("rate_limited", self._next_delay(hint=reset_at - now))
        else:
            await self._wait(_reason_of(error), self._next_delay())

    def _next_delay(self, hint: float | None = None) -> float:
        return self.backoff.next_delay(time.monotonic(), hint)

    async def _wait(self, reason: str, delay: float) -> None:
        self.observer.retrying(reason, delay)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return

    async def reconnect(self) -> None:
        """Close the current socket (if any); the loop reconnects after its usual pause."""
        if self._connection is not None:
            await self._connection.close(code=1000, reason="reconnect requested")

    async def stop(self) -> None:
        """Stop reading: close the socket; frames already received are still yielded."""
        self._stopping.set()
        if self._connection is not None:
            await self._connection.close(code=1001, reason="bridge stopping")


def _close_reason(exc: ConnectionClosed) -> str:
    if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
        return "frame_too_large"  # we closed it: a message over max_frame_bytes
    if exc.rcvd is None:
        return "abnormal"
    return "server_close" if exc.rcvd.code in (1000, 1001) else f"close_{exc.rcvd.code}"


def _reason_of(error: UpstreamError) -> str:
    if error.status is not None:
        return f"http_{error.status}"
    return "unreachable"
