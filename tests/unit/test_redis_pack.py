"""The Redis sink's own command packing writes exactly the bytes redis-py would."""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from bridge.errors import SinkConfigError
from bridge.pipeline import Record
from bridge.settings import RedisSinkSettings
from bridge.sinks.redis import CHUNK, FENCED_XADD, RedisSink, _plain, pack


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


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


@pytest.mark.parametrize(
    ("arg", "plain"),
    [
        ("text ✓", True),
        (b"x" * CHUNK, True),
        (b"x" * (CHUNK + 1), False),
        (-(2**63), True),
        (2**64 - 1, True),
        (2**64, False),
        (-(2**70), False),
        (10**5000, False),
        (Level.HIGH, False),
        (Text("text"), False),
        (1.5, False),
        (True, False),
        (bytearray(b"ab"), False),
        (memoryview(b"ab"), False),
        (None, False),
    ],
    ids=[
        "str",
        "chunk",
        "big",
        "int64-min",
        "uint64-max",
        "over-uint64",
        "under-int64",
        "too-long-for-repr",
        "intenum",
        "str-subclass",
        "float",
        "bool",
        "bytearray",
        "memoryview",
        "none",
    ],
)
def test_only_text_ints_and_small_bytes_take_the_fast_packer(arg: object, plain: bool) -> None:
    """hiredis packs a command only when its bytes are certain to be redis-py's and nothing
    big is copied: exact text, 64-bit ints (not a bool) and bytes up to ``CHUNK``; a float
    (whose text the two could write differently), a subclass, a buffer type, a big value or
    an int past 64 bits (one too long for ``repr`` crashes hiredis) goes the other way."""
    assert _plain(("SET", "k", arg)) is plain


def random_arg(rng: random.Random) -> object:
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF), 0x1F600]))
            for _ in range(rng.randrange(12))
        )
    if kind == 1:
        return rng.randbytes(rng.choice([0, 1, 50, CHUNK, CHUNK + 1, 3 * CHUNK]))
    if kind == 2:
        return rng.randrange(-(2**80), 2**80)
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    return bytearray(rng.randbytes(rng.randrange(20)))


def test_any_mix_of_commands_is_packed_as_redis_py_packs_it() -> None:
    """Commands of every argument kind, sizes around ``CHUNK`` and both packers interleaved
    in one pipeline: the buffers joined are redis-py's bytes, whichever packer took each."""
    rng = random.Random(1604)
    for _ in range(200):
        commands = [
            ("XADD", *(random_arg(rng) for _ in range(rng.randrange(1, 8))))
            for _ in range(rng.randrange(1, 6))
        ]
        assert b"".join(pack(commands)) == redis_py(commands)


def test_text_that_is_not_unicode_is_refused_by_either_packer() -> None:
    """Text that cannot be UTF-8 (a lone surrogate) is refused as redis-py refuses it, on the
    fast path and on the other (a float beside it), not written as something else."""
    for command in [("SET", "k\ud800"), ("SET", "k\ud800", 1.5)]:
        with pytest.raises(UnicodeEncodeError):
            pack([command])
        with pytest.raises(UnicodeEncodeError):
            redis_py([command])


def test_an_int_too_long_for_repr_is_refused_not_a_crash() -> None:
    """An int with more digits than Python prints (a pathological ``maxlen`` in YAML hex) is
    refused by the packer with an exception the sink counts, as redis-py refuses it; it
    never reaches hiredis, which does not survive it."""
    huge = 16**4000 - 1  # maxlen: 0xfff… (4,000 digits) in YAML
    with pytest.raises(ValueError, match="digits"):
        pack([("XADD", "s", "MAXLEN", "~", huge, "*", "data", b"x")])


def test_maxlen_past_64_bits_is_a_config_error_naming_the_key() -> None:
    """``sink.redis.maxlen`` is a count Redis keeps in 64 bits: a larger one is refused when
    the config is read, naming the key, instead of at the first publish."""
    with pytest.raises(ValueError, match="maxlen"):
        RedisSinkSettings(maxlen=2**63)


class Fence:
    def fence(self, instance: str) -> tuple[str, str] | None:
        return None if instance == "unfenced" else ("fence:7", "tok-41")


def test_every_command_the_sink_builds_is_packed_as_redis_py_packs_it() -> None:
    """The sink's own commands of every shape — dead letters with their reason and error,
    CloudEvents fields, fenced EVALs and unfenced XADDs, trimmed or not, small and big —
    packed in one pipeline are redis-py's bytes."""
    for cloudevents in ("none", "binary"):
        for maxlen in (None, 10):
            settings = RedisSinkSettings(
                stream="ryze:{event}", maxlen=maxlen, cloudevents=cloudevents
            )
            sink = RedisSink(settings)
            sink.fencing = Fence()
            records = [
                Record("ryze:m", b"k", b'{"n":1}', "m", "fenced", 1_700_000_000_000_000_000),
                Record("ryze:m", None, b"\x00" * (CHUNK + 1), "m", "unfenced", 1),
                Record(
                    "dlq",
                    None,
                    b"not json \xff",
                    "",
                    "fenced",
                    2,
                    dlq_reason="bad_json",
                    dlq_error="é",
                ),
                Record("ryze:m", b"k", b"{}", "m", "unfenced", 3),
            ]
            commands = [sink._command(record) for record in records]
            assert {command[0] for command in commands} == {"XADD", "EVAL"}
            assert b"".join(pack(commands)) == redis_py(commands)


def test_a_big_value_between_small_commands_is_handed_over_as_it_is_in_order() -> None:
    """A big value between two small commands is the very object given, after the first
    command's buffer and before the second's: nothing reordered, nothing copied."""
    big = b"y" * (CHUNK + 1)
    commands = [("XADD", "s", "*", "data", b"a"), ("XADD", "s", "*", "data", big), ("PING",)]
    chunks = pack(commands)
    at = next(i for i, chunk in enumerate(chunks) if chunk is big)
    assert 0 < at < len(chunks) - 1
    assert b"".join(chunks) == redis_py(commands)
