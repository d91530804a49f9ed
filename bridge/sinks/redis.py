"""The Redis sink: pipelined ``XADD … MAXLEN ~ n`` with redis.asyncio.

Entry fields: ``event``, ``instance``, ``received_at``, ``id``, ``data`` (the JSON value), and
on DLQ entries ``reason`` and ``error``. In cluster mode ``redis`` every event is written by a
script that first checks the shard's fencing token: a replica that lost its lease (it froze
past the TTL, say) has its writes refused (``FENCED``), and those records go to the DLQ with
reason ``fenced`` instead of doubling what the shard's new owner writes.

Every record gets its own outcome, and each stream's records in a call are applied whole or
not at all: a pipeline goes on after a command that fails (checked against Redis 7: an
``XADD`` refused by an ACL, by ``OOM`` or by ``READONLY`` answers an error for that command
only, the commands around it are applied), so a stream's two or more records in one call go
inside ``MULTI … EXEC``. Were they sent bare, a record refused for memory and put back would
land after the later ones Redis took a moment after (used memory goes up and down as buffers
drain): its stream out of order. One command needs no transaction; the streams of a call are
separate transactions in one pipeline, so one stream refused by an ACL holds no other back.
The replies are read one by one: ``OOM``, ``READONLY``, ``LOADING``, ``BUSY``,
``MASTERDOWN``, ``TRYAGAIN`` fail only the records they answer (transient, retried; in a
transaction the server then discards the whole of it, and its other records fail with it);
``NOPERM`` rejects its record (``not_authorized``, DLQ); any other error (``WRONGTYPE``…)
rejects it as ``rejected_by_broker``. A connection lost while replies are read fails the
records whose reply was not read (they may have been applied, a transaction whole: at least
once), drops that connection, and the next call connects again (so does a reply that cannot
be parsed, ``InvalidResponse``: the connection is out of step); redis-py's own retry, which
would send the whole pipeline again, is not used. Concurrent ``publish`` calls each take
their own connection from the pool. The ACL user needs ``+multi +exec`` besides ``+xadd``:
checked at start.

Time limits: getting a call's connection has ``IO_SECONDS``; then its write (with redis-py's
health-check PING and a reconnect, when due) and replies run under one deadline that starts
``RENEWED`` times ``IO_SECONDS`` ahead and is moved that far ahead again whenever less than
``IO_SECONDS`` is left before a reply is awaited: every reply has at least ``IO_SECONDS``, a call
is lost after 10-15 s without one (as with a socket timeout of 10 s), and a call shorter than
5 s moves no timer (one move per 5 s after that); a PING, its connection included, has
``IO_SECONDS``. The client itself has no socket timeout: redis-py's puts a timer around every
reply read (one per record) and (Python 3.11) a task around every write, ~7 % of the shipper's
CPU at 5,000 quiet instances.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hiredis
from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bridge.errors import SinkConfigError, SinkUnavailableError
from bridge.logs import get_logger
from bridge.pipeline import Record
from bridge.pipeline.records import cloudevents_headers
from bridge.settings import RedisSinkSettings
from bridge.sinks.base import DELIVERED, Failed, Fencing, Outcome, Rejected
from bridge.sinks.watch import LogLimit

log = get_logger(__name__)

Command = tuple[Any, ...]
UNREAD = Failed(SinkUnavailableError("redis: reply not read"))  # never used: all were read
IO_SECONDS = 10.0  # a call's connection; each reply at least; a PING (see the module)
RENEWED = 1.5  # a call's deadline starts, and is moved, this many IO_SECONDS ahead

FENCED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED shard owned by a newer lease holder')
end
if ARGV[2] ~= '' then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
"""


def entry_fields(record: Record, cloudevents: bool = False) -> dict[str, bytes]:
    """The stream entry of ``record`` (pure); with ``cloudevents`` also the ce_* fields."""
    fields = {
        "event": record.event.encode(),
        "instance": record.instance.encode(),
        "received_at": record.received_at.encode(),
        "id": record.id.encode(),
        "data": record.value,
    }
    if record.dlq_reason is not None:
        fields["reason"] = record.dlq_reason.encode()
        fields["error"] = (record.dlq_error or "").encode()
    elif cloudevents:
        fields.update(cloudevents_headers(record))
    return fields


TRANSIENT_CODES = ("OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN")


def error_text(error: BaseException) -> str:
    """The server's error line: redis-py strips a known code (``OOM``, ``NOPERM``…) off the
    message and keeps it in ``status_code``; put it back (pure)."""
    text = str(error)
    code = getattr(error, "status_code", None)
    if isinstance(code, str) and code and not text.startswith(code):
        return f"{code} {text}"
    return text


def classify(result: Any) -> Outcome:
    """One pipelined XADD reply as an outcome (pure)."""
    if isinstance(result, Failed):
        return result
    if not isinstance(result, BaseException):
        return DELIVERED
    text = error_text(result)
    if isinstance(result, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return Failed(SinkUnavailableError(f"redis: {type(result).__name__}: {text}"))
    if text.startswith(TRANSIENT_CODES):
        return Failed(SinkUnavailableError(f"redis: {text}"))
    if text.startswith("FENCED"):
        return Rejected("fenced", f"redis: {text}")
    reason = "not_authorized" if text.startswith("NOPERM") else "rejected_by_broker"
    return Rejected(reason, f"redis: {text}")


class RedisSink:
    kind = "redis"

    def __init__(
        self,
        settings: RedisSinkSettings,
        *,
        password: SecretStr | None = None,
        client: Redis | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self._client = client
        self.fencing = fencing
        self._refusals = LogLimit()

    def _connect(self) -> Redis:
        # no socket timeout: every call has its own deadline (send, ping: see the module)
        return connect(self.settings, self._password, socket_timeout=None)

    async def start(self) -> None:
        if self._client is None:
            self._client = self._connect()
        try:
            await ping(self._client)
            await self._check_xadd()
        except redis_errors.AuthenticationError as exc:
            raise SinkConfigError(f"redis: authentication failed: {exc}") from None
        except redis_errors.NoPermissionError as exc:
            raise SinkConfigError(
                f"redis: user {self.settings.username or 'default'} may not XADD to "
                f"{self.probe_key()} in a transaction ({exc}); grant +xadd +multi +exec on "
                "the stream keys"
            ) from None
        except redis_errors.RedisError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text:
                raise SinkConfigError(
                    "redis: TLS certificate of the server not trusted (set sink.redis.ssl_ca_file)"
                ) from None
            raise SinkUnavailableError(f"redis: cannot reach the server: {exc}") from None

    def probe_key(self) -> str:
        return self.settings.stream.format(instance="__probe__", event="__probe__")

    async def _check_xadd(self) -> None:
        """MULTI, XADD NOMKSTREAM to a key of the stream pattern, EXEC: the ACL is checked for
        the three, nothing is written (the key does not exist, NOMKSTREAM does not create
        it). Raises the server's refusal (NoPermissionError when the ACL refused one)."""
        if self._client is None:
            return
        probe = ("XADD", self.probe_key(), "NOMKSTREAM", "*", "probe", "1")
        replies, lost = await send(self._client, [("MULTI",), probe, ("EXEC",)])
        if lost is not UNREAD:
            raise lost.error
        for reply in replies:
            if isinstance(reply, BaseException):
                if "NOPERM" in error_text(reply):
                    raise redis_errors.NoPermissionError(error_text(reply))
                raise reply

    async def publish(self, records: Sequence[Record]) -> list[Outcome]:
        """One pipeline: each stream's XADDs in one transaction (see the module); one outcome
        per record, never an exception once started."""
        if self._client is None:
            raise SinkUnavailableError("redis: not started")
        limit = self.settings.max_entry_bytes
        try:
            groups = by_stream(records, limit)
            commands = [[self._command(records[i]) for i in group] for group in groups]
            answers, refusal = await exchange(self._client, commands)
            if refusal is not None:
                self._refused(refusal)
            outcomes: list[Outcome | None] = [None] * len(records)
            # one result per command sent (exchange's contract): every record sent has one
            sent = (i for group in groups for i in group)
            for i, result in zip(sent, answers, strict=True):
                outcomes[i] = classify(result)
        except Exception as exc:  # turned into outcomes, logged with its trace
            log.exception("sink.publish_crashed", sink=self.kind, error=type(exc).__name__)
            error = SinkUnavailableError(f"redis: unexpected {type(exc).__name__}: {exc}")
            return [Failed(error)] * len(records)
        return [
            Rejected("too_large", f"{len(r.value)} bytes") if o is None else o
            for r, o in zip(records, outcomes, strict=True)
        ]

    def _refused(self, refusal: BaseException) -> None:
        """MULTI refused (the ACL changed since the start): the records went one by one, as
        they were applied; said at most once a second, for it gives up the stream's order."""
        if self._refusals.allows(time.monotonic()):
            log.error(
                "sink.redis_transaction_refused",
                error=error_text(refusal),
                consequence="records of a stream went one by one: their order is not kept "
                "when Redis refuses some of them (OOM, READONLY, LOADING)",
                action="grant the user +multi +exec",
            )

    def _command(self, record: Record) -> Command:
        """The XADD of ``record``; fenced through the script when the shard has a token."""
        fields = entry_fields(record, self.settings.cloudevents == "binary")
        flat = [part for pair in fields.items() for part in pair]
        fence = None
        if self.fencing is not None and record.dlq_reason is None:
            fence = self.fencing.fence(record.instance)
        if fence is None:
            trim = () if self.settings.maxlen is None else ("MAXLEN", "~", self.settings.maxlen)
            return ("XADD", record.destination, *trim, "*", *flat)
        key, token = fence
        maxlen = "" if self.settings.maxlen is None else str(self.settings.maxlen)
        return ("EVAL", FENCED_XADD, 2, record.destination, key, token, maxlen, *flat)

    async def reachable(self) -> bool:
        if self._client is None:
            return False
        try:
            await ping(self._client)
        except (redis_errors.RedisError, OSError):  # (a PING past its deadline: a RedisError)
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None


def by_stream(records: Sequence[Record], limit: int) -> list[list[int]]:
    """The indexes of the records of at most ``limit`` bytes, one list per stream in the order
    of its first record, each in the records' order (pure)."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if len(record.value) <= limit:
            groups.setdefault(record.destination, []).append(i)
    return list(groups.values())


def framed(groups: list[list[Command]]) -> list[Command]:
    """The commands to send for ``groups`` (pure): a group of two or more inside MULTI …
    EXEC, so the server applies all of it or none of it; a group of one as it is."""
    out: list[Command] = []
    for group in groups:
        if len(group) == 1:
            out += group
        else:
            out += [("MULTI",), *group, ("EXEC",)]
    return out


def results(
    groups: list[list[Command]], replies: list[Any], lost: Failed
) -> tuple[list[Any], BaseException | None]:
    """One result per command of ``groups``, in order (pure), from the ``replies`` read for
    ``framed(groups)``: fewer when the connection was lost, and then ``lost`` for each
    command whose result was not read; and the server's refusal of a MULTI, if one was
    refused (its commands then ran one by one)."""
    out: list[Any] = []
    refusal: BaseException | None = None
    at = 0
    for group in groups:
        if len(group) == 1:
            out.append(replies[at] if at < len(replies) else lost)
            at += 1
            continue
        span = replies[at : at + len(group) + 2]
        if refusal is None and span and isinstance(span[0], BaseException):
            refusal = span[0]
        out += transaction_results(span, len(group), lost)
        at += len(group) + 2
    return out, refusal


def transaction_results(replies: list[Any], n: int, lost: Failed) -> list[Any]:
    """The results of ``n`` commands sent inside MULTI … EXEC, from the replies read for the
    n + 2 (pure). EXEC's reply not read: each ``lost`` (applied whole or not at all, not
    known). The transaction discarded (a command refused as it was queued, or EXEC itself
    refused): the refused commands' errors, and for the others a transient failure naming
    why. MULTI itself refused (an ACL changed since the start): the commands ran one by
    one, and their replies are their results."""
    if replies and isinstance(replies[0], BaseException):
        ran = replies[1 : n + 1]
        return ran + [lost] * (n - len(ran))
    if len(replies) < n + 2:
        return [lost] * n
    executed = replies[n + 1]
    if isinstance(executed, list) and len(executed) == n:
        return executed
    why = error_text(executed) if isinstance(executed, BaseException) else repr(executed)[:200]
    queued = replies[1 : n + 1]
    refused = [q for q in queued if isinstance(q, BaseException)]
    if refused:  # the root cause on every record, not only the refused ones
        why = f"{why}; first refused: {error_text(refused[0])}"
    elif "NOPERM" in why:
        why = f"the ACL refused EXEC (grant the user +multi +exec): {why}"
    aborted = Failed(SinkUnavailableError(f"redis: transaction not applied: {why}"))
    return [q if isinstance(q, BaseException) else aborted for q in queued]


async def exchange(
    client: Redis, groups: list[list[Command]]
) -> tuple[list[Any], BaseException | None]:
    """Send ``groups`` (framed) in one write and read the replies one by one: one result per
    command of the groups — a reply, the server's error for that command,
    or Failed for each result a lost connection took (or an unreadable reply, after which
    the connection is out of step: dropped) — and a MULTI's refusal, if one was refused."""
    if not groups:
        return [], None
    replies, lost = await send(client, framed(groups))
    return results(groups, replies, lost)


async def send(client: Redis, commands: list[Command]) -> tuple[list[Any], Failed]:
    """Send ``commands`` in one write and read their replies one by one, an error reply as
    its exception: all of them, or those read before the connection was lost (dropped then)
    and that loss as a Failed (``UNREAD`` when none was). Lost too: no connection, write or
    next reply in time (see the module)."""
    packed = pack(commands)
    pool: Any = client.connection_pool
    try:
        async with asyncio.timeout(IO_SECONDS):
            connection = await pool.get_connection()
    except (redis_errors.RedisError, OSError) as exc:  # (TimeoutError is an OSError)
        return [], Failed(SinkUnavailableError(f"redis: {failure_text(exc, 'connection')}"))
    replies: list[Any] = []
    lost = UNREAD
    loop = asyncio.get_running_loop()
    waiting = "write (nor a health-check PING or reconnect before it)"
    try:
        async with asyncio.timeout(RENEWED * IO_SECONDS) as deadline:
            await connection.send_packed_command(packed)
            waiting = "reply"
            for _ in commands:
                if renewed(deadline.when(), loop.time()):
                    deadline.reschedule(loop.time() + RENEWED * IO_SECONDS)
                replies.append(await _reply(connection))  # (those read are kept when one fails)
    except (redis_errors.RedisError, OSError) as exc:  # lost, out of step, or timed out
        await connection.disconnect(nowait=True)  # (as redis-py on its errors: no wait to close)
        unread = f"{len(commands) - len(replies)} of the pipeline's {len(commands)} replies"
        lost = Failed(
            SinkUnavailableError(f"redis: {failure_text(exc, waiting)} ({unread} not read)")
        )
    except BaseException:  # cancelled mid-exchange: the connection's replies are unread
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
    return replies, lost


def renewed(due: float | None, now: float) -> bool:
    """Whether a call's deadline is moved before a reply is awaited (pure): when less than
    ``IO_SECONDS`` is left."""
    return due is not None and due - now < IO_SECONDS


def failure_text(exc: BaseException, waited_for: str) -> str:
    """What a call's failure says (pure): the error's name and text; our own deadline (a
    TimeoutError with no text) says what did not come in time."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"TimeoutError: no {waited_for} in time (at least {IO_SECONDS:g} s)"
    return f"{type(exc).__name__}: {exc}"


async def ping(client: Redis) -> None:
    """PING, its connection included, within ``IO_SECONDS``; after that redis-py's
    TimeoutError (a RedisError: the sink unreachable, as with the socket timeout it
    replaces)."""
    try:
        async with asyncio.timeout(IO_SECONDS):
            await client.ping()
    except TimeoutError:  # (ours: redis-py's is not a TimeoutError)
        text = f"no connection or answer to PING within {IO_SECONDS:g} s"
        raise redis_errors.TimeoutError(text) from None


CHUNK = 6000  # bytes: a larger value goes to the socket as it is, not copied (as redis-py)
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # the ints hiredis packs (others: ``_encoded``)


def pack(commands: list[Command]) -> list[bytes]:
    """``commands`` in Redis' wire protocol (RESP arrays of bulk strings), in a few buffers
    (pure): the same bytes as redis-py's ``pack_commands`` at a fraction of its cost per
    command (it was a third of the shipper's CPU per record at fleet scale); as there, a value
    over ``CHUNK`` bytes is a buffer of its own, so a batch of big frames is not copied. A
    command of text, ints and small bytes only (every XADD of a small frame) is packed by
    hiredis in C, about four times faster than the loop below, which packs the rest."""
    out: list[bytes] = []
    buffer: list[bytes] = []
    for command in commands:
        if _plain(command):
            packed: bytes = hiredis.pack_command(command)
            buffer.append(packed)
            continue
        buffer.append(b"*%d\r\n" % len(command))
        for arg in command:
            value = _encoded(arg)
            buffer.append(b"$%d\r\n" % len(value))
            if len(value) > CHUNK:
                out += (b"".join(buffer), value)
                buffer = [b"\r\n"]
            else:
                buffer += (value, b"\r\n")
    out.append(b"".join(buffer))
    return out


def _plain(command: Command) -> bool:
    """Whether hiredis packs ``command`` byte for byte as redis-py would, with no copy worth
    avoiding (pure): its arguments are text, 64-bit ints (a bool is not) and bytes of at most
    ``CHUNK``. Anything else (a float, whose text the two may write differently; a buffer
    type; a big value; an int too long for ``repr``, which hiredis does not survive) goes
    through ``_encoded``."""
    for arg in command:
        kind = type(arg)
        if kind is bytes:
            if len(arg) > CHUNK:
                return False
        elif kind is int:
            if not INT64_MIN <= arg <= UINT64_MAX:
                return False
        elif kind is not str:
            return False
    return True


def _encoded(arg: Any) -> bytes:
    """An argument's bytes as redis-py encodes them (bytes as they are, text as UTF-8, numbers
    by their repr); anything else refused, as redis-py does."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise SinkConfigError("redis: a bool is not a command argument")
    if isinstance(arg, int | float):
        return repr(arg).encode()
    if isinstance(arg, memoryview | bytearray):
        return bytes(arg)
    raise SinkConfigError(f"redis: {type(arg).__name__} is not a command argument")


async def _reply(connection: Any) -> Any:
    """The next reply on ``connection``; an error reply is returned, not raised (the next
    replies are still on the wire). LOADING comes as a ConnectionError subclass: it ends the
    exchange like a lost connection, which is also transient."""
    try:
        return await connection.read_response()
    except redis_errors.ResponseError as exc:
        return exc


def connect(
    settings: RedisSinkSettings,
    password: SecretStr | None,
    *,
    socket_timeout: float | None = IO_SECONDS,
) -> Redis:
    """A client for the configured server (TLS files, ACL user and password applied); each
    read and write limited to ``socket_timeout`` (None: the caller limits its calls)."""
    tls: dict[str, Any] = {}
    if str(settings.url).startswith("rediss://"):
        tls = {
            "ssl_ca_certs": _path(settings.ssl_ca_file),
            "ssl_certfile": _path(settings.ssl_certfile),
            "ssl_keyfile": _path(settings.ssl_keyfile),
        }
    return Redis.from_url(
        str(settings.url),
        username=settings.username,
        password=password.get_secret_value() if password else None,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5,
        health_check_interval=15,
        **tls,
    )


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)
