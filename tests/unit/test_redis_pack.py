"""The Redis sink's own command packing writes exactly the bytes redis-py would."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection

from bridge.errors import SinkConfigError
from bridge.pipeline import Record
from bridge.settings import RedisSinkSettings
from bridge.sinks.redis import CHUNK, FENCED_XADD, RedisSink, pack


def redis_py(commands: list[tuple[Any, ...]]) -> bytes:
    return b"".join(Connection().pack_commands(commands))


COMMANDS: list[tuple[Any, ...]] = [
    ("XADD", "ryze:message.exchange", "*", "event", b"message.exchange", "data", b"{}"),
    ("XADD", "ryze:x", "MAXLEN", "~", 100_000, "*", "data", b"\x00\xff\r\n" * 5000),
    ("EVAL", FENCED_XADD, 2, "ryze:x", "fence:0", "tok-1", "", "data", "héllo ✓"),
    ("PING",),
    ("SET", "k", 1.5),
]


@pytest.mark.parametrize("command", COMMANDS, ids=["xadd", "big", "eval", "ping", "float"])
def test_a_command_is_packed_as_redis_py_packs_it(command: tuple[Any, ...]) -> None:
    """Every kind of argument the sink sends (text, bytes of any value and size, ints,
    floats) is written byte for byte as redis-py's ``pack_commands`` writes it."""
    assert b"".join(pack([command])) == redis_py([command])


def test_a_pipeline_of_records_is_packed_as_redis_py_packs_it() -> None:
    """The sink's own XADDs for a batch of records, trimmed or not, packed in one buffer, are
    redis-py's bytes."""
    for maxlen in (None, 1000):
        settings = RedisSinkSettings(stream="ryze:{event}", maxlen=maxlen)
        sink = RedisSink(settings)
        records = [
            Record("ryze:message.exchange", b"k", b'{"n":%d}' % n, "message.exchange", f"i{n}", n)
            for n in range(50)
        ]
        commands = [sink._command(record) for record in records]
        assert b"".join(pack(commands)) == redis_py(commands)


@pytest.mark.parametrize("bad", [True, None, object()], ids=["bool", "none", "object"])
def test_an_argument_redis_py_refuses_is_refused(bad: object) -> None:
    """A value redis-py would not encode (a bool, None, an object) is refused, not guessed."""
    with pytest.raises(SinkConfigError):
        pack([("SET", "k", bad)])


def test_a_big_value_is_sent_as_it_is_not_copied() -> None:
    """A value over ``CHUNK`` bytes is one of the buffers handed to the socket, the very
    object given (a batch of big frames is not copied into one buffer), small ones around it
    are joined."""
    big = b"x" * (CHUNK + 1)
    chunks = pack([("XADD", "s", "*", "data", big), ("XADD", "s", "*", "data", b"small")])
    assert any(chunk is big for chunk in chunks)
    assert len(chunks) == 3
