"""One instance's WebSocket: an endless, reconnecting reader of frames.

``await source.run(consume)`` hands every message read off the socket, stamped at receipt, to
``consume`` in batches: the message awaited plus the ones already read behind it
(:class:`MessageReader`, fed by the connection as frames are parsed: no task, no queue and no
generator of its own between the socket and the consumer; one await, one timestamp and one
activity note per batch instead of per frame).
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
import functools
import inspect
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast
from urllib.parse import quote

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    TooManyFragments,
)
from websockets.frames import Close as WsClose
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
from bridge.upstream.dispatch import Dispatch
from bridge.upstream.keepalive import Watched, close_or_abort
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


# takes a batch of frames (into the spool); what it returns, when not None, is awaited before
# the next batch is read (pacing against the sink)
Consume = Callable[[list[Frame]], Awaitable[None] | None]
Handle = Callable[[list[bytes]], Awaitable[None] | None]  # a session's step: messages in


def _no_consumer(frames: list[Frame]) -> None:
    raise RuntimeError(f"{len(frames)} frames handed on with no session reading")


def close_unawaited(pacing: object) -> None:
    """Pacing nobody will await: a coroutine is closed (no "never awaited" warning)."""
    if inspect.iscoroutine(pacing):
        pacing.close()


def drop_handed(waiting: Awaitable[object]) -> None:
    """A wait its task was cancelled after: what a drain handed it meanwhile is let go
    cleanly (pacing not yet awaited is closed; an error the consumer raised is retrieved:
    the cancel, a stop, ends the runner first)."""
    if not isinstance(waiting, asyncio.Future) or not waiting.done() or waiting.cancelled():
        return
    if waiting.exception() is None:
        close_unawaited(waiting.result())


BATCH_FRAMES = 64  # messages, or
BATCH_BYTES = 1 << 20  # bytes, whichever comes first, in one batch (and a reader's turn)
MAX_FRAGMENTS = 4096  # fragments of one message, as the library's recv allows
PAUSE_FRAMES = 2 * BATCH_FRAMES  # a socket stops being read with this much waiting (a batch
PAUSE_BYTES = 2 * BATCH_BYTES  # ready behind the one the consumer is busy with)
_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


NONE_HELD: tuple[()] = ()  # a reader's held messages when there are none (no deque kept)


def batch_bounds(messages: list[bytes]) -> tuple[int, int]:
    """How many of ``messages`` (at least one) the next batch takes, and their bytes (pure):
    while under ``BATCH_FRAMES`` messages and ``BATCH_BYTES`` bytes."""
    taken = size = 0
    for message in messages:
        if taken and (taken >= BATCH_FRAMES or size >= BATCH_BYTES):
            break
        taken += 1
        size += len(message)
    return taken, size


def task_error(exc: BaseException) -> BaseException:
    """What a consumer's step raised, as a future can hold it and its task raise it (pure):
    an Exception as it is, a StopIteration or another BaseException wrapped in RuntimeError
    (as PEP 479 does for a StopIteration escaping a coroutine)."""
    if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
        return exc
    error = RuntimeError(f"the consumer raised {type(exc).__name__}")  # (its text may raise)
    error.__cause__ = exc
    return error


class MessageReader:
    """A connection's messages, taken off the protocol as its frames are parsed and handed to
    the consumer in batches: a batch is every whole message read since the last (up to
    ``BATCH_FRAMES`` messages or ``BATCH_BYTES``). No task of its own and no queue of the
    library's in between: the connection hands every data frame to :meth:`frame` (fragments
    joined here, in order, as bytes, text frames too); while the one consumer waits on
    :meth:`wait`, its :meth:`drain` hands them on from the process's dispatch, once per loop
    turn that completed a message, its task left parked (:mod:`bridge.upstream.dispatch`).

    Back-pressure: while two batches' worth wait (or a message waits for the process-wide
    ``budget``), the socket's transport stops reading, so the kernel's buffers and then TCP
    push back on the upstream; reading resumes once the consumer took the messages, and for
    good once the connection is closing (its closing handshake must be read). A message that
    does not fit the budget when it completes is held (outside the budget; the budget counts
    the wait from then) and the consumer's :meth:`wait` waits for room. A batch's bytes stay
    in the budget until the consumer is done with it (:meth:`done`): it has handed the batch to
    the intake, whose spool append is queued before any socket the release lets read runs. The
    error that ended the connection is raised once every message read before it was taken.

    Every message read is handed over or counted: those never taken when the consumer leaves
    (:meth:`close`), those completed after that or after the connection failed, and a message
    cut off in fragments by the connection's end (``lost``, reported once by ``on_lost`` when
    the connection is gone). A message in more than ``MAX_FRAGMENTS`` fragments fails the
    connection (1009, as the library does) and is counted as too large (``too_large``)."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause_reading = pause
        self._resume_reading = resume
        self._paused = False
        self._closing = False  # the connection is closing: reading never pauses again
        self.budget: BufferBudget | None = None  # attached by the session
        # a list, not a deque (an empty deque is ~0.7 KB: 3.5 MB at 5,000 sockets); batches
        # are cut off its front 64 at a time, cheap even after one read of tiny messages
        self._messages: list[bytes] = []
        self._bytes = 0
        # whole, waiting for room in the budget: a deque made when the first is held (they
        # may be admitted one at a time, from the front of a long queue), NONE_HELD otherwise
        self._held: deque[bytes] | tuple[()] = NONE_HELD
        self._holding = False  # the budget counts this reader as waiting
        self._parts: list[bytes] = []  # the fragments of a message under way
        self._skip_to_fin = False  # the rest of a message already counted: not again
        self._out = 0  # bytes of the batch handed out last, still in the budget
        self._ended: BaseException | None = None
        # resolved to wake the consumer: None (take again), or the pacing its drain got
        self._waiter: asyncio.Future[Awaitable[None] | None] | None = None
        # while the consumer waits, its step, run from the dispatch (no task wake-up a message)
        self.handle: Handle | None = None
        self.dispatch: Dispatch | None = None
        self._queued = False  # queued on the dispatch for this turn
        self._left = False  # the consumer left (close): what completes now is counted
        self._failed = False  # too many fragments: the connection is failing
        self._failed_open = False  # a message in fragments begun after that, not yet ended
        self.too_large = False  # the message that failed it: counted as frame_too_large
        self.lost = 0  # read and never handed over after the consumer left, or cut off
        self.on_lost: Callable[[int], None] | None = None

    def attach(self, budget: BufferBudget) -> MessageReader:
        """Count this socket's messages into ``budget`` from now on (those read before wait
        for room like any other)."""
        self.budget = budget
        if self._messages:  # read before the session: in no budget yet
            self._held = deque([*self._held, *self._messages])
        self._messages.clear()
        self._bytes = 0
        self._admit_fitting()
        if self._held:
            self._hold()
        return self

    def frame(self, frame: WsFrame) -> bool:
        """A data frame off the protocol (in order); False when the message it belongs to
        has too many fragments (the connection is to fail)."""
        data = frame.data
        whole = frame.fin and frame.opcode is not Opcode.CONT
        if self._failed:  # after the failing fragment: not processed, each message counted
            if frame.opcode is not Opcode.CONT:  # a message begins
                self.lost += frame.fin
                self._failed_open = not frame.fin
            elif frame.fin and self._failed_open:  # (the failing one's rest is not counted)
                self.lost += 1
                self._failed_open = False
            return True
        if whole:  # the usual: one frame, one message
            self._message(data if type(data) is bytes else bytes(data))
            return True
        if self._skip_to_fin:  # the rest of a message counted when the consumer left
            self._skip_to_fin = not frame.fin
            return True
        self._parts.append(bytes(data))
        if len(self._parts) > MAX_FRAGMENTS:
            self._parts = []
            self._failed = self.too_large = True
            return False
        if frame.fin:
            message, self._parts = b"".join(self._parts), []
            self._message(message)
        return True

    def _message(self, message: bytes) -> None:
        if self._left:  # the consumer left; the socket is closing: counted, not kept
            self.lost += 1
            return
        budget = self.budget
        if self._held or (budget is not None and not budget.take_now(len(message))):
            if not self._held:
                self._held = deque()
            self._held.append(message)
            self._hold()
            self._pause()
        else:
            self._messages.append(message)
            self._bytes += len(message)
            if len(self._messages) >= PAUSE_FRAMES or self._bytes >= PAUSE_BYTES:
                self._pause()
        self._wake()

    def closing(self) -> None:
        """The connection is closing: read on (the server's close must be read), whatever
        waits."""
        self._closing = True
        self._resume()

    def end(self, error: BaseException, *, closed_too_large: bool = False) -> None:
        """The connection is closed: ``error`` is raised after the last message; a message
        cut off in fragments is counted, unless we closed the connection as too large (1009:
        a message past the size limit or in too many fragments, counted once as
        ``frame_too_large`` through ``too_large``); what was counted after the consumer left
        is reported."""
        self._ended = error
        self.too_large = self.too_large or closed_too_large
        if (self._parts and not closed_too_large) or self._failed_open:
            self.lost += 1
        self._parts = []
        self._failed_open = False
        if self._left and self.lost and self.on_lost is not None:
            self.on_lost(self.lost)
            self.lost = 0
        self._wake()

    def orphaned(self) -> int:
        """Messages read by a reader no session ever attached (0 once attached: the session
        counts what it leaves)."""
        if self.budget is not None:
            return 0
        count = len(self._messages) + len(self._held) + self.lost
        self._messages.clear()
        self._held = NONE_HELD
        self.lost = 0
        return count

    def _wake(self) -> None:
        """Tell the waiting consumer: through its drain when nothing needs its task."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._waiter = None
            return
        if self.dispatch is not None and not self._held and self._ended is None:
            if not self._queued:  # (a consumer that left has no waiter: not here)
                self._queued = True
                self.dispatch.ready(self)
            return
        self._waiter = None
        waiter.set_result(None)

    def drain(self) -> None:
        """Hand every ready batch to :attr:`handle` (the consumer's step) while its task stays
        parked on :meth:`wait`; run by the dispatch. The task is woken with the pacing the
        step returned (awaited there, then :meth:`done`) or with what it raised (a
        ``StopIteration`` or a ``BaseException`` as a RuntimeError: a future takes neither,
        and the task must end). Never raises but SystemExit and KeyboardInterrupt."""
        self._queued = False
        waiter, handle = self._waiter, self.handle
        if waiter is None or waiter.done() or handle is None:  # woken, cancelled or left
            return
        try:
            while not waiter.done() and (batch := self.take()) is not None:
                pacing = handle(batch)
                if pacing is not None:
                    self._waiter = None
                    if waiter.done():  # the step stopped its own task: nobody awaits it
                        close_unawaited(pacing)
                    else:
                        waiter.set_result(pacing)
                    return
                self.done()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - raised in the task, as if it took them
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(task_error(exc))

    def take(self) -> list[bytes] | None:
        """The next messages (up to a batch), or None when none is ready: then await
        :meth:`wait`. The previous batch leaves the budget now if :meth:`done` did not release
        it."""
        self.done()
        messages = self._messages
        if not messages:
            return None
        taken, size = batch_bounds(messages)
        batch = messages[:taken]  # (the list stays: a new one a wait would outlive the young)
        del messages[:taken]
        self._bytes -= size
        self._out = size
        if not self._held and len(messages) < PAUSE_FRAMES and self._bytes < PAUSE_BYTES:
            self._resume()
        return batch

    def wait(self) -> Awaitable[Awaitable[None] | None]:
        """What to await when :meth:`take` had nothing: room in the budget for a held message,
        or the next message; raises what ended the connection once every message before it was
        taken. A plain future in the usual case (no coroutine per wait: a quiet socket's wait
        lives about a second, through the collector's young passes). What it gives is None,
        or the pacing to await when a :meth:`drain` handed messages on meanwhile."""
        if self._held:
            return self._admit()
        if self._ended is not None:
            raise self._ended
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._waiter = waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def batch(self) -> list[bytes]:
        """The next messages (at least one), awaited: :meth:`take` and :meth:`wait` in a
        loop (the session calls those itself); raises what ended the connection after the
        last. For a consumer without a dispatch only (a drain's pacing would be dropped)."""
        while (batch := self.take()) is None:
            await self.wait()
        return batch

    async def _admit(self) -> None:
        """Wait for room in the budget for the oldest held message, then admit it and every
        held message behind it that fits."""
        if self.budget is None:
            raise RuntimeError("MessageReader.wait before attach")
        if self._held:  # (wait() comes here only then)
            await self.budget.room_for(len(self._held[0]))
        self._admit_fitting()  # (no await between: the oldest fits)

    def _admit_fitting(self) -> None:
        """Admit held messages, oldest first, while they fit the budget; the wait ends with
        the last."""
        budget, held = self.budget, self._held
        while held and budget is not None and budget.take_now(len(held[0])):
            message = held.popleft()  # held is a deque when not empty
            self._messages.append(message)
            self._bytes += len(message)
        if not held:
            self._held = NONE_HELD
            self._unhold()

    def done(self) -> None:
        """The consumer is done with the last batch (handed to the intake, appended at the
        loop's next queued callback, ahead of any reader this release wakes): its bytes leave
        the budget."""
        if self._out and self.budget is not None:
            self.budget.release(self._out)
        self._out = 0

    def close(self) -> int:
        """The consumer leaves: how many messages read were never taken (a message under way
        in fragments included, its rest not counted again); they leave the budget with the
        socket (held ones never entered it). Reading resumes so the closing handshake can be
        read; a message completed after this is counted in ``lost`` and reported once, with
        the connection's end, by ``on_lost``."""
        self._left = True
        left = len(self._messages) + len(self._held) + (1 if self._parts else 0) + self.lost
        self.lost = 0
        self._skip_to_fin = bool(self._parts)
        if self.budget is not None:
            self.budget.release(self._out + self._bytes)
        self._messages.clear()
        self._held = NONE_HELD
        self._unhold()
        self._parts = []
        self._out = self._bytes = 0
        self.closing()
        return left

    def _hold(self) -> None:
        if not self._holding and self.budget is not None:
            self._holding = True
            self.budget.hold()

    def _unhold(self) -> None:
        if self._holding and self.budget is not None:
            self._holding = False
            self.budget.unhold()

    def _pause(self) -> None:
        if not self._paused and not self._closing:
            self._paused = True
            self._pause_reading()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._resume_reading()


class WatchedConnection(ClientConnection):
    """A client connection whose data frames go straight to its :class:`MessageReader`
    (``reader``), and that notes when the server last sent anything (ping included): control
    frames as they arrive, messages as they are taken (once per batch).

    ``process_event`` is the one hook websockets has where every frame is seen (the library
    answers pings itself and its public API reports none). It is undocumented: websockets is
    pinned to the tested range in pyproject.toml, and tests/unit/test_ws_batches.py fails
    loudly if a server ping or a message stops reaching it."""

    last_activity: float = 0.0
    on_ping: Callable[[], None] | None = None
    reader: MessageReader
    _abort_timer: asyncio.TimerHandle | None = None

    def __init__(
        self,
        *args: Any,
        on_orphaned: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # messages read with the upgrade's answer by a connection nobody ever took (its
        # upgrade was cancelled in the same loop turn): counted here, with the connection's end
        self.on_orphaned = on_orphaned

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.reader = MessageReader(self._pause_reading, self._resume_reading)

    def shed_handshake(self) -> None:
        """Let go of the opening handshake once read: the request (its headers held the
        token) and the answer's headers, about 5 KB a socket traced (17 MB RSS at 5,000). The
        answer itself stays (the library's parser keeps it for the connection's life, and
        tells it from the frames after it by ``response`` not being None): emptied."""
        self.request = None
        if self.response is not None:
            self.response.headers.clear()

    def _pause_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def process_event(self, event: Any) -> None:
        if isinstance(event, WsFrame):  # after the handshake's response: frames only
            if event.opcode in _DATA:
                taken = self.reader.frame(event)
                # The library's parser keeps the last frame it cut until the socket's next one
                # (a ping included: tens of seconds on a quiet socket), outside the buffer
                # budget: a burst of media on many sockets held one copy more per socket than
                # counted. The reader has what it took.
                event.data = b""
                if not taken:
                    self._too_many_fragments()
                return
            self.last_activity = time.monotonic()
            if event.opcode is Opcode.PING and self.on_ping is not None:
                self.on_ping()
        super().process_event(event)

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close, reading on meanwhile: a socket paused for back-pressure would never read
        the server's close and end aborted after ``close_timeout``, with what it had sent."""
        self.reader.closing()
        await super().close(code, reason)

    def _too_many_fragments(self) -> None:
        """Fail the connection as the library's ``recv`` does (close 1009; the socket is
        aborted if the server has not closed it within ``close_timeout``)."""
        self.reader.closing()
        self.set_connection_exc(TooManyFragments(MAX_FRAGMENTS))
        self.protocol.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
        try:
            self.send_data()
        except Exception as exc:  # noqa: BLE001 - as the library: noted, the close follows
            self.set_connection_exc(exc)
        self._abort_timer = self.loop.call_later(self.close_timeout or 10.0, self.transport.abort)

    def closed_too_large(self) -> bool:
        """Whether we closed this connection first with 1009 (see :func:`closed_too_large`)."""
        protocol = self.protocol
        return closed_too_large(protocol.close_sent, protocol.close_rcvd_then_sent)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        self.reader.end(self.close_exc, closed_too_large=self.closed_too_large())
        orphaned = self.reader.orphaned()
        if orphaned and self.on_orphaned is not None:
            self.on_orphaned(orphaned)


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
        self._consume: Consume = _no_consumer  # the session's consumer, once one runs
        self._closer: asyncio.Future[None] | None = None
        self.upgrading = False  # the upgrade is under way (its answer may carry frames)
        self._stopping = asyncio.Event()

    async def run(self, consume: Consume) -> None:
        """Read until :meth:`stop`, reconnecting: each batch of frames goes to ``consume``,
        and the next is read once what it returned (an awaitable: pacing) was awaited. What
        ``consume`` raises ends this after the socket is closed."""
        while not self._stopping.is_set():
            try:
                connection = await self._open()
            except UpstreamError as error:
                await self._pause(error)
                continue
            if connection is None:  # stopped while waiting for a socket slot
                break
            self._connection = connection
            if self._stopping.is_set():  # stopped during the upgrade: what came is read, then
                self._closer = asyncio.ensure_future(  # the socket closes (stop() missed it)
                    connection.close(code=1001, reason="bridge stopping")
                )
                self._closer.add_done_callback(_settled)
            try:
                self.backoff.healthy(time.monotonic())
                await self._session(connection, consume)
            finally:
                self.shared.slots.give()  # the socket is closed: its file descriptor too
            if not self._stopping.is_set():
                await self._wait("reconnect", self._next_delay())

    async def _open(self) -> WatchedConnection | None:
        """An open connection holding one of the process's socket slots (taken just before
        the upgrade, given back if it fails); None when stopped while waiting for a slot."""
        if self.need_ensure:
            await self.ensure()
            self.need_ensure = self.first_check_due = False
        await self.bucket.acquire()
        slots = self.shared.slots
        if not await slots.take(self._stopping):
            return None
        self.upgrading = True  # frames may come with the answer: a stop waits for it
        try:
            connection = await self._connect()
        except BaseException:
            slots.give()
            raise
        finally:
            self.upgrading = False
        return connection

    async def _connect(self) -> WatchedConnection:
        # no context for ws:// (the library refuses one there); wss:// always gets one
        tls = {} if self.ssl is None else {"ssl": self.ssl}
        try:
            connection = await connect(
                self.url,
                additional_headers={"token": self._token.get_secret_value()},
                create_connection=cast(
                    "type[ClientConnection]",
                    functools.partial(WatchedConnection, on_orphaned=self.observer.discarded),
                ),
                open_timeout=self.settings.open_timeout,
                max_size=socket_limit(self.settings.max_frame_bytes),
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
            await connection.close()
            raise TypeError("connect() ignored create_connection")
        if connection.response is not None:
            self.bucket.observe(*parse_rate_headers(dict(connection.response.headers.raw_items())))
        connection.shed_handshake()
        return connection

    async def _session(self, connection: WatchedConnection, consume: Consume) -> None:
        """Hand the frames of one open connection to ``consume``, in batches; report why it
        ended. A plain loop, no generator between the socket and the consumer: nothing but the
        reader's future waits with a quiet socket (each wait's objects outlive the collector's
        young passes; at thousands of sockets walking them was a third of the process's CPU)."""
        connection.last_activity = time.monotonic()
        connection.on_ping = lambda: self.observer.activity(ping=True)
        self._watchdog_fired = False
        keepalive = self.shared.keepalive
        reader = connection.reader
        reader.on_lost = self.observer.discarded  # read in the close, after the session left
        watched: Watched | None = None
        reensure: asyncio.Task[None] | None = None
        reason = "closed"
        try:  # from the first step: whatever raises, the socket is closed and its frames counted
            self.observer.connected()  # (its gap marker goes to the spool: that may raise)
            watched = keepalive.watch(connection, self.settings.watchdog_seconds, self._silent)
            reensure = asyncio.create_task(self._reensure())
            reader.attach(self.shared.budget)
            self._consume = consume
            reader.handle, reader.dispatch = self._handle, self.shared.dispatch
            while True:  # what came while the task was parked went to _handle meanwhile
                batch = reader.take()
                if batch is None:
                    waiting = reader.wait()
                    try:
                        pacing = await waiting
                    except asyncio.CancelledError:
                        drop_handed(waiting)
                        raise
                else:
                    pacing = self._handle(batch)
                batch = None  # (neither held through the next wait)
                if pacing is not None:
                    await pacing
                    pacing = None
                reader.done()  # the consumer came back: the batch is in the intake
        except ConnectionClosedOK:
            pass  # a normal close: reason stays "closed"
        except ConnectionClosed as exc:
            reason = _close_reason(exc)
        except Exception:  # the bridge's own failure (the spool gone): not the server's close
            reason = "internal_error"
            raise
        finally:
            await self._end_session(connection, watched, reensure, reason)

    def _handle(self, batch: list[bytes]) -> Awaitable[None] | None:
        """One batch of the session's messages to its consumer as frames (bytes as received,
        text frames too: no decode and re-encode), stamped with their receipt; the pacing it
        returned."""
        received_ns = time.time_ns()
        if self._connection is not None:
            self._connection.last_activity = time.monotonic()
        self.observer.activity(ping=False)
        instance = self.instance
        return self._consume([Frame(instance, raw, received_ns) for raw in batch])

    async def _end_session(
        self,
        connection: WatchedConnection,
        watched: Watched | None,
        reensure: asyncio.Task[None] | None,
        reason: str,
    ) -> None:
        """After a session, however it ended: what was read and never handed over is counted,
        the socket closed, the end reported with its reason."""
        if watched is not None:
            self.shared.keepalive.forget(watched)
        if reensure is not None:
            reensure.cancel()
        reader = connection.reader
        reader.handle = reader.dispatch = None  # (the step holds the consumer)
        left = reader.close()
        if left:  # read off the socket, never handed over: counted, not lost
            self.observer.discarded(left)
        self._connection = None
        # the session may end without the socket closing (the consumer raised or left):
        # close it, or it stays open unread, the server's frames lost, until the process
        # exits (no-op when the socket is closed already); no longer watched, it is aborted
        # if this close is cancelled. The end is reported however the close ends.
        try:
            await close_or_abort(connection, CloseCode.INTERNAL_ERROR, "bridge reader gone")
        finally:
            self.observer.disconnected(self._end_reason(connection, reason))

    def _end_reason(self, connection: WatchedConnection, reason: str) -> str:
        """Why the session ended, as reported: a message read in part and never handed over
        (counted with it), the watchdog, a stop, or ``reason``."""
        if connection.reader.too_large or connection.closed_too_large():
            return "frame_too_large"
        if self._watchdog_fired:
            return "watchdog"
        if self._stopping.is_set():
            return "stopping"
        return reason

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
        """Stop reading: close the socket; frames already received are still handed over."""
        self._stopping.set()
        if self._connection is not None:
            await self._connection.close(code=1001, reason="bridge stopping")


def _settled(done: asyncio.Future[None]) -> None:
    """A close nobody awaits: its outcome taken (the connection's end is reported anyway)."""
    if not done.cancelled():
        done.exception()


def closed_too_large(sent: WsClose | None, rcvd_then_sent: bool | None) -> bool:
    """Whether we closed the connection first (not an echo of the server's close) with 1009: a
    message over ``max_frame_bytes`` or in too many fragments (pure)."""
    return sent is not None and not rcvd_then_sent and sent.code == CloseCode.MESSAGE_TOO_BIG


def _close_reason(exc: ConnectionClosed) -> str:
    if closed_too_large(exc.sent, exc.rcvd_then_sent):
        return "frame_too_large"  # we closed it: a message over max_frame_bytes
    if exc.rcvd is None:
        return "abnormal"
    return "server_close" if exc.rcvd.code in (1000, 1001) else f"close_{exc.rcvd.code}"


def _reason_of(error: UpstreamError) -> str:
    if error.status is not None:
        return f"http_{error.status}"
    return "unreachable"
